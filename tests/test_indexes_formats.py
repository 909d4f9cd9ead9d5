"""The listings beside sitemaps and search indexes, per reader: llms.txt and llms-full.txt,
RSS, Atom and JSON feeds, and Docusaurus' local search index.

``tests/data/docusaurus`` holds what @easyops-cn/docusaurus-search-local 0.55.3 wrote: its
own postBuild run over four Docusaurus-shaped pages (``search-index.json``), and what its
own buildIndex makes of the pages a reader may open (``anonymous.json``, ``reader.json``,
``admin.json``); ``generate.js`` there made them.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import build_config
from gateway.config.model import IndexNames
from gateway.errors import ConfigError, UpstreamError
from gateway.html.head import PageMeta
from gateway.html.page import learn
from gateway.indexes.filter import (
    DOCUSAURUS,
    FEED,
    LLMS,
    LLMS_FULL,
    IndexFile,
    Learned,
    PageIndex,
    filter_index,
    match_index,
)
from gateway.indexes.formats import FetchText, link_paths
from gateway.policy import Policy
from tests.helpers import make_config, make_user
from tests.test_indexes_filter import ADMIN, READER, Fetcher, policy

DATA = Path(__file__).resolve().parent / "data" / "docusaurus"
OPS = make_user("olga", groups=("ops",))


async def run(kind: str, body: bytes, user: Any, *, metas: Mapping[str, Any] | None = None,
              base: str = "/", packing: str = "", fragments: bool = False,
              fetch_text: FetchText | None = None, pol: Policy | None = None,
              base_path: str = "") -> bytes:
    return await filter_index(IndexFile(kind, base, "", packing), body, user,
                              pol or policy(), PageIndex(fragments=fragments,
                                                         base_path=base_path),
                              Fetcher(metas), fetch_text)


# -- recognition and settings -----------------------------------------------------------


def test_listings_are_recognised_by_name() -> None:
    assert match_index("/llms.txt") == IndexFile(LLMS, "/", "text/plain; charset=utf-8")
    assert match_index("/v2/LLMS-Full.txt") == IndexFile(LLMS_FULL, "/v2/",
                                                         "text/plain; charset=utf-8")
    for path in ("/feed_rss_created.xml", "/feed_json_updated.json", "/posts/index.xml",
                 "/blog/atom.xml", "/blog/rss.xml", "/feed.xml", "/blog/feed.json"):
        assert match_index(path) == IndexFile(FEED, path[:path.rfind("/") + 1],
                                              "application/xml"), path
    for path in ("/search-index.json", "/search-index-docs-1a2b.json",
                 "/docs/next/search-index.json"):
        found = match_index(path)
        assert found is not None and found.kind == DOCUSAURUS, path
    assert match_index("/llms.txt.gz") == IndexFile(LLMS, "/", "application/gzip", "gz")
    assert match_index("/rss.xml.br") == IndexFile(FEED, "/", "application/octet-stream", "br")
    for path in ("/notes.txt", "/feed.css", "/assets/llms.txt.js", "/docs/intro", "/llms"):
        assert match_index(path) is None, path


def test_listing_names_are_settings() -> None:
    names = IndexNames(llms=("ai.txt",), llms_full=(), feeds=("news-*.xml",), docusaurus=())
    assert match_index("/ai.txt", names) == IndexFile(LLMS, "/", "text/plain; charset=utf-8")
    assert match_index("/news-2024.XML", names) == IndexFile(FEED, "/", "application/xml")
    assert match_index("/llms.txt", names) is None
    assert match_index("/search-index.json", names) is None
    assert match_index("/sitemap.xml", names) is not None  # the built-in ones stay
    config = make_config(access={"index_names": {"llms": ["ai.txt"], "feeds": ["*.rss"]}})
    assert config.access.index_names == IndexNames(llms=("ai.txt",), feeds=("*.rss",))
    assert make_config().access.index_names == IndexNames()


@pytest.mark.parametrize(("names", "problem"), [
    ({"llms": ["docs/llms.txt"]}, "access.index_names.llms[0]"),
    ({"feeds": [""]}, "access.index_names.feeds[0]"),
    ({"feeds": ["llms.txt"]}, "access.index_names.feeds[0]"),
    ({"docusaurus": "search-index.json"}, "access.index_names.docusaurus"),
    ({"pagefind": ["x"]}, "access.index_names.pagefind"),
])
def test_listing_names_are_checked(names: dict[str, Any], problem: str) -> None:
    raw = {"upstream": {"url": "http://127.0.0.1:9"}, "access": {"index_names": names},
           "session": {"secrets": ["s" * 40]}}
    with pytest.raises(ConfigError) as caught:
        build_config(raw, base=Path("."), env={})
    assert any(line.startswith(problem) for line in caught.value.problems), \
        caught.value.problems


def test_link_paths_name_the_page_and_its_spellings() -> None:
    assert link_paths("https://docs.test/admin/index.md", "/", "") == [
        "/admin/index.md", "/admin/index.html", "/admin/index/", "/admin/index", "/admin/"]
    assert link_paths("guide.md", "/v2/", "") == ["/v2/guide.md", "/v2/guide.html",
                                                 "/v2/guide/", "/v2/guide"]
    # llmstxt.org's name for a page's copy, and Sphinx's copy of a page's source
    assert "/guide/other.html" in (link_paths("guide/other.html.md", "/", "") or ())
    assert "/admin/keys.html" in (link_paths("_sources/admin/keys.rst.txt", "/", "") or ())
    # a precompressed copy holds the same text
    assert "/guide/secret.html" in (link_paths("guide/secret.md.gz", "/", "") or ())
    assert link_paths("/docs/intro", "/", "") == ["/docs/intro", "/docs/intro/"]
    assert link_paths("https://gw.test/docs/a/", "/", "/docs") == ["/a/"]
    assert link_paths("b/", "/", "/docs") == ["/b/"]
    assert link_paths("api.json", "/", "") == ["/api.json"]
    assert link_paths("mailto:ada@example.com", "/", "") is None
    assert link_paths("#top", "/", "") is None
    assert link_paths("a%2Fb/", "/", "") == [None]
    assert link_paths("http://[::1/admin/", "/", "") == [None]
    assert link_paths("//elsewhere.test/admin/", "/", "") == ["/admin/"]


# -- llms.txt ---------------------------------------------------------------------------

LLMS_TXT = """\
# Gated Docs

> Docs for the widget.

Read [the guide](https://docs.test/guide/index.md) first.

## Usage

- [Home](https://docs.test/index.md): where to start
- [Guide](https://docs.test/guide/index.md)
- [Admin Secret Title](https://docs.test/admin/index.md): keys and rotation

## Internal

- [Admin Secret Title](https://docs.test/admin/index.md): only for admins
- [Ops runbook](/ops/)

## Optional

- [Contact](mailto:docs@example.com)
"""


def lines(body: bytes) -> list[str]:
    return body.decode().splitlines()


async def test_llms_txt_per_reader() -> None:
    body = LLMS_TXT.encode()
    anonymous = (await run(LLMS, body, None)).decode()
    assert "Admin Secret Title" not in anonymous and "Guide" not in anonymous
    # The paragraph that links to the guide goes with it; empty sections lose their heading.
    assert "Read [the guide]" not in anonymous
    assert "## Usage" in anonymous and "## Internal" not in anonymous
    assert "- [Home](https://docs.test/index.md): where to start" in anonymous
    assert "## Optional" in anonymous and "mailto:" in anonymous
    reader = (await run(LLMS, body, READER)).decode()
    assert "Admin Secret Title" not in reader and "keys and rotation" not in reader
    assert "- [Guide](https://docs.test/guide/index.md)" in reader
    assert "## Internal" not in reader and "Ops runbook" not in reader
    admin = (await run(LLMS, body, ADMIN)).decode()
    assert admin.count("Admin Secret Title") == 2 and "## Internal" in admin
    assert "Ops runbook" not in admin
    ops = (await run(LLMS, body, OPS)).decode()
    assert "## Internal\n\n- [Ops runbook](/ops/)\n" in ops and "Admin Secret" not in ops
    # Nothing is left doubled where entries went.
    assert "\n\n\n" not in anonymous + reader + admin + ops


async def test_llms_txt_every_way_of_linking_counts() -> None:
    body = b"""\
# Site

- Keys: see <https://docs.test/admin/>
- Keys again: https://docs.test/admin/.
- Keys, as HTML: <a href="/admin/">there</a>
- [Keys by reference][keys]
- [keys]
- [Relative](admin/)

```
curl https://docs.test/admin/
```

[keys]: https://docs.test/admin/
- [Home](/)
"""
    assert (await run(LLMS, body, READER)).decode() == "# Site\n\n- [Home](/)\n"
    assert await run(LLMS, body, ADMIN) == body


async def test_llms_txt_relative_links_start_from_its_folder() -> None:
    metas = {"/v2/": PageMeta(public=True), "/v2/admin/": PageMeta(groups=("admin",)),
             "/admin/": PageMeta(public=True)}
    body = b"# V2\n\n## Pages\n\n- [Home](./)\n- [Admin](admin/)\n- [Old admin](/admin/)\n"
    result = (await run(LLMS, body, None, metas=metas, base="/v2/")).decode()
    assert result == "# V2\n\n## Pages\n\n- [Home](./)\n- [Old admin](/admin/)\n"


async def test_llms_txt_under_a_base_path() -> None:
    pol = Policy(make_config(server={"listen": "127.0.0.1:0",
                                     "public_url": "https://gw.test/docs"}))
    body = (b"# S\n\n- [Home](https://gw.test/docs/)\n- [Admin](https://gw.test/docs/admin/)\n"
            b"- [Rel](admin/)\n")
    result = await run(LLMS, body, None, pol=pol, base_path="/docs")
    assert result == b"# S\n\n- [Home](https://gw.test/docs/)\n"


async def test_llms_txt_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(UpstreamError):
        await run(LLMS, b"# Caf\xe9\n", ADMIN)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("kind", [LLMS, LLMS_FULL])
async def test_text_listing_in_utf16_or_utf32_without_a_bom_is_refused(
        kind: str, encoding: str) -> None:
    # ASCII in these encodings is valid UTF-8 with NULs between the characters: read so,
    # no link is found and the gated entry would be kept.
    body = "# S\n\n- [Admin](/admin/): the secret runbook\n".encode(encoding)
    body.decode("utf-8")  # the trap: it does decode
    with pytest.raises(UpstreamError):
        await run(kind, body, READER)


async def test_llms_txt_gzipped_and_packed_otherwise() -> None:
    packed = gzip.compress(LLMS_TXT.encode())
    result = gzip.decompress(await run(LLMS, packed, READER, packing="gz")).decode()
    assert "Guide" in result and "Admin Secret" not in result
    with pytest.raises(UpstreamError):
        await run(LLMS, b"\x0b\x00stuff", READER, packing="br")


# -- llms-full.txt ----------------------------------------------------------------------

HEADED_FULL = """\
# Gated Docs

> Every page, in full.

# Home
URL: https://docs.test/

Welcome.

# Admin Secret Title

URL: https://docs.test/admin/
Source: https://github.com/example/docs/raw/main/admin.md

The master key: ROTATION-SECRET.

```
# not a page heading
```

## Rotation

Every 30 days.

# Guide
Source: https://docs.test/guide/

Install the widget.
"""


async def test_llms_full_pages_with_their_address() -> None:
    body = HEADED_FULL.encode()
    anonymous = (await run(LLMS_FULL, body, None)).decode()
    assert anonymous == "# Gated Docs\n\n> Every page, in full.\n\n# Home\nURL: " \
                        "https://docs.test/\n\nWelcome.\n\n"
    reader = (await run(LLMS_FULL, body, READER)).decode()
    assert "ROTATION" not in reader and "Admin Secret" not in reader
    assert "Every 30 days" not in reader and "Install the widget." in reader
    assert await run(LLMS_FULL, body, ADMIN) == body


async def test_llms_full_bare_pages_keep_their_heading_and_address() -> None:
    metas = {"/": Learned(PageMeta(public=True), fragments=False),
             "/guide/": Learned(PageMeta(public=True), fragments=True),
             "/admin/": Learned(PageMeta(groups=("admin",)), fragments=False)}
    result = (await run(LLMS_FULL, HEADED_FULL.encode(), ADMIN, metas=metas,
                        fragments=True)).decode()
    assert result.endswith("# Guide\nSource: https://docs.test/guide/\n\n")
    assert "Install the widget" not in result and "ROTATION-SECRET" in result


@pytest.mark.parametrize("body", [
    # A heading as high as the pages' that names no address: where would its page end?
    "# A\nURL: /\n\ntext\n\n# Appendix\n\nmore\n",
    "## A\nURL: /\n\n# Part two\n\n## B\nURL: /guide/\n",
    # A page's heading deeper than the others': its text would go with the page before.
    "# A\nURL: /\n\ntext\n\n## B\nURL: /admin/\n\nADMIN-ONLY-PAGE\n",
])
async def test_llms_full_with_pages_that_cannot_be_told_apart_is_refused(body: str) -> None:
    with pytest.raises(UpstreamError):
        await run(LLMS_FULL, body.encode(), ADMIN)


# What mkdocs-llmstxt 0.5 writes: an llms.txt, each listed page's Markdown copy beside
# the page, and an llms-full.txt of the copies under each section's name.
LLMSTXT_INDEX = """\
# Gated Docs

> A test site.

## Usage

- [Home](https://docs.test/index.md): The start
- [Guide](https://docs.test/guide/index.md)

## Internal

- [Admin](https://docs.test/admin/index.md): Only admins

"""
COPIES = {"/index.md": "# Home\n\nWelcome.\n",
          "/guide/index.md": "# Guide\n\n## Setup\n\nInstall.\n\n```\n# not a heading\n```\n",
          "/admin/index.md": "# Admin Secret Title\n\nSECRET text.\n"}
LLMSTXT_FULL = ("# Gated Docs\n\n> A test site.\n\n# Usage\n\n" + COPIES["/index.md"] + "\n"
                + COPIES["/guide/index.md"] + "# Internal\n\n" + COPIES["/admin/index.md"])


def site_files(files: Mapping[str, str]) -> FetchText:
    async def fetch(path: str) -> bytes | None:
        text = files.get(path)
        return None if text is None else text.encode()

    return fetch


async def test_mkdocs_llmstxt_full_file_per_reader() -> None:
    fetch = site_files({"/llms.txt": LLMSTXT_INDEX, **COPIES})
    body = LLMSTXT_FULL.encode()
    reader = (await run(LLMS_FULL, body, READER, fetch_text=fetch)).decode()
    assert reader == ("# Gated Docs\n\n> A test site.\n\n# Usage\n\n" + COPIES["/index.md"]
                      + "\n" + COPIES["/guide/index.md"])
    assert await run(LLMS_FULL, body, ADMIN, fetch_text=fetch) == body
    under = await run(LLMS_FULL, body, READER, base="/v1/",
                      fetch_text=site_files({"/v1/llms.txt": LLMSTXT_INDEX, **COPIES}))
    assert under.decode() == reader


@pytest.mark.parametrize("files", [
    {},  # no llms.txt beside it
    {"/llms.txt": LLMSTXT_INDEX},  # no page copies
    {"/llms.txt": LLMSTXT_INDEX, **COPIES, "/guide/index.md": "# Guide\n\nChanged.\n"},
    {"/llms.txt": "# Gated Docs\n\nNo sections.\n", **COPIES},
    {"/llms.txt": LLMSTXT_INDEX.replace("## Internal", "## Elsewhere"), **COPIES},
])
async def test_mkdocs_llmstxt_full_file_that_does_not_add_up_is_refused(
        files: dict[str, str]) -> None:
    with pytest.raises(UpstreamError):
        await run(LLMS_FULL, LLMSTXT_FULL.encode(), ADMIN, fetch_text=site_files(files))


async def test_llms_full_without_addresses_needs_the_files_beside_it() -> None:
    with pytest.raises(UpstreamError, match="cannot be filtered"):
        await run(LLMS_FULL, LLMSTXT_FULL.encode(), ADMIN)


# -- feeds ------------------------------------------------------------------------------

# As mkdocs-rss-plugin writes it (Material for MkDocs' blog), a comment added.
RSS = b"""<?xml version="1.0" encoding="UTF-8" ?>
<?xml-stylesheet type="text/xsl" href="rss.xsl"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"
     xmlns:content="http://purl.org/rss/1.0/modules/content/">
 <channel>
  <title>Gated Docs</title><link>https://docs.test/</link>
  <atom:link href="https://docs.test/feed_rss_created.xml" rel="self" type="application/rss+xml" />
  <!-- <item><title>Admin Secret Title</title></item> -->
  <item>
   <title>Admin Secret Title</title>
   <description>&lt;p&gt;ROTATION-SECRET&lt;/p&gt;</description>
   <link>https://docs.test/admin/</link>
   <guid isPermaLink="true">https://docs.test/admin/</guid>
  </item>
  <item>
   <title>Home</title>
   <description><![CDATA[<p>Welcome. </item> is no end here.</p>]]></description>
   <content:encoded><![CDATA[<p>All of it.</p>]]></content:encoded>
   <link>https://docs.test/</link>
   <guid isPermaLink="false">post-1</guid>
  </item>
  <item>
   <title>Guide</title>
   <link>https://docs.test/guide/</link>
   <guid>https://docs.test/admin/</guid>
  </item>
  <item><title>No link at all</title></item>
 </channel>
</rss>
"""


async def test_rss_items_per_reader() -> None:
    anonymous = await run(FEED, RSS, None)
    assert b"Admin Secret" not in anonymous and b"ROTATION" not in anonymous
    assert b"<title>Home</title>" in anonymous and b"is no end here" in anonymous
    assert b"<title>Guide</title>" not in anonymous
    # The guide's permalink guid names the admin page: every address must be open.
    assert b"<title>Guide</title>" not in await run(FEED, RSS, READER)
    assert b"No link at all" not in anonymous  # which page it tells of is unknown
    assert b"<!--" not in anonymous and b'<?xml-stylesheet type="text/xsl"' in anonymous
    assert b'rel="self"' in anonymous
    admin = await run(FEED, RSS, ADMIN)
    assert b"ROTATION-SECRET" in admin and b"<title>Guide</title>" in admin
    assert admin.count(b"<item>") == 3
    # What is left is still a well-formed feed.
    from xml.dom import minidom

    assert len(minidom.parseString(anonymous).getElementsByTagName("item")) == 1


async def test_rss_bare_items_keep_title_and_link_only() -> None:
    metas = {"/": Learned(PageMeta(public=True), fragments=True)}
    result = await run(FEED, RSS, None, metas=metas, fragments=True)
    assert b"<title>Home</title>" in result and b"<link>https://docs.test/</link>" in result
    assert b"Welcome" not in result and b"All of it" not in result
    assert b'<guid isPermaLink="false">post-1</guid>' in result


async def test_a_feed_item_is_whole_for_who_may_see_all_its_pages_gated_parts() -> None:
    # The home page has a part for admins only: an admin may see all of it, so its item
    # keeps its text for them; for anyone else it stays bare.
    page = (b'<meta name="gateway:public" content="true"><p>Welcome.</p>'
            b'<p data-gateway-groups="admin">Admins: rotate the keys.</p>')
    metas = {"/": learn(page, "text/html")}
    admin = await run(FEED, RSS, ADMIN, metas=metas, fragments=True)
    assert b"is no end here" in admin and b"All of it" in admin
    for user in (None, READER):
        result = await run(FEED, RSS, user, metas=metas, fragments=True)
        assert b"<title>Home</title>" in result and b"Welcome" not in result


ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://docs.test/blog/">
  <title>Blog</title>
  <id>https://docs.test/blog/</id>
  <link href="https://docs.test/blog/atom.xml" rel="self"/>
  <entry>
    <title>Secret launch</title>
    <id>tag:docs.test,2024:launch</id>
    <link href="../admin/launch/"/>
    <summary>ADMIN-ONLY-PAGE text</summary>
  </entry>
  <entry xml:base="https://docs.test/">
    <title>Hello</title>
    <id>https://docs.test/blog/hello/</id>
    <link rel="alternate" type="text/html" href="blog/hello/"/>
    <link rel="enclosure" href="https://cdn.example/a.mp3"/>
    <content type="html">&lt;p&gt;Hi&lt;/p&gt;</content>
  </entry>
  <entry>
    <title>Closed by its id</title>
    <id>https://docs.test/admin/</id>
    <link href="hello/"/>
  </entry>
</feed>
"""


async def test_atom_entries_per_reader() -> None:
    metas = {"/blog/hello/": PageMeta(public=True), "/admin/launch/": PageMeta(groups=("admin",)),
             "/admin/": PageMeta(groups=("admin",))}
    anonymous = await run(FEED, ATOM, None, metas=metas, base="/blog/")
    assert anonymous.count(b"<entry") == 1 and b"<title>Hello</title>" in anonymous
    assert b"Secret launch" not in anonymous and b"ADMIN-ONLY" not in anonymous
    assert b"Closed by its id" not in anonymous
    admin = await run(FEED, ATOM, ADMIN, metas=metas, base="/blog/")
    assert admin == ATOM


async def test_json_feed_per_reader() -> None:
    feed = {"version": "https://jsonfeed.org/version/1.1", "title": "Gated Docs",
            "home_page_url": "https://docs.test/", "_private": {"pages": ["/admin/"]},
            "items": [
                {"id": "https://docs.test/admin/", "url": "https://docs.test/admin/",
                 "title": "Admin Secret Title", "content_html": "<p>ROTATION-SECRET</p>"},
                {"id": "https://docs.test/", "url": "https://docs.test/", "title": "Home",
                 "content_html": "<p>Welcome</p>", "_extra": 1},
                {"id": "42", "title": "No address"}]}
    body = json.dumps(feed).encode()
    anonymous = json.loads(await run(FEED, body, None))
    assert [item["title"] for item in anonymous["items"]] == ["Home"]
    assert anonymous["items"][0]["_extra"] == 1
    assert "_private" not in anonymous and anonymous["title"] == "Gated Docs"
    admin = json.loads(await run(FEED, body, ADMIN))
    assert [item["title"] for item in admin["items"]] == ["Admin Secret Title", "Home"]
    metas = {"/": Learned(PageMeta(public=True), fragments=True)}
    bare = json.loads(await run(FEED, body, None, metas=metas, fragments=True))
    assert bare["items"] == [{"id": "https://docs.test/", "url": "https://docs.test/",
                              "title": "Home"}]


async def test_gzipped_feed() -> None:
    result = gzip.decompress(await run(FEED, gzip.compress(RSS), None, packing="gz"))
    assert b"<title>Home</title>" in result and b"Admin Secret" not in result


@pytest.mark.parametrize("body", [
    b"",
    b"not a feed",
    b"<html><body>a page</body></html>",
    b'<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>',
    b"<rss><channel><item><title>cut short",
    # Entity expansion (a billion laughs) and external entities: no document type at all.
    b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
    b"<rss><channel><title>&b;</title></channel></rss>",
    b'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "http://evil.test/x.dtd"><rss/>',
    b"<rss><channel><title>&nbsp;</title></channel></rss>",
    # An entry where entries do not go would escape the filter.
    b"<rss><item><title>Admin</title><link>/admin/</link></item><channel/></rss>",
    b"<rss><channel><item><item><link>/</link></item></item></channel></rss>",
    b'<?xml version="1.0" encoding="UTF-16"?><rss/>',
    "<rss/>".encode("utf-16"),
    b'{"items": []}',
    b'{"version": "https://jsonfeed.org/version/1.1", "items": [1]}',
])
async def test_feeds_that_cannot_be_read_are_refused(body: bytes) -> None:
    with pytest.raises(UpstreamError):
        await run(FEED, body, ADMIN)


# -- Docusaurus -------------------------------------------------------------------------

DOCUSAURUS_METAS: dict[str, Any] = {
    "/docs/intro": Learned(PageMeta(public=True), fragments=False),
    "/docs/guide": Learned(PageMeta(), fragments=False),
    "/docs/team": Learned(PageMeta(), fragments=True),
    "/docs/admin": Learned(PageMeta(groups=("admin",)), fragments=False),
}


@pytest.mark.parametrize(("user", "expected"), [
    (None, "anonymous.json"), (READER, "reader.json"), (ADMIN, "admin.json")])
async def test_docusaurus_index_is_what_the_plugin_builds_from_the_readers_pages(
        user: Any, expected: str) -> None:
    body = (DATA / "search-index.json").read_bytes()
    result = json.loads(await run(DOCUSAURUS, body, user, metas=DOCUSAURUS_METAS,
                                  fragments=True))
    assert result == json.loads((DATA / expected).read_bytes())
    text = json.dumps(result)
    assert ("ADMIN-ONLY" in text) == (user is ADMIN)
    assert "ROTATION-SECRET" not in text and "rotat" not in text  # the team page is bare
    assert ("Admin Secret Title" in text) == (user is ADMIN)


async def test_docusaurus_index_for_everyone_is_the_plugins_own() -> None:
    body = (DATA / "search-index.json").read_bytes()
    metas = {path: Learned(PageMeta(public=True), fragments=False) for path in DOCUSAURUS_METAS}
    result = json.loads(await run(DOCUSAURUS, body, None, metas=metas, fragments=True))
    assert result == json.loads(body)


def tampered(change: Any) -> bytes:
    data = json.loads((DATA / "search-index.json").read_bytes())
    change(data)
    return json.dumps(data).encode()


def _weight(data: Any) -> None:
    data[4]["index"]["fieldVectors"][0][1][1] += 0.5  # not what its documents make


def _positions(data: Any) -> None:
    for _term, posting in data[0]["index"]["invertedIndex"]:
        for meta in posting["t"].values():
            meta.pop("position")


def _stray_document(data: Any) -> None:
    data[0]["documents"].append({"i": 99, "t": "Unindexed", "u": "/docs/intro"})


def _stray_term(data: Any) -> None:
    data[0]["index"]["invertedIndex"].append(["hidden", {"_index": 50, "t": {"1": {
        "position": [[0, 6]]}}}])


def _version(data: Any) -> None:
    data[0]["index"]["version"] = "1.0.0"


def _duplicate(data: Any) -> None:
    data[0]["documents"].append(dict(data[0]["documents"][0]))


@pytest.mark.parametrize("body", [
    b"{}", b"[1]", b'[{"documents": [], "index": []}]', b"not json",
    b'[{"documents": [{"i": "1", "u": "/"}], "index": {}}]',
    tampered(_weight), tampered(_positions), tampered(_stray_document), tampered(_stray_term),
    tampered(_version), tampered(_duplicate),
])
async def test_docusaurus_index_that_cannot_be_rebuilt_is_refused(body: bytes) -> None:
    with pytest.raises(UpstreamError):
        await run(DOCUSAURUS, body, ADMIN, metas=DOCUSAURUS_METAS)


async def test_gzipped_docusaurus_index() -> None:
    body = gzip.compress((DATA / "search-index.json").read_bytes())
    result = gzip.decompress(await run(DOCUSAURUS, body, None, metas=DOCUSAURUS_METAS,
                                       fragments=True, packing="gz"))
    assert json.loads(result) == json.loads((DATA / "anonymous.json").read_bytes())


async def test_llms_txt_judges_a_page_copy_under_its_pages_addresses() -> None:
    # llmstxt.org names a page's copy by the page's address and .md; behind clean URLs the
    # page answers at its bare address only.
    metas = {"/": PageMeta(public=True), "/other.html": PageMeta(groups=("admin",)),
             "/clean": PageMeta(groups=("admin",)), "/other.html.md": PageMeta(),
             "/clean.md": PageMeta()}
    body = b"# S\n\n- [Home](/)\n- [Other](/other.html.md)\n- [Clean](/clean.md)\n"
    reader = (await run(LLMS, body, READER, metas=metas)).decode()
    assert "Other" not in reader and "Clean" not in reader and "Home" in reader
    admin = (await run(LLMS, body, ADMIN, metas=metas)).decode()
    assert "Other" in admin and "Clean" in admin
