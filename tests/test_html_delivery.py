"""Pages as each audience receives them: rendered once per page version and audience,
sent gzip-compressed to readers that accept it, with a validator of their own (304 on a
revisit), and never kept beyond the configured memory."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.app import build_app
from gateway.html.page import KEPT_TRUSTED, RenderCache, rendered
from gateway.pipeline import accepts_gzip
from gateway.services import GATEWAY
from tests.helpers import GatewayFactory, make_config, make_user, session_cookies
from tests.nginx import nginx_serving

FILLER = "<p>" + "Plain words about the product, repeated. " * 60 + "</p>"
PAGE = f"""<!doctype html><html><head><title>Guide</title></head><body>
<main>{FILLER}<div data-gateway-groups="admin">ADMIN-ONLY-NOTE</div>
<p>Hello, <span data-gateway-field="content.firstName">reader</span>!</p></main></body></html>"""
ADA = make_user("ada", groups=("admin",), firstName="Ada")
BOB = make_user("bob", groups=("staff",), firstName="Bob")
CAROL = make_user("carol", groups=("staff",), firstName="Carol")
GZIP = {"Accept-Encoding": "gzip, br"}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "guide").mkdir()
    (tmp_path / "guide" / "index.html").write_text(PAGE)
    return tmp_path


@pytest.fixture
async def client(site: Path, aiohttp_client: Any) -> Any:
    config = make_config(None, upstream={"root": str(site)},
                         access={"public": ["/guide/**"]})
    return await aiohttp_client(await build_app(config))


async def get(client: Any, user: Any, headers: dict[str, str] | None = None) -> Any:
    cookies = {} if user is None else await session_cookies(client.app, user)
    response = await client.get("/guide/", cookies=cookies,
                                headers={"Accept-Encoding": "identity", **(headers or {})},
                                auto_decompress=False)
    body = await response.read()
    return response, body


async def test_a_rewritten_page_is_sent_compressed_to_a_reader_that_accepts_it(
        client: Any) -> None:
    response, body = await get(client, BOB, GZIP)
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    page = gzip.decompress(body).decode()
    assert "Hello, <span data-gateway-field=\"content.firstName\">Bob</span>" in page
    assert "ADMIN-ONLY-NOTE" not in page
    assert len(body) < len(page.encode()) / 4
    plain, raw = await get(client, BOB, {"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in plain.headers and raw == page.encode()


async def test_a_revisit_of_an_unchanged_page_is_answered_304(client: Any) -> None:
    first, _ = await get(client, BOB, GZIP)
    etag = first.headers["ETag"]
    again, body = await get(client, BOB, {**GZIP, "If-None-Match": etag})
    assert again.status == 304 and body == b""
    assert again.headers["ETag"] == etag
    assert "private" in again.headers["Cache-Control"]


async def test_each_audience_and_each_readers_fields_get_their_own_validator(
        client: Any) -> None:
    bob, _ = await get(client, BOB)
    carol, carol_body = await get(client, CAROL, {"If-None-Match": bob.headers["ETag"]})
    assert carol.status == 200 and b"Carol" in carol_body and b"Bob" not in carol_body
    ada, ada_body = await get(client, ADA, {"If-None-Match": bob.headers["ETag"]})
    assert ada.status == 200 and b"ADMIN-ONLY-NOTE" in ada_body
    assert len({bob.headers["ETag"], carol.headers["ETag"], ada.headers["ETag"]}) == 3


async def test_a_changed_page_gets_a_new_validator(client: Any, site: Path) -> None:
    first, _ = await get(client, BOB)
    (site / "guide" / "index.html").write_text(PAGE.replace("Plain", "Changed"))
    again, body = await get(client, BOB, {"If-None-Match": first.headers["ETag"]})
    assert again.status == 200 and b"Changed words" in body
    assert again.headers["ETag"] != first.headers["ETag"]


async def test_the_anonymous_copy_is_kept_from_shared_caches(client: Any) -> None:
    response, body = await get(client, None)
    assert b"ADMIN-ONLY-NOTE" not in body
    assert response.headers["Cache-Control"].startswith("private")
    assert "Cookie" in response.headers["Vary"]


async def test_a_denied_reader_gets_no_validator(site: Path, aiohttp_client: Any) -> None:
    config = make_config(None, upstream={"root": str(site)},
                         access={"rules": [{"path": "/guide/**", "groups": ["admin"]}]})
    client = await aiohttp_client(await build_app(config))
    ada, _ = await get(client, ADA)
    bob, body = await get(client, BOB, {"If-None-Match": ada.headers["ETag"]})
    assert bob.status == 404 and "ETag" not in bob.headers and b"ADMIN-ONLY-NOTE" not in body


async def test_renderings_are_kept_per_audience_and_reused(client: Any) -> None:
    renders = client.app[GATEWAY].sites[0].pages.renders
    for user in (BOB, BOB, ADA, ADA, None, None):
        await get(client, user, GZIP)
    # Bob's (fields: his own), Ada's, the anonymous reader's.
    assert len(renders) == 3
    assert renders.size > 0


def test_the_kept_renderings_stay_within_their_budget() -> None:
    cache = RenderCache(budget=10_000)
    for number in range(50):
        cache.put((number, False, (), None, None), rendered(b"x" * 1_000))
    assert cache.size <= 10_000 and len(cache) == 10
    assert cache.get((49, False, (), None, None)) is not None
    assert cache.get((0, False, (), None, None)) is None
    cache.put((99, False, (), None, None), rendered(b"y" * 5_000))  # over a quarter
    assert cache.get((99, False, (), None, None)) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("gzip", True), ("gzip, deflate, br", True), ("br;q=1, gzip;q=0.5", True),
    ("gzip;q=0", False), ("identity", False), ("*", True), ("*, gzip;q=0", False),
    ("", False), ("GZIP", True), ("gzip;q=x", False),
])
def test_what_counts_as_accepting_gzip(value: str, expected: bool) -> None:
    assert accepts_gzip(value) is expected


async def test_a_filtered_index_is_sent_compressed(site: Path, aiohttp_client: Any) -> None:
    entries = [{"location": f"page{number}/", "title": f"Page {number}",
                "text": "Words about the product. " * 20} for number in range(40)]
    (site / "search").mkdir()
    (site / "search" / "search_index.json").write_text(json.dumps({"docs": entries}))
    config = make_config(None, upstream={"root": str(site)}, access={"public": ["/**"]})
    client = await aiohttp_client(await build_app(config))
    response = await client.get("/search/search_index.json",
                                headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    body = await response.read()
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    assert len(json.loads(gzip.decompress(body))["docs"]) <= 40


async def test_readers_of_one_audience_share_one_kept_page_with_their_own_fields(
        client: Any) -> None:
    renders = client.app[GATEWAY].sites[0].pages.renders
    readers = [make_user(f"r{n}", groups=("staff",), firstName=f"Reader{n}") for n in range(6)]
    for reader in readers:
        plain, body = await get(client, reader)
        packed, zipped = await get(client, reader, GZIP)
        assert f">Reader{reader.sub[1:]}</span>".encode() in body
        assert gzip.decompress(zipped) == body  # put together from parts compressed once
        assert packed.headers["ETag"] == plain.headers["ETag"]
        assert b"ADMIN-ONLY-NOTE" not in body
    assert len(renders) == 1


async def test_a_browser_reads_the_page_put_together_compressed(
        client: Any, browser: Any) -> None:
    base = str(client.make_url("")).rstrip("/")
    cookies = await session_cookies(client.app, make_user("dee", groups=("staff",),
                                                          firstName="Dee"))
    context = await browser.new_context()
    await context.add_cookies([{"name": name, "value": value, "url": base}
                               for name, value in cookies.items()])
    page = await context.new_page()
    response = await page.goto(base + "/guide/")
    assert (await response.all_headers())["content-encoding"] == "gzip"
    assert "Hello, Dee!" in await page.inner_text("main")
    assert "Plain words about the product" in await page.inner_text("main")
    await context.close()


async def test_what_is_not_kept_is_not_counted(client: Any) -> None:
    renders = client.app[GATEWAY].sites[0].pages.renders
    await get(client, make_user("a", groups=("staff",), firstName="A"), GZIP)
    counted = renders.size
    for number in range(5):  # each reader's filled copy is made for them, not kept
        await get(client, make_user(f"b{number}", groups=("staff",), firstName="B"), GZIP)
    assert renders.size == counted and len(renders) == 1


async def test_a_plain_public_page_carries_its_reader_and_no_cache_mixes_them(
        site: Path, aiohttp_client: Any) -> None:
    (site / "plain").mkdir()
    (site / "plain" / "index.html").write_text(
        f"<!doctype html><html><head><title>P</title></head><body>{FILLER}</body></html>")
    config = make_config(None, upstream={"root": str(site)}, access={"public": ["/plain/**"]})
    client = await aiohttp_client(await build_app(config))
    anonymous = await client.get("/plain/", headers=GZIP)
    body = await anonymous.read()
    # Nobody logged in: the page says so (null), and it is still a public page, kept by
    # shared caches apart from a reader's.
    assert b'data-user="null"' in body and "Cookie" in anonymous.headers["Vary"]
    assert "private" not in anonymous.headers.get("Cache-Control", "")
    cookies = await session_cookies(client.app, BOB)
    mine = await client.get("/plain/", cookies=cookies, headers=GZIP)
    text = await mine.read()
    assert b'data-user="{&quot;sub&quot;:&quot;bob&quot;' in text
    assert mine.headers["Cache-Control"].startswith("private")
    assert mine.headers["ETag"] != anonymous.headers["ETag"]
    again = await client.get("/plain/", cookies=cookies,
                             headers={**GZIP, "If-None-Match": mine.headers["ETag"]})
    assert again.status == 304


async def test_a_page_that_carries_a_readers_keys_is_never_stored(client: Any) -> None:
    keyed = make_user("kay", groups=("staff",), firstName="Kay")
    keyed = replace(keyed, api_playground_inputs={"header": {"X-Api-Key": "sk-kay"}})
    response, body = await get(client, keyed)
    assert b"sk-kay" in body  # in the client script's tag, for the playgrounds
    assert "no-store" in response.headers["Cache-Control"]
    assert "private" in response.headers["Cache-Control"]
    plain, _ = await get(client, BOB)
    assert "no-store" not in plain.headers["Cache-Control"]  # revisits still answered 304


# -- a page kept as one copy for every reader: the docs server is asked whether it changed


class Docs:
    """A docs server with one page at ``/guide/``: its body, ETag and fields are the
    test's; it answers 304 to its own ETag, and keeps what each request was asked with."""

    def __init__(self) -> None:
        self.body = PAGE
        self.etag = '"v1"'
        self.fields: dict[str, str] = {}
        #: Fields of its 304s; ``tag_304``: the ETag its 304s carry (its own when None).
        self.fields_304: dict[str, str] = {}
        self.tag_304: str | None = None
        self.asked: list[str | None] = []
        #: Set: a conditional request waits for it before its 304 (sent with no ETag).
        self.hold: asyncio.Event | None = None
        #: Set: the next request asked without a condition waits for it, then sends the
        #: page as it stood when it was asked.
        self.slow: asyncio.Event | None = None

    async def page(self, request: web.Request) -> web.Response:
        condition = request.headers.get("If-None-Match")
        self.asked.append(condition)
        body, etag, slow = self.body, self.etag, self.slow
        if condition is None and slow is not None:
            self.slow = None
            await slow.wait()
            return web.Response(text=body, content_type="text/html", headers={"ETag": etag})
        if condition is not None and condition.removeprefix("W/") == self.etag.removeprefix("W/"):
            if self.hold is not None:
                await self.hold.wait()
                return web.Response(status=304, headers=self.fields_304)
            return web.Response(status=304, headers={"ETag": self.tag_304 or self.etag,
                                                     **self.fields_304})
        if request.method == "POST":
            return web.Response(text=PAGE.replace("Plain words", "Thanks, your ticket"),
                                content_type="text/html", headers={"ETag": self.etag})
        return web.Response(text=self.body, content_type="text/html",
                            headers={"ETag": self.etag, **self.fields})


def frozen(client: Any) -> list[float]:
    """The pages' clock, stopped (a kept copy stands for the page for a second): the
    test moves it."""
    now = [1000.0]
    client.app[GATEWAY].sites[0].pages.clock = lambda: now[0]
    return now


async def viewed_again(served: Docs, url: str, gateway: GatewayFactory) -> tuple[Any, bytes]:
    """Bob's second view of the page through a gateway of its own, asked about with the
    kept copy's ETag (checked)."""
    client = await gateway(upstream_url=url)
    frozen(client)
    await get(client, BOB)
    again = await get(client, BOB)
    assert served.asked == [None, served.etag]
    return again


@pytest.fixture
async def docs(aiohttp_server: Any) -> tuple[Docs, str]:
    served = Docs()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", served.page)
    server = await aiohttp_server(app)
    return served, str(server.make_url("")).rstrip("/")


async def test_an_unchanged_page_is_asked_about_and_not_sent_again(
        docs: tuple[Docs, str], gateway: GatewayFactory) -> None:
    served, url = docs
    client = await gateway(upstream_url=url)
    frozen(client)
    bob, bob_body = await get(client, BOB)
    again, again_body = await get(client, BOB)
    _, carol_body = await get(client, CAROL)
    _, ada_body = await get(client, ADA, GZIP)
    assert served.asked == [None, '"v1"', '"v1"', '"v1"']
    assert again_body == bob_body and again.headers["ETag"] == bob.headers["ETag"]
    assert b">Bob</span>" in bob_body and b"ADMIN-ONLY-NOTE" not in bob_body
    assert b">Carol</span>" in carol_body and b"Bob" not in carol_body
    assert b"ADMIN-ONLY-NOTE" in gzip.decompress(ada_body)
    assert bob.headers["Content-Type"] == again.headers["Content-Type"] == \
        "text/html; charset=utf-8"
    # Changed: the docs server sends it whole, and every reader gets the new copy.
    served.body, served.etag = PAGE.replace("Plain", "Changed"), '"v2"'
    changed, changed_body = await get(client, BOB)
    assert b"Changed words" in changed_body and changed.headers["ETag"] != bob.headers["ETag"]
    _, kept_body = await get(client, BOB)
    assert served.asked[4:] == ['"v1"', '"v2"'] and kept_body == changed_body


async def test_a_kept_page_is_judged_again_for_each_reader(
        docs: tuple[Docs, str], gateway: GatewayFactory) -> None:
    served, url = docs
    served.body = PAGE.replace("<title>", '<meta name="gateway:groups" content="admin"><title>')
    client = await gateway(upstream_url=url)
    frozen(client)
    ada, _ = await get(client, ADA)
    bob, bob_body = await get(client, BOB)
    anonymous, _ = await get(client, None)
    assert served.asked[:2] == [None, '"v1"']
    assert ada.status == 200
    assert bob.status == 404 and b"Plain words" not in bob_body and "ETag" not in bob.headers
    assert anonymous.status in (302, 401)


@pytest.mark.parametrize("fields", [
    {"Set-Cookie": "docs_theme=dark"}, {"Cache-Control": "private, max-age=60"},
    {"Cache-Control": "no-store"}, {"Vary": "Cookie"}, {"Vary": "Accept-Encoding, *"},
    {"ETag": 'W/"unquoted'},
])
async def test_a_page_sent_for_one_reader_is_never_asked_about(
        docs: tuple[Docs, str], gateway: GatewayFactory, fields: dict[str, str]) -> None:
    # What a shared cache would not keep (RFC 9111 3) may differ from reader to reader:
    # each view asks for the page whole.
    served, url = docs
    served.fields = fields
    if "ETag" in fields:
        served.etag = fields["ETag"]
    client = await gateway(upstream_url=url)
    frozen(client)
    for user in (BOB, CAROL, BOB):
        response, body = await get(client, user)
        assert response.status == 200 and b"Plain words" in body
    assert served.asked == [None, None, None]


async def test_a_page_varying_only_by_encoding_is_asked_about(
        docs: tuple[Docs, str], gateway: GatewayFactory) -> None:
    served, url = docs
    served.fields, served.etag = {"Vary": "Accept-Encoding"}, 'W/"v1"'
    client = await gateway(upstream_url=url)
    frozen(client)
    await get(client, BOB)
    await get(client, CAROL)
    assert served.asked == [None, 'W/"v1"']


async def test_a_request_with_authorization_is_not_answered_from_the_kept_copy(
        docs: tuple[Docs, str], gateway: GatewayFactory) -> None:
    served, url = docs
    client = await gateway(upstream_url=url)
    frozen(client)
    await get(client, BOB)
    await get(client, BOB, {"Authorization": "Bearer docs-token"})
    await get(client, BOB, {"Authorization": "Bearer docs-token"})
    assert served.asked == [None, None, None]


async def test_a_304_for_another_copy_is_asked_again_whole(
        docs: tuple[Docs, str], gateway: GatewayFactory) -> None:
    served, url = docs
    served.tag_304 = '"v9"'
    client = await gateway(upstream_url=url)
    frozen(client)
    _, first = await get(client, BOB)
    response, again = await get(client, BOB)
    assert served.asked == [None, '"v1"', None]
    assert response.status == 200 and again == first


async def test_the_fields_of_a_304_update_the_kept_ones_but_for_the_body(
        docs: tuple[Docs, str], gateway: GatewayFactory) -> None:
    served, url = docs
    served.fields = {"X-Docs-Build": "1", "Content-Language": "en"}
    served.fields_304 = {"X-Docs-Build": "2", "Content-Type": "text/plain",
                         "Content-Encoding": "gzip"}
    response, body = await viewed_again(served, url, gateway)
    assert response.headers.getall("X-Docs-Build") == ["2"]
    assert response.headers["Content-Language"] == "en"
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Content-Encoding" not in response.headers and b">Bob</span>" in body


async def test_nginx_answers_an_unchanged_page_with_304_and_a_changed_one_whole(
        tmp_path: Path, site: Path, gateway: GatewayFactory) -> None:
    log = tmp_path / "access.log"
    server = f"        root {site};\n        access_log {log};\n"
    async with nginx_serving(tmp_path, server) as url:
        client = await gateway(upstream_url=url)
        frozen(client)
        bodies = [(await get(client, user))[1] for user in (BOB, BOB, CAROL)]
        statuses = [line.split('"')[2].split()[0] for line in log.read_text().splitlines()]
        assert statuses == ["200", "304", "304"]
        assert bodies[0] == bodies[1] and b">Carol</span>" in bodies[2]
        page = site / "guide" / "index.html"
        page.write_text(PAGE.replace("Plain", "Changed"))
        os.utime(page, (time.time() + 5, time.time() + 5))  # another second: another ETag
        _, changed = await get(client, BOB)
        assert b"Changed words" in changed
        statuses = [line.split('"')[2].split()[0] for line in log.read_text().splitlines()]
        assert statuses[3:] == ["200"]


async def test_the_kept_copy_answers_only_its_own_host_and_no_query(
        docs: tuple[Docs, str], gateway: GatewayFactory) -> None:
    served, url = docs
    client = await gateway(upstream_url=url)
    frozen(client)
    cookies = await session_cookies(client.app, BOB)
    for address, host in (("/guide/", None), ("/guide/?tab=2", None), ("/guide/", "other.test"),
                          ("/guide/", "other.test"), ("/guide/", None)):
        headers = {"Host": host} if host else {}
        async with client.get(address, cookies=cookies, headers=headers) as response:
            assert response.status == 200 and b">Bob</span>" in await response.read()
    # A query is asked for whole and changes nothing kept; a host has its own copy.
    assert served.asked == [None, None, None, '"v1"', None]


async def test_a_kept_copy_is_read_whole_again_within_a_second(
        docs: tuple[Docs, str], gateway: GatewayFactory) -> None:
    # A docs server whose ETag stays when the page changes (nginx's, when a rewrite keeps
    # the file's time and size): the change shows once the kept copy is read whole again.
    served, url = docs
    client = await gateway(upstream_url=url)
    now = frozen(client)
    await get(client, BOB)
    served.body = PAGE.replace("Plain", "Fresh")
    now[0] += KEPT_TRUSTED / 2
    _, kept = await get(client, BOB)
    now[0] += KEPT_TRUSTED
    _, fresh = await get(client, BOB)
    assert served.asked == [None, '"v1"', None]
    assert b"Plain words" in kept and b"Fresh words" in fresh


async def test_a_posts_answer_is_no_kept_copy(docs: tuple[Docs, str],
                                              gateway: GatewayFactory) -> None:
    served, url = docs
    client = await gateway(upstream_url=url, access={"public": ["/guide/**"]})
    frozen(client)
    cookies = await session_cookies(client.app, BOB)
    async with client.post("/guide/", cookies=cookies, data={"about": "salary"}) as response:
        assert b"Thanks, your ticket" in await response.read()
    _, body = await get(client, CAROL)
    assert served.asked == [None, None] and b"Thanks" not in body


async def test_a_304_answers_with_the_copy_it_was_asked_about(
        docs: tuple[Docs, str], gateway: GatewayFactory) -> None:
    # What is kept changes while a conditional request waits (an answer that may not be
    # kept came in between): the 304 stands for the copy asked about, with its fields.
    served, url = docs
    served.fields = {"Content-Security-Policy": "default-src 'self'"}
    client = await gateway(upstream_url=url)
    frozen(client)
    await get(client, BOB)
    served.hold = asyncio.Event()
    waiting = asyncio.ensure_future(get(client, CAROL))
    while len(served.asked) < 2:
        await asyncio.sleep(0.01)
    await get(client, BOB, {"Authorization": "Bearer docs-token"})
    served.hold.set()
    response, body = await waiting
    assert served.asked == [None, '"v1"', None]
    assert response.headers["Content-Security-Policy"] == "default-src 'self'"
    assert b">Carol</span>" in body


async def test_a_304_sends_nobody_elsewhere(docs: tuple[Docs, str],
                                            gateway: GatewayFactory) -> None:
    served, url = docs
    served.fields_304 = {"Location": "/elsewhere/", "Content-Location": "/other/",
                         "Refresh": "0; url=/elsewhere/"}
    response, body = await viewed_again(served, url, gateway)
    assert response.status == 200
    assert "Location" not in response.headers and "Content-Location" not in response.headers
    assert "Refresh" not in response.headers
    assert b">Bob</span>" in body


async def test_a_slow_read_neither_outlasts_its_second_nor_displaces_a_later_one(
        docs: tuple[Docs, str], gateway: GatewayFactory) -> None:
    # The second counts from when the docs server was asked; and a page asked for before
    # the copy kept last, and read after it (a slow answer), is not asked about.
    served, url = docs
    client = await gateway(upstream_url=url)
    now = frozen(client)
    slow = served.slow = asyncio.Event()
    reading = asyncio.ensure_future(get(client, BOB))
    while not served.asked:
        await asyncio.sleep(0.01)
    now[0] += KEPT_TRUSTED / 4
    narrowed = PAGE.replace("<title>", '<meta name="gateway:groups" content="admin"><title>')
    served.body = narrowed
    ada, _ = await get(client, ADA)
    slow.set()
    bob, _ = await reading
    assert ada.status == 200 and bob.status == 200  # Bob's copy: asked before the change
    carol, body = await get(client, CAROL)
    assert carol.status == 404 and b"Plain words" not in body
    # Carol's page was read whole (then the site's missing page, for the denial).
    assert served.asked[:3] == [None, None, None]
    # One slow read, longer than the second: the next request reads the page whole.
    served.body = PAGE
    now[0] += KEPT_TRUSTED * 2
    before = len(served.asked)
    slow = served.slow = asyncio.Event()
    reading = asyncio.ensure_future(get(client, BOB))
    while len(served.asked) == before:
        await asyncio.sleep(0.01)
    now[0] += KEPT_TRUSTED * 2
    slow.set()
    await reading
    await get(client, BOB)
    assert served.asked[before:] == [None, None]
