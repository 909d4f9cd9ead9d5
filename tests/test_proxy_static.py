"""Serving a built docs folder: a real aiohttp server on 127.0.0.1 in front of a tmp site."""

from __future__ import annotations

import gzip
import os
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from gateway.proxy.origin import BrokenAnswer, stream_body
from gateway.proxy.static import KEPT_ADDRESSES, KEPT_BYTES, StaticSite
from gateway.scope import Scope

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
BLOB = bytes(range(256)) * 8  # 2048 bytes, every byte value


def build_site(base: Path, *, with_404: bool = True) -> Path:
    """A small built docs folder, plus a secret outside it that links try to reach."""
    root = base / "site"
    files: dict[str, bytes] = {
        "index.html": b"<h1>Home</h1>",
        "guide/index.html": b"<h1>Guide</h1>",
        "guide/install.html": b"<h1>Install</h1>",
        "about.html": b"<h1>About</h1>",
        "api.html": b"<h1>api.html</h1>",
        "api/index.html": b"<h1>api dir</h1>",
        "caf\u00e9/index.html": b"<h1>Cafe</h1>",
        "assets/app.js": b"console.log(1)",
        "assets/style.css": b"body{}",
        "search/search_index.json": b'{"docs": []}',
        "logo.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "fonts/text.woff2": b"wOF2",
        "app.wasm": b"\x00asm",
        "site.webmanifest": b"{}",
        "blob.bin": BLOB,
        "CNAME": b"docs.example.com",
        "sitemap.xml": b"<urlset/>",
        "sitemap.xml.gz": gzip.compress(b"<urlset/>"),
        ".env": b"SECRET=1",
        ".well-known/security.txt": b"Contact: mailto:sec@example.com",
        "empty/.keep": b"",
    }
    if with_404:
        files["404.html"] = b"<h1>Our own 404</h1>"
    for name, body in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"TOP SECRET")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    (root / "latest.js").symlink_to(root / "assets" / "app.js")
    (root / "handbook").symlink_to(root / "guide", target_is_directory=True)
    os.mkfifo(root / "pipe")
    return root


@pytest.fixture
def site_root(tmp_path: Path) -> Path:
    return build_site(tmp_path)


@pytest.fixture
def make_client(aiohttp_client: Any, site_root: Path) -> MakeClient:
    """A server whose every path is answered by StaticSite.open, streamed as the gateway
    streams an origin's answer.

    ``X-Path`` overrides the path handed to the site, to send paths a real client would
    normalize away; ``X-Base`` is the public base path the site is served under.
    """

    async def make(root: Path | None = None) -> Client:
        async def handler(request: web.Request) -> web.StreamResponse:
            site = StaticSite(root or site_root, request.headers.get("X-Base", ""))
            scope = Scope(request_id="t", client_ip="127.0.0.1", trusted=False,
                          scheme="http", host=request.host,
                          path=request.headers.get("X-Path", request.path),
                          query=request.rel_url.raw_query_string, forwarded_for="")
            answer = await site.open(request, scope, [])
            response = web.StreamResponse(status=answer.status, reason=answer.reason,
                                          headers=site.response_headers(answer))
            if answer.content_length is not None:
                response.content_length = answer.content_length
            await response.prepare(request)
            if request.method == "HEAD":
                answer.release()
                await response.write_eof()
            else:
                await stream_body(request, answer, response)
            return response

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        client: Client = await aiohttp_client(app)
        return client

    return make


async def test_root_serves_index_html(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/")
    assert response.status == 200
    assert await response.read() == b"<h1>Home</h1>"
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Accept-Ranges"] == "bytes"


async def test_directory_with_slash_serves_its_index(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/guide/")
    assert response.status == 200
    assert await response.read() == b"<h1>Guide</h1>"


async def test_directory_without_slash_redirects_and_keeps_query(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get(URL("/guide?q=install&x=%2F", encoded=True),
                                allow_redirects=False)
    assert response.status == 301
    assert response.headers["Location"] == "./guide/?q=install&x=%2F"
    followed = await client.get("/guide?q=install")
    assert followed.status == 200
    assert followed.url.path == "/guide/"
    assert followed.url.query_string == "q=install"
    assert await followed.read() == b"<h1>Guide</h1>"


async def test_redirect_keeps_the_base_path_in_front(make_client: MakeClient) -> None:
    client = await make_client()
    nested = await client.get("/docs/guide", headers={"X-Base": "/docs"}, allow_redirects=False)
    assert nested.status == 301
    assert URL("/docs/guide").join(URL(nested.headers["Location"])).path == "/docs/guide/"
    top = await client.get("/docs", headers={"X-Base": "/docs"}, allow_redirects=False)
    assert top.status == 301
    assert URL("/docs").join(URL(top.headers["Location"])).path == "/docs/"


async def test_redirect_for_non_ascii_directory_is_percent_encoded(
        make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/caf%C3%A9", allow_redirects=False)
    assert response.status == 301
    assert response.headers["Location"] == "./caf%C3%A9/"
    followed = await client.get("/caf%C3%A9")
    assert await followed.read() == b"<h1>Cafe</h1>"


async def test_extensionless_path_serves_the_html_sibling(make_client: MakeClient) -> None:
    client = await make_client()
    for path, body in (("/about", b"<h1>About</h1>"), ("/guide/install", b"<h1>Install</h1>")):
        response = await client.get(path)
        assert response.status == 200
        assert await response.read() == body
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"


async def test_directory_wins_over_html_sibling(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/api", allow_redirects=False)
    assert response.status == 301
    assert await (await client.get("/api/")).read() == b"<h1>api dir</h1>"
    assert await (await client.get("/api.html")).read() == b"<h1>api.html</h1>"


async def test_file_with_trailing_slash_is_not_found(make_client: MakeClient) -> None:
    client = await make_client()
    assert (await client.get("/about.html/")).status == 404
    assert (await client.get("/about/")).status == 404


async def test_directory_without_index_is_not_found(make_client: MakeClient) -> None:
    client = await make_client()
    assert (await client.get("/empty/")).status == 404
    assert (await client.get("/empty", allow_redirects=False)).status == 404


@pytest.mark.parametrize(("path", "content_type"), [
    ("/assets/app.js", "text/javascript; charset=utf-8"),
    ("/assets/style.css", "text/css; charset=utf-8"),
    ("/search/search_index.json", "application/json"),
    ("/logo.svg", "image/svg+xml"),
    ("/fonts/text.woff2", "font/woff2"),
    ("/app.wasm", "application/wasm"),
    ("/site.webmanifest", "application/manifest+json"),
    ("/sitemap.xml", "application/xml"),
    ("/sitemap.xml.gz", "application/gzip"),
    ("/blob.bin", "application/octet-stream"),
    ("/CNAME", "application/octet-stream"),
])
async def test_content_types(make_client: MakeClient, path: str, content_type: str) -> None:
    client = await make_client()
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_binary_file_arrives_intact(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/blob.bin")
    assert await response.read() == BLOB
    assert response.headers["Content-Length"] == str(len(BLOB))


async def test_etag_revalidation_gives_304(make_client: MakeClient) -> None:
    client = await make_client()
    first = await client.get("/assets/app.js")
    etag = first.headers["ETag"]
    again = await client.get("/assets/app.js", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag


async def test_changed_file_gets_a_new_etag(make_client: MakeClient, site_root: Path) -> None:
    client = await make_client()
    etag = (await client.get("/assets/app.js")).headers["ETag"]
    (site_root / "assets" / "app.js").write_bytes(b"console.log('changed')")
    response = await client.get("/assets/app.js", headers={"If-None-Match": etag})
    assert response.status == 200
    assert await response.read() == b"console.log('changed')"
    assert response.headers["ETag"] != etag


async def test_last_modified_revalidation_gives_304(
        make_client: MakeClient, site_root: Path) -> None:
    os.utime(site_root / "logo.svg", (1_600_000_000, 1_600_000_000))
    client = await make_client()
    response = await client.get("/logo.svg")
    assert response.headers["Last-Modified"] == formatdate(1_600_000_000, usegmt=True)
    since = {"If-Modified-Since": response.headers["Last-Modified"]}
    assert (await client.get("/logo.svg", headers=since)).status == 304
    older = {"If-Modified-Since": formatdate(1_500_000_000, usegmt=True)}
    assert (await client.get("/logo.svg", headers=older)).status == 200


async def test_single_range_gives_206(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/blob.bin", headers={"Range": "bytes=10-19"})
    assert response.status == 206
    assert await response.read() == BLOB[10:20]
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(BLOB)}"
    tail = await client.get("/blob.bin", headers={"Range": "bytes=-5"})
    assert tail.status == 206
    assert await tail.read() == BLOB[-5:]


async def test_unsatisfiable_range_gives_416(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/blob.bin", headers={"Range": f"bytes={len(BLOB)}-"})
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{len(BLOB)}"


@pytest.mark.parametrize("value", ["bytes=0-1,5-9", "items=0-5", "bytes=9-2", "bytes=x"])
async def test_ranges_that_cannot_be_honoured_give_the_whole_file(
        make_client: MakeClient, value: str) -> None:
    client = await make_client()
    response = await client.get("/blob.bin", headers={"Range": value})
    assert response.status == 200
    assert await response.read() == BLOB


async def test_if_range_with_a_stale_etag_sends_the_whole_file(make_client: MakeClient) -> None:
    client = await make_client()
    etag = (await client.get("/blob.bin")).headers["ETag"]
    fresh = await client.get("/blob.bin", headers={"Range": "bytes=0-3", "If-Range": etag})
    assert fresh.status == 206
    assert await fresh.read() == BLOB[:4]
    stale = await client.get("/blob.bin", headers={"Range": "bytes=0-3", "If-Range": '"old"'})
    assert stale.status == 200
    assert await stale.read() == BLOB


async def test_head_has_the_headers_but_no_body(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.head("/blob.bin")
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(BLOB))
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert "ETag" in response.headers and "Last-Modified" in response.headers
    assert await response.read() == b""


@pytest.mark.parametrize("path", [
    "/../outside/secret.txt",
    "/guide/../../outside/secret.txt",
    "/../../../../../../etc/passwd",
    "/./index.html",
    "/guide/..",
    "relative/index.html",
    "/..\\outside\\secret.txt",
])
async def test_traversal_in_an_already_decoded_path_is_refused(
        make_client: MakeClient, path: str) -> None:
    client = await make_client()
    response = await client.get("/", headers={"X-Path": path})
    assert response.status == 404
    body = await response.read()
    assert b"TOP SECRET" not in body and b"root:" not in body


async def test_encoded_traversal_on_the_wire_is_refused(make_client: MakeClient) -> None:
    client = await make_client()
    for raw in ("/%2e%2e/outside/secret.txt", "/guide/%2E%2E/%2E%2E/outside/secret.txt",
                "/..%2foutside%2fsecret.txt"):
        response = await client.get(URL(raw, encoded=True))
        assert response.status in (400, 404)
        assert b"TOP SECRET" not in await response.read()


async def test_symlinks_escaping_the_root_are_not_found(make_client: MakeClient) -> None:
    client = await make_client()
    for path in ("/escape.txt", "/escape-dir/secret.txt", "/escape-dir/"):
        response = await client.get(path)
        assert response.status == 404
        assert b"TOP SECRET" not in await response.read()


async def test_symlinks_inside_the_root_are_served(make_client: MakeClient) -> None:
    client = await make_client()
    script = await client.get("/latest.js")
    assert script.status == 200
    assert await script.read() == b"console.log(1)"
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
    page = await client.get("/handbook/install")
    assert await page.read() == b"<h1>Install</h1>"


async def test_missing_page_uses_the_sites_own_404(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/no/such/page", headers=HTML)
    assert response.status == 404
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert await response.read() == b"<h1>Our own 404</h1>"


async def test_edited_404_page_is_picked_up(make_client: MakeClient, site_root: Path) -> None:
    client = await make_client()
    assert await (await client.get("/nope", headers=HTML)).read() == b"<h1>Our own 404</h1>"
    (site_root / "404.html").write_bytes(b"<h1>A newer, longer 404</h1>")
    assert await (await client.get("/nope", headers=HTML)).read() == b"<h1>A newer, longer 404</h1>"


async def test_missing_page_without_a_404_html_gets_a_built_in_page(
        make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client(build_site(tmp_path / "bare", with_404=False))
    response = await client.get("/no/such/page", headers=HTML)
    assert response.status == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert b"Page not found" in await response.read()


async def test_missing_file_for_a_non_html_client_is_json(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/assets/missing.js", headers={"Accept": "*/*"})
    assert response.status == 404
    assert response.headers["Content-Type"].startswith("application/json")
    assert (await response.json())["error"] == "not_found"


async def test_post_and_other_methods_get_405_with_allow(make_client: MakeClient) -> None:
    client = await make_client()
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        response = await client.request(method, "/index.html")
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"


async def test_odd_names_are_a_clean_404(make_client: MakeClient) -> None:
    client = await make_client()
    for path in ("/" + "a" * 300, "/" + "a/" * 3000, "/%00index.html", "/%C3%BF%FF%FE"):
        response = await client.get(URL(path, encoded=True))
        assert response.status == 404, path


async def test_a_fifo_is_not_served_and_does_not_hang(make_client: MakeClient) -> None:
    client = await make_client()
    assert (await client.get("/pipe")).status == 404


async def test_dotfiles_are_hidden_but_well_known_is_served(make_client: MakeClient) -> None:
    client = await make_client()
    assert (await client.get("/.env")).status == 404
    known = await client.get("/.well-known/security.txt")
    assert known.status == 200
    assert known.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_file_for(site_root: Path) -> None:
    site = StaticSite(site_root)
    real_root = site_root.resolve()
    assert site.file_for("/") == real_root / "index.html"
    assert site.file_for("/guide/") == real_root / "guide" / "index.html"
    assert site.file_for("/guide") is None  # served as a redirect, not a file
    assert site.file_for("/about") == real_root / "about.html"
    assert site.file_for("/latest.js") == real_root / "assets" / "app.js"
    assert site.file_for("/escape.txt") is None
    assert site.file_for("/index.html\x00.png") is None
    assert site.file_for("/\ud800") is None
    assert site.file_for("/") is not None
    assert site.file_for("/missing") is None
    assert "site" in repr(site)


_PIECES = ["/", ".", "..", "a", "guide", "escape-dir", "handbook", "\x00", "\\", "~", "\u00e9",
           "404.html", "index.html", ".env", ".html", "secret.txt", "outside", "site"]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_file_for_never_leaves_the_root(site_root: Path, path: str) -> None:
    site = StaticSite(site_root)
    found = site.file_for(path)
    if found is not None:
        assert found.is_relative_to(site_root.resolve())
        assert found.is_file()


async def test_a_large_file_is_read_in_chunks_whole_and_in_part(
        make_client: MakeClient, site_root: Path) -> None:
    big = os.urandom(300 * 1024)  # several chunks: read as the reader takes them
    (site_root / "big.bin").write_bytes(big)
    client = await make_client()
    whole = await client.get("/big.bin")
    assert whole.headers["Content-Length"] == str(len(big))
    assert await whole.read() == big
    middle = await client.get("/big.bin", headers={"Range": "bytes=70000-200000"})
    assert middle.status == 206
    assert await middle.read() == big[70000:200001]
    assert middle.headers["Content-Range"] == f"bytes 70000-200000/{len(big)}"


async def test_a_file_cut_short_while_sent_ends_the_connection(
        make_client: MakeClient, site_root: Path) -> None:
    big = b"x" * (400 * 1024)
    target = site_root / "shrinking.bin"
    target.write_bytes(big)
    site = StaticSite(site_root)
    scope = Scope(request_id="t", client_ip="127.0.0.1", trusted=False, scheme="http",
                  host="docs.test", path="/shrinking.bin", query="", forwarded_for="")

    class Get:
        method = "GET"
        headers: dict[str, str] = {}

    answer = await site.open(Get(), scope, [])  # type: ignore[arg-type]
    assert answer.status == 200 and answer.content_length == len(big)
    first = await answer.read()
    target.write_bytes(b"x" * len(first))  # truncated on disk after the first chunk
    with pytest.raises(BrokenAnswer):
        while await answer.read():
            pass
    answer.release()
    answer.release()  # idempotent


async def test_conditions_on_a_file(make_client: MakeClient) -> None:
    client = await make_client()
    etag = (await client.get("/blob.bin")).headers["ETag"]
    assert (await client.get("/blob.bin", headers={"If-Match": '"other"'})).status == 412
    assert (await client.get("/blob.bin", headers={"If-Match": etag})).status == 200
    old = formatdate(1_000_000_000, usegmt=True)
    assert (await client.get("/blob.bin", headers={"If-Unmodified-Since": old})).status == 412
    weak = await client.get("/blob.bin", headers={"If-None-Match": f'"x", W/{etag}'})
    assert weak.status == 304
    assert "Content-Length" not in weak.headers or weak.headers["Content-Length"] == "0"


async def fetched(site: StaticSite, path: str) -> bytes | None:
    answer = await site.fetch(path)
    return None if answer is None else await answer.read_all(1 << 20)


async def test_a_found_file_is_kept_and_any_change_to_it_is_read_at_once(
        site_root: Path, tmp_path: Path) -> None:
    site = StaticSite(site_root)
    assert await fetched(site, "/guide/") == b"<h1>Guide</h1>" and site.kept == 1
    assert await fetched(site, "/guide/") == b"<h1>Guide</h1>" and site.kept == 1
    # Rewritten in place, to the same size: its stat tells.
    (site_root / "guide" / "index.html").write_bytes(b"<h1>Guidf</h1>")
    assert await fetched(site, "/guide/") == b"<h1>Guidf</h1>"
    # Replaced by another file (a rebuild's rename), then removed.
    (tmp_path / "new.html").write_bytes(b"<h1>Rebuilt</h1>")
    os.replace(tmp_path / "new.html", site_root / "guide" / "index.html")
    assert await fetched(site, "/guide/") == b"<h1>Rebuilt</h1>"
    (site_root / "guide" / "index.html").unlink()
    assert await fetched(site, "/guide/") is None and site.kept == 0
    # What is not found is never kept (addresses there are the client's to choose).
    assert await fetched(site, "/missing.html") is None and site.kept == 0
    # A folder moved out and a link to a place outside the root put in its stead: the
    # kept file is another one now, looked up anew, and refused.
    (site_root / "guide" / "index.html").write_bytes(b"<h1>Guide</h1>")
    assert await fetched(site, "/guide/") == b"<h1>Guide</h1>" and site.kept == 1
    os.replace(site_root / "guide", tmp_path / "guide-moved")
    (site_root / "guide").symlink_to(tmp_path / "outside", target_is_directory=True)
    (tmp_path / "outside" / "index.html").write_bytes(b"TOP SECRET")
    assert await fetched(site, "/guide/") is None


async def test_where_an_address_leads_is_followed_again_at_once(site_root: Path) -> None:
    site = StaticSite(site_root)
    assert await fetched(site, "/handbook/") == b"<h1>Guide</h1>"
    assert await fetched(site, "/handbook/install.html") == b"<h1>Install</h1>"
    assert await fetched(site, "/latest.js") == b"console.log(1)" and site.kept == 3
    # The links now lead elsewhere, or nowhere; the files they led to are unchanged.
    (site_root / "handbook").unlink()
    (site_root / "handbook").symlink_to(site_root / "api", target_is_directory=True)
    assert await fetched(site, "/handbook/") == b"<h1>api dir</h1>"
    assert await fetched(site, "/handbook/install.html") is None
    (site_root / "latest.js").unlink()
    assert await fetched(site, "/latest.js") is None
    # A page published as a link to a draft, then unpublished.
    (site_root / "draft.html").symlink_to(site_root / "about.html")
    assert await fetched(site, "/draft.html") == b"<h1>About</h1>"
    (site_root / "draft.html").unlink()
    assert await fetched(site, "/draft.html") is None


async def test_what_is_kept_stays_within_its_bounds(tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    for number in range(KEPT_ADDRESSES + 20):
        (root / f"{number}.txt").write_bytes(b"x")
    site = StaticSite(root)
    for number in range(KEPT_ADDRESSES + 20):
        assert await fetched(site, f"/{number}.txt") == b"x"
    assert site.kept == KEPT_ADDRESSES
    large = tmp_path / "large"
    large.mkdir()
    for number in range(80):
        (large / f"{number}.bin").write_bytes(b"y" * 60_000)
    site = StaticSite(large)
    for number in range(80):
        assert await fetched(site, f"/{number}.bin") == b"y" * 60_000
    assert site.kept == KEPT_BYTES // 60_000
