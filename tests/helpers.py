"""Shared test helpers: configs, a real echo upstream, raw HTTP over a socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import ENTRY
from gateway.config.load import build_config
from gateway.config.model import Config
from gateway.server import DocsRunner
from gateway.sessions.base import CookieJar, Session
from gateway.user import User

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SECRET = "s" * 40
HS_SECRET = "h" * 40

#: A test client of a gateway app, and the ``gateway`` fixture's factory that makes one.
Client = TestClient[web.Request, web.Application]
GatewayFactory = Callable[..., Awaitable[Client]]


def make_config(upstream_url: str | None = "http://127.0.0.1:9", *, base: Path | None = None,
                **sections: Any) -> Config:
    """A valid config (jwt with an HS256 secret) with sections overridden."""
    data: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "public_url": "http://docs.test"},
        "upstream": {"url": upstream_url},
        "session": {"secrets": [SECRET]},
        "handshake": {"method": "jwt", "jwt": {
            "secret": HS_SECRET, "algorithms": ["HS256"], "require_host": False,
            "login_urls": [{"name": "Dashboard", "url": "https://dash.example.com/docs-login"}]}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return build_config(data, env={}, base=base)


class GatewayTestServer(TestServer):
    """A test server for an app from ``build_app``, served as ``docs-gateway run`` serves it
    (``DocsRunner``), not through aiohttp's router."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return DocsRunner(self.app, **kwargs)


def is_gateway_app(app: Any) -> bool:
    """Whether ``app`` came from ``build_app`` (and must be served by ``DocsRunner``)."""
    return isinstance(app, web.Application) and ENTRY in app


def served(app: Any) -> Any:
    """What the aiohttp fixtures should serve for ``app``: a gateway app gets its own server."""
    return GatewayTestServer(app) if is_gateway_app(app) else app


def runner_for(app: web.Application, **kwargs: Any) -> web.BaseRunner:
    """The runner ``docs-gateway run`` would use for ``app``: ``DocsRunner`` for a gateway app."""
    if is_gateway_app(app):
        return DocsRunner(app, **kwargs)
    return web.AppRunner(app, **kwargs)


def bound_socket() -> tuple[socket.socket, str]:
    """A loopback address taken before anything serves it: its socket and base URL (a page
    a real browser opens needs the gateway's public URL in its config in advance)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


class Served:
    """Apps served on sockets of their own (``bound_socket``), stopped together."""

    def __init__(self) -> None:
        self.runners: list[web.BaseRunner] = []

    async def on(self, sock: socket.socket, app: web.Application) -> None:
        """Serve ``app`` (a gateway app as ``docs-gateway run`` would) on ``sock``."""
        runner = runner_for(app)
        await runner.setup()
        self.runners.append(runner)
        await web.SockSite(runner, sock).start()

    async def serve(self, app: web.Application) -> str:
        """Serve ``app`` on a new loopback port; its base URL."""
        sock, base = bound_socket()
        await self.on(sock, app)
        return base

    async def close(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A real headless Chromium (Debian's package), driven by Playwright; skips with a
    reason only when it is not installed."""
    import pytest
    from playwright.async_api import async_playwright

    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def app_of(client: Client) -> web.Application:
    """The gateway application a test client talks to."""
    assert client.app is not None
    return client.app


def make_user(sub: str = "u1", groups: tuple[str, ...] = (), **content: Any) -> User:
    """A user object valid for an hour."""
    return User(sub=sub, expires_at=time.time() + 3600, groups=groups,
                content=content or {"firstName": "Ada"})


async def session_cookies(app: web.Application, user: User, method: str = "jwt") -> dict[str, str]:
    """Create a session straight in the app's store (no handshake) and return its cookies."""
    from gateway.services import GATEWAY

    gw = app[GATEWAY]
    now = time.time()
    session = Session(id=f"test-{now}-{user.sub}", user=user, method=method, created_at=now,
                      refreshed_at=now)
    jar = CookieJar()
    await gw.store.save(session, {}, jar)
    return {name: value for name, (value, _age) in jar.sets.items()}


#: Set by the echo upstream once a ``/slow`` request has reached it.
SLOW_STARTED = web.AppKey("slow_started", asyncio.Event)
#: Set when the echo upstream's WebSocket ends (its client, the gateway, closed it or left).
WS_ENDED = web.AppKey("ws_ended", asyncio.Event)


def echo_app() -> web.Application:
    """A real upstream that reports what it received, and misbehaves on request."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SLOW_STARTED] = asyncio.Event()
    app[WS_ENDED] = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({
            "method": request.method, "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": body.decode("latin-1"),
        }, headers={"X-Upstream": "yes"})

    async def html_page(request: web.Request) -> web.Response:
        meta = request.query.get("meta", "")
        head = f'<meta name="gateway:{meta.split("=")[0]}" content="{meta.split("=")[-1]}">' \
            if meta else ""
        return web.Response(text=f"<!doctype html><html><head><title>t</title>{head}</head>"
                            "<body><p>secret page</p></body></html>", content_type="text/html")

    async def chunked_script(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/javascript"})
        await response.prepare(request)
        await response.write(b"console.log(1)")
        await response.write_eof()
        return response

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, body=None if code in (204, 304) else b"x")

    async def big(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "1048576"))
        response = web.StreamResponse()
        if "html" in request.query:
            response.content_type = "text/html"
        if "chunked" not in request.query:
            response.content_length = size
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        block = b"a" * 65536
        sent = 0
        while sent < size:
            part = block[: min(len(block), size - sent)]
            await response.write(part)
            sent += len(part)
        await response.write_eof()
        return response

    async def slow(request: web.Request) -> web.Response:
        request.app[SLOW_STARTED].set()
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text="late")

    async def reset(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # an asset's body: streamed as it comes
        response.content_type = "image/png"
        response.content_length = 1000000
        await response.prepare(request)
        await response.write(b"b" * 1000)
        assert request.transport is not None
        request.transport.abort()
        return response

    async def set_cookie(request: web.Request) -> web.Response:
        response = web.Response(text="ok")
        for name in request.query.getall("name"):
            response.headers.add("Set-Cookie", f"{name}=evil; Path=/")
        return response

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            await sock.send_str("echo:" + msg.data)
        request.app[WS_ENDED].set()
        return sock

    async def hop(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"Connection": "close, X-Secret-Hop",
                                                "X-Secret-Hop": "1", "Keep-Alive": "timeout=5"})

    app.router.add_get("/html", html_page)
    app.router.add_get("/big", big)
    app.router.add_get("/assets/chunked.js", chunked_script)
    app.router.add_get("/slow", slow)
    app.router.add_get("/reset", reset)
    app.router.add_get("/set-cookie", set_cookie)
    app.router.add_get("/ws", ws)
    app.router.add_get("/hop", hop)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def header_map(echoed: Mapping[str, Any]) -> dict[str, list[str]]:
    """The echo upstream's headers, by lower-case name."""
    out: dict[str, list[str]] = {}
    for name, value in echoed["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def raw_http(port: int, data: bytes, host: str = "127.0.0.1",
                   timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as-is (no client normalization) and read one response."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
        return status, headers, body
    finally:
        writer.close()


def get(path: str, headers: Mapping[str, str] | None = None) -> bytes:
    """A raw HTTP/1.1 GET with Connection: close."""
    lines = [f"GET {path} HTTP/1.1", "Host: docs.test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def loads(body: bytes) -> Any:
    """JSON body."""
    return json.loads(body)


def build_mkdocs(root: Path, mkdocs_yml: str, files: Mapping[str, str]) -> Path:
    """Build a real MkDocs site in ``root`` with ``mkdocs build``: ``mkdocs.yml`` and the
    ``files`` (paths under ``root``: ``docs/...``, ``overrides/...``); returns the site."""
    (root / "mkdocs.yml").write_text(mkdocs_yml)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(root / "mkdocs.yml"),
                    "-d", str(root / "site")], check=True, cwd=root, timeout=120)
    return root / "site"


def jwt_login_form(sub: str) -> bytes:
    """The JWT callback's form for ``sub``: a fresh HS256 token (a new ``jti`` each time)."""
    now = int(time.time())
    token = jwt.encode({"sub": sub, "exp": now + 60, "iat": now,
                        "jti": f"{sub}-{os.getpid()}-{time.monotonic_ns()}"},
                       HS_SECRET, algorithm="HS256")
    return f"token={token}&redirect=/guide".encode()


async def jwt_form_login(client: Client, sub: str, bound: float) -> tuple[int, str | None]:
    """Log ``sub`` in through the JWT callback within ``bound`` seconds: the status and the
    session cookie's value (None when none is set)."""
    async def go() -> tuple[int, str | None]:
        async with client.post("/_gateway/jwt-callback", data=jwt_login_form(sub), headers={
                "Content-Type": "application/x-www-form-urlencoded"},
                allow_redirects=False) as response:
            await response.read()
            value = response.cookies.get("docs_session")
            return response.status, value.value if value is not None else None

    return await asyncio.wait_for(go(), bound)
