"""The systems under test: how each row's servers are started, and what the load hits.

``Systems`` owns the temporary folder and every process it started; each ``start_*``
method brings up one row's servers (on free loopback ports, in front of the one origin)
and returns the ``Target`` rows that measure them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import configs, cookies, material, procs, tools
from bench.configs import GatewaySetup, SiteFiles
from bench.material import Expect, MaterialSite
from bench.procs import Server

REPO = Path(__file__).resolve().parent.parent
# j and m: the admin pages closed, navigation filtered (the default); k and l: nothing
# closed and no filtering.
PERSONAL = GatewaySetup(rules=(material.ADMIN_RULE,))
UNFILTERED = GatewaySetup(navigation=False)
SETUPS = {"g": GatewaySetup(), "h": GatewaySetup(store="redis"), "i": GatewaySetup(workers=2),
          "d": GatewaySetup(behind_proxy=True), "j": PERSONAL, "k": UNFILTERED,
          "l": UNFILTERED, "m": PERSONAL}
# The cold row's readers: more than any cache of sessions or renderings holds.
COLD_POOL = 20_000


@dataclass(frozen=True)
class Target:
    """One row: where to send the load, which processes to weigh, and with what cookie."""

    row: str
    port: int
    watch: tuple[int, ...]
    headers: dict[str, str] = field(default_factory=dict)
    # A protected page: without the cookie it must not answer 200.
    protected: bool = False
    page: str = configs.PAGE
    # The row's page in the Material part, and what a right answer holds.
    material: Expect | None = None
    # A Cookie header per request, rotated from this file (the cold row).
    cookie_file: Path | None = None
    cookie_pool: int = 0

    def url(self, path: str | None = None) -> str:
        """The URL of a path on this row's front server (default: its page)."""
        return f"http://127.0.0.1:{self.port}{path or self.page}"


class Systems:
    """Starts and stops the servers of every row; ``close`` stops whatever is left."""

    def __init__(self, work: Path, site: SiteFiles, wrap: tuple[str, ...] = (),
                 start_timeout: float = 30.0, gateway_tree: Path = REPO,
                 material_site: MaterialSite | None = None, cold_pool: int = COLD_POOL) -> None:
        self.work = work
        self.site = site
        # The Material for MkDocs build (rows j to m), when this run has one.
        self.material = material_site
        self.cold_pool = cold_pool
        # Where the gateway runs from: the source tree, or a compiled build of it.
        self.gateway_tree = gateway_tree
        # A command the Python servers (rows e to i) run under, e.g. valgrind.
        self.wrap = wrap
        self.start_timeout = start_timeout
        self.servers: list[Server] = []
        self.secret = configs.new_session_secret()
        self.key = configs.write_signing_key(work / "gateway-key")
        self.origin_port = 0
        # The origin's files again, gzip on (only the bytes-on-the-wire check asks it).
        self.origin_gzip_port = 0
        self.origin: Server | None = None

    def start(self, server: Server) -> Server:
        """Start a server and remember it so ``close`` stops it whatever happens."""
        server.start(self.start_timeout)
        self.servers.append(server)
        return server

    def stop(self, *servers: Server) -> None:
        """Stop servers this run started."""
        for server in servers:
            server.stop()
            if server in self.servers:
                self.servers.remove(server)

    def close(self) -> None:
        """Stop everything still running, newest first."""
        self.stop(*reversed(self.servers))

    def stop_rows(self) -> None:
        """Stop every server but the origin."""
        self.stop(*[server for server in reversed(self.servers) if server is not self.origin])

    # -- processes ----------------------------------------------------------------------

    def nginx(self, name: str, *, root: Path | None = None, proxy_to: int | None = None,
              gzip_port: int | None = None) -> Server:
        """An nginx that serves ``root`` (and again with gzip on ``gzip_port``) or proxies to
        ``proxy_to``."""
        port = procs.free_port()
        prefix = self.work / name
        prefix.mkdir(exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(configs.nginx_conf(prefix, port, root=root, proxy_to=proxy_to,
                                           gzip_port=gzip_port))
        binary = tools.find("nginx") or "nginx"
        return self.start(Server(name, [binary, "-c", str(conf), "-p", str(prefix),
                                        "-e", str(prefix / "nginx-error.log")],
                                 self.work / f"{name}.log", ready_port=port))

    def caddy(self, name: str, auth_port: int | None = None) -> Server:
        """A Caddy reverse proxy to the origin, optionally asking the gateway first."""
        port = procs.free_port()
        home = self.work / name
        home.mkdir(exist_ok=True)
        path = home / "Caddyfile"
        path.write_text(configs.caddyfile(port, self.origin_port, auth_port))
        env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home), "XDG_DATA_HOME": str(home),
               "GOMAXPROCS": "1"}
        return self.start(Server(name, ["caddy", "run", "--config", str(path), "--adapter",
                                        "caddyfile"], self.work / f"{name}.log",
                                 ready_port=port, env=env))

    def bare_proxy(self) -> Server:
        """Row e's proxy."""
        port = procs.free_port()
        argv = [*self.wrap, sys.executable, str(REPO / "bench" / "bare_aiohttp_proxy.py"), "--port",
                str(port), "--upstream", f"http://127.0.0.1:{self.origin_port}"]
        return self.start(Server("bare-proxy", argv, self.work / "bare-proxy.log",
                                 ready_port=port))

    def floor_proxy(self, kind: str) -> Server:
        """Rows n and o: ``bench/floor_proxy.py`` with the gateway's upstream client from
        this run's tree (compiled or not)."""
        port = procs.free_port()
        argv = [*self.wrap, sys.executable, str(REPO / "bench" / "floor_proxy.py"), "--server",
                kind, "--port", str(port), "--upstream", f"127.0.0.1:{self.origin_port}"]
        return self.start(Server(f"floor-{kind}", argv, self.work / f"floor-{kind}.log",
                                 ready_port=port, env={"PYTHONPATH": str(self.gateway_tree)}))

    def redis(self, name: str = "redis") -> Server:
        """A throwaway redis-server without persistence."""
        port = procs.free_port()
        folder = self.work / name
        folder.mkdir(exist_ok=True)
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(folder)]
        return self.start(Server(name, argv, self.work / f"{name}.log", ready_port=port))

    def gateway(self, name: str, setup: GatewaySetup, redis_url: str | None = None,
                tree: Path | None = None) -> tuple[Server, Path]:
        """``python -m gateway run`` on a generated config; returns the server and the file.

        ``tree`` is where the gateway runs from (default: this run's, compiled or not).
        """
        port = procs.free_port()
        data = configs.gateway_config(port, self.origin_port, setup,
                                      session_secret=self.secret, key_file=self.key,
                                      redis_url=redis_url)
        path = configs.write_gateway_yaml(self.work / f"{name}.yaml", data)
        argv = [*self.wrap, sys.executable, "-m", "gateway", "run", "-c", str(path)]
        tree = tree or self.gateway_tree
        server = Server(name, argv, self.work / f"{name}.log", cwd=tree,
                        ready_url=f"http://127.0.0.1:{port}/_gateway/healthz", ready_port=port,
                        ready_listeners=setup.workers, env={"PYTHONPATH": str(tree)})
        return self.start(server), path

    def gateway_with_store(self, name: str, row: str) -> tuple[Server, Path, list[Server]]:
        """The gateway of a row, with its own redis-server when the row uses the Redis store."""
        extra: list[Server] = []
        redis_url = None
        if SETUPS[row].store == "redis":
            extra.append(self.redis(f"{name}-redis"))
            redis_url = f"redis://127.0.0.1:{extra[0].ready_port}/0"
        gateway, config = self.gateway(name, SETUPS[row], redis_url)
        return gateway, config, extra

    # -- rows ---------------------------------------------------------------------------

    def start_origin(self) -> list[Target]:
        """a: nginx serving the files; every other row proxies to it."""
        self.origin_gzip_port = procs.free_port()
        origin = self.origin = self.nginx("origin", root=self.site.root,
                                          gzip_port=self.origin_gzip_port)
        self.origin_port = _port(origin)
        return [Target("a", self.origin_port, (origin.pid,), material=self._unmarked())]

    def start_nginx_proxy(self) -> list[Target]:
        """b: nginx proxy_pass in front of a."""
        proxy = self.nginx("nginx-proxy", proxy_to=self.origin_port)
        return [Target("b", _port(proxy), (proxy.pid,))]

    def start_caddy(self) -> list[Target]:
        """c: Caddy reverse_proxy, no auth."""
        caddy = self.caddy("caddy")
        return [Target("c", _port(caddy), (caddy.pid,), material=self._unmarked())]

    def start_forward_auth(self) -> list[Target]:
        """d: Caddy asks the gateway's auth route, then proxies to a."""
        gateway, config = self.gateway("gateway-auth", SETUPS["d"])
        caddy = self.caddy("caddy-auth", auth_port=_port(gateway))
        return [Target("d", _port(caddy), (caddy.pid, gateway.pid), _cookie(config),
                       protected=True)]

    def start_bare(self) -> list[Target]:
        """e: the bare aiohttp pass-through proxy."""
        proxy = self.bare_proxy()
        return [Target("e", _port(proxy), (proxy.pid,))]

    def start_gateway(self) -> list[Target]:
        """f and g: one gateway (cookie store); a public page anonymously, and a reader."""
        gateway, config = self.gateway("gateway", SETUPS["g"])
        port, watch = _port(gateway), (gateway.pid,)
        return [Target("f", port, watch, page=configs.PUBLIC_PAGE),
                Target("g", port, watch, _cookie(config), protected=True)]

    def start_redis_gateway(self) -> list[Target]:
        """h: the gateway with the Redis store; its redis-server counts as part of the row."""
        gateway, config, extra = self.gateway_with_store("gateway-redis", "h")
        return [Target("h", _port(gateway), (gateway.pid, *(s.pid for s in extra)),
                       _cookie(config), protected=True)]

    def start_workers(self) -> list[Target]:
        """i: the gateway with two worker processes."""
        gateway, config = self.gateway("gateway-workers", SETUPS["i"])
        return [Target("i", _port(gateway), (gateway.pid,), _cookie(config), protected=True)]

    def start_personal(self) -> list[Target]:
        """j: a reader on the marked Material page, admin pages closed, navigation filtered."""
        gateway, config = self.gateway("gateway-personal", SETUPS["j"])
        return [Target("j", _port(gateway), (gateway.pid,), _cookie(config), protected=True,
                       material=self.rewritten())]

    def start_unfiltered(self) -> list[Target]:
        """k: a reader on the unmarked Material page, nothing closed, no filtering."""
        gateway, config = self.gateway("gateway-unfiltered", SETUPS["k"])
        return [Target("k", _port(gateway), (gateway.pid,), _cookie(config), protected=True,
                       material=self._unmarked())]

    def start_plain_package(self) -> list[Target]:
        """l: as k, the gateway run from the source tree (plain Python, no compiled build)."""
        gateway, config = self.gateway("gateway-plain-package", SETUPS["l"], tree=REPO)
        return [Target("l", _port(gateway), (gateway.pid,), _cookie(config), protected=True,
                       material=self._unmarked())]

    def start_cold(self) -> list[Target]:
        """m: as j, each request from a reader whose group set the gateway has not seen.

        The readers come from a pool larger than any cache of opened sessions or of
        renderings, each with groups of its own, rotated one per request.
        """
        gateway, config = self.gateway("gateway-cold", SETUPS["m"])
        headers = cookies.cookie_headers(config, self.cold_pool, cookies.fresh_groups)
        pool = cookies.write_cookie_file(self.work / "cold-cookies.txt", headers)
        # The check before each run takes the pool's last reader; the rotation starts at 0.
        return [Target("m", _port(gateway), (gateway.pid,), {"Cookie": headers[-1]},
                       protected=True, material=self.rewritten(), cookie_file=pool,
                       cookie_pool=len(headers))]

    def start_lean_floor(self) -> list[Target]:
        """n: page U through a lean asyncio server and the gateway's upstream client."""
        proxy = self.floor_proxy("lean")
        return [Target("n", _port(proxy), (proxy.pid,), material=self._unmarked())]

    def start_aiohttp_floor(self) -> list[Target]:
        """o: page U through aiohttp's low-level server and the gateway's upstream client."""
        proxy = self.floor_proxy("aiohttp")
        return [Target("o", _port(proxy), (proxy.pid,), material=self._unmarked())]

    def _site(self) -> MaterialSite:
        assert self.material is not None, "the Material site is not built"
        return self.material

    def _unmarked(self) -> Expect | None:
        return material.unmarked(self.material) if self.material else None

    def rewritten(self) -> Expect:
        """The marked page as the benchmark's reader must get it through j's gateway."""
        return material.rewritten(self._site(), cookies.FIRST_NAME)


def _port(server: Server) -> int:
    assert server.ready_port is not None
    return server.ready_port


def _cookie(config: Path) -> dict[str, str]:
    return {"Cookie": cookies.cookie_headers(config, 1)[0]}
