"""Ways around the page gates, tried against a real nginx serving the docs.

Every body the gateway must read to decide (a page's metadata, its gated elements, a
search index) must be read whole, in the encoding a browser reads it in, whatever the
method, range, validator, type or compression of the request and the answer; what it
cannot read does not go out.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.attack import Client, app_of, cookie_header, exchange, port_of, raw_request
from tests.helpers import GatewayFactory, make_user, session_cookies
from tests.nginx import nginx_serving

ADMIN_PAGE = ('<!doctype html><html><head><title>Admin handbook</title>'
              '<meta name="gateway:groups" content="admin"></head>'
              '<body><p>ADMIN-SECRET</p></body></html>')
GATED_PAGE = ('<!doctype html><html><head><title>Guide</title></head><body><p>Welcome</p>'
              '<div data-gateway-groups="admin">GATED-SECRET</div></body></html>')
# Minified markup: unquoted values holding a quote before the page's gating meta.
TRICKY_HEADS = {
    "apostrophe": "<meta name=author content=Ada's>",
    "double quote": '<meta name=author content=a"b>',
    "link": "<link rel=preload href=/it's.css>",
    "two": "<meta content=l'heure name=x><meta name=y content=\"\">",
}
DOCS: dict[str, str | bytes] = {
    "index.html": "<!doctype html><html><head><title>Home</title></head><body>home</body></html>",
    "admin/index.html": ADMIN_PAGE,
    "guide/index.html": GATED_PAGE,
    "cut/index.html": '<html><head><title>x</title><meta name="gateway:groups" content="admin',
    "u16/index.html": ADMIN_PAGE.encode("utf-16"),
    "u16frag/index.html": GATED_PAGE.encode("utf-16-le"),
    "u16be/index.html": GATED_PAGE.encode("utf-16-be"),
    "untyped/index.html": ADMIN_PAGE,
    "plain/index.html": ADMIN_PAGE,
    "plain/encoded": ADMIN_PAGE.replace('name="gateway:', 'name="&#103;ateway:'),
    "plain/fragment": GATED_PAGE,
    "dup/index.html": ADMIN_PAGE,
    "brotli/index.html": GATED_PAGE,
    "public/notes.txt": "plain notes, nothing gated",
    "guide/shot.png": GATED_PAGE,
    "admin/shot.png": ADMIN_PAGE,
    "admin/index.html.gz": gzip.compress(ADMIN_PAGE.encode()),
    "admin/index.html.br": ADMIN_PAGE.encode(),  # as if packed: never read
    "guide/index.html.gz": gzip.compress(GATED_PAGE.encode()),
    "team.html": "<html><body>TEAM-SECRET</body></html>",
    "team.html.gz": gzip.compress(b"<html><body>TEAM-SECRET</body></html>"),
    "octet/page": ADMIN_PAGE,
    **{f"tricky-{n}/index.html": ADMIN_PAGE.replace("<title>", head + "<title>")
       for n, head in enumerate(TRICKY_HEADS.values())},
}
NGINX = """
        root {root};
        location /u16frag/ {{ charset utf-16; }}
        location /u16be/ {{ charset utf-16be; }}
        location /untyped/ {{ types {{ }} default_type ""; }}
        location /plain/ {{ types {{ }} default_type text/plain; }}
        location /dup/ {{ add_header Content-Type "text/css"; }}
        location /brotli/ {{ add_header Content-Encoding br; }}
        location = /guide/shot.png {{ types {{ text/html png; }} }}
        location = /admin/shot.png {{ types {{ text/html png; }} }}
        location /octet/ {{ types {{ }} default_type application/octet-stream; }}
"""


def mkdocs_index(*pages: tuple[str, str]) -> bytes:
    docs = [{"location": loc, "title": title, "text": f"{title} text"} for loc, title in pages]
    return json.dumps({"config": {"lang": ["en"]}, "docs": docs}).encode()


def sphinx_index(*names: str) -> bytes:
    data = {"docnames": list(names), "filenames": [f"{n}.rst" for n in names],
            "titles": [n.title() for n in names], "terms": {}, "titleterms": {},
            "objects": {}, "objtypes": {}, "objnames": {}, "alltitles": {}, "envversion": {}}
    return b"Search.setIndex(" + json.dumps(data).encode() + b")"


INDEX = mkdocs_index(("", "Home"), ("admin/", "Admin handbook"), ("public/notes.txt", "Notes"))
SPHINX = sphinx_index("index", "admin/index")


@dataclass
class Site:
    client: Client
    origin: str  # nginx itself, for what it answers without the gateway

    async def cookie(self, *groups: str) -> str:
        user = make_user("reader", groups=groups or ("reader",))
        return cookie_header(await session_cookies(app_of(self.client), user))

    async def send(self, path: str, *, method: str = "GET",
                   headers: list[tuple[str, str]] | None = None) -> Any:
        return await exchange(port_of(self.client),
                              raw_request(path, method=method, headers=headers or []))


@pytest.fixture
async def site(tmp_path: Path, gateway: GatewayFactory) -> AsyncIterator[Site]:
    root = tmp_path / "site"
    for name, content in DOCS.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    (root / "search").mkdir()
    (root / "search/search_index.json").write_bytes(INDEX)
    (root / "search/search_index.json.gz").write_bytes(gzip.compress(INDEX))
    for suffix in ("br", "zst", "bz2", "xz", "BR"):
        (root / f"search/search_index.json.{suffix}").write_bytes(INDEX)  # as if packed
    (root / "searchindex.js").write_bytes(SPHINX)
    (root / "searchindex.js.gz").write_bytes(gzip.compress(SPHINX))
    access = {"public": ["/", "/guide/**", "/u16frag/**", "/u16be/**", "/brotli/**",
                         "/search/**", "/searchindex.js*", "/public/**"],
              "rules": [{"path": "/team", "groups": ["admin"]}]}
    async with nginx_serving(tmp_path, NGINX.format(root=root)) as origin:
        client = await gateway(upstream_url=origin, access=access)
        yield Site(client, origin)


Check = Callable[[Site, str, list[tuple[str, str]]], Awaitable[None]]


async def nginx_etag(site: Site, path: str) -> tuple[str, str]:
    async with ClientSession() as session, session.head(site.origin + path) as response:
        return response.headers["ETag"], response.headers["Last-Modified"]


# -- ranges, validators and methods (findings 2 and 7) -----------------------------------

RANGES = ["bytes=0-0,1-", "bytes=0-", "bytes=-5000", "bytes=10-20", "bytes=0-0, 5-9, 12-"]


@pytest.mark.parametrize("value", RANGES)
async def test_a_range_never_skips_in_page_gating(site: Site, value: str) -> None:
    for extra in ([], [("If-Range", (await nginx_etag(site, "/guide/"))[0])]):
        reply = await site.send("/guide/", headers=[("Range", value), *extra])
        assert reply.status == 200, (value, extra, reply.head)
        assert b"GATED-SECRET" not in reply.body and b"Welcome" in reply.body


@pytest.mark.parametrize("value", RANGES)
async def test_a_range_never_skips_page_metadata(site: Site, value: str) -> None:
    cookie = await site.cookie()
    reply = await site.send("/admin/", headers=[("Range", value), ("Cookie", cookie)])
    missing = await site.send("/no-such-page/", headers=[("Cookie", cookie)])
    assert reply.status == missing.status == 404
    assert b"ADMIN-SECRET" not in reply.body


async def test_an_assets_path_that_answers_with_a_page_is_read_whole(site: Site) -> None:
    # Asset paths keep their ranges and validators, until the answer turns out to be a page.
    etag, modified = await nginx_etag(site, "/guide/shot.png")
    for method in ("GET", "HEAD"):
        for condition in ([("Range", "bytes=0-0,1-")], [("Range", "bytes=0-")], []):
            reply = await site.send("/guide/shot.png", method=method, headers=condition)
            assert reply.status == 200, (method, condition, reply.head)
            # The upstream's validator is not the rewritten page's (its own is a digest
            # of the bytes this reader got).
            assert reply.header("ETag") != etag and b"GATED-SECRET" not in reply.body
        # nginx's 304 names no type, so it passes as an asset's would: it carries no body,
        # and only confirms a validator the client already held (a limit the README states).
        for condition in ([("If-None-Match", etag)], [("If-Modified-Since", modified)]):
            reply = await site.send("/guide/shot.png", method=method, headers=condition)
            assert reply.status in (200, 304) and b"GATED-SECRET" not in reply.body


async def test_a_denied_page_answers_every_method_and_validator_as_a_missing_one(
        site: Site) -> None:
    cookie = [("Cookie", await site.cookie())]
    etag, modified = await nginx_etag(site, "/admin/")
    conditions = [[], [("If-None-Match", etag)], [("If-None-Match", "*")],
                  [("If-Modified-Since", modified)], [("If-Match", etag)],
                  [("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")],
                  [("Range", "bytes=0-"), ("If-Range", etag)]]
    for method in ("GET", "HEAD"):
        for condition in conditions:
            denied = await site.send("/admin/", method=method, headers=cookie + condition)
            missing = await site.send("/no-such-page/", method=method,
                                      headers=cookie + condition)
            assert denied.status == missing.status == 404, (method, condition, denied.head)
            assert denied.header("ETag") is None and denied.header("Last-Modified") is None
            assert b"ADMIN-SECRET" not in denied.body


async def test_a_page_under_an_assets_name_answers_denials_as_missing(site: Site) -> None:
    cookie = [("Cookie", await site.cookie())]
    for condition in ([("If-Match", '"x"')], [("If-Unmodified-Since",
                                                "Mon, 01 Jan 2001 00:00:00 GMT")],
                      [("Range", "bytes=99999-")], [("Range", "bytes=0-0,1-")]):
        for method in ("GET", "HEAD"):
            reply = await site.send("/admin/shot.png", method=method, headers=cookie + condition)
            missing = await site.send("/admin/none.png", method=method,
                                      headers=cookie + condition)
            assert reply.status == missing.status == 404, (condition, method, reply.head)
            assert reply.header("Content-Range") is None and b"ADMIN" not in reply.body


async def test_other_methods_and_redirects_do_not_tell_a_denied_page_exists(
        site: Site) -> None:
    cookie = [("Cookie", await site.cookie())]
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PROPFIND"):
        denied = await site.send("/admin/", method=method, headers=cookie)
        missing = await site.send("/no-such-page/", method=method, headers=cookie)
        assert denied.status == missing.status, (method, denied.head, missing.head)
    # nginx redirects a folder asked without its slash; a missing one is a 404.
    denied = await site.send("/admin", headers=cookie)
    missing = await site.send("/no-such-page", headers=cookie)
    assert denied.status == missing.status == 404, denied.head
    admin = await site.send("/admin", headers=[("Cookie", await site.cookie("admin"))])
    assert admin.status == 301


async def test_an_allowed_head_is_its_get_without_the_body(site: Site) -> None:
    cookie = [("Cookie", await site.cookie("admin"))]
    get = await site.send("/admin/", headers=cookie)
    head = await site.send("/admin/", method="HEAD", headers=cookie)
    assert get.status == head.status == 200 and head.body == b""
    assert head.header("Content-Length") == get.header("Content-Length") == str(len(get.body))
    # Anonymous readers get the guide without its gated part, on HEAD as on GET.
    get = await site.send("/guide/")
    head = await site.send("/guide/", method="HEAD")
    assert head.header("Content-Length") == str(len(get.body))
    assert b"GATED-SECRET" not in get.body


async def test_a_page_answering_another_method_is_still_read(site: Site) -> None:
    # nginx answers POST to a static file with 405; a docs server that answered with the
    # page would still have it read. Either way nothing gated goes out.
    cookie = [("Cookie", await site.cookie())]
    for method in ("POST", "OPTIONS", "PUT"):
        reply = await site.send("/guide/", method=method, headers=cookie)
        assert b"GATED-SECRET" not in reply.body, method


# -- the head scanner (finding 3) ----------------------------------------------------------


@pytest.mark.parametrize("case", range(len(TRICKY_HEADS)), ids=list(TRICKY_HEADS))
async def test_a_quote_in_an_unquoted_value_does_not_hide_the_metadata(site: Site,
                                                                        case: int) -> None:
    path = f"/tricky-{case}/"
    reply = await site.send(path, headers=[("Cookie", await site.cookie())])
    assert reply.status == 404 and b"ADMIN-SECRET" not in reply.body
    admin = await site.send(path, headers=[("Cookie", await site.cookie("admin"))])
    assert admin.status == 200 and b"ADMIN-SECRET" in admin.body


async def test_a_head_that_ends_inside_a_tag_is_refused(site: Site) -> None:
    for groups in (("reader",), ("admin",)):
        reply = await site.send("/cut/", headers=[("Cookie", await site.cookie(*groups))])
        assert reply.status == 502, groups


# -- encodings (findings 6 and 10) -----------------------------------------------------------


async def test_a_utf16_page_is_judged_by_its_metadata(site: Site) -> None:
    reply = await site.send("/u16/", headers=[("Cookie", await site.cookie())])
    assert reply.status == 404
    assert "ADMIN-SECRET".encode("utf-16-le") not in reply.body
    admin = await site.send("/u16/", headers=[("Cookie", await site.cookie("admin"))])
    assert admin.status == 200 and b"ADMIN-SECRET" in admin.body  # sent as UTF-8
    assert admin.header("Content-Type") == "text/html; charset=utf-8"


@pytest.mark.parametrize("path,codec", [("/u16frag/", "utf-16-le"), ("/u16be/", "utf-16-be")])
async def test_a_utf16_page_loses_its_gated_elements(site: Site, path: str, codec: str) -> None:
    reply = await site.send(path)
    assert reply.status == 200
    assert reply.header("Content-Type") == "text/html; charset=utf-8"
    assert b"Welcome" in reply.body
    assert b"GATED-SECRET" not in reply.body and "GATED".encode(codec) not in reply.body


async def test_a_page_in_an_encoding_that_cannot_be_undone_is_refused(site: Site) -> None:
    # nginx claims br for plain bytes: the gateway cannot decode it, so it cannot check it.
    reply = await site.send("/brotli/", headers=[("Accept-Encoding", "br")])
    assert reply.status == 502 and b"GATED-SECRET" not in reply.body


@pytest.mark.parametrize("path", ["/untyped/", "/plain/", "/dup/", "/octet/page",
                                  "/plain/encoded", "/plain/fragment"])
async def test_a_page_without_a_readable_type_is_refused(site: Site, path: str) -> None:
    for method in ("GET", "HEAD"):
        reply = await site.send(path, method=method, headers=[("Cookie", await site.cookie())])
        assert reply.status == 502, (path, method, reply.head)
        assert b"ADMIN-SECRET" not in reply.body


async def test_an_untyped_body_that_gates_nothing_still_goes_out(site: Site) -> None:
    reply = await site.send("/public/notes.txt")
    assert reply.status == 200 and reply.body == b"plain notes, nothing gated"


# -- precompressed copies (finding 5) ----------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/index.html.gz", "/admin/index.html.br",
                                  "/guide/index.html.gz", "/guide/INDEX.HTML.GZ",
                                  "/team.html.gz"])
async def test_a_precompressed_copy_of_a_page_is_never_sent_unread(site: Site,
                                                                    path: str) -> None:
    for cookie in ([], [("Cookie", await site.cookie())]):
        for method in ("GET", "HEAD"):
            reply = await site.send(path, method=method, headers=cookie)
            assert reply.status in (302, 404), (path, method, cookie, reply.head)
            body = gzip.decompress(reply.body) if reply.body[:2] == b"\x1f\x8b" else reply.body
            assert b"SECRET" not in body




async def test_a_gzip_copy_of_an_index_is_filtered(site: Site) -> None:
    cookie = [("Cookie", await site.cookie())]
    plain = await site.send("/search/search_index.json", headers=cookie)
    packed = await site.send("/search/search_index.json.gz", headers=cookie)
    assert plain.status == packed.status == 200
    assert json.loads(gzip.decompress(packed.body)) == json.loads(plain.body)
    assert b"Admin handbook" not in plain.body
    sphinx = await site.send("/searchindex.js.gz", headers=cookie)
    assert sphinx.status == 200 and b"admin" not in gzip.decompress(sphinx.body)


@pytest.mark.parametrize("suffix", ["br", "zst", "bz2", "xz", "BR"])
async def test_a_copy_the_gateway_cannot_unpack_is_refused(site: Site, suffix: str) -> None:
    for method in ("GET", "HEAD"):
        reply = await site.send(f"/search/search_index.json.{suffix}", method=method,
                                headers=[("Cookie", await site.cookie())])
        assert reply.status in (404, 502), (suffix, method)
        assert b"Admin handbook" not in reply.body


async def test_an_index_asked_for_in_part_is_sent_whole_and_filtered(site: Site) -> None:
    cookie = [("Cookie", await site.cookie())]
    for name in ("/search/search_index.json", "/search/search_index.json.gz"):
        for method in ("GET", "HEAD"):
            reply = await site.send(name, method=method,
                                    headers=[*cookie, ("Range", "bytes=0-0,1-")])
            assert reply.status == 200, (name, method)
            assert b"Admin handbook" not in reply.body


# -- the browser's cache (finding 11) -----------------------------------------------------


async def test_a_readers_pages_are_never_reused_unasked(site: Site) -> None:
    cookie = [("Cookie", await site.cookie("admin"))]
    for path in ("/admin/", "/guide/", "/search/search_index.json"):
        reply = await site.send(path, headers=cookie)
        directives = {d.strip() for d in (reply.header("Cache-Control") or "").split(",")}
        assert {"private", "no-cache"} <= directives, (path, directives)


# -- the built folder (upstream.root) -------------------------------------------------------


@pytest.fixture
async def folder(tmp_path: Path, gateway: GatewayFactory) -> Site:
    root = tmp_path / "built"
    pages: dict[str, bytes] = {
        "index.html": b"<html><body>home</body></html>",
        "admin/index.html": ADMIN_PAGE.encode(),
        "admin/Shouting.HTML": ADMIN_PAGE.encode(),
        "admin/page.xhtml": ADMIN_PAGE.encode(),
        "admin/page.xht": ADMIN_PAGE.encode(),
        "admin/page.shtml": ADMIN_PAGE.encode(),
        "admin/index.html.gz": gzip.compress(ADMIN_PAGE.encode()),
        "admin/u16.html": ADMIN_PAGE.encode("utf-16"),
        "guide/index.html": GATED_PAGE.encode("utf-16"),
    }
    for name, content in pages.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return Site(await gateway(upstream_url=None, upstream={"root": str(root)},
                              access={"public": ["/", "/guide/**"]}), "")


@pytest.mark.parametrize("path", ["/admin/", "/admin/Shouting.HTML", "/admin/page.xhtml",
                                  "/admin/page.xht", "/admin/page.shtml", "/admin/u16.html"])
async def test_a_folders_page_is_judged_whatever_its_spelling_method_or_encoding(
        folder: Site, path: str) -> None:
    cookie = [("Cookie", await folder.cookie())]
    for method in ("GET", "HEAD"):
        for extra in ([], [("Range", "bytes=0-0,1-")], [("If-None-Match", "*")]):
            reply = await folder.send(path, method=method, headers=cookie + extra)
            assert reply.status == 404, (path, method, extra, reply.head)
            assert b"ADMIN" not in reply.body and "ADMIN".encode("utf-16-le") not in reply.body
    admin = await folder.send(path, headers=[("Cookie", await folder.cookie("admin"))])
    assert admin.status == 200 and b"ADMIN-SECRET" in admin.body


async def test_a_folders_precompressed_page_is_not_served(folder: Site) -> None:
    for groups in (("reader",), ("admin",)):
        reply = await folder.send("/admin/index.html.gz",
                                  headers=[("Cookie", await folder.cookie(*groups))])
        assert reply.status == 404 and reply.body[:2] != b"\x1f\x8b", groups


async def test_a_folders_utf16_page_loses_its_gated_elements(folder: Site) -> None:
    reply = await folder.send("/guide/")
    assert reply.status == 200 and b"Welcome" in reply.body
    assert b"GATED" not in reply.body and "GATED".encode("utf-16-le") not in reply.body
