"""The docs port's own connections (gateway/docsport.py), on real sockets: requests in
order on one connection, bodies, the limits and refusals of a request's head, HTTP/1.0,
HEAD, idle connections, and a WebSocket handed to aiohttp's handler."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

import pytest
from aiohttp.http import HttpVersion11
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from gateway.app import build_app
from gateway.docsport import (
    LINGER_BYTES,
    MAX_FIELD,
    MAX_HEADERS,
    MAX_LINE,
    MAX_WAITING,
    SLICE,
    DocsServer,
    encode_head,
)
from tests.attack import Start, exchange, port_of, raw_request
from tests.attack import start as start  # the shared fixture
from tests.helpers import WS_ENDED, Client, make_config

ADMIN = {"rules": [{"path": "/admin/**", "groups": ["admin"]}], "public": ["/public/**"]}


async def read_replies(reader: asyncio.StreamReader, count: int,
                       timeout: float = 10.0) -> list[tuple[str, dict[str, str], bytes]]:
    """``count`` responses off one connection, each by its Content-Length."""
    replies = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in lines[1:]) if name}
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
        replies.append((lines[0], headers, body))
    return replies


async def one_connection(port: int, data: bytes, count: int
                         ) -> tuple[list[tuple[str, dict[str, str], bytes]], bytes]:
    """Send ``data``, read ``count`` responses, then whatever comes until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        replies = await read_replies(reader, count)
        rest = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return replies, rest


async def small_window(port: int, window: int, limit: int = 2**16
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose receive buffer stays at ``window`` bytes (the kernel would
    otherwise grow it to tens of MB): a client that reads slowly, or not at all."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return await asyncio.open_connection(sock=sock, limit=limit)


def get(path: str, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: docs.test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_requests_on_one_connection_are_answered_in_order(start: Start) -> None:
    client, upstream = await start(access=ADMIN)
    data = get("/public/a") + get("/public/b") + get("/admin/x") + get("/public/c",
                                                                          "Connection: close")
    replies, rest = await one_connection(port_of(client), data, 4)
    assert [line for line, _, _ in replies] == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK",
                                                "HTTP/1.1 401 Unauthorized", "HTTP/1.1 200 OK"]
    assert [json.loads(body)["path"] for _, _, body in (replies[0], replies[1], replies[3])] \
        == ["/public/a", "/public/b", "/public/c"]
    assert replies[3][1]["connection"] == "close"
    assert rest == b""  # closed after the last
    assert upstream.targets() == ["/public/a", "/public/b", "/public/c"]


async def test_a_body_leaves_the_connection_usable_and_chunks_end_it(start: Start) -> None:
    # After chunks, aiohttp's parser would read a trailer into the next request's fields:
    # a chunked request is the connection's last, and what follows it is not read.
    client, upstream = await start(access=ADMIN)
    posted = (b"POST /public/form HTTP/1.1\r\nHost: docs.test\r\nContent-Length: 5\r\n\r\n"
              b"hello")
    chunked = (b"POST /public/chunks HTTP/1.1\r\nHost: docs.test\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n"
               b"0\r\nCookie: docs_session=planted\r\n\r\n")
    replies, rest = await one_connection(port_of(client), posted + chunked
                                         + get("/public/after"), 2)
    bodies = [json.loads(body) for _, _, body in replies]
    assert [(b["method"], b["path"], b["body"]) for b in bodies] == [
        ("POST", "/public/form", "hello"), ("POST", "/public/chunks", "abcde")]
    assert replies[1][1]["connection"] == "close"
    assert rest == b""
    assert upstream.targets() == ["/public/form", "/public/chunks"]


async def test_a_body_left_unread_closes_the_connection(start: Start) -> None:
    # The reader may not open /admin/: the answer comes before the body is read, and what
    # follows the body cannot be told from it, so nothing more is read on the connection.
    client, upstream = await start(access=ADMIN)
    data = (b"POST /admin/x HTTP/1.1\r\nHost: docs.test\r\nContent-Length: 100000\r\n\r\n"
            + b"x" * 1000)
    replies, rest = await one_connection(port_of(client), data, 1)
    assert replies[0][0] == "HTTP/1.1 401 Unauthorized"
    assert replies[0][1]["connection"] == "close"
    assert rest == b""
    assert upstream.seen == []


async def test_expect_100_continue_then_the_body(start: Start) -> None:
    client, _upstream = await start(access=ADMIN)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
    try:
        writer.write(b"POST /public/form HTTP/1.1\r\nHost: docs.test\r\nContent-Length: 3\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"abc")
        (line, _, body), = await read_replies(reader, 1)
    finally:
        writer.close()
    assert line == "HTTP/1.1 200 OK"
    assert json.loads(body)["body"] == "abc"


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /" + b"a" * MAX_LINE + b" HTTP/1.1\r\nHost: docs.test\r\n\r\n", 400),
    (b"GET /public/x HTTP/1.1\r\nHost: docs.test\r\nX-Big: " + b"v" * (MAX_FIELD + 1)
     + b"\r\n\r\n", 400),
    (b"GET /public/x HTTP/1.1\r\nHost: docs.test\r\n"
     + b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n", 400),
    (b"GET /public/x HTTP/1.1\r\nHost: docs.test\r\n"
     + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 30000) for i in range(6)) + b"\r\n", 431),
    (b"GET /public/x HTTP/1.1\r\nHost: docs.test\r\nHost: evil.test\r\n\r\n", 400),
    (b"GET /public/x HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n"
     b"Host: docs.test\r\n\r\n", 400),
    (b"GET /public/x HTTP/1.1\r\nAccept: text/html\r\n\r\n", 400),
    (b"GET /public/x HTTP/1.1\r\nHost: docs.test\r\nX-A: a\x00b\r\n\r\n", 400),
    (b"POST /public/x HTTP/1.1\r\nHost: docs.test\r\nContent-Length: 3\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /public/x HTTP/1.1\r\nHost: docs.test\r\nTransfer-Encoding: xchunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400),
    (b"POST /public/x HTTP/1.1\r\nHost: docs.test\r\nTransfer-Encoding: chunked, identity\r\n"
     b"\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    (b"POST /public/x HTTP/1.1\r\nHost: docs.test\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3 \r\nabc\r\n0\r\n\r\n", 400),
    (b"GET /public/x HTTP/1.1\r\nHost: docs.test\r\nX-A: a\r\n b\r\n\r\n", 400),
    (b"GET /public/x HTTP/1.1\r\nHost: docs.test\r\nBad Name: v\r\n\r\n", 400),
    (b"G@T /public/x HTTP/1.1\r\nHost: docs.test\r\n\r\n", 400),
    (b"GET public/x HTTP/1.1\r\nHost: docs.test\r\n\r\n", 400),
    (b"GET http:///x HTTP/1.1\r\nHost: docs.test\r\n\r\n", 400),
], ids=["long target", "long field", "many fields", "large head", "second Host",
        "second Content-Length", "no Host", "NUL", "length and chunks", "not ending in chunked",
        "a coding after chunked", "a bad chunk", "a folded line", "space in a name",
        "bad method", "relative target", "absolute target without a host"])
async def test_a_head_that_cannot_be_read_safely_is_refused(start: Start, head: bytes,
                                                            status: int) -> None:
    client, upstream = await start(access=ADMIN)
    # After a request on the same connection: the refusal closes the connection.
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
    try:
        writer.write(get("/public/first"))
        (first, _, _), = await read_replies(reader, 1)
        writer.write(head)
        (line, headers, _), = await read_replies(reader, 1)
        rest = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert first == "HTTP/1.1 200 OK"
    assert line.split()[1] == str(status)
    assert headers["connection"] == "close"
    assert rest == b""
    assert upstream.targets() == ["/public/first"]


async def test_a_head_sent_slowly_is_counted_whole(start: Start) -> None:
    # Many small writes of one head add up: the limit is on the head, not on each read.
    client, upstream = await start(access=ADMIN)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
    try:
        writer.write(b"GET /public/x HTTP/1.1\r\nHost: docs.test\r\n")
        for index in range(60):
            writer.write(b"X-Part-%d: %s\r\n" % (index, b"v" * 3000))
            await writer.drain()
        writer.write(b"\r\n")
        (line, _, _), = await read_replies(reader, 1)
    finally:
        writer.close()
    assert line.split()[1] == "431"
    assert upstream.seen == []


async def test_http_1_0_closes_unless_kept_alive(start: Start) -> None:
    client, _upstream = await start(access=ADMIN)
    replies, rest = await one_connection(port_of(client), get("/public/a", version="1.0"), 1)
    assert replies[0][0] == "HTTP/1.0 200 OK"
    assert "connection" not in replies[0][1]
    assert rest == b""
    replies, rest = await one_connection(
        port_of(client), get("/public/a", "Connection: keep-alive", version="1.0")
        + get("/public/b", version="1.0"), 2)
    assert replies[0][1]["connection"] == "keep-alive"
    assert [json.loads(body)["path"] for _, _, body in replies] == ["/public/a", "/public/b"]


async def test_head_has_the_length_and_no_body(start: Start) -> None:
    client, _upstream = await start(access=ADMIN)
    data = (b"HEAD /public/a HTTP/1.1\r\nHost: docs.test\r\n\r\n"
            + get("/public/a", "Connection: close"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
    try:
        writer.write(data)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        following = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert length > 0
    # What follows the HEAD's head is the GET's answer, not a body.
    assert following.startswith(b"HTTP/1.1 200 OK")
    assert following.endswith(b"}") and len(following.partition(b"\r\n\r\n")[2]) == length


async def test_an_idle_connection_is_closed(aiohttp_server: Any, upstream: TestServer) -> None:
    app = await build_app(make_config(str(upstream.make_url("")).rstrip("/"), access=ADMIN))
    server = await aiohttp_server(app, keepalive_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(get("/public/a"))
        (line, _, _), = await read_replies(reader, 1)
        assert line == "HTTP/1.1 200 OK"
        # Nothing more is asked: the gateway closes the connection.
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


@pytest.mark.parametrize("together", [False, True], ids=["frame after", "all in one write"])
async def test_a_websocket_after_a_request_is_handed_over(gateway: Any, upstream: TestServer,
                                                          together: bool) -> None:
    # In one write, a long request, the switch and frames after it: read a slice at a
    # time, every byte after the switch goes with the connection. The reader leaving
    # ends the upstream's WebSocket too.
    client: Client = await gateway(access={"public": ["/**"]})
    key = base64.b64encode(os.urandom(16))
    upgrade = (b"GET /ws HTTP/1.1\r\nHost: docs.test\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
               b"Sec-WebSocket-Version: 13\r\nOrigin: http://docs.test\r\n\r\n")
    # One masked text frame, "hi"; the echo comes back unmasked.
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | 2]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi"))
    first = get("/first", *[f"X-Pad-{i}: " + "p" * 1000 for i in range(12 if together else 1)])
    frames = 1000 if together else 1  # 8 KB of frames: beyond the slice the switch ends in
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(first + upgrade + (frame * frames if together else b""))
        (line, _, body), = await read_replies(reader, 1)
        assert line == "HTTP/1.1 200 OK" and json.loads(body)["path"] == "/first"
        switched = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert switched.startswith(b"HTTP/1.1 101")
        if not together:
            writer.write(frame)
        for _ in range(frames):
            head = await asyncio.wait_for(reader.readexactly(2), 10)
            payload = await asyncio.wait_for(reader.readexactly(head[1] & 0x7F), 10)
            assert payload == b"echo:hi"
        assert not upstream.app[WS_ENDED].is_set()
    finally:
        writer.close()
    await asyncio.wait_for(upstream.app[WS_ENDED].wait(), 5)


async def test_a_client_that_leaves_mid_body_frees_its_request(start: Start) -> None:
    client, upstream = await start(access=ADMIN)
    _reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
    writer.write(b"POST /public/form HTTP/1.1\r\nHost: docs.test\r\nContent-Length: 1000\r\n"
                 b"\r\nabc")
    await writer.drain()
    writer.close()
    # The gateway goes on answering others.
    reply = await exchange(port_of(client), raw_request("/public/next"))
    assert reply.status == 200
    assert "/public/next" in upstream.targets()



@pytest.mark.parametrize(("reason", "field"), [
    ("OK", ("X-A", "a\r\nSet-Cookie: s=1")), ("OK", ("X-A", "a\nb")), ("OK", ("X-A\r\nB", "c")),
    ("OK", ("X-A", "a\x00b")), ("OK\r\nSet-Cookie: s=1", ("X-A", "a")),
])
def test_a_head_that_would_split_is_refused(reason: str, field: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        encode_head(HttpVersion11, 200, reason, CIMultiDict([field]))
    assert encode_head(HttpVersion11, 200, "OK", CIMultiDict([("X-A", "a b")])) \
        == b"HTTP/1.1 200 OK\r\nX-A: a b\r\n\r\n"


@pytest.mark.parametrize("target", ["/big?size=200000", "/big?size=200000&chunked=1"],
                         ids=["whole", "streamed"])
async def test_a_client_that_does_not_read_holds_its_next_answers(start: Start,
                                                                    target: str) -> None:
    # 200 requests sent at once, none of their answers read: the connection answers what
    # the socket takes, then waits, and reads at most a few requests ahead.
    client, upstream = await start(access={"public": ["/**"]})
    reader, writer = await small_window(port_of(client), 65536)
    try:
        writer.write(get(target) * 200)
        await writer.drain()
        seen = -1
        while seen != len(upstream.seen):  # until the gateway stops asking
            seen = len(upstream.seen)
            await asyncio.sleep(0.5)
        assert 0 < seen < 100
        # What is read ahead is bounded: the requests waiting, and the bytes not yet parsed.
        runner = client.server.runner
        assert runner is not None and isinstance(runner.server, DocsServer)
        connection, = runner.server.open
        assert len(connection.queue) <= MAX_WAITING + SLICE // len(get(target)) + 1
        # Read now: every answer comes, in order.
        replies = await read_replies(reader, 200, timeout=30)
    finally:
        writer.close()
    assert {line for line, _, _ in replies} == {"HTTP/1.1 200 OK"}
    assert len(upstream.seen) == 200


@pytest.mark.parametrize("method", ["GET", "CONNECT"])
async def test_a_protocol_switch_with_a_body_is_refused(gateway: Any, method: str) -> None:
    # The switch would come after the body: the connection is not handed over with a
    # request half read, nor is the request answered as a plain one.
    client: Client = await gateway(access={"public": ["/**"]})
    target = b"/ws" if method == "GET" else b"docs.test:80"
    head = (method.encode() + b" " + target + b" HTTP/1.1\r\nHost: docs.test\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
            + base64.b64encode(os.urandom(16)) + b"\r\nSec-WebSocket-Version: 13\r\n"
            b"Content-Length: 3\r\n\r\n")
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"abc")
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 4"), answer[:80]


async def test_a_switch_the_port_does_not_make_is_the_connections_last_request(
        start: Start) -> None:
    # "Upgrade: h2c" is not switched to: nothing after it is read, whichever slice it is
    # in, so a request hidden in what follows is never answered.
    client, upstream = await start(access=ADMIN)
    first = (b"GET /public/a HTTP/1.1\r\nHost: docs.test\r\nConnection: Upgrade\r\n"
             b"Upgrade: h2c\r\n\r\n")
    post = b"POST /public/p HTTP/1.1\r\nHost: docs.test\r\nContent-Length: %05d\r\n\r\n"
    hidden = get("/public/hidden")
    padding = SLICE - len(first) - len(post % 0)
    data = first + post % (padding + len(hidden)) + b"x" * padding + hidden
    assert data.index(hidden) == SLICE
    replies, rest = await one_connection(port_of(client), data, 1)
    assert replies[0][0] == "HTTP/1.1 200 OK"
    assert json.loads(replies[0][2])["path"] == "/public/a"
    assert replies[0][1]["connection"] == "close"
    assert rest == b""
    assert upstream.targets() == ["/public/a"]


async def test_a_connection_handed_over_for_a_switch_refused_closes_after_it(
        start: Start) -> None:
    # The docs server does not switch (the echo upstream's /public/ws is no WebSocket): the
    # answer closes the connection rather than leave it to a handler without the port's
    # own limits.
    client, _upstream = await start(access=ADMIN)
    upgrade = (b"GET /public/ws HTTP/1.1\r\nHost: docs.test\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: " + base64.b64encode(os.urandom(16))
               + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    replies, rest = await one_connection(port_of(client), upgrade, 1)
    assert not replies[0][0].startswith("HTTP/1.1 101")
    assert replies[0][1]["connection"] == "close"
    assert rest == b""


@pytest.mark.parametrize("version", ["0.9", "2.0", "1.2"])
async def test_an_http_version_other_than_1_0_and_1_1_is_refused(start: Start,
                                                                   version: str) -> None:
    client, upstream = await start(access=ADMIN)
    replies, rest = await one_connection(port_of(client), get("/public/a", version=version), 1)
    assert replies[0][0].startswith("HTTP/1.1 505") or replies[0][0].startswith("HTTP/1.1 400")
    assert rest == b""
    assert upstream.seen == []


@pytest.mark.parametrize("stall", ["body", "reading"])
async def test_a_client_that_stalls_an_answer_is_closed(aiohttp_server: Any, upstream: TestServer,
                                                        stall: str) -> None:
    app = await build_app(make_config(str(upstream.make_url("")).rstrip("/"),
                                      access={"public": ["/**"]}))
    server = await aiohttp_server(app, keepalive_timeout=0.5)
    _reader, writer = await small_window(server.port, 4096, limit=1024)
    try:
        if stall == "body":  # a body that stops coming
            writer.write(b"POST /form HTTP/1.1\r\nHost: docs.test\r\nContent-Length: 100\r\n"
                         b"\r\n0123456789")
        else:  # 8 MB answers, none read
            writer.write(get("/big?size=8000000") * 4)
        await writer.drain()
        await asyncio.sleep(3)
        runner = server.runner
        assert runner is not None and isinstance(runner.server, DocsServer)
        assert not runner.server.open
    finally:
        writer.close()



async def test_a_switch_not_made_with_a_body_is_read_to_its_end(start: Start) -> None:
    # curl --http2 on a POST: "Upgrade: h2c" with a body longer than one slice, in one
    # write and split; the body is read whole, then nothing more.
    client, _upstream = await start(access=ADMIN)
    body = b"b" * (2 * SLICE + 100)
    head = (b"POST /public/form HTTP/1.1\r\nHost: docs.test\r\nConnection: Upgrade, "
            b"HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    for split in (False, True):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
        try:
            writer.write(head if split else head + body + get("/public/hidden"))
            if split:
                await writer.drain()
                await asyncio.sleep(0.1)
                writer.write(body + get("/public/hidden"))
            (line, headers, answer), = await read_replies(reader, 1)
            rest = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        assert line == "HTTP/1.1 200 OK"
        assert json.loads(answer)["body"] == body.decode()
        assert headers["connection"] == "close"
        assert rest == b""


async def test_an_answer_that_ends_the_connection_is_not_cut_by_what_follows(
        start: Start) -> None:
    # The client sends another request while a long answer that closes the connection is
    # still going out: it gets the whole answer, not a reset.
    client, _upstream = await start(access={"public": ["/**"]})
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
    try:
        writer.write(get("/big?size=3000000", "Connection: close"))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(get("/public/b"))
        await writer.drain()
        await asyncio.sleep(0.3)
        body = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) == 3000000



@pytest.mark.parametrize(("data", "paths"), [
    # After a request that closes the connection, what follows is not read, not refused.
    (get("/public/a", "Connection: close") + get("/public/b"), ["/public/a"]),
    (get("/public/b") + get("/public/a", version="1.0") + get("/public/c"),
     ["/public/b", "/public/a"]),
    # A request the parser read before a fault in the same read is answered first.
    (get("/public/a") + b"GET /public/x HTTP/1.1\r\nHost: docs.test\r\n\x01bad\r\n\r\n",
     ["/public/a"]),
], ids=["after Connection: close", "after HTTP/1.0", "before a fault"])
async def test_requests_read_with_what_ends_the_connection_are_answered(
        start: Start, data: bytes, paths: list[str]) -> None:
    client, upstream = await start(access=ADMIN)
    faulty = b"\x01bad" in data
    replies, rest = await one_connection(port_of(client), data, len(paths) + faulty)
    answered = replies[:len(paths)]
    assert [json.loads(body)["path"] for _, _, body in answered] == paths
    if faulty:
        assert replies[-1][0].split()[1] == "400"
    assert rest == b""
    assert upstream.targets() == paths


async def test_connect_is_refused_once(start: Start) -> None:
    client, upstream = await start(access=ADMIN)
    replies, rest = await one_connection(
        port_of(client), b"CONNECT docs.test:80 HTTP/1.1\r\nHost: docs.test\r\n\r\n"
        + get("/public/a"), 1)
    assert replies[0][0].split()[1] == "400"
    assert rest == b""
    assert upstream.seen == []


async def test_an_answer_that_ends_the_connection_waits_for_a_pausing_reader(
        start: Start) -> None:
    # A page the gateway read whole goes out in one write; the reader pauses longer than
    # the connection lingers after it: it still gets the whole page.
    client, _upstream = await start(access={"public": ["/**"]})
    reader, writer = await small_window(port_of(client), 65536)
    size = 6000000
    try:
        writer.write(get(f"/big?size={size}&html=1", "Connection: close"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        await asyncio.sleep(3)
        body = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 200") and b"text/html" in head
    assert len(body) == int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])


async def test_an_answer_that_ends_the_connection_survives_what_is_sent_after_it(
        start: Start) -> None:
    # More than the connection lets go is sent behind an answer that closes it: reading
    # stops, and the answer still arrives whole before the close.
    client, _upstream = await start(access={"public": ["/**"]})
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
    size = 3000000
    try:
        writer.write(get(f"/big?size={size}&html=1", "Connection: close"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(b"x" * (2 * LINGER_BYTES))  # not drained: the gateway stops reading
        await asyncio.sleep(1)
        body = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    assert len(body) == int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])


async def test_a_page_answered_on_a_handed_over_connection_has_the_same_head(
        gateway: Any, tmp_path: Any) -> None:
    # A WebSocket request to a page of a built folder: no switch (the folder has no
    # WebSocket), so aiohttp's handler, which the connection was handed to, writes the
    # page the docs port would have written itself. Its head is the same, but for the date
    # and how the connection ends.
    (tmp_path / "guide").mkdir()
    (tmp_path / "guide" / "index.html").write_text(
        "<!doctype html><html><head><title>Guide</title></head><body>"
        + "<p>The guide.</p>" * 100 + "</body></html>")
    client = await gateway(upstream_url=None, upstream={"root": str(tmp_path)},
                           access={"public": ["/**"]})
    switch = ("Upgrade: websocket", "Connection: Upgrade",
              "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
              "Sec-WebSocket-Version: 13")
    apart = {"date", "connection", "x-request-id"}

    def fields(head: bytes) -> list[tuple[str, str]]:
        lines = head.decode("latin-1").split("\r\n")[1:]
        return [(name.lower(), value.strip()) for name, _, value in
                (line.partition(":") for line in lines) if name and name.lower() not in apart]

    heads = []
    for extra in ((), switch):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(client))
        try:
            writer.write(get("/guide/", "Accept-Encoding: gzip", *extra))
            heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10))
        finally:
            writer.close()
    assert heads[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert heads[1].startswith(b"HTTP/1.1 200 OK\r\n")
    assert fields(heads[1]) == fields(heads[0])
    names = [name for name, _ in fields(heads[0])]
    assert {"etag", "content-type", "content-encoding", "vary", "content-length"} <= set(names)
    assert names.count("etag") == 1 and dict(fields(heads[0]))["etag"]
