"""Proxying to a real upstream: methods, bodies, headers, streaming, failures, hygiene."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from gateway.bounded import HEAD_MEMO_FIELDS, HEAD_MEMO_LENGTH, HEADER_MEMO, HEADER_MEMO_LENGTH
from gateway.proxy.location import UpstreamAddress
from gateway.proxy.static import FileAnswer
from gateway.proxy.upstream import HEAD_MEMO, Upstream
from gateway.services import GATEWAY
from tests.helpers import (
    Client,
    GatewayFactory,
    app_of,
    get,
    header_map,
    make_user,
    raw_http,
    session_cookies,
)
from tests.ports import free_port

PUBLIC = {"public": ["/**"]}


@pytest.fixture
def gateway(gateway: GatewayFactory) -> GatewayFactory:
    """The gateway in front of the echo upstream, every page public unless a test says."""
    return functools.partial(gateway, access=PUBLIC)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_methods_and_bodies_reach_the_upstream(gateway: GatewayFactory, method: str) -> None:
    client = await gateway()
    body = b"payload-" + method.encode()
    async with client.request(method, "/api/thing?x=1", data=body) as response:
        assert response.status == 200
        echoed = await response.json()
    assert echoed["method"] == method
    assert echoed["path"] == "/api/thing?x=1"
    assert echoed["body"] == body.decode()


async def test_head_has_no_body(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.head("/big?size=5000") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "5000"
        assert await response.read() == b""


async def test_a_small_asset_goes_out_whole_with_its_length(gateway: GatewayFactory) -> None:
    client = await gateway()
    # Sent in chunks by the docs server, all of it with the head: one write, its length.
    async with client.get("/assets/chunked.js") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "14"
        assert "Transfer-Encoding" not in response.headers
        assert await response.read() == b"console.log(1)"
    async with client.head("/assets/chunked.js") as response:
        assert response.status == 200 and await response.read() == b""


@pytest.mark.parametrize("code", [201, 204, 301, 304, 400, 404, 418, 500, 503])
async def test_status_codes_pass_through(gateway: GatewayFactory, code: int) -> None:
    client = await gateway()
    async with client.get(f"/status/{code}", allow_redirects=False) as response:
        assert response.status == code


async def test_large_body_streams_both_ways(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.get("/big?size=20000000&chunked=1") as response:
        total = 0
        async for chunk in response.content.iter_any():
            total += len(chunk)
    assert total == 20_000_000
    upload = b"u" * 5_000_000
    async with client.post("/upload", data=upload) as response:
        echoed = await response.json()
    assert len(echoed["body"]) == 5_000_000


async def test_upstream_down_is_502_json_and_html(gateway: GatewayFactory) -> None:
    port = free_port()
    client = await gateway(upstream={"url": f"http://127.0.0.1:{port}"})
    async with client.get("/x") as response:
        assert response.status == 502
        assert (await response.json())["error"] == "bad_gateway"
    async with client.get("/x", headers={"Accept": "text/html"}) as response:
        assert response.status == 502
        text = await response.text()
        assert "unreachable" in text and "<html" in text
    async with client.get("/_gateway/healthz") as response:
        assert response.status == 200


async def test_slow_upstream_is_504_and_gateway_stays_up(gateway: GatewayFactory) -> None:
    client = await gateway(upstream={"timeout": "200ms"})
    async with client.get("/slow?s=3") as response:
        assert response.status == 504
        assert (await response.json())["error"] == "gateway_timeout"
    async with client.get("/fine") as response:
        assert response.status == 200


async def test_upstream_reset_mid_body_truncates_not_hangs(gateway: GatewayFactory) -> None:
    client = await gateway()
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.get("/reset") as response:
            await response.read()
    async with client.get("/after") as response:
        assert response.status == 200


@pytest.mark.parametrize("name", [
    "X-Gateway-User", "x-gateway-user", "X_Gateway_User", "x-GATEWAY-groups",
    "X-Gateway-Assertion", "x_gateway_assertion", "X-Gateway-Anything",
])
async def test_identity_headers_from_clients_never_reach_upstream(gateway: GatewayFactory,
                                                                  name: str) -> None:
    client = await gateway()
    async with client.get("/echo", headers={name: "admin"}) as response:
        echoed = await response.json()
    for header in header_map(echoed):
        assert not header.replace("_", "-").startswith("x-gateway-")


async def test_a_page_is_asked_for_whole_and_an_asset_as_the_client_asked(
        gateway: GatewayFactory) -> None:
    client = await gateway()
    asked = {"Range": "bytes=0-1", "If-None-Match": '"x"', "If_Modified_Since": "Mon, 01 Jan "
             "2024 00:00:00 GMT", "if.match": '"y"', "IF-RANGE": '"z"', "X-Other": "kept"}
    partial = {"range", "if-none-match", "if-modified-since", "if-match", "if-range"}
    # A page's path: its answer is read, so no range or condition may shape it (in any
    # spelling a server may read as one).
    async with client.get("/guide/", headers=asked) as response:
        assert response.status == 200
        echoed = await response.json()
    names = {name.replace("_", "-").replace(".", "-") for name in header_map(echoed)}
    assert not names & partial and "x-other" in names, names
    # An asset keeps them: the docs server answers its ranges and revalidations.
    async with client.get("/assets/app.js", headers=asked) as response:
        echoed = await response.json()
    names = {name.replace("_", "-").replace(".", "-") for name in header_map(echoed)}
    assert partial <= names and echoed["method"] == "GET"


async def test_configured_plain_identity_header_is_stripped(gateway: GatewayFactory) -> None:
    client = await gateway(identity={"headers": {"X-Email": "content.email"}})
    async with client.get("/echo", headers={"X-Email": "boss@example.com"}) as response:
        echoed = await response.json()
    assert "x-email" not in header_map(echoed)


async def test_hop_by_hop_and_connection_named_headers_removed(gateway: GatewayFactory,
                                                               upstream: TestServer) -> None:
    client = await gateway()
    request = (b"GET /echo HTTP/1.1\r\nHost: docs.test\r\nConnection: keep-alive, X-Drop-Me\r\n"
               b"X-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
               b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Keep: 1\r\n\r\n")
    assert client.port is not None
    status, _, body = await raw_http(client.port, request)
    assert status == 200
    headers = header_map(json.loads(body))
    for gone in ("x-drop-me", "keep-alive", "te", "proxy-authorization"):
        assert gone not in headers
    assert headers["x-keep"] == ["1"]
    async with client.get("/hop") as response:
        assert "X-Secret-Hop" not in response.headers
        assert "Keep-Alive" not in response.headers


async def test_forwarded_headers_from_untrusted_peers_are_replaced(gateway: GatewayFactory) -> None:
    client = await gateway()
    spoof = {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https",
             "X-Forwarded-Host": "evil.test", "Forwarded": "for=1.2.3.4",
             "X-Original-URL": "/admin", "X-Rewrite-URL": "/admin", "X-Real-IP": "1.2.3.4"}
    async with client.get("/echo", headers=spoof) as response:
        echoed = await response.json()
        assert response.headers["X-Request-Id"]
    headers = header_map(echoed)
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] != ["evil.test"]
    for gone in ("forwarded", "x-original-url", "x-rewrite-url", "x-real-ip"):
        assert gone not in headers
    assert headers["x-request-id"][0] == response.headers["X-Request-Id"]


async def test_forwarded_headers_from_trusted_proxy_are_extended(gateway: GatewayFactory) -> None:
    client = await gateway(server={"trusted_proxies": ["127.0.0.0/8"]})
    async with client.get("/echo", headers={"X-Forwarded-For": "203.0.113.9",
                                            "X-Forwarded-Proto": "https"}) as response:
        headers = header_map(await response.json())
    assert headers["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]


async def test_gateway_cookies_removed_from_cookie_header(gateway: GatewayFactory) -> None:
    client = await gateway()
    cookie = "theme=dark; docs_session=abc; __Host-docs_session.1=x; docs_session_state_1=z; a=b"
    for _ in range(2):  # the second time from what the first kept
        async with client.get("/echo", headers={"Cookie": cookie}) as response:
            headers = header_map(await response.json())
        assert headers["cookie"] == ["theme=dark; a=b"]
    # What is kept stays bounded, whatever headers clients send.
    origin = app_of(client)[GATEWAY].sites[0].origin
    assert isinstance(origin, Upstream)
    for number in range(HEADER_MEMO + 10):
        assert origin.filter_cookies(f"docs_session=1; n={number}") == f"n={number}"
    long = "n=" + "v" * HEADER_MEMO_LENGTH
    assert origin.filter_cookies(long + "; docs_session=1") == long
    assert len(origin._kept_cookies) == HEADER_MEMO


async def test_upstream_set_cookie_of_gateway_cookie_is_dropped(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.get("/set-cookie?name=docs_session&name=__Host-docs_session&name=theme") \
            as response:
        cookies = response.headers.getall("Set-Cookie")
    assert len(cookies) == 1 and cookies[0].startswith("theme=")


async def test_each_upstream_head_is_read_anew_and_the_kept_ones_stay_bounded(
        gateway: GatewayFactory, upstream_url: str) -> None:
    client = await gateway()
    origin = app_of(client)[GATEWAY].sites[0].origin
    assert isinstance(origin, Upstream)
    for query, kept in (("name=theme", ["theme"]), ("name=theme", ["theme"]),
                        ("name=docs_session&name=theme", ["theme"]), ("name=docs_session", []),
                        ("name=theme", ["theme"])):
        async with client.get(f"/set-cookie?{query}") as response:
            assert [cookie.split("=")[0] for cookie in response.headers.getall("Set-Cookie", [])] \
                == kept
    # Heads of every kind: each read on its own (the upstream's address made the public
    # one), and what is kept of them bounded.
    for number in range(HEAD_MEMO + 10):
        answer = FileAnswer(302, "Found", CIMultiDict(
            [("Location", f"{upstream_url}/page/{number}"), ("Set-Cookie", "docs_session=x")]))
        assert origin.response_pairs(answer) == (("Location", f"http://docs.test/page/{number}"),)
    assert len(origin._heads) == HEAD_MEMO
    # The latest made are kept.
    def sent(number: int) -> tuple[tuple[str, str], ...]:
        return (("Location", f"{upstream_url}/page/{number}"), ("Set-Cookie", "docs_session=x"))

    assert sent(HEAD_MEMO + 9) in origin._heads and sent(0) not in origin._heads
    # Heads too long, or of too many fields, are read each time, and not kept.
    first = next(iter(origin._heads))
    for fields in ([("X-Long", "v" * HEAD_MEMO_LENGTH)],
                   [(f"X-{number}", "") for number in range(HEAD_MEMO_FIELDS + 1)]):
        answer = FileAnswer(200, "OK", CIMultiDict(fields))
        assert origin.response_pairs(answer) == tuple(fields)
        assert len(origin._heads) == HEAD_MEMO and next(iter(origin._heads)) == first


async def test_the_answer_is_dated_by_the_gateway_and_one_page_version_has_one_head(
        aiohttp_server: Any, gateway: GatewayFactory) -> None:
    dates = iter(f"Mon, 01 Jan 2001 00:00:{second:02d} GMT" for second in range(60))

    async def page(request: web.Request) -> web.Response:
        kind = "text/html" if request.path.endswith("/") else "text/css"
        return web.Response(text="<p>hi</p>" if kind == "text/html" else "p {}",
                            headers={"Content-Type": kind, "Date": next(dates),
                                     "ETag": '"v1"'})

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    server = await aiohttp_server(app)
    client = await gateway(upstream={"url": str(server.make_url("")).rstrip("/")})
    origin = app_of(client)[GATEWAY].sites[0].origin
    assert isinstance(origin, Upstream)
    for path in ("/guide/", "/guide/", "/site.css", "/site.css"):
        async with client.get(path) as response:
            assert response.status == 200
            assert "2001" not in response.headers["Date"]
    # One head for each of the two files, whatever Date the upstream sent.
    assert len(origin._heads) == 2


async def test_an_answer_carries_the_gateways_request_id_in_place_of_the_upstreams(
        aiohttp_server: Any, gateway: GatewayFactory) -> None:
    # A docs server that sends its own (nginx's add_header X-Request-Id $request_id): a
    # page, a page read anew for a reader whose cookies change, and an asset each carry
    # one id, the gateway's (the one its log lines carry), where the docs server's was.
    async def page(request: web.Request) -> web.Response:
        kind = "text/html" if request.path.endswith("/") else "text/css"
        return web.Response(text="<p>hi</p>" if kind == "text/html" else "p {}",
                            headers={"Content-Type": kind, "X-Request-Id": "from-docs",
                                     "X-After": "1"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    server = await aiohttp_server(app)
    client = await gateway(upstream={"url": str(server.make_url("")).rstrip("/")})
    assert client.port is not None
    cookies = await session_cookies(app_of(client), make_user())
    stale = "; docs_session.7=stale"  # a chunk the gateway clears: its cookies change
    reader_cookie = "; ".join(f"{name}={value}" for name, value in cookies.items()) + stale
    for path, cookie in (("/guide/", None), ("/guide/", reader_cookie), ("/site.css", None)):
        sent = get(path, {"Cookie": cookie} if cookie else None)
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        try:
            writer.write(sent)
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        finally:
            writer.close()
        lines = head.split("\r\n")
        assert lines[0] == "HTTP/1.1 200 OK", head
        assert (path, cookie is not None) != ("/guide/", True) or "Set-Cookie" in head
        fields = [line.partition(":") for line in lines[1:] if line]
        names = [name.lower() for name, _, _ in fields]
        ids = [value.strip() for name, _, value in fields if name.lower() == "x-request-id"]
        assert len(ids) == 1 and ids[0] != "from-docs", head
        assert names.index("x-request-id") < names.index("x-after"), head


async def test_the_same_page_head_goes_out_private_to_a_reader_only(
        gateway: GatewayFactory) -> None:
    client = await gateway()
    cookies = await session_cookies(app_of(client), make_user())
    for reader in (True, False, True, False):
        async with client.get("/html", cookies=cookies if reader else None) as response:
            assert response.status == 200
            assert ("private" in response.headers.get("Cache-Control", "")) == reader


async def test_host_header_upstream_or_preserve(gateway: GatewayFactory,
                                                upstream: TestServer) -> None:
    client = await gateway()
    async with client.get("/echo", headers={"Host": "docs.example.com"}) as response:
        headers = header_map(await response.json())
    assert headers["host"] == [f"127.0.0.1:{upstream.port}"]
    client = await gateway(upstream={"host_header": "preserve"})
    async with client.get("/echo", headers={"Host": "docs.example.com"}) as response:
        headers = header_map(await response.json())
    assert headers["host"] == ["docs.example.com"]


@pytest.mark.parametrize(("sent", "forwarded"), [
    ("/a/./b", "/a/b"), ("/a/../b", "/b"), ("//a///b", "/a/b"), ("/%61%62c", "/abc"),
    ("/a/%2e%2e/b", "/b"), ("/x/%7Euser", "/x/~user"), ("/sp%20ace", "/sp%20ace"),
])
async def test_upstream_receives_the_normalized_path(gateway: GatewayFactory, sent: str,
                                                     forwarded: str) -> None:
    client = await gateway()
    assert client.port is not None
    status, _, body = await raw_http(client.port, get(sent))
    assert status == 200
    assert json.loads(body)["path"] == forwarded


@pytest.mark.parametrize("sent", [
    "/a%2Fb", "/a%2fb", "/a%5Cb", "/a\\b", "/a%00b", "/a;jsessionid=1", "/a%3Bb",
    "/a%0d%0ab", "/%252e%252e/admin", "/a%zz",
])
async def test_ambiguous_paths_are_400(gateway: GatewayFactory, sent: str) -> None:
    client = await gateway()
    assert client.port is not None
    status, _, body = await raw_http(client.port, get(sent))
    assert status == 400
    assert b"Traceback" not in body


async def test_absolute_form_target_is_refused(gateway: GatewayFactory) -> None:
    client = await gateway()
    assert client.port is not None
    status, _, _ = await raw_http(client.port, get("http://evil.test/admin"))
    assert status == 400


async def test_expect_100_continue_is_answered_then_the_body_is_proxied(
        gateway: GatewayFactory) -> None:
    client = await gateway()
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(b"POST /api/thing HTTP/1.1\r\nHost: docs.test\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")  # only now, as a client that waits for the 100 would
        reply = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["body"] == "hello"


async def test_an_unknown_expectation_is_417(gateway: GatewayFactory) -> None:
    client = await gateway()
    assert client.port is not None
    status, _, body = await raw_http(client.port, get("/page", {"Expect": "teapot"}))
    assert status == 417
    assert json.loads(body)["error"] == "expectation_failed"


async def test_compressed_html_gets_the_script_injected(aiohttp_server: Any,
                                                        gateway: GatewayFactory) -> None:
    async def page(request: web.Request) -> web.Response:
        body = gzip.compress(b"<html><head><title>x</title></head><body>hi</body></html>")
        return web.Response(body=body, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "text/html"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    server = await aiohttp_server(app)
    client = await gateway(upstream={"url": str(server.make_url("")).rstrip("/")})
    async with client.get("/guide") as response:
        text = await response.text()
    assert '<script src="/_gateway/client.js" data-user="null" defer></script></head>' in text


async def test_websocket_is_proxied(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("hello")
        message = await ws.receive(timeout=5)
    assert message.data == "echo:hello"


async def test_request_id_is_sent_upstream_and_back(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.get("/echo") as response:
        headers = header_map(await response.json())
    assert headers["x-request-id"] == [response.headers["X-Request-Id"]]


async def test_private_response_marked_private(gateway: GatewayFactory) -> None:
    client = await gateway(access={"public": ["/pub/**"]})
    cookies = await session_cookies(app_of(client), make_user())
    async with client.get("/secret/page", cookies=cookies) as response:
        assert response.status == 200
        assert "private" in response.headers["Cache-Control"]
        assert "Cookie" in response.headers["Vary"]
    async with client.get("/pub/a") as response:
        assert "Cache-Control" not in response.headers or \
            "private" not in response.headers["Cache-Control"]


async def test_many_concurrent_requests(gateway: GatewayFactory) -> None:
    client = await gateway()

    async def one(i: int) -> int:
        async with client.get(f"/n/{i}") as response:
            await response.read()
            return response.status

    statuses = await asyncio.gather(*(one(i) for i in range(200)))
    assert statuses == [200] * 200


async def test_clients_that_leave_early_do_not_use_up_the_pool(gateway: GatewayFactory) -> None:
    client = await gateway(upstream={"max_connections": 4, "connect_timeout": "2s"})
    assert client.port is not None
    port = client.port

    async def leave(path: str, mid_body: bool) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: docs.test\r\n\r\n".encode())
        await writer.drain()
        if mid_body:
            await reader.read(1000)
        writer.transport.abort()

    for mid_body in (False, True):
        for _ in range(3):  # many times the pool: every connection must come back
            await asyncio.gather(*(leave("/big?size=200000", mid_body) for _ in range(50)))
            await all_handled(client)  # the answers arrive to nobody
    async with client.get("/after") as response:
        assert response.status == 200


async def all_handled(client: Client, timeout: float = 10.0) -> None:
    """Wait until the gateway holds no client connection and every pool slot is back."""
    assert client.app is not None
    origin = client.app[GATEWAY].sites[0].origin
    assert isinstance(origin, Upstream) and origin.pool is not None
    slots = origin.pool.slots
    limit = origin.config.upstream.max_connections
    assert client.server.runner is not None and client.server.runner.server is not None
    server = client.server.runner.server
    deadline = time.monotonic() + timeout
    while server.connections or slots.waiters or slots.free != limit:
        assert time.monotonic() < deadline, (
            f"{len(server.connections)} client connections, {len(slots.waiters)} waiting, "
            f"{slots.free} of {limit} slots free")
        await asyncio.sleep(0.01)


# -- the upstream's own address in the URLs it sends back ---------------------------------

LOOPBACK = UpstreamAddress("http://127.0.0.1:3000/site", "https://docs.example.com/docs",
                           preserve_host=False)


@pytest.mark.parametrize(("value", "expected"), [
    ("http://127.0.0.1:3000/site/docs/guide/", "https://docs.example.com/docs/guide/"),
    ("http://127.0.0.1:3000/site", "https://docs.example.com/"),
    ("http://127.0.0.1:3000", "https://docs.example.com/"),
    ("http://127.0.0.1:3000?q=1", "https://docs.example.com/?q=1"),
    ("http://127.0.0.1:3000/elsewhere", "https://docs.example.com/elsewhere"),
    ("http://127.0.0.1:3000/sitemap.xml", "https://docs.example.com/sitemap.xml"),
    ("http://127.0.0.1:3000/site\\docs\\x", "https://docs.example.com/docs/x"),
    ("http://127.0.0.1:3000/site/a?next=http://127.0.0.1:3000/",
     "https://docs.example.com/a?next=http://127.0.0.1:3000/"),
    ("h\nttp://127.0.0.1:30\r\n00/site/x", "https://docs.example.com/x"),
    ("\x00 //127.0.0.1:3000/site/x\x1f", "https://docs.example.com/x"),
    ("http://127.0.0.1:99999/x", "http://127.0.0.1:99999/x"),
    ("http://127.0.0.1:3000x/x", "https://docs.example.com/x"),
    ("http://127.0.0.1/x", "http://127.0.0.1/x"),
    ("http://127.0.0.1:/x", "http://127.0.0.1:/x"),
    ("/site/docs/x", "https://docs.example.com/docs/x"),
    ("/site", "https://docs.example.com/"),
    ("/site#top", "https://docs.example.com/#top"),
    ("/sitemap", "/sitemap"),
    ("/docs/x", "/docs/x"),
    ("javascript:alert(1)", "javascript:alert(1)"),
    ("", ""),
    # A header's bytes that are no UTF-8 are read one by one (0xAD: a soft hyphen, which
    # the host mapping drops; 0xB9: a superscript one).
    ("http://[::1\xad]:3000/site/x", "https://docs.example.com/x"),
    ("http://[::\xb9]:3000/site/x", "https://docs.example.com/x"),
    ("http://[::1%25eth0]:3000/site/x", "https://docs.example.com/x"),
    ("http://b\u00fccher.example/x", "http://b\u00fccher.example/x"),
    # Ports and hosts that int() cannot read (a digit that is no decimal one, thousands of
    # digits): never an error, and an unreadable port on the upstream's host is rewritten.
    ("http://localhost:%E1%8D%A9/site/x", "https://docs.example.com/x"),
    ("http://localhost:\u1369/site/x", "https://docs.example.com/x"),
    ("http://127.0.0.1:" + "1" * 5000 + "/site/x", "https://docs.example.com/x"),
    ("http://127.0.0.1:0003000/site/x", "https://docs.example.com/x"),
    ("http://" + "1" * 5000 + "/x", "http://" + "1" * 5000 + "/x"),
    ("http://" + "%C2%AD" * 400 + "localhost:3000/x", "https://docs.example.com/x"),
])
def test_upstream_urls_become_public(value: str, expected: str) -> None:
    assert LOOPBACK.rewrite(value) == expected


@pytest.mark.parametrize(("upstream", "value", "rewritten"), [
    ("http://127.0.0.1", "http://127.0.0.1/x", True),
    ("http://127.0.0.1:80", "//127.0.0.1/x", True),
    ("http://127.0.0.1", "http://127.0.0.1:80/x", True),
    ("http://127.0.0.1", "https://127.0.0.1/x", False),
    ("https://docs-internal:443", "https://DOCS-INTERNAL./x", True),
    ("https://docs-internal:443", "http://docs-internal/x", False),
    ("http://docs-internal:8000", "http://localhost:8000/x", False),
    ("http://10.0.0.5:8000", "http://10.0.5:8000/x", True),
    ("http://10.0.0.5:8000", "http://127.0.0.1:8000/x", False),
    ("http://[::1]:8000", "http://localhost:8000/x", True),
])
def test_which_hosts_and_ports_are_the_upstreams(upstream: str, value: str,
                                                 rewritten: bool) -> None:
    address = UpstreamAddress(upstream, "https://docs.example.com", preserve_host=False)
    assert (address.rewrite(value) != value) is rewritten


def test_with_the_host_preserved_the_public_host_on_the_upstreams_port_is_the_upstream() -> None:
    address = UpstreamAddress("http://10.0.0.5:8000", "https://docs.example.com",
                              preserve_host=True)
    assert address.rewrite("http://docs.example.com:8000/x") == "https://docs.example.com/x"
    assert address.rewrite("http://docs.example.com/x") == "http://docs.example.com/x"


@pytest.mark.parametrize(("value", "expected"), [
    ("0; url=http://127.0.0.1:3000/site/x", "0; url=https://docs.example.com/x"),
    ("5;URL='//localhost:3000/x'junk", "5;URL='https://docs.example.com/x'junk"),
    ('1.5 , Url = "http://127.0.0.1:3000/x"', '1.5 , Url = "https://docs.example.com/x"'),
    ("0 http://127.0.0.1:3000/x", "0 https://docs.example.com/x"),
    ("0;http://127.0.0.1:3000/x", "0;https://docs.example.com/x"),
    ("0; u=http://127.0.0.1:3000/x", "0; u=http://127.0.0.1:3000/x"),
    # "url" without "=": what follows is still the URL.
    ("0; urlhttp://127.0.0.1:3000/x", "0; urlhttps://docs.example.com/x"),
    ("soon; url=http://127.0.0.1:3000/x", "soon; url=http://127.0.0.1:3000/x"),
    ("0", "0"),
    ("0; url=", "0; url="),
    ("0; url='http://127.0.0.1:3000/site/x'", "0; url='https://docs.example.com/x'"),
    # HTML ends a quoted URL at its first quote, Chromium at the last: read either way,
    # it must not lead to the upstream, or it is not sent.
    ("0; url='http://evil.example'@127.0.0.1:3000/x'", None),
    ("0; url='http://evil.example/it's'", "0; url='http://evil.example/it's'"),
])
def test_refresh_urls_are_read_as_browsers_read_them(value: str, expected: str | None) -> None:
    assert LOOPBACK.rewrite_refresh(value) == expected


def test_link_targets() -> None:
    value = '<http://127.0.0.1:3000/site/a.css>; rel=preload, <https://cdn.example/b.js>; rel=x'
    assert LOOPBACK.rewrite_link(value) == \
        '<https://docs.example.com/a.css>; rel=preload, <https://cdn.example/b.js>; rel=x'


@pytest.mark.parametrize(("value", "expected"), [
    ("<http://a<b@127.0.0.1:3000/site/x>; rel=preload",
     "<https://docs.example.com/x>; rel=preload"),
    # A "<" in a quoted parameter starts no URL for a browser, but the one after it does.
    ('<a.css>; rel="x<", <http://127.0.0.1:3000/site/x.css>; rel=preload', None),
    ("<a.css>; rel=preload" + ", <b.css>" * 63, "<a.css>; rel=preload" + ", <b.css>" * 63),
    ("<a.css>; rel=preload" + ", <b.css>" * 64, None),
])
def test_link_urls_are_read_from_every_angle_bracket(value: str, expected: str | None) -> None:
    assert LOOPBACK.rewrite_link(value) == expected


def test_a_link_of_many_angle_brackets_is_refused_unread() -> None:
    # Read with the URL pattern, 60,000 "<" took about 20 s of the event loop (it
    # backtracked at each); so many are refused before any is read.
    assert LOOPBACK.rewrite_link("<" * 60_000) is None
    assert LOOPBACK.rewrite_link("<" * 64 + "x" * 60_000) == "<" * 64 + "x" * 60_000
