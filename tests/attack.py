"""The harness of the attack suite: a recording upstream, raw requests on a socket, and the
shared gateway in front of a recording upstream with an admin rule."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.denial import MISSING_NAME
from tests.helpers import Client as Client  # for the attack suites
from tests.helpers import GatewayFactory, echo_app, make_user, session_cookies
from tests.helpers import app_of as app_of  # for the attack suites

ADMIN_RULES = {"public": ["/public/**", "/assets/**"],
               "rules": [{"path": "/admin/**", "groups": ["admin"]}]}


# -- shared by the attack families ----------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> list[str]:
        """Every value of a header, by case-insensitive name."""
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Recorder:
    """The echo upstream plus the list of every request it received."""

    server: TestServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def targets(self) -> list[str]:
        return [s.target for s in self.seen]

    def asked_only_missing(self) -> bool:
        """Whether the upstream was asked for nothing but the address beside a denied one
        that cannot exist (a denial shows the site's own missing page), without identity."""
        return all(MISSING_NAME in s.target.split("?", 1)[0].split("/")
                   and not s.header("X-Gateway-Assertion") for s in self.seen)


async def recording_upstream(aiohttp_server: Any) -> Recorder:
    """Start the echo upstream with a middleware that records each request first."""
    app = echo_app()
    seen: list[Seen] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(Seen(request.method, request.raw_path, tuple(request.headers.items())))
        response: web.StreamResponse = await handler(request)
        return response

    app.middlewares.append(record)
    recorder = Recorder(await aiohttp_server(app))
    recorder.seen = seen
    return recorder


@dataclass(frozen=True)
class Reply:
    """A response read off the socket: status, every header line, body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    head: bytes

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None


def raw_request(target: str | bytes, *, method: str = "GET",
                headers: Sequence[tuple[str, str]] = (), body: bytes = b"",
                host: str | None = "docs.test") -> bytes:
    """An HTTP/1.1 request exactly as given (target unencoded), closing the connection."""
    line = (target if isinstance(target, bytes) else target.encode("latin-1"))
    lines = [method.encode() + b" " + line + b" HTTP/1.1"]
    if host is not None:
        lines.append(b"Host: " + host.encode())
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def exchange(port: int, data: bytes, timeout: float = 10.0) -> Reply:
    """Send bytes as-is and read the whole response until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = tuple((name.strip(), value.strip()) for name, _, value in
                    (line.partition(":") for line in lines[1:]) if name)
    return Reply(int(lines[0].split()[1]), headers, body, head)


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


Start = Callable[..., Awaitable[tuple[Client, Recorder]]]


@pytest.fixture
def start(aiohttp_server: Any, gateway: GatewayFactory) -> Start:
    """The shared gateway (sections as make_config takes them, ``ADMIN_RULES`` unless
    ``access`` is given) in front of a recording upstream of its own per call; gives the
    client and that upstream."""

    async def starter(**sections: Any) -> tuple[Client, Recorder]:
        upstream = await recording_upstream(aiohttp_server)
        sections.setdefault("access", ADMIN_RULES)
        return await gateway(upstream_url=upstream.url, **sections), upstream

    return starter


async def reader_cookie(client: Client, *groups: str) -> str:
    """The Cookie header of a logged-in reader (groups default: just "reader")."""
    user = make_user("reader", groups=groups or ("reader",))
    return cookie_header(await session_cookies(app_of(client), user))


def port_of(client: Client) -> int:
    assert client.port is not None
    return client.port
