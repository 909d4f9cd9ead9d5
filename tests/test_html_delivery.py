"""Pages as each audience receives them: rendered once per page version and audience,
sent gzip-compressed to readers that accept it, with a validator of their own (304 on a
revisit), and never kept beyond the configured memory."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.app import build_app
from gateway.html.page import RenderCache, rendered
from gateway.pipeline import accepts_gzip
from gateway.services import GATEWAY
from tests.helpers import make_config, make_user, session_cookies

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
