"""Pages read whole, kept and revalidated with the upstream (gateway/proxy/kept.py).

Behind a real nginx, whose access log tells what it answered: the same reader asking the
same page again costs the upstream a 304, and the reader still gets the page, read and
judged as before; anything that is not that very request again, or a 304 that does not
name the kept copy, gets the upstream's whole answer.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.proxy.http1 import request_text
from gateway.proxy.kept import COPY_WEIGHT, KEPT_FOR, KeptAnswers, Replayed, keepable, request_key
from gateway.proxy.upstream import Upstream
from gateway.services import GATEWAY
from tests.helpers import GatewayFactory, app_of, make_user, session_cookies
from tests.nginx import nginx_serving

pytestmark = pytest.mark.slow

NGINX = "        root {root};\n        access_log {log} combined;\n"

PAGE = ("<!doctype html><html><head><title>Guide</title></head><body><main>"
        "<p>Welcome to the guide.</p>"
        "<div data-gateway-groups=\"admin\"><p>GATED-SECRET</p></div>"
        "</main></body></html>")


def said(sub: str) -> bytes:
    """The reader's subject as the client script's tag carries it."""
    return f"&quot;sub&quot;:&quot;{sub}&quot;".encode()


@dataclass
class Site:
    client: Any
    root: Path
    log: Path

    async def cookie(self, sub: str, groups: tuple[str, ...] = ()) -> str:
        cookies = await session_cookies(app_of(self.client), make_user(sub, groups))
        return "; ".join(f"{name}={value}" for name, value in cookies.items())

    async def get(self, path: str, cookie: str | None = None,
                  method: str = "GET") -> tuple[int, bytes, Any]:
        headers = {"Cookie": cookie} if cookie else {}
        async with self.client.request(method, path, headers=headers) as response:
            return response.status, await response.read(), response.headers

    async def statuses(self, count: int) -> list[int]:
        """The statuses of nginx's first ``count`` answers (it logs each once sent)."""
        for _ in range(200):
            lines = self.log.read_text().splitlines() if self.log.exists() else []
            if len(lines) >= count:
                return [int(line.split('"')[2].split()[0]) for line in lines]
            await asyncio.sleep(0.01)
        raise AssertionError(f"nginx logged {len(lines)} answers, not {count}")


@pytest.fixture
async def site(tmp_path: Path, gateway: GatewayFactory) -> AsyncIterator[Site]:
    root = tmp_path / "site"
    (root / "guide").mkdir(parents=True)
    (root / "guide/index.html").write_text(PAGE)
    log = tmp_path / "access.log"
    access = {"public": ["/guide/**"]}
    async with nginx_serving(tmp_path, NGINX.format(root=root, log=log)) as origin:
        client = await gateway(upstream_url=origin, access=access)
        yield Site(client, root, log)


async def test_the_same_readers_page_again_is_revalidated(site: Site) -> None:
    cookie = await site.cookie("reader")
    first = await site.get("/guide/", cookie)
    second = await site.get("/guide/", cookie)
    third = await site.get("/guide/", cookie, method="HEAD")
    assert await site.statuses(3) == [200, 304, 304]
    assert first[0] == second[0] == third[0] == 200
    assert first[1] == second[1] and b"Welcome to the guide" in second[1]
    assert b"GATED-SECRET" not in second[1] and said("reader") in second[1]
    assert second[2]["ETag"] == first[2]["ETag"] == third[2]["ETag"]
    assert second[2]["Content-Length"] == third[2]["Content-Length"]


async def test_a_changed_page_is_sent_again(site: Site) -> None:
    cookie = await site.cookie("reader")
    await site.get("/guide/", cookie)
    (site.root / "guide/index.html").write_text(PAGE.replace("Welcome", "Hello again"))
    status, body, _ = await site.get("/guide/", cookie)
    assert await site.statuses(2) == [200, 200]
    assert status == 200 and b"Hello again" in body and b"Welcome" not in body


async def test_another_reader_is_not_answered_from_anothers_request(site: Site) -> None:
    one, other = await site.cookie("one"), await site.cookie("other", ("admin",))
    assert b"GATED-SECRET" not in (await site.get("/guide/", one))[1]
    admins = await site.get("/guide/", other)
    anonymous = await site.get("/guide/")
    assert await site.statuses(3) == [200, 200, 200]
    assert b"GATED-SECRET" in admins[1] and b"GATED-SECRET" not in anonymous[1]
    # Each again: now the upstream confirms each one's copy, and each is judged as before.
    again = [await site.get("/guide/", cookie) for cookie in (one, other, None)]
    assert await site.statuses(6) == [200, 200, 200, 304, 304, 304]
    assert [b"GATED-SECRET" in body for _, body, _ in again] == [False, True, False]
    assert said("one") in again[0][1] and said("other") in again[1][1]


async def test_an_edit_the_tag_does_not_show_is_seen_within_a_while(site: Site) -> None:
    # nginx's tag is the file's time and size: the same length with the time kept (a deploy
    # that keeps files' times) leaves it as it was.
    page = site.root / "guide/index.html"
    page.write_text(PAGE.replace("admin", "staff"))
    kept_time = page.stat().st_mtime_ns
    cookie = await site.cookie("reader", ("staff",))
    assert b"GATED-SECRET" in (await site.get("/guide/", cookie))[1]
    page.write_text(PAGE.replace("admin", "other"))
    os.utime(page, ns=(kept_time, kept_time))
    await asyncio.sleep(KEPT_FOR + 0.5)
    status, body, _ = await site.get("/guide/", cookie)
    assert status == 200 and b"GATED-SECRET" not in body and b"Welcome" in body


async def test_a_page_nginx_compresses_is_revalidated(tmp_path: Path,
                                                       gateway: GatewayFactory) -> None:
    root = tmp_path / "site"
    (root / "guide").mkdir(parents=True)
    (root / "guide/index.html").write_text(PAGE)
    log = tmp_path / "access.log"
    block = NGINX.format(root=root, log=log) + "        gzip on; gzip_min_length 1;\n"
    async with nginx_serving(tmp_path, block) as origin:
        site = Site(await gateway(upstream_url=origin, access={"public": ["/guide/**"]}),
                    root, log)
        bodies = [await site.get("/guide/") for _ in range(3)]
        assert await site.statuses(3) == [200, 304, 304]
    assert bodies[0][1] == bodies[2][1] and b"Welcome" in bodies[2][1]


async def test_a_closed_upstream_lets_go_of_its_kept_pages(site: Site) -> None:
    await site.get("/guide/")
    origin = app_of(site.client)[GATEWAY].site_for(None).origin
    assert isinstance(origin, Upstream) and len(origin.kept) == 1
    await origin.close()  # as a reload closes the old config's
    assert len(origin.kept) == 0


# -- an upstream that does not keep to the rules -----------------------------------------

@dataclass
class Scripted:
    asked: list[str | None]
    client: Any


async def scripted(gateway: GatewayFactory, aiohttp_server: Any,
                   answer: Any) -> Scripted:
    asked: list[str | None] = []

    async def page(request: web.Request) -> web.StreamResponse:
        asked.append(request.headers.get("If-None-Match"))
        result: web.StreamResponse = answer(len(asked), request)
        return result

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    server = await aiohttp_server(app)
    client = await gateway(upstream_url=str(server.make_url("")).rstrip("/"),
                           access={"public": ["/**"]})
    return Scripted(asked, client)


def html(text: str, **headers: str) -> web.Response:
    return web.Response(text=f"<!doctype html><p>{text}</p>", content_type="text/html",
                        headers=headers)


@pytest.mark.parametrize("confirmed", [
    {"ETag": '"other"'}, {}, {"ETag": '"one"', "Set-Cookie": "dashboard=2"},
    {"ETag": '"one"', "Cache-Control": "no-store"}])
async def test_a_304_that_does_not_name_the_kept_copy_is_asked_again(
        gateway: GatewayFactory, aiohttp_server: Any, confirmed: dict[str, str]) -> None:
    def answer(count: int, request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match"):
            return web.Response(status=304, headers=confirmed)
        return html(f"copy {count}", ETag='"one"')

    upstream = await scripted(gateway, aiohttp_server, answer)
    for expected in (b"copy 1", b"copy 3"):
        async with upstream.client.get("/page/") as response:
            assert response.status == 200 and expected in await response.read()
    assert upstream.asked == [None, '"one"', None]


@pytest.mark.parametrize("headers", [
    {"ETag": '"one"', "Set-Cookie": "dashboard=1; Path=/"},
    {"ETag": '"one"', "Cache-Control": "private, no-store"},
    {},
])
async def test_what_may_not_be_kept_is_never_revalidated(
        gateway: GatewayFactory, aiohttp_server: Any, headers: dict[str, str]) -> None:
    upstream = await scripted(gateway, aiohttp_server,
                              lambda count, request: html(f"copy {count}", **headers))
    for count in (1, 2, 3):
        async with upstream.client.get("/page/") as response:
            assert f"copy {count}".encode() in await response.read()
    assert upstream.asked == [None, None, None]


async def test_a_304_naming_the_tag_weakly_confirms_the_copy(
        gateway: GatewayFactory, aiohttp_server: Any) -> None:
    # nginx's gzip makes its 200's tag weak and leaves its 304's strong.
    def answer(count: int, request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match"):
            return web.Response(status=304, headers={"ETag": '"one"'})
        return html(f"copy {count}", ETag='W/"one"')

    upstream = await scripted(gateway, aiohttp_server, answer)
    for _ in range(3):
        async with upstream.client.get("/page/") as response:
            assert b"copy 1" in await response.read()
    assert upstream.asked == [None, 'W/"one"', 'W/"one"']


async def test_a_body_ended_by_a_close_is_not_kept(gateway: GatewayFactory) -> None:
    # No length and no chunks: a body cut short would look whole.
    asked: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nETag: "one"\r\n'
                     b"Connection: close\r\n\r\n<p>copy %d</p>" % len(asked))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await gateway(upstream_url=f"http://127.0.0.1:{port}",
                               access={"public": ["/**"]})
        for count in (1, 2, 3):
            async with client.get("/page/") as response:
                assert f"copy {count}".encode() in await response.read()
    finally:
        server.close()
    assert len(asked) == 3 and not any(b"if-none-match" in head.lower() for head in asked)


async def test_a_304_freshens_the_kept_head(gateway: GatewayFactory,
                                            aiohttp_server: Any) -> None:
    def answer(count: int, request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match"):
            return web.Response(status=304, headers={
                "ETag": '"one"', "Cache-Control": "max-age=60", "X-Other": "ignored"})
        return html("copy", ETag='"one"', **{"Cache-Control": "max-age=5", "X-Page": "1"})

    upstream = await scripted(gateway, aiohttp_server, answer)
    async with upstream.client.get("/page/") as response:
        await response.read()
    async with upstream.client.get("/page/") as response:
        assert b"copy" in await response.read()
        assert response.headers["Cache-Control"] == "max-age=60"
        assert response.headers["X-Page"] == "1" and "X-Other" not in response.headers
    assert upstream.asked == [None, '"one"']


# -- the store itself ----------------------------------------------------------------------

def key(name: str) -> bytes:
    return name.encode()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_kept_copies_stay_within_their_budget() -> None:
    kept = KeptAnswers(budget=2 * COPY_WEIGHT + 1000, requests=3)
    headers = CIMultiDict({"ETag": '"a"'})
    kept.keep(key("a"), "/a/", '"a"', "OK", headers, b"a" * 600)
    kept.keep(key("b"), "/b/", '"b"', "OK", headers, b"b" * 600)
    weight = COPY_WEIGHT + 600
    assert kept.copy_for(key("a")) is None and kept.size == weight  # made room for /b/
    copy = kept.copy_for(key("b"))
    assert copy is not None and copy.body == b"b" * 600
    kept.keep(key("c"), "/b/", '"b"', "OK", headers, b"b" * 600)
    assert kept.copy_for(key("c")) is copy and kept.size == weight  # one copy, two requests
    for name in "def":
        kept.keep(key(name), "/b/", '"b"', "OK", headers, b"b" * 600)
    assert kept.copy_for(key("b")) is None and kept.copy_for(key("f")) is copy
    kept.keep(key("g"), "/big/", '"g"', "OK", headers, b"g" * (256 * 1024 + 1))
    assert kept.copy_for(key("g")) is None and len(kept) == 1


def test_copies_that_made_room_are_let_go() -> None:
    # What the requests remember of a copy no longer kept holds none of its bytes.
    kept = KeptAnswers(budget=1_000_000)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for number in range(100):
            kept.keep(hashlib.sha256(b"%d" % number).digest() + b"x" * 8000,
                      f"/page/?q={number}", '"a"', "OK", CIMultiDict({"ETag": '"a"'}),
                      bytes(100_000 + number))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept.size <= 1_000_000 and len(kept) == 9
    assert held < 2_000_000, held


def test_copies_are_no_more_than_the_requests_that_lead_to_them() -> None:
    # Empty pages weigh little, yet each copy holds its fields: they are counted, and bounded.
    kept = KeptAnswers(requests=3)
    for number in range(10):
        kept.keep(key(f"{number}"), f"/page/?q={number}", '"a"', "OK",
                  CIMultiDict({"ETag": '"a"'}), b"")
    assert len(kept) == 3 and kept.size == 3 * COPY_WEIGHT
    assert kept.copy_for(key("9")) is not None and kept.copy_for(key("6")) is None


def test_a_copy_is_taken_on_trust_for_a_while_after_its_bytes_came() -> None:
    clock = Clock()
    kept = KeptAnswers(clock=clock)
    headers = CIMultiDict({"ETag": '"a"', "Date": "then"})
    kept.keep(key("a"), "/a/", '"a"', "OK", headers, b"page")
    copy = kept.copy_for(key("a"))
    clock.now += KEPT_FOR
    assert kept.copy_for(key("a")) is copy
    clock.now += 0.5
    assert kept.copy_for(key("a")) is None  # asked for whole again
    # The same bytes again (another Date): the same copy, trusted from now on.
    kept.keep(key("a"), "/a/", '"a"', "OK", CIMultiDict({"ETag": '"a"', "Date": "now"}),
              b"page")
    assert kept.copy_for(key("a")) is copy


def test_the_same_tag_on_other_bytes_keeps_the_latest() -> None:
    kept = KeptAnswers()
    headers = CIMultiDict({"ETag": '"a"'})
    kept.keep(key("a"), "/a/", '"a"', "OK", headers, b"one")
    kept.keep(key("b"), "/a/", '"a"', "OK", headers, b"two")
    assert kept.copy_for(key("a")) is None  # it led to the bytes no longer kept
    copy = kept.copy_for(key("b"))
    assert copy is not None and copy.body == b"two" and kept.size == COPY_WEIGHT + 3
    kept.keep(key("c"), "/a/", '"a"', "OK", CIMultiDict({"ETag": '"a"', "X-Other": "1"}),
              b"two")
    assert kept.copy_for(key("b")) is None  # other fields: another copy


def test_a_kept_copy_holds_its_own_head() -> None:
    kept = KeptAnswers()
    headers = CIMultiDict({"ETag": '"a"', "Content-Type": "text/html"})
    kept.keep(key("a"), "/a/", '"a"', "OK", headers, b"page")
    headers["Content-Type"] = "text/plain"  # what the caller does with its own
    copy = kept.copy_for(key("a"))
    assert copy is not None
    replayed = Replayed(copy, CIMultiDict({"Date": "today", "Content-Type": "x"}))
    assert replayed.headers["Content-Type"] == "text/html" and replayed.headers["Date"] == "today"
    headers = CIMultiDict({"ETag": '"b"', "Date": "then", "last-modified": "before",
                           "Cache-Control": "max-age=1"})
    kept.keep(key("b"), "/b/", '"b"', "OK", headers, b"page")
    copy = kept.copy_for(key("b"))
    assert copy is not None
    replayed = Replayed(copy, CIMultiDict({"DATE": "now", "Age": "3"}))
    assert sorted(replayed.headers.items()) == [
        ("Age", "3"), ("Cache-Control", "max-age=1"), ("DATE", "now"), ("ETag", '"b"'),
        ("last-modified", "before")]


@pytest.mark.parametrize(("status", "headers", "expected"), [
    (200, {"ETag": '"a"'}, '"a"'),
    (200, {"ETag": 'W/"a"', "Cache-Control": "max-age=0"}, 'W/"a"'),
    (200, {}, None),
    (404, {"ETag": '"a"'}, None),
    (200, {"ETag": '"a"', "Set-Cookie": "x=1"}, None),
    (200, {"ETag": '"a"', "Cache-Control": "No-Store"}, None),
    (200, {"ETag": ""}, None),
    (200, [("ETag", '"a"'), ("ETag", '"b"')], None),
])
def test_what_may_be_kept(status: int, headers: Any, expected: str | None) -> None:
    assert keepable(status, CIMultiDict(headers)) == expected


def test_requests_are_told_apart_by_every_field() -> None:
    def key(target: str, fields: list[tuple[str, str]]) -> str | bytes:
        return request_key(request_text("GET", target, fields))

    one = key("/a/", [("Cookie", "a=1"), ("X", "y")])
    assert one == key("/a/", [("Cookie", "a=1"), ("X", "y")])
    assert len({one, key("/a/", [("Cookie", "a=1"), ("X", "z")]),
                key("/a/", [("Cookie", "a=1X"), ("", "y")]),
                key("/a/", [("X", "y"), ("Cookie", "a=1")]),
                key("/b/", [("Cookie", "a=1"), ("X", "y")])}) == 5
    # A field the upstream never gets (it would split the request) tells nothing apart.
    assert key("/a/", [("Cookie", "a=1"), ("X", "y"), ("Z", "1\r\nX: y")]) == one
    # Long fields are remembered by a digest (each request at most so long in memory).
    long = key("/a/", [("X", "a" * 5000)])
    assert isinstance(long, bytes) and len(long) == 16
    assert long != key("/a/", [("X", "a" * 4999 + "b")])
    assert len(key("/a/", [("X", "\udcff" * 5000)])) == 16
    # Counted in bytes: a character beyond ASCII makes a shorter key a digest too.
    assert key("/a/", [("X", "a" * 1000)]) == request_text("GET", "/a/", [("X", "a" * 1000)])
    assert len(key("/a/", [("X", "a" * 1000 + "\U0001f600")])) == 16
