"""A misbehaving upstream and Info API: what they send must not become the gateway's problem.

The upstream is a raw TCP server that answers exactly the bytes a case gives it:
cookies named like the gateway's, framing two parsers read differently, huge heads,
redirects, stalls. The Info API cases use a small aiohttp app. Every request is bounded
with asyncio.wait_for, and after each case the gateway still serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.attack import (
    Client,
    Reply,
    app_of,
    cookie_header,
    exchange,
    port_of,
    raw_request,
)
from tests.helpers import GatewayFactory, make_user, session_cookies

Answer = bytes | Callable[[asyncio.StreamWriter], Awaitable[None]]
TIMEOUT = "1s"


@dataclass
class RawUpstream:
    """Answers each request path with the bytes (or coroutine) registered for it."""

    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode("latin-1")
                self.requests.append(path)
                self.heads.append(head)
                answer = self.answers.get(path, ok(b"fine"))
                if callable(answer):
                    await answer(writer)
                else:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)


def ok(body: bytes, *headers: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


Start = GatewayFactory


@pytest.fixture
def upstream_url(raw_upstream: RawUpstream) -> str:
    """The gateway proxies to the raw upstream."""
    return f"http://127.0.0.1:{raw_upstream.port}"


@pytest.fixture
def gateway(gateway: Start) -> Start:
    """The gateway in front of the raw upstream: every page public unless a test says, and
    short upstream timeouts."""
    return functools.partial(gateway, access={"public": ["/**"]},
                             upstream={"timeout": TIMEOUT, "connect_timeout": TIMEOUT})


async def get(client: Client, path: str, **options: Any) -> Reply:
    """One bounded request: nothing the upstream does may hold it past its timeouts."""
    return await asyncio.wait_for(exchange(port_of(client), raw_request(path, **options)), 5)


async def still_serves(client: Client) -> None:
    reply = await get(client, "/healthy")
    assert (reply.status, reply.body) == (200, b"fine")


def browser_cookie_name(set_cookie: str) -> str:
    """The cookie name a browser takes from a Set-Cookie value (RFC 6265bis 5.6)."""
    pair = set_cookie.split(";", 1)[0]
    if "=" not in pair:
        return ""
    return pair.split("=", 1)[0].strip(" \t")


def browser_sends(set_cookie: str) -> str:
    """What the browser puts in Cookie for it (a nameless cookie is sent as its value)."""
    pair = set_cookie.split(";", 1)[0]
    name = browser_cookie_name(set_cookie)
    value = pair.split("=", 1)[1].strip(" \t") if "=" in pair else pair.strip(" \t")
    return f"{name}={value}" if name else value


# -- cookies the upstream must not set ---------------------------------------------------


@pytest.mark.parametrize("line", [
    "docs_session=evil", "docs_session.0=evil", "docs_session.4=evil", "__Host-docs_session=evil",
    "__Secure-docs_session=evil", "docs_session_state_abcdefgh=evil",
    "__Secure-docs_session_state_abcdefgh=evil", "docs_session_jwt=evil",
    " docs_session=evil", "docs_session =evil", "docs_session\t=evil",
    "docs_session=evil; Path=/; Domain=docs.test; Max-Age=999999",
    "=docs_session=evil",
])
async def test_the_upstream_cannot_set_a_gateway_cookie(gateway: Start, raw_upstream: RawUpstream,
                                                        line: str) -> None:
    raw_upstream.answers["/page"] = ok(b"x", b"Set-Cookie: " + line.encode(),
                                       b"Set-Cookie: theme=dark")
    client = await gateway()
    reply = await get(client, "/page")
    assert reply.status == 200
    sent = [browser_sends(value) for value in reply.all("Set-Cookie")]
    assert sent == ["theme=dark"]
    assert all("docs_session" not in value for value in sent)


async def test_the_upstream_cannot_replace_a_logged_in_readers_session(
        gateway: Start, raw_upstream: RawUpstream) -> None:
    raw_upstream.answers["/page"] = ok(b"x", b"Set-Cookie: docs_session=evil; Path=/")
    client = await gateway()
    cookie = cookie_header(await session_cookies(app_of(client), make_user("ada")))
    reply = await get(client, "/page", headers=[("Cookie", cookie)])
    assert reply.status == 200
    assert not any("docs_session" in value for value in reply.all("Set-Cookie"))


# -- framing the upstream gets wrong ------------------------------------------------------

BAD_RESPONSES: dict[str, bytes] = {
    "two Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "Content-Length and chunked": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    "bare LF": b"HTTP/1.1 200 OK\nContent-Length: 2\nSet-Cookie: docs_session=lf\n\nok",
    "obs-fold": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\r\n Set-Cookie: x=1\r\n\r\nok",
    "bare CR": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\rSet-Cookie: x=1\r\n\r\nok",
    "not HTTP": b"SSH-2.0-OpenSSH_9.6\r\n",
    "bad status": b"HTTP/1.1 2xx OK\r\nContent-Length: 0\r\n\r\n",
    "bad chunk": (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"),
    "closed at once": b"",
}


@pytest.mark.parametrize("case", list(BAD_RESPONSES))
async def test_broken_upstream_framing_is_a_502(gateway: Start, raw_upstream: RawUpstream,
                                                case: str) -> None:
    data = BAD_RESPONSES[case]

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    raw_upstream.answers["/broken"] = answer
    client = await gateway()
    reply = await get(client, "/broken")
    if case == "bad chunk":
        # A streamed body (an asset's type): the head was fine and already went out, so
        # the only signal left is a cut body.
        assert reply.status == 200 and reply.body == b""
    else:
        assert reply.status == 502
        assert json.loads(reply.body)["error"] == "bad_gateway"
    assert reply.all("Set-Cookie") == []
    await still_serves(client)


async def test_bytes_after_a_response_never_become_the_next_response(
        gateway: Start, raw_upstream: RawUpstream) -> None:
    smuggled = ok(b"SMUGGLED", b"Set-Cookie: docs_session=x")
    raw_upstream.answers["/split"] = ok(b"ok") + smuggled
    client = await gateway()
    first = await get(client, "/split")
    second = await get(client, "/other")
    assert (first.status, first.body) == (200, b"ok")
    assert (second.status, second.body) == (200, b"fine")


SECOND = (b"HTTP/1.1 302 Found\r\nLocation: https://evil.example/\r\nX-Second: yes\r\n"
          b"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize(("method", "first"), [
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Type: text/css\r\nContent-Length: 2\r\n\r\nok"),
    ("GET", b"HTTP/1.1 204 No Content\r\nX-First: yes\r\n\r\n"),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Type: text/css\r\nContent-Length: 0\r\n\r\n"),
])
async def test_a_second_response_in_the_same_read_changes_nothing(
        gateway: Start, raw_upstream: RawUpstream, method: str, first: bytes) -> None:
    # One write from the upstream: llhttp parses the second response in the same call.
    raw_upstream.answers["/twice.css"] = first + SECOND
    client = await gateway()
    reply = await get(client, "/twice.css", method=method)
    assert reply.status == int(first.split()[1]), reply.head
    assert reply.header("Location") is None and reply.header("X-Second") is None
    await still_serves(client)


async def test_an_interim_response_is_skipped(gateway: Start, raw_upstream: RawUpstream) -> None:
    raw_upstream.answers["/interim"] = (b"HTTP/1.1 100 Continue\r\n\r\n"
                                        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                                        + ok(b"final"))
    client = await gateway()
    reply = await get(client, "/interim")
    assert (reply.status, reply.body) == (200, b"final")


HUGE_HEADS = {
    "one 1 MiB header": ok(b"x", b"X-Big: " + b"a" * (1024 * 1024)),
    "20000 headers": ok(b"x", *(b"X-H%d: v" % i for i in range(20000))),
    "a 1 MiB status line": b"HTTP/1.1 200 " + b"O" * (1024 * 1024) + b"\r\n\r\n",
}


@pytest.mark.parametrize("case", list(HUGE_HEADS))
async def test_a_huge_upstream_head_is_a_502(gateway: Start, raw_upstream: RawUpstream,
                                             case: str) -> None:
    raw_upstream.answers["/huge"] = HUGE_HEADS[case]
    client = await gateway()
    reply = await asyncio.wait_for(exchange(port_of(client), raw_request("/huge")), 5)
    assert reply.status == 502
    assert len(reply.head) < 64 * 1024
    await still_serves(client)


# -- redirects pass through, unfollowed ---------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_an_upstream_redirect_is_passed_on_and_never_followed(
        gateway: Start, raw_upstream: RawUpstream, aiohttp_server: Any, status: int) -> None:
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="followed")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    elsewhere: TestServer = await aiohttp_server(app)
    target = str(elsewhere.make_url("/landing?x=1"))
    raw_upstream.answers["/moved"] = (b"HTTP/1.1 %d Moved\r\nLocation: %s\r\n"
                                      b"Content-Length: 0\r\n\r\n" % (status, target.encode()))
    client = await gateway()
    reply = await get(client, "/moved", method="POST" if status in (307, 308) else "GET")
    assert reply.status == status
    assert reply.header("Location") == target
    assert hits == []


# -- slow upstreams are bounded by the configured timeouts -----------------------------


async def _stall(writer: asyncio.StreamWriter, first: bytes) -> None:
    writer.write(first)
    await writer.drain()
    await asyncio.Event().wait()  # until the fixture cancels it


async def test_no_head_at_all_is_a_504(gateway: Start, raw_upstream: RawUpstream) -> None:
    raw_upstream.answers["/silent"] = lambda w: _stall(w, b"")
    client = await gateway()
    reply = await get(client, "/silent")
    assert reply.status == 504
    await still_serves(client)


async def test_half_a_head_is_a_504(gateway: Start, raw_upstream: RawUpstream) -> None:
    raw_upstream.answers["/half"] = lambda w: _stall(w, b"HTTP/1.1 200 OK\r\nContent-Le")
    client = await gateway()
    assert (await get(client, "/half")).status == 504


async def test_a_stalled_body_is_cut_off_not_waited_for(gateway: Start,
                                                        raw_upstream: RawUpstream) -> None:
    raw_upstream.answers["/stall"] = lambda w: _stall(
        w, b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
           b"Content-Length: 1000\r\n\r\nfirst bytes")
    client = await gateway()
    reply = await get(client, "/stall")
    assert reply.status == 200
    assert reply.body == b"first bytes"  # truncated: the connection was cut
    await still_serves(client)


async def test_a_stalled_html_page_is_a_502(gateway: Start, raw_upstream: RawUpstream) -> None:
    # An HTML page is read whole before it is checked, so a stall is seen before sending.
    raw_upstream.answers["/page.html"] = lambda w: _stall(
        w, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\n<html>")
    client = await gateway()
    reply = await get(client, "/page.html")
    assert reply.status == 502
    await still_serves(client)


async def test_a_short_body_then_close_is_cut_off(gateway: Start,
                                                  raw_upstream: RawUpstream) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 100\r\n\r\nonly this")
        await writer.drain()
        writer.close()

    raw_upstream.answers["/short"] = answer
    client = await gateway()
    reply = await get(client, "/short")
    assert reply.status == 200 and reply.body == b"only this"
    await still_serves(client)


# -- the Info API (shared_session) -------------------------------------------------------


@dataclass
class InfoApi:
    """An Info API whose answer each case sets."""

    respond: Callable[[web.Request], Awaitable[web.StreamResponse]]
    calls: int = 0


def user_answer(**extra: Any) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.json_response({"sub": "ada", "groups": ["reader"], **extra})
    return respond


INFO_FAULTS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}


def info_fault(name: str) -> Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]],
                                      Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    def register(fn: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        INFO_FAULTS[name] = fn
        return fn
    return register


@info_fault("an answer over 1 MiB")
async def _too_big(request: web.Request) -> web.StreamResponse:
    return web.json_response({"sub": "ada", "content": {"pad": "x" * (2 * 1024 * 1024)}})


@info_fault("JSON nested 100000 deep")
async def _deep(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"[" * 100000 + b"]" * 100000, content_type="application/json")


@functools.cache
def gzip_bomb() -> bytes:
    """About 16 KiB of gzip that inflates to 16 MiB of JSON."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = b"0" * (1024 * 1024)
    parts = [packer.compress(b'{"sub": "ada", "pad": "')]
    parts += [packer.compress(block) for _ in range(16)]
    return b"".join([*parts, packer.compress(b'"}'), packer.flush()])


@info_fault("a gzip bomb")
async def _bomb(request: web.Request) -> web.StreamResponse:
    return web.Response(body=gzip_bomb(), headers={"Content-Encoding": "gzip",
                                            "Content-Type": "application/json"})


@info_fault("a 100 KiB header")
async def _big_header(request: web.Request) -> web.StreamResponse:
    return web.json_response({"sub": "ada"}, headers={"X-Big": "a" * (100 * 1024)})


@info_fault("JSON null")
async def _null(request: web.Request) -> web.StreamResponse:
    return web.json_response(None)


@info_fault("a JSON list")
async def _list(request: web.Request) -> web.StreamResponse:
    return web.json_response([{"sub": "ada"}])


@info_fault("expiresAt NaN")
async def _nan(request: web.Request) -> web.StreamResponse:
    return web.Response(text='{"sub": "ada", "expiresAt": NaN}', content_type="application/json")


@info_fault("a head then silence")
async def _silence(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = 100
    await response.prepare(request)
    await response.write(b'{"sub": ')
    await asyncio.sleep(30)
    return response


@info_fault("a 307 to elsewhere")
async def _moved(request: web.Request) -> web.StreamResponse:
    raise web.HTTPTemporaryRedirect("http://127.0.0.1:9/steal")


@pytest.fixture
async def info_api(aiohttp_server: Any) -> tuple[InfoApi, str]:
    api = InfoApi(user_answer())

    async def handle(request: web.Request) -> web.StreamResponse:
        api.calls += 1
        return await api.respond(request)

    app = web.Application()
    app.router.add_get("/api/user", handle)
    server: TestServer = await aiohttp_server(app)
    return api, str(server.make_url("/api/user"))


def shared(url: str, **settings: Any) -> dict[str, Any]:
    return {"method": "shared_session", "shared_session": {
        "info_api_url": url, "cookies": ["session"], "login_url": "https://dash.example/login",
        "timeout": TIMEOUT, "cache_ttl": "30s", **settings}}


@pytest.mark.parametrize("case", list(INFO_FAULTS))
async def test_a_broken_info_api_answer_is_503_on_protected_pages_only(
        gateway: Start, info_api: tuple[InfoApi, str], case: str) -> None:
    api, url = info_api
    api.respond = INFO_FAULTS[case]
    client = await gateway(handshake=shared(url), access={"public": ["/public/**"]})
    protected = await get(client, "/guide", headers=[("Cookie", "session=abc")])
    assert protected.status == 503
    public = await get(client, "/public/x", headers=[("Cookie", "session=abc")])
    assert public.status == 200
    assert protected.all("Set-Cookie") == [] and public.all("Set-Cookie") == []


async def test_info_api_cookies_never_reach_the_browser(gateway: Start,
                                                         info_api: tuple[InfoApi, str]) -> None:
    api, url = info_api

    async def with_cookies(request: web.Request) -> web.StreamResponse:
        response = web.json_response({"sub": "ada", "groups": ["reader"]})
        response.set_cookie("docs_session", "evil")
        response.set_cookie("session", "rotated-by-the-api")
        return response

    api.respond = with_cookies
    client = await gateway(handshake=shared(url), access={"public": ["/public/**"]})
    reply = await get(client, "/guide", headers=[("Cookie", "session=abc")])
    assert reply.status == 200
    assert reply.all("Set-Cookie") == []


async def test_control_characters_from_the_info_api_never_reach_a_header(
        gateway: Start, raw_upstream: RawUpstream, info_api: tuple[InfoApi, str]) -> None:
    api, url = info_api
    api.respond = user_answer(content={"email": "a@b.example\r\nX-Injected: 1"})
    client = await gateway(handshake=shared(url), access={"public": []},
                           identity={"headers": {"X-Email": "content.email"}})
    reply = await get(client, "/guide", headers=[("Cookie", "session=abc")])
    assert reply.status == 200
    assert raw_upstream.requests == ["/guide"]
    head = raw_upstream.heads[0].lower()
    assert b"x-injected" not in head and b"x-email" not in head
    assert b"x-gateway-assertion: " in head


# -- caching: a page that depended on who asked stays out of shared caches --------------


async def test_a_personal_page_is_marked_private_whatever_the_upstream_says(
        gateway: Start, raw_upstream: RawUpstream) -> None:
    raw_upstream.answers["/guide"] = ok(b"x", b"Cache-Control: public, s-maxage=600, max-age=60",
                                        b"Vary: Accept-Encoding")
    client = await gateway(access={"public": []})
    cookie = cookie_header(await session_cookies(app_of(client), make_user("ada")))
    reply = await get(client, "/guide", headers=[("Cookie", cookie)])
    assert reply.status == 200
    directives = [d.strip() for d in (reply.header("Cache-Control") or "").split(",")]
    assert "private" in directives and "public" not in directives
    assert not any(d.startswith("s-maxage") for d in directives)
    assert "cookie" in (reply.header("Vary") or "").lower()


@pytest.mark.parametrize("field_line", [b"CDN-Cache-Control: public, max-age=600",
                                        b"Cloudflare-CDN-Cache-Control: max-age=600",
                                        b"Surrogate-Control: max-age=600"])
async def test_cdn_cache_fields_never_reach_a_shared_cache_on_a_personal_page(
        gateway: Start, raw_upstream: RawUpstream, field_line: bytes) -> None:
    raw_upstream.answers["/guide"] = ok(b"x", field_line)
    client = await gateway(access={"public": []})
    cookie = cookie_header(await session_cookies(app_of(client), make_user("ada")))
    reply = await get(client, "/guide", headers=[("Cookie", cookie)])
    assert reply.status == 200
    assert reply.header(field_line.split(b":")[0].decode()) is None
