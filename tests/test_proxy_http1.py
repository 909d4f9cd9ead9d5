"""The pooled upstream client against a raw-socket upstream that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import build_app
from gateway.proxy.http1 import Pool, Response, Slots
from tests.helpers import make_config, raw_http

Reply = Callable[[bytes, int], bytes | None]


class RawUpstream:
    """An HTTP/1.1 server written on bare sockets: it answers each request with `reply`."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        self.close_after: set[int] = set()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                lower = head.lower()
                if b"content-length:" in lower:
                    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                elif b"transfer-encoding: chunked" in lower:
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        chunk = await reader.readexactly(size + 2)
                        body += chunk[:-2]
                        if size == 0:
                            break
                self.requests.append(head + body)
                answer = self.reply(head + body, len(self.requests))
                if answer is None:
                    writer.close()
                    return
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer or len(self.requests) in self.close_after:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[Reply], Any]]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> RawUpstream:
        upstream = RawUpstream(reply)
        upstream.server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        servers.append(upstream.server)
        return upstream

    yield start
    for server in servers:
        server.close()


async def gateway_for(aiohttp_client: Any, upstream: RawUpstream) -> TestClient:
    config = make_config(upstream.url, access={"public": ["/**"]},
                         identity={"inject_script": False}, upstream={"timeout": "2s"})
    return await aiohttp_client(await build_app(config))


def ok(body: bytes = b"hello", extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def test_keep_alive_reuses_one_connection(aiohttp_client: Any, raw_upstream: Any) -> None:
    upstream = await raw_upstream(lambda request, n: ok())
    client = await gateway_for(aiohttp_client, upstream)
    for _ in range(5):
        async with client.get("/x") as response:
            assert await response.read() == b"hello"
    assert upstream.connections == 1


async def test_a_finished_response_is_freed_without_the_garbage_collector(
        aiohttp_client: Any, raw_upstream: Any) -> None:
    upstream = await raw_upstream(lambda request, n: ok())
    client = await gateway_for(aiohttp_client, upstream)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # whatever only a collection would free lands in gc.garbage
    try:
        for _ in range(5):
            async with client.get("/x") as response:
                assert await response.read() == b"hello"
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, Response)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


async def test_closed_idle_connection_is_retried_for_get(aiohttp_client: Any,
                                                          raw_upstream: Any) -> None:
    upstream = await raw_upstream(lambda request, n: ok())
    upstream.close_after = {1}  # answer, then drop the kept-alive connection silently
    client = await gateway_for(aiohttp_client, upstream)
    async with client.get("/1") as response:
        assert response.status == 200
    async with client.get("/2") as response:
        assert response.status == 200
        assert await response.read() == b"hello"
    assert upstream.connections == 2


async def test_post_is_never_retried(aiohttp_client: Any, raw_upstream: Any) -> None:
    upstream = await raw_upstream(lambda request, n: None)
    client = await gateway_for(aiohttp_client, upstream)
    async with client.post("/form", data=b"pay=1") as response:
        assert response.status == 502
    assert len(upstream.requests) == 1


async def test_head_response_does_not_poison_the_connection(aiohttp_client: Any,
                                                            raw_upstream: Any) -> None:
    def reply(request: bytes, n: int) -> bytes:
        if request.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n"
        return ok(b"after-head")

    upstream = await raw_upstream(reply)
    client = await gateway_for(aiohttp_client, upstream)
    # An asset's HEAD goes upstream as a HEAD (a page's would be asked for as a GET).
    async with client.head("/f.png") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "5000"
    async with client.get("/g") as response:
        assert await response.read() == b"after-head"


async def test_chunked_response_and_interim_100(aiohttp_client: Any, raw_upstream: Any) -> None:
    def reply(request: bytes, n: int) -> bytes:
        return (b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")

    upstream = await raw_upstream(reply)
    client = await gateway_for(aiohttp_client, upstream)
    async with client.get("/c") as response:
        assert response.status == 200
        assert await response.read() == b"hello world"


@pytest.mark.parametrize("fields", ["Content-Length: 0", "Transfer-Encoding: chunked"])
async def test_an_interim_answers_fields_say_nothing_of_the_final_ones_framing(
        raw_upstream: Any, fields: str) -> None:
    def reply(request: bytes, n: int) -> bytes:
        if n == 1:
            return (f"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n{fields}"
                    "\r\n\r\n").encode() + ok()
        return ok(b"next")

    upstream = await raw_upstream(reply)
    assert upstream.server is not None
    pool = Pool("127.0.0.1", upstream.server.sockets[0].getsockname()[1], limit=2,
                connect_timeout=2, read_timeout=2)
    answer = await pool.request("GET", "/page", [("Host", "docs")], None, None)
    assert (answer.status, answer.content_length, answer.chunked) == (200, 5, False)
    assert await answer.read_all(100) == b"hello"
    answer.release()
    answer = await pool.request("GET", "/page", [("Host", "docs")], None, None)
    assert await answer.read_all(100) == b"next"
    answer.release()
    assert upstream.connections == 1  # the final answer kept its connection open
    pool.close()


async def test_body_delimited_by_close(aiohttp_client: Any, raw_upstream: Any) -> None:
    upstream = await raw_upstream(
        lambda request, n: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-the-end")
    client = await gateway_for(aiohttp_client, upstream)
    async with client.get("/e") as response:
        assert await response.read() == b"until-the-end"


@pytest.mark.parametrize("reason", [b"O\x00K", b"O\x0bK", b"O\x7fK", b"\x1b[31mOK"])
@pytest.mark.parametrize("size", [5, 300_000])
async def test_a_reason_with_a_control_character_is_left_out(aiohttp_client: Any,
                                                             raw_upstream: Any, reason: bytes,
                                                             size: int) -> None:
    # It could not be written on: the answer went missing (a small one) or became a 500.
    body = b"z" * size
    upstream = await raw_upstream(
        lambda request, n: b"HTTP/1.1 200 " + reason + b"\r\nContent-Type: text/plain\r\n"
        + f"Content-Length: {size}\r\n\r\n".encode() + body)
    client = await gateway_for(aiohttp_client, upstream)
    async with client.get("/file.txt") as response:
        assert response.status == 200
        assert response.reason == ""
        assert await response.read() == body


async def test_malformed_response_is_502(aiohttp_client: Any, raw_upstream: Any) -> None:
    upstream = await raw_upstream(lambda request, n: b"NOT HTTP AT ALL\r\n\r\n")
    client = await gateway_for(aiohttp_client, upstream)
    async with client.get("/m") as response:
        assert response.status == 502


@pytest.mark.parametrize("after", [b"", b"\x81\x05hello", b"GET / HTTP/1.1\r\n\r\n"])
async def test_a_switch_of_protocols_nobody_asked_for_is_502(aiohttp_client: Any,
                                                             raw_upstream: Any, after: bytes,
                                                             caplog: Any) -> None:
    # The docs server's client asks for no upgrade (WebSockets go their own way): a 101
    # would tell the reader its connection now speaks something else, with bytes of it.
    upstream = await raw_upstream(
        lambda request, n: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\n" + after if n == 1 else ok(b"next"))
    client = await gateway_for(aiohttp_client, upstream)
    async with client.get("/switch") as response:
        assert response.status == 502
        assert response.headers.get("Upgrade") is None
    # The connection that switched is not used again.
    async with client.get("/next") as response:
        assert await response.read() == b"next"
    assert upstream.connections == 2
    assert not [record for record in caplog.records if record.exc_info], caplog.text


async def test_chunked_request_body_is_forwarded_chunked(aiohttp_client: Any,
                                                         raw_upstream: Any) -> None:
    upstream = await raw_upstream(lambda request, n: ok())
    client = await gateway_for(aiohttp_client, upstream)

    async def body() -> AsyncIterator[bytes]:
        yield b"part1-"
        yield b"part2"

    async with client.post("/up", data=body()) as response:
        assert response.status == 200
    sent = upstream.requests[0]
    assert b"transfer-encoding: chunked" in sent.lower()
    assert sent.endswith(b"part1-part2")


@pytest.mark.parametrize("smuggle", [
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Content-Length: +5\r\n",
])
async def test_smuggling_framing_is_refused(aiohttp_client: Any, raw_upstream: Any,
                                            smuggle: bytes) -> None:
    upstream = await raw_upstream(lambda request, n: ok())
    client = await gateway_for(aiohttp_client, upstream)
    assert client.port is not None
    request = (b"POST /s HTTP/1.1\r\nHost: docs.test\r\n" + smuggle +
               b"Connection: close\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, _ = await raw_http(client.port, request)
    assert status == 400
    assert not any(b"/admin" in sent for sent in upstream.requests)


async def test_request_framing_is_rebuilt_not_copied(aiohttp_client: Any,
                                                     raw_upstream: Any) -> None:
    upstream = await raw_upstream(lambda request, n: ok())
    client = await gateway_for(aiohttp_client, upstream)
    async with client.post("/p", data=b"12345") as response:
        assert response.status == 200
    sent = upstream.requests[0].lower()
    assert sent.count(b"content-length:") == 1
    assert b"content-length: 5\r\n" in sent


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nX-Injected: 1", "a\rX-Injected: 1"])
async def test_a_header_with_a_line_break_is_left_out_never_splitting_the_request(
        raw_upstream: Any, value: str) -> None:
    # A value the gateway sends may come from a reader's user object (a plain identity
    # header): a line break in it must not start a header, or a request, of its own.
    upstream = await raw_upstream(lambda request, n: ok())
    host, port = upstream.url.removeprefix("http://").split(":")
    pool = Pool(host, int(port), limit=2, connect_timeout=2, read_timeout=2)
    headers = [("Host", "docs.test"), ("X-Name", value), ("X-Broken\r\nX-Injected", "1"),
               ("Accept", "*/*")]
    response = await pool.request("GET", "/x", headers, None, None)
    assert await response.read_all(100) == b"hello"
    response.release()
    pool.close()
    assert upstream.requests == [b"GET /x HTTP/1.1\r\nHost: docs.test\r\nAccept: */*\r\n\r\n"]


async def test_a_lone_surrogate_in_a_value_goes_out_as_a_question_mark(
        raw_upstream: Any) -> None:
    # A reader's name from a token's claims may hold one ("\\ud800" in its JSON); a client's
    # own undecodable byte (kept by aiohttp as "\\udcff") still goes out as that byte.
    upstream = await raw_upstream(lambda request, n: ok())
    host, port = upstream.url.removeprefix("http://").split(":")
    pool = Pool(host, int(port), limit=2, connect_timeout=2, read_timeout=2)
    headers = [("Host", "docs.test"), ("X-Name", "Ada \ud800"), ("X-Raw", "a\udcffb")]
    response = await pool.request("GET", "/x", headers, None, None)
    assert await response.read_all(100) == b"hello"
    response.release()
    pool.close()
    assert upstream.requests == [b"GET /x HTTP/1.1\r\nHost: docs.test\r\nX-Name: Ada ?\r\n"
                                 b"X-Raw: a\xffb\r\n\r\n"]


async def test_a_large_body_arriving_with_the_head_is_not_taken_for_a_large_head(
        aiohttp_client: Any, raw_upstream: Any) -> None:
    body = b"z" * 300_000
    upstream = await raw_upstream(lambda request, n: ok(body))
    client = await gateway_for(aiohttp_client, upstream)
    async with client.get("/big.bin") as response:
        assert response.status == 200
        assert await response.read() == body


async def test_slots_are_taken_at_once_while_free_then_queued_in_order() -> None:
    loop = asyncio.get_running_loop()
    slots = Slots(2)
    assert slots.take_free() and slots.take_free()
    assert not slots.take_free()
    order: list[str] = []

    async def queue(name: str) -> None:
        await slots.wait(loop)
        order.append(name)

    first = asyncio.create_task(queue("first"))
    second = asyncio.create_task(queue("second"))
    await asyncio.sleep(0)
    slots.give()
    await first
    assert order == ["first"] and not second.done() and slots.free == 0
    slots.give()
    await second
    assert order == ["first", "second"]
    slots.give()
    slots.give()
    assert slots.free == 2 and slots.take_free()


async def test_a_slot_wait_that_times_out_leaves_no_trace() -> None:
    loop = asyncio.get_running_loop()
    slots = Slots(1)
    assert slots.take_free()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await slots.wait(loop)
    assert not slots.waiters
    slots.give()
    assert slots.free == 1 and slots.take_free()


async def test_a_slot_handed_to_a_wait_cancelled_at_that_moment_is_passed_on() -> None:
    loop = asyncio.get_running_loop()
    slots = Slots(1)
    assert slots.take_free()
    waiting = asyncio.create_task(slots.wait(loop))
    await asyncio.sleep(0)
    slots.give()  # handed to the waiter...
    waiting.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert slots.free == 1 and not slots.waiters


@pytest.mark.parametrize("framing", [
    "Content-Length: 8", "Transfer-Encoding: chunked", "Transfer-Encoding: gzip",
    "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
    # A length with blanks after it (llhttp keeps them in the value it hands on).
    "Content-Length: 8 ", "Content-Length: 8\t", "Content-Length: 8 \t ",
])
async def test_a_304_that_announces_a_body_ends_its_connection(
        aiohttp_client: Any, raw_upstream: Any, framing: str) -> None:
    # No body may follow a 304; one announced may still come after the head, later, and
    # would be read as the next request's answer on a reused connection.
    def reply(request: bytes, n: int) -> bytes:
        if n == 1:
            return f'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n{framing}\r\n\r\n'.encode()
        return ok(b"next")

    upstream = await raw_upstream(reply)
    client = await gateway_for(aiohttp_client, upstream)
    async with client.get("/site.css", headers={"If-None-Match": '"a"'}) as response:
        assert response.status == 304
    async with client.get("/site.css") as response:
        assert await response.read() == b"next"
    assert upstream.connections == 2
