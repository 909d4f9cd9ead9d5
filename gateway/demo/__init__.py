"""``docs-gateway demo``: a sample docs site, a demo login and the gateway, on 127.0.0.1.

Everything runs in one process and one event loop, with keys and secrets made at start
and thrown away at exit: the gateway on ``--port``, the demo dashboard on the next port,
and (for ``--method oauth``) a demo OpenID provider on the one after (free ports when
those are taken).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import keys
from gateway.config.load import build_config
from gateway.config.model import Config, LoggingConfig
from gateway.crypto import random_token
from gateway.demo.api import API_PATH, Api
from gateway.demo.dashboard import COOKIE, INFO_API_PATH, Dashboard
from gateway.logs import AccessLogger, setup_logging

METHODS = ("jwt", "shared_session", "oauth")
HOST = "127.0.0.1"
ROUTE_BASE = "/_gateway"


class DemoError(Exception):
    """The demo cannot start; the message is one line for the user."""


@dataclass
class Demo:
    """A running demo: the docs URL, where readers log in, and how to stop it all."""

    url: str
    method: str
    login_url: str
    site: Path
    _runners: list[web.BaseRunner] = field(default_factory=list, repr=False)
    _folder: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    async def stop(self) -> None:
        """Stop the servers (gateway first) and remove the demo's keys."""
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


async def start_demo(port: int = 8080, method: str = "jwt") -> Demo:
    """Start the whole demo on 127.0.0.1; ``port`` 0 picks free ports for everything."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    gateway_sock = _listen(port)
    # The dashboard on the next port, the provider on the one after, as the help says.
    offset = 2 if method == "oauth" else 1
    socks = [gateway_sock]
    folder = tempfile.TemporaryDirectory(prefix="docs-gateway-demo-")
    demo: Demo | None = None
    try:
        socks.append(_listen_near(port + offset if port else 0))
        url = _url(gateway_sock)
        tmp = Path(folder.name)
        demo = Demo(url=url, method=method, login_url=_url(socks[1]), site=site_folder(tmp),
                    _folder=folder)
        data = await _start_login_side(demo, socks[1], tmp)
        config = build_config(demo_config(method, url, demo.site, tmp, data), env={}, base=tmp)
        await _start_gateway(demo, config, gateway_sock)
    except BaseException:
        # Servers first: they still hold the sockets they were given.
        if demo is not None:
            await demo.stop()
        else:
            folder.cleanup()
        for sock in socks:
            sock.close()
        raise
    return demo


async def _start_login_side(demo: Demo, sock: socket.socket, tmp: Path) -> dict[str, Any]:
    """Start where readers log in, with the demo API beside it; return the handshake section
    that points at it."""
    login_url = demo.login_url
    api_url = login_url + API_PATH
    if demo.method == "oauth":
        from gateway.demo.idp import CLIENT_ID, SCOPES, DemoProvider

        provider = DemoProvider(login_url, f"{demo.url}{ROUTE_BASE}/callback", demo.url + "/",
                                api_url)
        await _serve(demo, _with_api(provider.app(), demo), sock)
        return {"issuer": login_url, "client_id": CLIENT_ID, "scopes": list(SCOPES),
                "info_api_url": f"{login_url}/userinfo"}
    if demo.method == "jwt":
        login_key = Ed25519PrivateKey.generate()
        _, public = keys.write_key_files(login_key, tmp / "login")
        dashboard = Dashboard("jwt", demo.url, ROUTE_BASE, login_key, api_url)
        await _serve(demo, _with_api(dashboard.app(), demo), sock)
        return {"login_urls": [{"name": "Demo dashboard", "url": f"{login_url}/login"}],
                "public_keys": [str(public)], "algorithms": ["EdDSA"]}
    dashboard = Dashboard("shared_session", demo.url, ROUTE_BASE, api_url=api_url)
    await _serve(demo, _with_api(dashboard.app(), demo), sock)
    return {"info_api_url": login_url + INFO_API_PATH, "cookies": [COOKIE],
            "login_url": f"{login_url}/login", "cache_ttl": "5s",
            "logout_url": f"{login_url}/logout?{urlencode({'redirect': demo.url + '/'})}"}


def _with_api(app: web.Application, demo: Demo) -> web.Application:
    """``app`` answering the demo API too (for the docs' API playground)."""
    Api(demo.url).add_to(app)
    return app


async def _start_gateway(demo: Demo, config: Config, sock: socket.socket) -> None:
    from gateway.app import build_app
    from gateway.server import DocsRunner

    app = await build_app(config)
    runner = DocsRunner(app, access_log_class=AccessLogger,
                        access_log=logging.getLogger("gateway.access"), shutdown_timeout=5.0)
    await runner.setup()
    demo._runners.append(runner)
    await web.SockSite(runner, sock).start()


async def _serve(demo: Demo, app: web.Application, sock: socket.socket) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    demo._runners.append(runner)
    await web.SockSite(runner, sock).start()


def demo_config(method: str, url: str, site: Path, tmp: Path,
                handshake: dict[str, Any]) -> dict[str, Any]:
    """The gateway's configuration for the demo, as the YAML file would hold it."""
    assertion_key, _ = keys.write_key_files(keys.generate_private_key("EdDSA"), tmp / "gateway")
    return {
        "server": {"listen": url.removeprefix("http://"), "public_url": url,
                   "prefix": ROUTE_BASE},
        "upstream": {"root": str(site)},
        "mode": "authenticate",
        "handshake": {"method": method, method: handshake},
        "session": {"secrets": [random_token(48)], "max_age": "12h"},
        "identity": {"assertion": {"private_key": str(assertion_key), "algorithm": "EdDSA"}},
        # The landing page is public by config and by its own metadata; the admin page is
        # gated only by its metadata, so the demo shows both ways.
        "access": {"public": ["/", "/index.html", "/assets/**", "/favicon.ico"], "rules": []},
        # The gateway's own pages (a failed login, a bad request) in the sample site's brand.
        "brand": {"name": "Acme Cloud docs", "logo": "/assets/favicon.svg",
                  "colors": {"accent": "#3b5bdb", "text": "#1d2330", "background": "#f7f8fb"}},
    }


def site_folder(tmp: Path) -> Path:
    """The packaged sample site as a folder (copied out when the package is not on disk)."""
    source = resources.files("gateway.demo").joinpath("site")
    if isinstance(source, Path) and source.is_dir():
        return source
    target = tmp / "site"
    _copy_tree(source, target)
    return target


def _copy_tree(source: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            _copy_tree(entry, target / entry.name)
        else:
            with entry.open("rb") as src, (target / entry.name).open("wb") as dst:
                shutil.copyfileobj(src, dst)


def _listen(port: int) -> socket.socket:
    """A listening-ready socket on 127.0.0.1:port; DemoError naming the port when taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "invalid port"
        raise DemoError(f"cannot listen on {HOST}:{port}: {reason} "
                        "(pick another port with --port)") from None
    return sock


def _listen_near(port: int) -> socket.socket:
    """``port`` when it is free, any free port otherwise."""
    try:
        return _listen(port)
    except DemoError:
        return _listen(0)


def _url(sock: socket.socket) -> str:
    return f"http://{HOST}:{sock.getsockname()[1]}"


def instructions(demo: Demo) -> str:
    """What to open and what to try, a few lines."""
    where = {"jwt": "on the demo dashboard", "shared_session": "on the demo dashboard",
             "oauth": "at the demo OpenID provider"}[demo.method]
    return "\n".join([
        f"docs-gateway demo ({demo.method} login) is running: open {demo.url}/",
        f"  Log in as ada (admin) or grace (reader) {where} ({demo.login_url}).",
        "  Then open /guide/ (greets you by name), /api/ (Swagger UI with your own key and",
        "  server: try the demo API) and /admin/ (ada only: grace gets a 404).",
        "  Log out with the button at the top of any page. Ctrl-C stops the demo.",
    ])


async def _run(port: int, method: str) -> int:
    demo = await start_demo(port, method)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print(instructions(demo), flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await demo.stop()
    return 0


def main(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C or SIGTERM (exit 0); a port in use is one line, exit 1."""
    method = getattr(args, "method", "jwt") or "jwt"
    verbose = bool(getattr(args, "verbose", False))
    # Quiet by default: the demo prints its own few lines; --verbose shows the gateway's logs.
    setup_logging(LoggingConfig(level="debug" if verbose else "warning", format="text"))
    try:
        return asyncio.run(_run(int(args.port), method))
    except DemoError as exc:
        print(f"docs-gateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 0

