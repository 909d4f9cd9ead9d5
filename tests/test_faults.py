"""Dependencies dying under load: the upstream, the Info API, the IdP's token endpoint, Redis.

Each test runs about 200 requests concurrently across an outage: some before, a wave in
flight while the dependency is killed, some during, some after it comes back on the same
port. Every request gets its documented status (200, or 502/503/504 during the outage),
every one is bounded with asyncio.wait_for, the same session cookie works afterwards, and
the gateway recovers without being restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import build_app
from tests.attack import app_of
from tests.authserver import TestIdP
from tests.dashboard import INFO_API_PATH, Dashboard
from tests.helpers import (
    echo_app,
    jwt_form_login,
    make_config,
    make_user,
    session_cookies,
)
from tests.ports import free_port
from tests.test_oauth import Browser

Client = TestClient[web.Request, web.Application]
#: Longest any one request may take: the dependency timeouts below are 1 s.
BOUND = 6.0
OUTAGE = {502, 503, 504}


async def serve(app: web.Application, port: int) -> web.AppRunner:
    """Serve an app on a fixed loopback port (so it can come back on the same one)."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    return runner


async def status(client: Client, path: str, cookie: str | None = None) -> int:
    """One bounded request's status."""
    headers = {"Cookie": cookie} if cookie else {}

    async def go() -> int:
        async with client.get(path, headers=headers, allow_redirects=False) as response:
            await response.read()
            return response.status

    return await asyncio.wait_for(go(), BOUND)


async def burst(n: int, request: Callable[[], Awaitable[int]]) -> list[int]:
    return list(await asyncio.gather(*(request() for _ in range(n))))


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` until it holds (a dependency coming back), bounded."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "did not recover in time"
        await asyncio.sleep(0.02)


def cookie_of(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


# -- the upstream -------------------------------------------------------------------------


async def test_upstream_killed_and_restarted(aiohttp_client: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    runner = await serve(echo_app(), port)
    config = make_config(url, upstream={"url": url, "timeout": "1s", "connect_timeout": "1s"},
                         access={"public": ["/public/**"]})
    client: Client = await aiohttp_client(await build_app(config))
    cookie = cookie_of(await session_cookies(app_of(client), make_user("ada")))

    async def docs() -> int:
        return await status(client, "/guide", cookie)

    try:
        assert await burst(50, docs) == [200] * 50
        in_flight = [asyncio.create_task(docs()) for _ in range(30)]
        await runner.cleanup()
        during = await burst(50, docs) + await burst(10, lambda: status(client, "/public/x"))
        assert set(during) == {502}
        assert set(await asyncio.gather(*in_flight)) <= {200, 502}
        # Readiness says so too, and liveness does not.
        assert await status(client, "/_gateway/readyz") == 503
        assert await status(client, "/_gateway/healthz") == 200
        runner = await serve(echo_app(), port)
        # Pooled connections died with the old process: the first request must not fail.
        after = await burst(58, docs)
        assert after == [200] * 58
        assert await status(client, "/_gateway/readyz") == 200
    finally:
        await runner.cleanup()


async def test_a_hung_upstream_is_504_and_recovers(aiohttp_client: Any) -> None:
    hang = asyncio.Event()
    hang.set()

    async def gate(request: web.Request) -> web.Response:
        await asyncio.wait_for(hang.wait(), 30)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", gate)
    port = free_port()
    runner = await serve(app, port)
    url = f"http://127.0.0.1:{port}"
    config = make_config(url, upstream={"url": url, "timeout": "1s"},
                         access={"public": ["/**"]})
    client: Client = await aiohttp_client(await build_app(config))
    try:
        assert await burst(20, lambda: status(client, "/a")) == [200] * 20
        hang.clear()
        assert await burst(40, lambda: status(client, "/a")) == [504] * 40
        hang.set()
        assert await burst(40, lambda: status(client, "/a")) == [200] * 40
    finally:
        hang.set()
        await runner.cleanup()


# -- the Info API (shared_session) ---------------------------------------------------------


async def test_info_api_killed_and_restarted(aiohttp_server: Any, aiohttp_client: Any) -> None:
    upstream = await aiohttp_server(echo_app())
    port = free_port()
    dashboard = Dashboard()
    runner = await dashboard.serve(port=port)
    config = make_config(str(upstream.make_url("")).rstrip("/"), handshake={
        "method": "shared_session", "shared_session": {
            "info_api_url": f"http://127.0.0.1:{port}{INFO_API_PATH}", "cookies": ["session"],
            "login_url": f"http://127.0.0.1:{port}/login", "timeout": "1s", "cache_ttl": "0s"}},
        access={"public": ["/public/**"]})
    client: Client = await aiohttp_client(await build_app(config))
    cookie = f"session={dashboard.start_session('ada')}"

    async def docs() -> int:
        return await status(client, "/guide", cookie)

    try:
        assert await burst(50, docs) == [200] * 50
        in_flight = [asyncio.create_task(docs()) for _ in range(30)]
        await runner.cleanup()
        during = await burst(50, docs)
        public = await burst(10, lambda: status(client, "/public/x", cookie))
        assert set(during) == {503}
        assert public == [200] * 10  # anonymous there, as documented
        assert set(await asyncio.gather(*in_flight)) <= {200, 503}
        # The dashboard comes back with its sessions (they live in its database).
        revived = Dashboard()
        revived.sessions = dashboard.sessions
        runner = await revived.serve(port=port)
        after = await burst(60, docs)
        assert after == [200] * 60
    finally:
        await runner.cleanup()


# -- the IdP's token endpoint (oauth) -------------------------------------------------------


async def test_idp_killed_and_restarted(aiohttp_server: Any, aiohttp_client: Any) -> None:
    upstream = await aiohttp_server(echo_app())
    port = free_port()
    idp = TestIdP()
    idp.issuer = f"http://127.0.0.1:{port}"
    idp.add_client("docs", "http://docs.test/_gateway/callback")
    idp.login_as("ada", email="ada@example.com")
    runner = await serve(idp.app(), port)
    config = make_config(str(upstream.make_url("")).rstrip("/"), handshake={
        "method": "oauth", "oauth": {"issuer": idp.issuer, "client_id": "docs", "timeout": "1s"}},
        # Every browser here shares one address; the per-client login limit is not under test.
        server={"listen": "127.0.0.1:0", "public_url": "http://docs.test", "login_rate_limit": 0})
    gateway: Client = await aiohttp_client(await build_app(config))
    browsers: list[Browser] = []

    def browser() -> Browser:
        # Each browser its own cookie jar (its own client on the same gateway).
        made = Browser(TestClient(gateway.server))
        browsers.append(made)
        return made

    try:
        reader = Browser(gateway)
        browsers.append(reader)
        assert (await reader.login()).status == 303
        cookie = cookie_of({k: v for k, v in reader.cookies().items() if "_state_" not in k})

        async def docs() -> int:
            return await status(gateway, "/guide", cookie)

        pending: list[tuple[Browser, str]] = []
        for _ in range(10):
            tab = browser()
            for _ in range(2):
                pending.append((tab, await tab.authorize(await tab.start())))
        assert await burst(40, docs) == [200] * 40
        await runner.cleanup()

        async def finish(tab: Browser, callback: str) -> int:
            return (await asyncio.wait_for(tab.get(callback), BOUND)).status

        callbacks, reading = await asyncio.gather(
            asyncio.gather(*(finish(tab, url) for tab, url in pending)), burst(60, docs))
        assert set(callbacks) == {502}  # the token endpoint cannot be reached
        assert reading == [200] * 60  # sessions do not need the IdP
        starts = [(await asyncio.wait_for(tab.get("/_gateway/login?redirect=/x"), BOUND)).status
                  for tab, _ in pending[::4]]
        assert starts == [302] * 5  # starting a login only redirects
        runner = await serve(idp.app(), port)
        again = await asyncio.gather(*(asyncio.wait_for(tab.login(), BOUND)
                                       for tab in browsers[1:]))
        assert [hop.status for hop in again] == [303] * 10
        assert await burst(40, docs) == [200] * 40
    finally:
        idp.release()
        for made in browsers:
            await made.close()
            if made.gateway is not gateway:
                await made.gateway.session.close()  # the server is the shared gateway's
        await runner.cleanup()


# -- Redis (session store and replay cache) ----------------------------------------------


class PersistentRedis:
    """A redis-server that writes every change to its AOF, so a killed one comes back whole."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)",
                        pytrace=False)
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not self.answers():
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.01)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[PersistentRedis]:
    server = PersistentRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def jwt_login(client: Client, sub: str) -> tuple[int, str | None]:
    return await jwt_form_login(client, sub, BOUND)


async def test_redis_killed_and_restarted(aiohttp_server: Any, aiohttp_client: Any,
                                          persistent_redis: PersistentRedis) -> None:
    upstream = await aiohttp_server(echo_app())
    config = make_config(str(upstream.make_url("")).rstrip("/"), session={
        "store": "redis", "redis_url": persistent_redis.url, "secrets": ["r" * 40]},
        access={"public": ["/public/**"]},
        server={"forward_auth": "nginx", "trusted_proxies": ["127.0.0.1/32"]})
    client: Client = await aiohttp_client(await build_app(config))
    code, value = await jwt_login(client, "ada")
    assert code == 303 and value
    client.session.cookie_jar.clear()
    cookie = f"docs_session={value}"

    async def docs() -> int:
        return await status(client, "/guide", cookie)

    assert await burst(40, docs) == [200] * 40
    assert await readiness(client) == (200, True)
    in_flight = [asyncio.create_task(docs()) for _ in range(20)]
    persistent_redis.kill()
    during = await burst(50, docs)
    public = await burst(10, lambda: status(client, "/public/x", cookie))
    # A proxy asking about a protected page gets 503 too, never a 200 without the check.
    assert await asked(client, "/guide", cookie) == 503
    assert await asked(client, "/public/x", cookie) == 200
    logins = await asyncio.gather(*(jwt_login(client, f"new{i}") for i in range(10)))
    assert set(during) == {503}
    assert public == [200] * 10
    assert {code for code, _ in logins} == {503} and not any(v for _, v in logins)
    assert set(await asyncio.gather(*in_flight)) <= {200, 503}
    # The pod stays in the Service: public pages keep serving, and readiness says why the
    # protected ones answer 503.
    assert await readiness(client) == (200, False)
    persistent_redis.start()
    await until(lambda: _store_back(client))
    after = await burst(50, docs)
    assert after == [200] * 50  # the same cookie: the session survived the restart
    assert await asked(client, "/guide", cookie) == 200
    code, fresh = await jwt_login(client, "bea")
    assert code == 303 and fresh and fresh != value


async def asked(client: Client, page: str, cookie: str) -> int:
    """The forward-auth answer about ``page`` (nginx sets X-Original-URI)."""
    async def go() -> int:
        async with client.get("/_gateway/auth", headers={
                "Cookie": cookie, "X-Original-URI": page}) as response:
            return response.status

    return await asyncio.wait_for(go(), BOUND)


async def readiness(client: Client) -> tuple[int, bool]:
    """readyz's status and whether it found the session store."""
    async def go() -> tuple[int, bool]:
        async with client.get("/_gateway/readyz") as response:
            return response.status, (await response.json())["session_store"] is True

    return await asyncio.wait_for(go(), BOUND)


async def _store_back(client: Client) -> bool:
    with contextlib.suppress(TimeoutError):
        return await readiness(client) == (200, True)
    return False
