from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from gateway.errors import UpstreamError
from gateway.html.head import PageMeta
from gateway.html.page import learn
from gateway.indexes.filter import (
    MKDOCS,
    MKDOCS_SCRIPT,
    SITEMAP,
    SPHINX,
    SPHINX_INVENTORY,
    IndexFile,
    Learned,
    PageIndex,
    filter_index,
    match_index,
    page_key,
)
from gateway.indexes.formats import site_path
from gateway.policy import Policy
from tests.helpers import make_config, make_user

ADMIN = make_user("ada", groups=("admin",))
READER = make_user("bob")
# What the pages declare: / is public by its meta, /admin/ and /ops/ need groups, the
# guide declares nothing (so: any logged-in reader); /broken/ cannot be read.
METAS: dict[str, PageMeta | None] = {
    "/": PageMeta(public=True),
    "/guide/": PageMeta(),
    "/admin/": PageMeta(groups=("admin",)),
    "/ops/": PageMeta(groups=("ops",)),
    "/broken/": None,
    "/changelog.html": PageMeta(public=True),
    "/api/index.html": PageMeta(public=True),
    "/api/": PageMeta(public=True),
}


def policy(**access: Any) -> Policy:
    section: dict[str, Any] = {"public": ["/favicon.ico", "/blog/**"],
                               "rules": [{"path": "/internal/**", "groups": ["staff"]}]}
    section.update(access)
    return Policy(make_config(access=section))


class Fetcher:
    """A fetch_meta that answers from METAS and counts what it was asked."""

    def __init__(self, metas: Mapping[str, PageMeta | Learned | None] | None = None) -> None:
        self.metas = METAS if metas is None else metas
        self.calls: list[str] = []
        self.running = 0
        self.most = 0

    async def __call__(self, path: str) -> PageMeta | Learned | None:
        self.calls.append(path)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0)
            if path == "/explodes/":
                raise RuntimeError("upstream said something odd")
            # As on a real server, /a/ and /a/index.html are one page.
            pages = {page_key(key): value for key, value in self.metas.items()}
            return pages.get(page_key(path))
        finally:
            self.running -= 1


def sitemap(*paths: str, host: str = "http://docs.test") -> bytes:
    urls = "".join(f"<url><loc>{host}{path}</loc><lastmod>2024-01-01</lastmod></url>\n"
                   for path in paths)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n{urls}</urlset>\n'
            ).encode()


def locs(body: bytes) -> list[str]:
    import re

    return [m.decode() for m in re.findall(rb"<loc>(.*?)</loc>", body)]


async def run(kind: str, body: bytes, user: Any, pol: Policy | None = None,
              fetch: Callable[[str], Any] | None = None, index: PageIndex | None = None,
              base: str = "/") -> bytes:
    return await filter_index(IndexFile(kind, base, ""), body, user, pol or policy(),
                              index if index is not None else PageIndex(fragments=False),
                              fetch or Fetcher())


def test_match_index_names_the_formats() -> None:
    assert match_index("/sitemap.xml") == IndexFile(SITEMAP, "/", "application/xml")
    assert match_index("/en/sitemap-pages.xml.gz") == IndexFile(SITEMAP, "/en/",
                                                                "application/gzip", "gz")
    assert match_index("/search/search_index.json") == IndexFile(MKDOCS, "/", "application/json")
    assert match_index("/v2/search/search_index.json") == IndexFile(MKDOCS, "/v2/",
                                                                    "application/json")
    assert match_index("/searchindex.js") == IndexFile(SPHINX, "/",
                                                       "text/javascript; charset=utf-8")
    assert match_index("/v2/search/search_index.js") == IndexFile(
        MKDOCS_SCRIPT, "/v2/", "text/javascript; charset=utf-8")
    assert match_index("/guide/") is None
    assert match_index("/search_index.json") is None
    assert match_index("/assets/sitemap.css") is None


def test_page_key_and_site_path() -> None:
    assert page_key("/guide/index.html") == "/guide/"
    assert page_key("/guide.html") == "/guide.html"
    assert site_path("guide/#intro", "/") == "/guide/"
    assert site_path("", "/") == "/"
    assert site_path("caf%C3%A9/", "/v2/") == "/v2/café/"
    assert site_path("https://docs.test/docs/a/", "/", base_path="/docs") == "/a/"
    assert site_path("../../etc/", "/a/") == "/etc/"
    assert site_path("a%2Fb/", "/") is None  # ambiguous: never shown


async def test_sitemap_lists_what_each_reader_may_open() -> None:
    body = sitemap("/", "/guide/", "/admin/", "/blog/post/", "/internal/x/", "/broken/")
    anonymous = locs(await run(SITEMAP, body, None))
    reader = locs(await run(SITEMAP, body, READER))
    admin = locs(await run(SITEMAP, body, ADMIN))
    staff = locs(await run(SITEMAP, body, make_user(groups=("staff",))))
    assert anonymous == ["http://docs.test/", "http://docs.test/blog/post/"]
    assert reader == ["http://docs.test/", "http://docs.test/guide/", "http://docs.test/blog/post/"]
    assert admin == ["http://docs.test/", "http://docs.test/guide/", "http://docs.test/admin/",
                     "http://docs.test/blog/post/"]
    assert "http://docs.test/internal/x/" in staff
    assert "http://docs.test/broken/" not in staff  # unknown metadata: left out


async def test_sitemap_keeps_its_frame_and_drops_comments() -> None:
    body = sitemap("/admin/", "/")
    body = body.replace(b"<url>", b"<!-- <url><loc>http://docs.test/admin/</loc></url> --><url>", 1)
    result = await run(SITEMAP, body, None)
    assert result.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns=')
    assert result.rstrip().endswith(b"</urlset>")
    assert b"admin" not in result
    assert locs(result) == ["http://docs.test/"]


async def test_sitemap_alternates_and_cdata_must_all_be_open() -> None:
    body = (b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" '
            b'xmlns:xhtml="http://www.w3.org/1999/xhtml">'
            b"<url><loc><![CDATA[http://docs.test/]]></loc>"
            b'<xhtml:link rel="alternate" hreflang="fr" href="http://docs.test/admin/"/></url>'
            b"<url><loc>http://docs.test/blog/a?x=1&amp;y=2</loc></url></urlset>")
    result = await run(SITEMAP, body, None)
    assert b"CDATA" not in result and b"blog/a?x=1&amp;y=2" in result
    assert b"<url>" in (await run(SITEMAP, body, ADMIN))[:200]


async def test_gzipped_sitemap() -> None:
    body = gzip.compress(sitemap("/", "/admin/"))
    result = await run(SITEMAP, body, None)
    assert locs(gzip.decompress(result)) == ["http://docs.test/"]
    # One that does not unpack is refused, never passed on.
    with pytest.raises(UpstreamError):
        await run(SITEMAP, body[:20], None)


async def test_sitemap_under_a_base_path() -> None:
    pol = Policy(make_config(server={"listen": "127.0.0.1:0",
                                     "public_url": "https://gw.test/docs"}))
    body = sitemap("/docs/", "/docs/admin/", host="https://gw.test")
    index = PageIndex(fragments=False, base_path="/docs")
    result = await run(SITEMAP, body, None, pol, index=index)
    assert locs(result) == ["https://gw.test/docs/"]


async def test_unreadable_sitemaps_become_empty_and_indexes_pass() -> None:
    assert locs(await run(SITEMAP, b"<html>not a sitemap</html>", ADMIN)) == []
    index = (b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
             b"<sitemap><loc>http://docs.test/sitemap-1.xml</loc></sitemap></sitemapindex>")
    assert await run(SITEMAP, index, None) == index


def mkdocs_index(*locations: str) -> bytes:
    return json.dumps({"config": {"lang": ["en"], "separator": "[\\s\\-]+"},
                       "docs": [{"location": loc, "title": loc or "Home", "text": f"about {loc}"}
                                for loc in locations], "extra": "dropped"}).encode()


async def test_mkdocs_index_per_reader() -> None:
    body = mkdocs_index("", "#welcome", "guide/", "guide/#setup", "admin/", "admin/#keys",
                        "broken/")
    anonymous = json.loads(await run(MKDOCS, body, None))
    admin = json.loads(await run(MKDOCS, body, ADMIN))
    assert [d["location"] for d in anonymous["docs"]] == ["", "#welcome"]
    assert [d["location"] for d in admin["docs"]] == ["", "#welcome", "guide/", "guide/#setup",
                                                      "admin/", "admin/#keys"]
    assert anonymous["config"]["lang"] == ["en"]
    assert set(anonymous) == {"config", "docs"}


async def test_mkdocs_index_locations_start_from_the_site_folder() -> None:
    metas = {"/v2/": PageMeta(public=True), "/v2/admin/": PageMeta(groups=("admin",))}
    body = mkdocs_index("", "admin/")
    result = json.loads(await run(MKDOCS, body, None, fetch=Fetcher(metas), base="/v2/"))
    assert [d["location"] for d in result["docs"]] == [""]


async def test_material_offline_search_index_script_per_reader() -> None:
    body = b"var __index = " + mkdocs_index("", "guide/", "admin/", "admin/#keys") + b";\n"
    for user, locations in ((None, [""]), (ADMIN, ["", "guide/", "admin/", "admin/#keys"])):
        out = await run(MKDOCS_SCRIPT, body, user)
        assert out.startswith(b"var __index = ")
        data = json.loads(out[len(b"var __index = "):])
        assert [d["location"] for d in data["docs"]] == locations
    # A script of another shape keeps no page.
    for odd in (b"var other = {}", b"window.__index = " + mkdocs_index("admin/"), b""):
        out = await run(MKDOCS_SCRIPT, odd, ADMIN)
        assert json.loads(out[len(b"var __index = "):])["docs"] == []


async def test_malformed_mkdocs_index_fails_closed() -> None:
    for body in (b"{not json", b"[]", b'{"docs": "x"}',
                 b'{"docs": [{"title": "no location"}, {"location": 3}]}'):
        result = json.loads(await run(MKDOCS, body, ADMIN))
        assert result["docs"] == []


def sphinx_index() -> bytes:
    data = {
        "docnames": ["admin", "guide", "index"],
        "filenames": ["admin.rst", "guide.rst", "index.rst"],
        "titles": ["Admin", "Guide", "Home"],
        "terms": {"secret": 0, "setup": [0, 1], "welcome": 2, "all": [0, 1, 2]},
        "titleterms": {"admin": 0, "guide": 1},
        "objects": {"api": [[0, 0, 1, "", "rotate_keys"], [2, 0, 1, "", "hello"]]},
        "objnames": {"0": ["py", "function", "Python function"]},
        "objtypes": {"0": "py:function"},
        "alltitles": {"Admin": [[0, None]], "Home": [[2, None]], "Setup": [[0, "s"], [1, "s"]]},
        "indexentries": {"keys": [[0, "index-0", False]]},
        "envversion": {"sphinx": 61},
        "unknown": {"admin": 0},
    }
    return ("Search.setIndex(" + json.dumps(data) + ")").encode()


def sphinx_data(body: bytes) -> Any:
    text = body.decode()
    assert text.startswith("Search.setIndex(") and text.endswith(")")
    return json.loads(text[len("Search.setIndex("):-1])


async def test_sphinx_index_is_filtered_and_renumbered() -> None:
    metas = {"/index.html": PageMeta(public=True), "/guide.html": PageMeta(),
             "/admin.html": PageMeta(groups=("admin",))}
    anonymous = sphinx_data(await run(SPHINX, sphinx_index(), None, fetch=Fetcher(metas)))
    assert anonymous["docnames"] == ["index"]
    assert anonymous["titles"] == ["Home"]
    assert anonymous["terms"] == {"welcome": 0, "all": [0]}
    assert anonymous["titleterms"] == {}
    assert anonymous["objects"] == {"api": [[0, 0, 1, "", "hello"]]}
    assert anonymous["alltitles"] == {"Home": [[0, None]]}
    assert anonymous["indexentries"] == {}
    assert "unknown" not in anonymous and anonymous["envversion"] == {"sphinx": 61}
    reader = sphinx_data(await run(SPHINX, sphinx_index(), READER, fetch=Fetcher(metas)))
    assert reader["docnames"] == ["guide", "index"]
    assert reader["terms"]["setup"] == [0] and reader["terms"]["welcome"] == 1
    admin = sphinx_data(await run(SPHINX, sphinx_index(), ADMIN, fetch=Fetcher(metas)))
    assert admin["docnames"] == ["admin", "guide", "index"]
    assert admin["objects"]["api"][0][4] == "rotate_keys"


async def test_sphinx_dirhtml_pages_and_old_objects() -> None:
    metas = {"/": PageMeta(public=True), "/admin/": PageMeta(groups=("admin",)),
             "/guide/": PageMeta(public=True)}
    data = sphinx_data(sphinx_index())
    data["objects"] = {"api": {"rotate_keys": [0, 0, 1, ""], "hello": [2, 0, 1, ""]}}
    body = ("Search.setIndex(" + json.dumps(data) + ");").encode()
    result = sphinx_data(await run(SPHINX, body, None, fetch=Fetcher(metas)))
    assert result["docnames"] == ["guide", "index"]
    assert result["objects"] == {"api": {"hello": [1, 0, 1, ""]}}


async def test_malformed_sphinx_index_fails_closed() -> None:
    for body in (b"var x = 1;", b"Search.setIndex({oops)", b'Search.setIndex({"docnames": 3})'):
        assert sphinx_data(await run(SPHINX, body, ADMIN))["docnames"] == []


async def test_personalize_mode_shows_everything() -> None:
    pol = Policy(make_config(mode="personalize"))
    fetch = Fetcher()
    body = sitemap("/", "/admin/", "/broken/")
    assert len(locs(await run(SITEMAP, body, None, pol, fetch))) == 3
    assert fetch.calls == []


async def test_config_rules_need_no_metadata() -> None:
    pol = policy(page_meta=False)
    fetch = Fetcher()
    result = locs(await run(SITEMAP, sitemap("/", "/guide/", "/blog/a/"), None, pol, fetch))
    assert result == ["http://docs.test/blog/a/"]
    assert fetch.calls == []


async def test_metadata_is_fetched_once_and_shared() -> None:
    index = PageIndex(fragments=False, concurrency=2)
    fetch = Fetcher()
    body = sitemap("/", "/guide/", "/admin/", "/ops/", "/broken/", "/guide/index.html")
    first, second = await asyncio.gather(run(SITEMAP, body, None, fetch=fetch, index=index),
                                         run(SITEMAP, body, READER, fetch=fetch, index=index))
    assert sorted(fetch.calls) == sorted(["/", "/guide/", "/admin/", "/ops/", "/broken/"])
    assert fetch.most <= 2
    assert locs(first) == ["http://docs.test/"]
    assert locs(second) == ["http://docs.test/", "http://docs.test/guide/",
                            "http://docs.test/guide/index.html"]
    await run(SITEMAP, sitemap("/admin/", "/ops/"), ADMIN, fetch=fetch, index=index)
    assert len(fetch.calls) == 5


async def test_metadata_expires_and_failures_are_retried_sooner() -> None:
    now = [0.0]
    index = PageIndex(fragments=False, ttl=100, miss_ttl=10, clock=lambda: now[0])
    fetch = Fetcher()
    await index.lookup(["/guide/", "/broken/"], fetch)
    now[0] = 11
    await index.lookup(["/guide/", "/broken/"], fetch)
    assert fetch.calls == ["/guide/", "/broken/", "/broken/"]
    now[0] = 200
    await index.lookup(["/guide/"], fetch)
    assert fetch.calls.count("/guide/") == 2


async def test_recorded_pages_need_no_fetch_and_the_cache_is_bounded() -> None:
    index = PageIndex(fragments=False, max_entries=3)
    fetch = Fetcher()
    index.record("/admin/index.html", PageMeta(groups=("admin",)))
    assert index.known("/admin/") == (True, Learned(PageMeta(groups=("admin",))))
    assert await index.lookup(["/admin/"], fetch) == {
        "/admin/": Learned(PageMeta(groups=("admin",)))}
    assert fetch.calls == []
    for name in ("a", "b", "c"):
        index.record(f"/{name}/", PageMeta())
    assert len(index) == 3
    assert index.known("/admin/") == (False, None)


async def test_a_failing_fetch_means_unknown() -> None:
    index = PageIndex(fragments=False)
    result = locs(await run(SITEMAP, sitemap("/", "/explodes/"), READER, index=index))
    assert result == ["http://docs.test/"]
    assert index.known("/explodes/") == (True, None)


async def test_filtered_indexes_are_reused_per_access() -> None:
    index = PageIndex(fragments=False)
    fetch = Fetcher()
    body = mkdocs_index("", "guide/", "admin/")
    first = await run(MKDOCS, body, make_user("x"), fetch=fetch, index=index)
    calls = len(fetch.calls)
    index.record("/guide/", PageMeta(groups=("admin",)))
    # Another reader with the same access gets the same answer without any new work.
    assert await run(MKDOCS, body, make_user("y"), fetch=fetch, index=index) == first
    assert len(fetch.calls) == calls
    assert await run(MKDOCS, body, ADMIN, fetch=fetch, index=index) != first


async def test_close_cancels_pending_fetches() -> None:
    index = PageIndex(fragments=False)
    started = asyncio.Event()

    async def slow(path: str) -> PageMeta | None:
        started.set()
        await asyncio.sleep(60)
        return PageMeta()

    task = asyncio.ensure_future(index.lookup(["/slow/"], slow))
    await started.wait()
    await index.close()
    assert await asyncio.wait_for(task, 5) == {"/slow/": None}


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown index kind"):
        asyncio.run(filter_index(IndexFile("pagefind", "/", ""), b"", None, policy(),
                                 PageIndex(fragments=False), Fetcher()))


async def test_pages_with_gated_parts_keep_title_but_lose_words() -> None:
    # The index was built from whole pages, gated parts included: for a page that has
    # any (or might: a bare PageMeta tells nothing), only its title and address remain.
    metas: dict[str, PageMeta | Learned] = {
        "/": Learned(PageMeta(public=True), fragments=False),
        "/team/": Learned(PageMeta(public=True), fragments=True),
        "/guide/": PageMeta(public=True)}
    index = PageIndex(fragments=True)
    body = mkdocs_index("", "#welcome", "team/", "team/#admin-notes", "guide/", "guide/#a")
    result = json.loads(await run(MKDOCS, body, ADMIN, fetch=Fetcher(metas), index=index))
    assert [(d["location"], d["text"]) for d in result["docs"]] == [
        ("", "about "), ("#welcome", "about #welcome"), ("team/", ""), ("guide/", "")]
    sitemap_result = await run(SITEMAP, sitemap("/team/"), None, fetch=Fetcher(metas),
                               index=index)
    assert locs(sitemap_result) == ["http://docs.test/team/"]


async def test_sphinx_pages_with_gated_parts_keep_only_their_title() -> None:
    metas = {"/index.html": Learned(PageMeta(public=True), fragments=False),
             "/guide.html": Learned(PageMeta(public=True), fragments=True),
             "/admin.html": Learned(PageMeta(public=True), fragments=False)}
    index = PageIndex(fragments=True)
    result = sphinx_data(await run(SPHINX, sphinx_index(), None, fetch=Fetcher(metas),
                                   index=index))
    assert result["docnames"] == ["admin", "guide", "index"]
    assert result["terms"]["setup"] == 0 or result["terms"]["setup"] == [0]
    assert 1 not in (result["terms"]["all"])
    assert "guide" not in result["titleterms"]
    assert result["alltitles"]["Setup"] == [[0, "s"]]


# -- search keeps what it can: only gated text leaves a page's entries ------------------

OPS_PAGE = b"""<!doctype html><html><head><title>Ops</title></head><body>
<nav><a href="/">Home</a> <a href="/ops/">Ops</a></nav>
<main>
<h1 id="operations">Operations</h1>
<p>Restart the widget service with care.</p>
<p>The unseal code is <span data-gateway-groups="admin">SPAN-SECRET</span> for admins only.</p>
<div data-gateway-groups="admin">
<h2 id="vault">Vault unsealing</h2>
<p>Run <code>vault unseal</code> &amp; wait for <b>QUORUM-SECRET</b> shares.</p>
</div>
<p data-gateway-anonymous>Log in to see more.</p>
<h2 id="monitoring">Monitoring <span data-gateway-groups="admin">TITLE-SECRET</span></h2>
<p>Watch the dashboard graphs.</p>
</main></body></html>
"""
#: What MkDocs' own search makes of that page: the page, then a section per heading.
OPS_DOCS = [
    {"location": "ops/", "title": "Ops", "text": (
        "Operations Restart the widget service with care. The unseal code is SPAN-SECRET "
        "for admins only. Vault unsealing Run vault unseal & wait for QUORUM-SECRET shares. "
        "Log in to see more. Monitoring TITLE-SECRET Watch the dashboard graphs.")},
    {"location": "ops/#operations", "title": "Operations", "text": (
        "Restart the widget service with care. The unseal code is SPAN-SECRET for admins "
        "only.")},
    {"location": "ops/#vault", "title": "Vault unsealing",
     "text": "Run vault unseal & wait for QUORUM-SECRET shares. Log in to see more."},
    {"location": "ops/#monitoring", "title": "Monitoring TITLE-SECRET",
     "text": "Watch the dashboard graphs."},
]
MKDOCS_CONFIG = {"indexing": "full", "lang": ["en"], "min_search_length": 3,
                 "prebuild_index": False, "separator": "[\\s\\-]+"}
SECRETS = ("SPAN-SECRET", "QUORUM", "TITLE-SECRET", "Vault unsealing")


def ops_learned(page: bytes = OPS_PAGE) -> dict[str, PageMeta | Learned | None]:
    learned = learn(page, "text/html; charset=utf-8")
    assert learned is not None and learned.fragments is True
    return {"/ops/": learned}


async def scrubbed(docs: list[dict[str, Any]], user: Any, *, page: bytes = OPS_PAGE,
                   config: dict[str, Any] | None = None, kind: str = MKDOCS) -> list[Any]:
    body = json.dumps({"config": config or MKDOCS_CONFIG, "docs": docs}).encode()
    result = await run(kind, body, user, pol=policy(public=["/ops/**"]),
                       fetch=Fetcher(ops_learned(page)), index=PageIndex(fragments=True))
    return [(doc["location"], doc["title"], doc["text"]) for doc in json.loads(result)["docs"]]


async def test_only_the_gated_text_leaves_mkdocs_entries() -> None:
    reader = await scrubbed(OPS_DOCS, READER)
    assert reader == [
        ("ops/", "Ops", "Operations Restart the widget service with care. The unseal code is "
                        "for admins only. Monitoring Watch the dashboard graphs."),
        ("ops/#operations", "Operations",
         "Restart the widget service with care. The unseal code is for admins only."),
        # The section whose heading is gated goes whole.
        ("ops/#monitoring", "Monitoring", "Watch the dashboard graphs.")]
    anonymous = await scrubbed(OPS_DOCS, None)
    assert anonymous[0][2] == (
        "Operations Restart the widget service with care. The unseal code is for admins "
        "only. Log in to see more. Monitoring Watch the dashboard graphs.")
    for entries in (reader, anonymous):
        assert not any(secret in str(entries) for secret in SECRETS)
    # An admin keeps the admins' text, and loses what is only for anonymous readers.
    admin = await scrubbed(OPS_DOCS, ADMIN)
    assert [entry[0] for entry in admin] == [doc["location"] for doc in OPS_DOCS]
    assert admin[0][2] == OPS_DOCS[0]["text"].replace(" Log in to see more.", "")
    assert admin[2] == ("ops/#vault", "Vault unsealing",
                        "Run vault unseal & wait for QUORUM-SECRET shares.")
    assert admin[3] == ("ops/#monitoring", "Monitoring TITLE-SECRET",
                        "Watch the dashboard graphs.")


async def test_gated_text_not_found_as_it_is_takes_the_entrys_text() -> None:
    # The index holds a gated word away from the rest of its element's text (as no known
    # indexer does): the entry keeps its title but no text; the others keep theirs.
    docs = [*OPS_DOCS[:1], {**OPS_DOCS[1], "text": OPS_DOCS[1]["text"] + " QUORUM shares"},
            *OPS_DOCS[2:]]
    reader = await scrubbed(docs, READER)
    assert reader[1] == ("ops/#operations", "Operations", "")
    assert reader[0][2].startswith("Operations Restart the widget service")
    assert not any(secret in str(reader) for secret in SECRETS)
    # A title that keeps a word the reader is not shown takes its entry with it; an
    # anchor that names no element of the page does too.
    docs = [{**OPS_DOCS[0], "title": "Ops QUORUM"},
            {"location": "ops/#nowhere", "title": "Elsewhere", "text": "Restart"}]
    assert await scrubbed(docs, READER) == []
    # Words the page also shows outside its gated elements are not gated words.
    docs = [{**OPS_DOCS[1], "text": "Restart the widget service. Unseal code: for admins."}]
    assert (await scrubbed(docs, READER))[0][2] == docs[0]["text"]


async def test_material_entries_keep_their_tags() -> None:
    config = {"lang": ["en"], "separator": "[\\s\\-]+", "pipeline": ["stopWordFilter"]}
    docs = [
        {"location": "ops/", "title": "Operations", "text": (
            "<p>Restart the widget service with care.</p> <p>The unseal code is SPAN-SECRET "
            "for admins only.</p> <p>Log in to see more.</p>")},
        {"location": "ops/#vault", "title": "Vault unsealing", "text": (
            "<p>Run <code>vault unseal</code> &amp; wait for QUORUM-SECRET shares.</p>")},
        {"location": "ops/#monitoring", "title": "Monitoring TITLE-SECRET",
         "text": "<p>Watch the dashboard graphs.</p>", "tags": ["ops"]}]
    reader = await scrubbed(docs, READER, config=config)
    assert reader == [
        ("ops/", "Operations", "<p>Restart the widget service with care.</p> <p>The unseal "
                               "code is for admins only.</p>"),
        ("ops/#monitoring", "Monitoring", "<p>Watch the dashboard graphs.</p>")]
    admin = await scrubbed(docs, ADMIN, config=config)
    assert admin[1] == ("ops/#vault", "Vault unsealing", docs[1]["text"])


async def test_gated_inside_gated_leaves_with_the_outer_element() -> None:
    page = OPS_PAGE.replace(b"<p>Restart the widget service with care.</p>", (
        b"<div data-gateway-authenticated><p>Members: <b data-gateway-groups=ops>NESTED</b>"
        b" see the board.</p></div>"))
    docs = [{"location": "ops/#operations", "title": "Operations",
             "text": "Members: NESTED see the board. The unseal code is for admins only."}]
    # A reader who may see the outer element but not the inner one loses both.
    assert (await scrubbed(docs, READER, page=page))[0][2] == \
        "The unseal code is for admins only."
    ops = make_user("olga", groups=("ops",))
    assert (await scrubbed(docs, ops, page=page))[0][2] == docs[0]["text"]


async def test_a_page_whose_gated_elements_cannot_be_told_is_bare() -> None:
    # A gated <body> merges into the page's own: the rewriter would drop it all.
    page = OPS_PAGE.replace(b"<main>", b'<body data-gateway-groups="admin"><main>')
    learned = learn(page, "text/html")
    assert learned is not None and learned.fragments and learned.text is None
    assert await scrubbed(OPS_DOCS, READER, page=page) == [("ops/", "Ops", "")]
    # Known or not, a Sphinx page with gated elements keeps only its name and title: its
    # index holds word stems, which cannot be told apart from the gated text's.
    metas = {"/index.html": Learned(PageMeta(public=True), fragments=False),
             "/guide.html": learn(OPS_PAGE.replace(b"<title>", b'<meta name="gateway:public" '
                                                   b'content="true"><title>')),
             "/admin.html": Learned(PageMeta(public=True), fragments=False)}
    result = sphinx_data(await run(SPHINX, sphinx_index(), ADMIN, fetch=Fetcher(metas),
                                   index=PageIndex(fragments=True)))
    assert 1 not in result["terms"]["all"] and "guide" not in result["titleterms"]


def test_a_page_learns_what_its_gated_elements_hold() -> None:
    learned = learn(OPS_PAGE)
    assert learned is not None and learned.text is not None
    text = learned.text
    assert [sorted(part.markers[0]) for part in text.parts] == [
        [b"data-gateway-groups"], [b"data-gateway-groups"], [b"data-gateway-anonymous"],
        [b"data-gateway-groups"]]
    assert [part.ids for part in text.parts] == [frozenset(), {"vault"}, frozenset(),
                                                 frozenset()]
    assert text.ids == {"operations", "monitoring"}
    assert "".join(piece for piece, _ in text.parts[1].pieces).split() == [
        "Vault", "unsealing", "Run", "vault", "unseal", "&", "wait", "for", "QUORUM-SECRET",
        "shares."]
    assert hash("restart") in text.words and hash("quorum") not in text.words
    assert hash("quorum") in text.part_words[1]
    # A page without gated elements has nothing to learn.
    plain = learn(b"<p>plain</p>")
    assert plain is not None and plain.fragments is False and plain.text is None


async def test_other_listings_keep_a_page_whole_for_who_may_see_all_its_gated_parts() -> None:
    # Only admins' parts: an admin sees the whole page, so its words are theirs too.
    page = OPS_PAGE.replace(b"<p data-gateway-anonymous>Log in to see more.</p>", b"")
    metas = {"/index.html": Learned(PageMeta(public=True), fragments=False),
             "/guide.html": learn(page.replace(b"<title>", b'<meta name="gateway:public" '
                                               b'content="true"><title>')),
             "/admin.html": Learned(PageMeta(public=True), fragments=False)}
    for user, whole in ((ADMIN, True), (READER, False), (None, False)):
        result = sphinx_data(await run(SPHINX, sphinx_index(), user, fetch=Fetcher(metas),
                                       index=PageIndex(fragments=True)))
        assert result["docnames"] == ["admin", "guide", "index"]
        assert (1 in result["terms"]["all"]) is whole
        assert ("guide" in result["titleterms"]) is whole


def inventory(*lines: str) -> bytes:
    return (b"# Sphinx inventory version 2\n# Project: Docs\n# Version: \n"
            b"# The remainder of this file is compressed using zlib.\n"
            + zlib.compress("".join(f"{line}\n" for line in lines).encode()))


def inventory_lines(body: bytes) -> list[str]:
    return zlib.decompress(body.split(b"\n", 4)[4]).decode().splitlines()


INVENTORY = ("admin std:doc -1 admin.html Admin handbook",
             "keys std:label -1 admin.html#$ Rotating keys",
             "vault py:module 0 admin.html#module-$ -",
             "guide std:doc -1 guide.html Guide",
             "setup std:label -1 guide.html#$ Setting up",
             "no-location",
             "index std:doc -1 index.html Home")
INVENTORY_METAS = {"/admin.html": PageMeta(groups=("admin",)), "/guide.html": PageMeta(),
                   "/index.html": PageMeta(public=True)}


async def test_sphinx_inventory_per_reader() -> None:
    body = inventory(*INVENTORY)
    fetch = Fetcher(INVENTORY_METAS)
    assert inventory_lines(await run(SPHINX_INVENTORY, body, ADMIN, fetch=fetch)) == [
        line for line in INVENTORY if line != "no-location"]
    assert inventory_lines(await run(SPHINX_INVENTORY, body, None, fetch=fetch)) == [
        "index std:doc -1 index.html Home"]
    out = await run(SPHINX_INVENTORY, body, READER, fetch=fetch)
    assert out.startswith(b"# Sphinx inventory version 2\n# Project: Docs\n")
    assert inventory_lines(out) == ["guide std:doc -1 guide.html Guide",
                                    "setup std:label -1 guide.html#$ Setting up",
                                    "index std:doc -1 index.html Home"]


async def test_sphinx_inventory_of_a_page_with_gated_parts_keeps_the_page_only() -> None:
    metas = {**INVENTORY_METAS, "/guide.html": Learned(PageMeta(), fragments=True)}
    lines = inventory_lines(await run(SPHINX_INVENTORY, inventory(*INVENTORY), READER,
                                      fetch=Fetcher(metas), index=PageIndex(fragments=True)))
    assert "guide std:doc -1 guide.html Guide" in lines
    assert not any("Setting up" in line for line in lines)


@pytest.mark.parametrize("body", [
    b"# Sphinx inventory version 1\n# Project: x\n# Version: 1\nadmin mod admin.html\n",
    b"# Sphinx inventory version 2\n# Project: x\n# Version: \n# zlib\nnot zlib",
    inventory("admin std:doc -1 admin.html Admin")[:-4],  # cut short
    b"",
])
async def test_an_unreadable_sphinx_inventory_is_refused(body: bytes) -> None:
    with pytest.raises(UpstreamError):
        await run(SPHINX_INVENTORY, body, ADMIN)


# -- search loses what navigation takes out of a page -----------------------------------

LISTING_PAGE = b"""<!doctype html><html><head><title>Home</title></head><body>
<nav><ul><li><a href="/admin/">Keyvault handbook</a></li><li><a href="guide/">Guide</a></li>
</ul></nav>
<main>
<h1 id="home">Home</h1>
<p>Read the <a href="/admin/">operators' notes</a> first.</p>
<p>Read next:</p>
<ul><li><a href="/admin/">Keyvault handbook</a></li><li><a href="guide/">Guide</a></li></ul>
<article><h2 id="post"><a href="/ops/">Quarterly rotation</a></h2><p>Rotate often.</p></article>
</main></body></html>
"""
#: What MkDocs' search makes of it: the page, and a section per heading.
LISTING_DOCS = [
    {"location": "", "title": "Home", "text": (
        "Home Read the operators' notes first. Read next: Keyvault handbook Guide "
        "Quarterly rotation Rotate often.")},
    {"location": "#post", "title": "Quarterly rotation", "text": "Rotate often."},
]


async def listed(docs: list[dict[str, Any]], user: Any, *, page: bytes = LISTING_PAGE,
                 kind: str = MKDOCS, navigation: bool = True) -> bytes:
    body = json.dumps({"config": MKDOCS_CONFIG, "docs": docs}).encode()
    metas = {**METAS, "/": learn(page, "text/html", navigation=navigation)}
    return await run(kind, body, user, pol=policy(public=["/", "/guide/**"]),
                     fetch=Fetcher(metas), index=PageIndex(fragments=True))


def entries(result: bytes) -> list[tuple[str, str, str]]:
    return [(doc["location"], doc["title"], doc["text"]) for doc in json.loads(result)["docs"]]


async def test_a_list_entry_or_card_for_a_closed_page_leaves_its_page_s_entries() -> None:
    learned = learn(LISTING_PAGE, "text/html", navigation=True)
    assert learned is not None and learned.fragments is False and learned.text is not None
    # The list entry in the text and the card are parts that leave; the sidebar and the
    # link inside a sentence (which keeps its words) are not.
    assert [part.hrefs for part in learned.text.linked] == [("/admin/",), ("guide/",),
                                                              ("/ops/",)]
    assert entries(await listed(LISTING_DOCS, READER)) == [
        ("", "Home", "Home Read the operators' notes first. Read next: Guide")]
    ops = make_user("olga", groups=("ops",))
    assert entries(await listed(LISTING_DOCS, ops)) == [
        ("", "Home", "Home Read the operators' notes first. Read next: Guide Quarterly "
                     "rotation Rotate often."),
        ("#post", "Quarterly rotation", "Rotate often.")]
    admin = make_user("ada", groups=("admin", "ops"))
    assert entries(await listed(LISTING_DOCS, admin)) == \
        [(doc["location"], doc["title"], doc["text"]) for doc in LISTING_DOCS]
    # Without navigation filtered, the page keeps its entries whole.
    assert learn(LISTING_PAGE, "text/html").text is None  # type: ignore[union-attr]
    assert entries(await listed(LISTING_DOCS, READER, navigation=False)) == \
        [(doc["location"], doc["title"], doc["text"]) for doc in LISTING_DOCS]


async def test_under_a_base_an_entry_s_link_is_followed_from_there() -> None:
    # <base href="/admin/sub/">: the entry's "../" is /admin/, a closed page, though from
    # the page's own address it would be the open /.
    page = LISTING_PAGE.replace(b"<head>", b'<head><base href="/admin/sub/">') \
        .replace(b'href="/admin/">Keyvault', b'href="../">Keyvault') \
        .replace(b'href="guide/"', b'href="/guide/"')
    learned = learn(page, "text/html", navigation=True)
    assert learned is not None and learned.text is not None
    assert learned.text.bases == ("/admin/sub/",)
    reader = entries(await listed(LISTING_DOCS, READER, page=page))
    assert reader and all("Keyvault" not in text for _, _, text in reader)
    admin = make_user("ada", groups=("admin", "ops"))
    assert entries(await listed(LISTING_DOCS, admin, page=page)) == \
        [(doc["location"], doc["title"], doc["text"]) for doc in LISTING_DOCS]


async def test_a_term_over_closed_entries_leaves_search_as_it_leaves_the_page() -> None:
    # Sphinx's general index, or any list: a bare term over entries that link pages. The
    # page drops the term when every entry goes; search drops its word then too.
    page = (b'<!doctype html><html><head><title>Home</title></head><body><main>'
            b'<h1 id="home">Home</h1><p>Read next:</p><ul><li>FALCONTERM<ul>'
            b'<li><a href="/admin/">Overview</a></li><li><a href="/ops/">Rotation</a></li>'
            b'</ul></li><li><a href="guide/">Guide</a></li></ul></main></body></html>')
    docs = [{"location": "", "title": "Home",
             "text": "Home Read next: FALCONTERM Overview Rotation Guide"}]
    reader = entries(await listed(docs, READER, page=page))
    assert reader and all("FALCONTERM" not in text for _, _, text in reader), reader
    # One of its entries open: the term stays on the page, and in search.
    ops = entries(await listed(docs, make_user("olga", groups=("ops",)), page=page))
    assert any("FALCONTERM" in text for _, _, text in ops), ops
    assert all("Overview" not in text for _, _, text in ops), ops


async def test_a_closed_entry_s_words_found_otherwise_take_the_text() -> None:
    # The index holds the entry's words apart: its text goes (the sidebar's copy of the
    # title is not text the reader is shown in the page's text region).
    docs = [{"location": "", "title": "Home",
             "text": "Home Read next: Keyvault Guide handbook"}]
    assert entries(await listed(docs, READER)) == [("", "Home", "")]
    # A title holding such a word takes its entry with it.
    docs = [{"location": "", "title": "Keyvault", "text": "Home"}]
    assert entries(await listed(docs, READER)) == []
    # Words the page shows nowhere but no removed part holds either stay (Material joins
    # a page's headings into its title).
    docs = [{"location": "", "title": "HomeQuarterly", "text": "Home Read next: Guide"}]
    assert entries(await listed(docs, READER)) == [("", "HomeQuarterly", "Home Read next: Guide")]


async def test_sphinx_page_that_loses_an_entry_keeps_only_its_title() -> None:
    # Its objects, index entries and titles stay: no list entry or card defines one.
    index = {"docnames": ["index"], "filenames": ["index.rst"], "titles": ["Home"],
             "terms": {"keyvault": 0, "guid": 0}, "titleterms": {"home": 0},
             "objects": {"mod": [[0, 0, 1, "", "open_func"]]},
             "alltitles": {"Home": [[0, None]]},
             "indexentries": {"open_func() (in module mod)": [[0, "mod.open_func", 0]]}}
    body = b"Search.setIndex(" + json.dumps(index).encode() + b")"
    metas = {**METAS, "/index.html": learn(LISTING_PAGE, "text/html", navigation=True)}
    for user, terms in ((READER, {}), (make_user("ada", groups=("admin", "ops")),
                                       index["terms"])):
        result = sphinx_data(await run(SPHINX, body, user, pol=policy(public=["/**"],
                                       rules=[{"path": "/admin/**", "groups": ["admin"]},
                                              {"path": "/ops/**", "groups": ["ops"]}]),
                                       fetch=Fetcher(metas), index=PageIndex(fragments=True)))
        assert result["docnames"] == ["index"] and result["terms"] == terms, user
        assert result["objects"] == index["objects"], user
        assert result["titleterms"] == index["titleterms"], user
        assert result["indexentries"] == index["indexentries"], user


async def test_a_page_whose_linked_parts_cannot_be_told_is_bare() -> None:
    # A gated <body> would drop the rest of the page: where the entry ends is not known.
    page = LISTING_PAGE.replace(b"<main>", b"<body data-gateway-groups=ops><main>")
    learned = learn(page, "text/html", navigation=True)
    assert learned is not None and learned.text is None
    assert entries(await listed(LISTING_DOCS, READER, page=page)) == [("", "Home", "")]


async def test_links_leaving_the_docs_or_unreadable_take_nothing_from_search() -> None:
    # Another site's link, the gateway's own login and a link no URL parser reads are
    # no closed page (navigation leaves them on the page, and search keeps their words).
    page = LISTING_PAGE.replace(
        b"<p>Read next:</p>",
        b'<ul><li><a href="https://github.com/acme/widget">GitHub repository</a></li>'
        b'<li><a href="/_gateway/login">Sign in</a></li>'
        b'<li><a href="http://[oops/">Broken mirror</a></li></ul><p>Read next:</p>')
    text = ("Home Read the operators' notes first. GitHub repository Sign in Broken mirror "
            "Read next: Keyvault handbook Guide Quarterly rotation Rotate often.")
    docs = [{"location": "", "title": "Home", "text": text}]
    admin = make_user("ada", groups=("admin", "ops"))
    assert entries(await listed(docs, admin, page=page)) == [("", "Home", text)]
    assert entries(await listed(docs, READER, page=page)) == [
        ("", "Home", "Home Read the operators' notes first. GitHub repository Sign in Broken "
                     "mirror Read next: Guide")]


async def test_navigation_inside_the_text_and_pages_without_a_main_region() -> None:
    # A list in an <aside> inside the text (docutils' sidebar, topic and footnote) is
    # text; a page without <main> is all text but its navigation, whatever its comments,
    # scripts or article cards say.
    aside = LISTING_PAGE.replace(b"<p>Read next:</p>\n<ul>", b"<p>Read next:</p>\n<aside><ul>")
    aside = aside.replace(b"</ul>\n<article>", b"</ul></aside>\n<article>")
    unmarked = LISTING_PAGE.replace(b"<main>", b'<!-- <main> --><script>"<main>"</script>'
                                    b'<div class="content">').replace(b"</main>", b"</div>")
    # (Without regions, the link in the sentence is navigation too: it goes with its words.)
    for page, kept in ((aside, "Home Read the operators' notes first. Read next: Guide"),
                       (unmarked, "Home Read the first. Read next: Guide")):
        learned = learn(page, "text/html", navigation=True)
        assert learned is not None and learned.text is not None
        assert ("/admin/",) in [part.hrefs for part in learned.text.linked], page
        assert entries(await listed(LISTING_DOCS, READER, page=page)) == [("", "Home", kept)]


async def test_gated_elements_kept_on_the_page_keep_their_words_in_search() -> None:
    # access.fragments off: the page shows its gated elements to everyone, so search
    # does too, while what navigation takes out still leaves.
    page = LISTING_PAGE.replace(b"<p>Read next:</p>",
                                b'<p data-gateway-groups="admin">Platypus words.</p>'
                                b'<p>Read next:</p>')
    learned = learn(page, "text/html", navigation=True, fragments=False)
    assert learned is not None and learned.fragments is False and learned.text is not None
    docs = [{"location": "", "title": "Home", "text": (
        "Home Read the operators' notes first. Platypus words. Read next: Keyvault handbook "
        "Guide")}]
    body = json.dumps({"config": MKDOCS_CONFIG, "docs": docs}).encode()
    result = await run(MKDOCS, body, READER, pol=policy(public=["/", "/guide/**"]),
                       fetch=Fetcher({**METAS, "/": learned}), index=PageIndex(fragments=True))
    assert entries(result) == [
        ("", "Home", "Home Read the operators' notes first. Platypus words. Read next: Guide")]
