"""Shared fixtures: real servers on 127.0.0.1, each in its own section."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway import pipeline
from gateway.app import build_app
from tests import dockerfile
from tests.helpers import (
    Client,
    GatewayFactory,
    GatewayTestServer,
    echo_app,
    is_gateway_app,
    make_config,
    served,
)
from tests.ports import free_port

# ---------------------------------------------------------------------------
# Redis: one real redis-server for the test session, which fault tests may stop,
# pause and start again on the same port.


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server process on a fixed loopback port, without persistence."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch redis-server on ``self.port`` and return once it answers PING."""
        if self.process is not None:
            return
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while not _redis_answers(self.port):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"redis-server exited with {code} on port {self.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Kill the process (its data is gone: nothing is persisted)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait()
        self.process = None

    def pause(self) -> None:
        """Freeze the process: connections stay open but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo ``pause``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1; fails (does not skip) when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; install it (Debian: apt-get install "
                    "redis-server) to run the session store tests", pytrace=False)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()

# End of the Redis section.
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# A real headless Chromium (Debian's package), driven by Playwright.


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Chromium for one test; skips with a reason only when it is not installed."""
    from tests.helpers import chromium

    async with chromium() as launched:
        yield launched


# ---------------------------------------------------------------------------
# The gateway's apps are served by ``DocsRunner``, as in production: a test that hands
# ``build_app``'s app to aiohttp_client or aiohttp_server gets that server, never
# aiohttp's router (which has no routes in a gateway app, and would answer 404).


@pytest.fixture
def aiohttp_client(aiohttp_client: Any) -> Any:
    async def go(param: Any, **kwargs: Any) -> Any:
        return await aiohttp_client(served(param), **kwargs)

    return go


@pytest.fixture
async def aiohttp_server(aiohttp_server: Any) -> AsyncIterator[Any]:
    started: list[GatewayTestServer] = []

    async def go(app: Any, *, host: str = "127.0.0.1", port: int | None = None,
                 **kwargs: Any) -> Any:
        if not is_gateway_app(app):
            return await aiohttp_server(app, host=host, port=port, **kwargs)
        server = GatewayTestServer(app, host=host, port=port)
        await server.start_server(**kwargs)
        started.append(server)
        return server

    yield go
    while started:
        await started.pop().close()


# ---------------------------------------------------------------------------
# The echo upstream and a gateway in front of it. A module whose gateway needs more than
# sections (another upstream, defaults, a wrapper around the client) overrides
# ``upstream_url`` or ``gateway`` with a fixture that calls these, rather than copying them;
# a test or fixture that starts its own upstream per gateway passes ``upstream_url=``.


@pytest.fixture
async def upstream(aiohttp_server: Any) -> TestServer:
    """The echo upstream of ``tests.helpers.echo_app`` on 127.0.0.1."""
    server: TestServer = await aiohttp_server(echo_app())
    return server


@pytest.fixture
def upstream_url(upstream: TestServer) -> str:
    """The URL ``gateway`` proxies to: the echo upstream's, unless a module overrides it."""
    return str(upstream.make_url("")).rstrip("/")


@pytest.fixture
def gateway(aiohttp_client: Any, upstream_url: str) -> GatewayFactory:
    """A factory: ``await gateway(**sections)`` is a test client for
    ``build_app(make_config(upstream_url, **sections))``, served as ``docs-gateway run``
    serves it. A section given as a dict is merged into make_config's own (so
    ``upstream={"timeout": "1s"}`` keeps the URL, ``upstream={"url": ...}`` replaces it).

    Two keywords are not sections: ``upstream_url=`` puts this one gateway in front of
    another upstream (one a test starts itself, nginx; None for a built folder given as
    ``upstream={"root": ...}``), and ``base=`` is the folder relative paths in the config
    are read from."""
    default_url = upstream_url

    async def start(*, upstream_url: str | None = default_url, base: Path | None = None,
                    **sections: Any) -> Client:
        config = make_config(upstream_url, base=base, **sections)
        client: Client = await aiohttp_client(await build_app(config))
        return client

    return start


# ---------------------------------------------------------------------------
# The slow marker: tests that start a browser, nginx or Caddy, build a site with a real
# generator, run the command line or the benchmark in processes of their own, or search
# with hypothesis. `scripts/test --fast` leaves them out for a quick inner loop; the whole
# suite (what CI runs) keeps them.

SLOW_MODULES = frozenset({
    "test_attack_denied", "test_attack_location", "test_attack_pages", "test_bench_smoke",
    "test_cli", "test_demo", "test_deploy", "test_forward_auth", "test_mkdocs_site",
    "test_navigation_sites",
    "test_properties", "test_server",
})
SLOW_FIXTURES = frozenset({"browser"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts real browsers, proxies or processes")
    config.addinivalue_line("markers", "builds_package: builds the package from the source "
                            "tree itself; skipped when the tests run on the compiled build")
    config.addinivalue_line("markers", "plain_only: what it tests lies outside the compiled "
                            "request path (Redis topologies, deployment files, init); skipped "
                            "on the compiled build")


# ---------------------------------------------------------------------------
# The builds_package marker: tests that build the package themselves from the source tree
# (the wheel and sdist, the Docker image's stages with their mypyc compile). What they build
# does not depend on the build the suite runs on, so they run on the plain package only:
# scripts/test's second pass, on the compiled build, leaves them out instead of compiling
# everything again.


def _suite_runs_on_the_compiled_build() -> bool:
    return not pipeline.__file__.endswith(".py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    compiled = _suite_runs_on_the_compiled_build()
    for item in items:
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        if module in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if compiled and item.get_closest_marker("builds_package"):
            item.add_marker(pytest.mark.skip(
                reason="builds the package itself: run once, on the plain package"))
        elif compiled and item.get_closest_marker("plain_only"):
            item.add_marker(pytest.mark.skip(
                reason="tests what lies outside the compiled request path: run once"))


# ---------------------------------------------------------------------------
# The Docker image's replay (tests/test_deploy.py's ``image``) compiles the request path,
# which takes minutes of one CPU: when a test that needs it is selected, it starts as soon
# as the tests are collected and runs beside them.

_REPLAY_WORK: list[str] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.nodeid.startswith("tests/test_deploy.py")
           and "image" in getattr(item, "fixturenames", ())
           and item.get_closest_marker("skip") is None for item in session.items):
        work = tempfile.mkdtemp(prefix="docs-gateway-image-")
        _REPLAY_WORK.append(work)
        root = Path(__file__).resolve().parent.parent
        dockerfile.replay_ahead(root / "deploy" / "Dockerfile", root, Path(work))


def pytest_sessionfinish(session: pytest.Session) -> None:
    for work in _REPLAY_WORK:
        shutil.rmtree(work, ignore_errors=True)
