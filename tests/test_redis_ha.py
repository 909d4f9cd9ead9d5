"""Redis as platform teams run it: behind Sentinel and as a Cluster, with real redis-server
processes (a master, a replica and a sentinel; three masters with a replica each), and a
failover in the middle of traffic: no session is lost, no reader gets another's page, and
every answer during it is the page or a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient

from gateway.app import build_app
from gateway.config.redisurl import RedisTarget, parse_redis_url
from gateway.errors import Unavailable
from gateway.shared import RedisKeyspace
from tests.helpers import echo_app, jwt_form_login, make_config
from tests.ports import free_port

# Redis topologies, not the request path: run once, on the plain package.
pytestmark = [pytest.mark.slow, pytest.mark.plain_only]

Client = TestClient[web.Request, web.Application]
#: Longest any one request may take (the Redis timeout is 2 s, with one retry).
BOUND = 10.0
#: Longest a failover may take to settle (sentinel down-after and cluster node timeout: 0.5 s).
SETTLE = 30.0
SERVICE = "docs"


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (Debian: apt-get install redis-server)",
                    pytrace=False)
    return found


def cli(port: int, *args: str) -> str:
    """One redis-cli command against 127.0.0.1:port; its output."""
    result = subprocess.run([binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    return result.stdout


def info(port: int, section: str) -> dict[str, str]:
    with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
        lines = cli(port, "INFO", section).splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)
    return {}


def wait_for(check: Any, what: str, timeout: float = SETTLE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


class Processes:
    """redis-server processes in one temporary folder, all stopped at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, port: int, *args: str, config: str | None = None) -> None:
        folder = self.directory / str(port)
        folder.mkdir()
        command = [binary("redis-server")]
        if config is not None:
            (folder / "redis.conf").write_text(config)
            command.append(str(folder / "redis.conf"))
        command += ["--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(folder), *args]
        self.running[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.STDOUT)

    def answering(self, *ports: int) -> None:
        for port in ports:
            wait_for(lambda p=port: self.running[p].poll() is None and
                     info(p, "server") != {}, f"redis-server on {port}")

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """A master, its replica, and one sentinel (quorum 1) watching them as ``docs``."""
    processes = Processes(tmp_path_factory.mktemp("sentinel"))
    master, replica, watcher = free_port(), free_port(), free_port()
    fast = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
    try:
        processes.start(master, *fast)
        processes.start(replica, *fast, "--replicaof", "127.0.0.1", str(master))
        processes.start(watcher, "--sentinel", config=(
            f"sentinel monitor {SERVICE} 127.0.0.1 {master} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 500\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"))
        processes.answering(master, replica, watcher)
        wait_for(lambda: info(replica, "replication").get("master_link_status") == "up",
                 "the replica's sync")
        def found() -> bool:
            words = cli(watcher, "SENTINEL", "REPLICAS", SERVICE).split()
            return f"127.0.0.1:{replica}" in words and words[words.index("flags") + 1] == "slave"

        wait_for(found, "the sentinel finding the replica")
        yield {"master": master, "replica": replica, "sentinel": watcher,
               "replica_pid": processes.running[replica].pid}
    finally:
        processes.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """Three masters with a replica each, created by redis-cli --cluster create."""
    processes = Processes(tmp_path_factory.mktemp("cluster"))
    ports = [free_port() for _ in range(6)]
    try:
        for port in ports:
            # The bus port is its own free port (port + 10000 may not exist).
            processes.start(port, "--cluster-enabled", "yes", "--cluster-node-timeout", "500",
                            "--cluster-config-file", "nodes.conf",
                            "--cluster-port", str(free_port()))
        processes.answering(*ports)
        subprocess.run([binary("redis-cli"), "--cluster", "create",
                        *(f"127.0.0.1:{port}" for port in ports), "--cluster-replicas", "1",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for port in ports:
            wait_for(lambda p=port: info(p, "cluster") != {} and "cluster_state:ok" in
                     cli(p, "CLUSTER", "INFO"), f"cluster node {port}")
        wait_for(lambda: all(info(p, "replication").get("master_link_status") == "up"
                             for p in ports if info(p, "replication").get("role") == "slave"),
                 "the replicas' sync")
        yield ports
    finally:
        processes.stop()


def sentinel_url(ports: dict[str, int]) -> str:
    # A sentinel that is not there comes first: the next one is asked.
    return f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{ports['sentinel']}/{SERVICE}/0"


def cluster_url(ports: list[int]) -> str:
    return f"redis+cluster://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"


# -- the URL ---------------------------------------------------------------------------------


def test_the_readme_urls_are_read_as_it_says() -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("### Redis behind Sentinel or in a Cluster"):]
    rows = dict(re.findall(r"^\| (one server|Sentinel|Cluster) \| `([^`]+)`", section, re.M))
    server, sentinel, cluster = rows["one server"], rows["Sentinel"], rows["Cluster"]
    assert parse_redis_url(server).kind == "server"
    target = parse_redis_url(sentinel)
    assert (target.kind, target.hosts, target.service, target.db, target.password) == (
        "sentinel", (("sentinel-0", 26379), ("sentinel-1", 26379)), "mymaster", 0, "PASSWORD")
    target = parse_redis_url(cluster)
    assert (target.kind, target.hosts, target.password) == (
        "cluster", (("redis-0", 6379), ("redis-1", 6379)), "PASSWORD")
    for url in rows.values():
        config = make_config(session={"store": "redis", "redis_url": url})
        assert config.session.redis_url == url


def test_urls_name_a_server_a_sentinel_master_or_a_cluster() -> None:
    assert parse_redis_url("rediss://:pw@cache:6380/2") == RedisTarget(
        "server", "rediss://:pw@cache:6380/2", tls=True)
    target = parse_redis_url("rediss+sentinel://app:p%40ss@s1:26380,s2,[::1]:26381/main/3"
                             "?sentinel_password=sp")
    assert (target.kind, target.hosts, target.service, target.db, target.tls) == (
        "sentinel", (("s1", 26380), ("s2", 26379), ("::1", 26381)), "main", 3, True)
    assert (target.username, target.password, target.sentinel_password) == ("app", "p@ss", "sp")
    assert "p@ss" not in repr(target) and "sp'" not in repr(target)
    target = parse_redis_url("redis+cluster://:pw@n1:7000,n2/0")
    assert (target.kind, target.hosts, target.db, target.password) == (
        "cluster", (("n1", 7000), ("n2", 6379)), 0, "pw")


# -- the keyspace on each topology -------------------------------------------------------------


async def exercise(keyspace: RedisKeyspace) -> None:
    """The keyspace's whole contract: first use, put, replace (two keys), delete, lock."""
    tag = f"{time.monotonic_ns()}"
    assert await keyspace.first_use(f"dg:jti:{tag}", 5)
    assert not await keyspace.first_use(f"dg:jti:{tag}", 5)
    # Many keys, so that in a Cluster they land on every master and replace across slots.
    for n in range(12):
        await keyspace.put(f"dg:s:{tag}-{n}", b"old", 5)
        await keyspace.put(f"dg:s:{tag}-new-{n}", b"new", 5, replacing=f"dg:s:{tag}-{n}")
        assert await keyspace.get(f"dg:s:{tag}-{n}") is None
        assert await keyspace.get(f"dg:s:{tag}-new-{n}") == b"new"
        await keyspace.delete(f"dg:s:{tag}-new-{n}")
        assert await keyspace.get(f"dg:s:{tag}-new-{n}") is None
    async with keyspace.lock(f"dg:lock:{tag}", 5) as held:
        assert held
        async with keyspace.lock(f"dg:lock:{tag}", 5) as also:
            assert not also
    async with keyspace.lock(f"dg:lock:{tag}", 5) as again:
        assert again
    assert await keyspace.ping()


async def test_the_keyspace_behind_sentinel(sentinel: dict[str, int]) -> None:
    keyspace = RedisKeyspace(sentinel_url(sentinel))
    try:
        await exercise(keyspace)
        # Every write reached the replica before it counted.
        await keyspace.put("dg:s:copied", b"x", 30)
        assert cli(sentinel["replica"], "GET", "dg:s:copied").strip() == "x"
    finally:
        await keyspace.close()


async def test_behind_sentinel_a_write_no_replica_confirms_is_refused(
        sentinel: dict[str, int]) -> None:
    keyspace = RedisKeyspace(sentinel_url(sentinel), timeout=1.0)
    replica = sentinel["replica"]
    try:
        await keyspace.put("dg:s:confirmed", b"x", 30)
        os.kill(sentinel["replica_pid"], signal.SIGSTOP)  # frozen: it confirms nothing
        try:
            with pytest.raises(Unavailable):
                await keyspace.put("dg:s:unconfirmed", b"x", 30)
            with pytest.raises(Unavailable):
                await keyspace.first_use("dg:jti:unconfirmed", 30)
            with pytest.raises(Unavailable):
                await keyspace.delete("dg:s:confirmed")
            assert await keyspace.get("dg:s:confirmed") is None  # reads never wait
        finally:
            os.kill(sentinel["replica_pid"], signal.SIGCONT)
        # Once the replica answers again, writes count again.
        await keyspace.put("dg:s:confirmed", b"y", 30)
        assert cli(replica, "GET", "dg:s:confirmed").strip() == "y"
    finally:
        await keyspace.close()


async def test_the_keyspace_on_a_cluster(cluster: list[int]) -> None:
    keyspace = RedisKeyspace(cluster_url(cluster))
    try:
        await exercise(keyspace)
        # The keys really are spread over the masters.
        masters = [p for p in cluster if info(p, "replication").get("role") == "master"]
        assert len(masters) == 3
        tag = time.monotonic_ns()
        for n in range(30):
            await keyspace.put(f"dg:s:{tag}-{n}", b"x", 30)
        holders = [p for p in masters if int(cli(p, "DBSIZE").strip() or 0) > 0]
        assert len(holders) == 3
    finally:
        await keyspace.close()


# -- the gateway through a failover ------------------------------------------------------------


async def login(client: Client, sub: str) -> tuple[int, str | None]:
    return await jwt_form_login(client, sub, BOUND)


async def read(client: Client, cookie: str) -> tuple[int, str | None]:
    """A protected page's status, and whom the docs server was told it is for."""
    async def go() -> tuple[int, str | None]:
        async with client.get("/guide", headers={"Cookie": f"docs_session={cookie}"},
                              allow_redirects=False) as response:
            if response.status != 200:
                await response.read()
                return response.status, None
            headers = dict((await response.json())["headers"])
            claims = jwt.decode(headers["X-Gateway-Assertion"],
                                options={"verify_signature": False})
            return 200, str(claims["sub"])

    return await asyncio.wait_for(go(), BOUND)


async def through_failover(client: Client, failover: Any, settled: Any) -> None:
    """Readers log in, then read and log in while ``failover`` runs until ``settled``; every
    answer is theirs or a 503, and afterwards every session that was given out works."""
    readers: dict[str, str] = {}
    for n in range(12):
        code, cookie = await login(client, f"reader{n}")
        assert code == 303 and cookie
        readers[cookie] = f"reader{n}"
    seen: list[tuple[int, str | None, str]] = []
    logins: list[tuple[int, str | None, str]] = []
    done = asyncio.Event()

    async def reading(cookies: list[str]) -> None:
        while not done.is_set():
            for cookie in cookies:
                status, sub = await read(client, cookie)
                seen.append((status, sub, readers[cookie]))

    async def logging_in() -> None:
        n = 0
        while not done.is_set():
            n += 1
            code, cookie = await login(client, f"late{n}")
            logins.append((code, cookie, f"late{n}"))
            await asyncio.sleep(0.05)

    cookies = list(readers)
    traffic = [asyncio.create_task(reading(cookies[i::4])) for i in range(4)]
    traffic.append(asyncio.create_task(logging_in()))
    await asyncio.sleep(0.3)
    before = len(seen)
    await asyncio.to_thread(failover)
    deadline = time.monotonic() + SETTLE
    while not await asyncio.to_thread(settled):
        assert time.monotonic() < deadline, "the failover did not settle"
        await asyncio.sleep(0.1)
    # Traffic keeps going until the new master has answered a few rounds.
    await asyncio.sleep(1.0)
    done.set()
    await asyncio.gather(*traffic)
    assert before > 0 and len(seen) > before
    # Nobody ever got someone else's page, and nothing but the page or a 503 was answered.
    assert {status for status, _, _ in seen} <= {200, 503}
    assert all(sub == owner for status, sub, owner in seen if status == 200)
    assert {code for code, _, _ in logins} <= {303, 503}
    # Every session given out, before or during the failover, works afterwards.
    given = dict(readers)
    given.update({cookie: sub for code, cookie, sub in logins if code == 303 and cookie})
    for cookie, owner in given.items():
        for _attempt in range(50):
            status, sub = await read(client, cookie)
            if status != 503:
                break
            await asyncio.sleep(0.1)
        assert (status, sub) == (200, owner)
    # A login writes, and a write waits for the replica: just after a failover the demoted
    # master may still be catching up, and the login is refused (503) until it has.
    for _attempt in range(50):
        code, cookie = await login(client, "after")
        if code != 503:
            break
        await asyncio.sleep(0.1)
    assert code == 303 and cookie and await read(client, cookie) == (200, "after")


async def gateway_on(url: str, aiohttp_server: Any, aiohttp_client: Any) -> Client:
    upstream = await aiohttp_server(echo_app())
    config = make_config(str(upstream.make_url("")).rstrip("/"), session={
        "store": "redis", "redis_url": url, "secrets": ["h" * 40]},
        server={"login_rate_limit": 100_000})
    # No cookie jar: each request carries exactly the cookie it names, logins run alongside.
    client: Client = await aiohttp_client(await build_app(config), cookie_jar=DummyCookieJar())
    return client


async def test_sentinel_failover_in_the_middle_of_traffic(
        sentinel: dict[str, int], aiohttp_server: Any, aiohttp_client: Any) -> None:
    client = await gateway_on(sentinel_url(sentinel), aiohttp_server, aiohttp_client)
    old, new = sentinel["master"], sentinel["replica"]

    def failover() -> None:
        assert cli(sentinel["sentinel"], "SENTINEL", "FAILOVER", SERVICE).strip() == "OK"

    def settled() -> bool:
        # The sentinel names the replica, which is master now, and the old master follows it.
        named = cli(sentinel["sentinel"], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return named.split() == ["127.0.0.1", str(new)] \
            and info(new, "replication").get("role") == "master" \
            and info(old, "replication").get("master_port") == str(new) \
            and info(old, "replication").get("master_link_status") == "up"

    await through_failover(client, failover, settled)


async def test_cluster_failover_in_the_middle_of_traffic(
        cluster: list[int], aiohttp_server: Any, aiohttp_client: Any) -> None:
    client = await gateway_on(cluster_url(cluster), aiohttp_server, aiohttp_client)
    # The replica of the first master takes over its slots (CLUSTER FAILOVER: the coordinated
    # failover a managed service runs for maintenance).
    masters = [p for p in cluster if info(p, "replication").get("role") == "master"]
    old = masters[0]
    (new,) = [p for p in cluster if info(p, "replication").get("role") == "slave"
              and info(p, "replication").get("master_port") == str(old)]

    def failover() -> None:
        assert cli(new, "CLUSTER", "FAILOVER").strip() == "OK"

    def settled() -> bool:
        return info(new, "replication").get("role") == "master" \
            and info(old, "replication").get("master_port") == str(new) \
            and all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in cluster)

    await through_failover(client, failover, settled)
