"""A denied address cannot be told from a missing one (``access.denied: not_found``).

A real MkDocs site with its own 404 page, served by real nginx (``error_page 404``) or from
the built folder (``upstream.root``): a reader who lacks the group gets, byte for byte, what
the same reader gets for an address that does not exist: status, body and headers, for GET
and HEAD, browsers and other clients, compressed or not.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer

from tests.helpers import (
    Client,
    GatewayFactory,
    app_of,
    build_mkdocs,
    make_user,
    session_cookies,
)
from tests.nginx import nginx_serving

MKDOCS_YML = """\
site_name: Gated Docs
site_url: http://docs.test/
theme:
  name: mkdocs
  custom_dir: overrides
"""
MAIN_HTML = """\
{% extends "base.html" %}
{% block extrahead %}
{%- if page and page.meta.gateway_groups %}
<meta name="gateway:groups" content="{{ page.meta.gateway_groups }}">{% endif %}
{% endblock %}
"""
NOT_FOUND_HTML = """\
{% extends "main.html" %}
{% block content %}<h1 id="lost">Lost in the docs</h1><p>Try the search.</p>{% endblock %}
"""
PAGES = {
    "index.md": "# Home\n\nWelcome.\n",
    "guide.md": "# Guide\n\nInstall the widget.\n",
    "admin/index.md": "# Admin\n\nADMIN-ONLY-INDEX\n",
    "admin/keys.md": "# Keys\n\nADMIN-ONLY-KEYS\n",
    "team.md": "---\ngateway_groups: admin\n---\n# Team\n\nADMIN-ONLY-TEAM\n",
}
# A folder with its own 404 page, as a translated or versioned part of a site has.
FRENCH_404 = "<!doctype html><title>Introuvable</title><h1>Page introuvable</h1>"
ACCESS: dict[str, Any] = {
    "public": ["/css/**", "/js/**", "/img/**", "/webfonts/**", "/404.html"],
    "rules": [{"path": "/admin/**", "groups": ["admin"]},
              {"path": "/fr/secret/**", "groups": ["admin"]}],
    "denied": "not_found"}

# (denied address, an address of the same kind that does not exist)
PAIRS = [
    ("/admin/", "/no-such-page/"),          # a rule, a folder that exists
    ("/admin", "/no-such-page"),            # the same, without its slash
    ("/admin/keys/", "/no/such/page/"),     # a rule, deeper
    ("/admin/nothing-here", "/nothing-here"),  # a rule, and nothing there either
    ("/team/", "/no-such-page/"),           # gated by the page's own metadata
    ("/fr/secret/", "/fr/no-such-page/"),   # a folder with its own 404 page
]
# What differs between any two responses, and tells nothing.
VOLATILE = {"date", "x-request-id"}

Answer = tuple[int, list[tuple[str, str]], bytes]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built site (``mkdocs build``) with its own 404 page, once for the module."""
    built = build_mkdocs(tmp_path_factory.mktemp("mkdocs-denied"), MKDOCS_YML, {
        "overrides/main.html": MAIN_HTML, "overrides/404.html": NOT_FOUND_HTML,
        **{f"docs/{name}": text for name, text in PAGES.items()}})
    (built / "fr" / "secret").mkdir(parents=True)
    (built / "fr" / "secret" / "index.html").write_text("<!doctype html><p>SECRET-FR</p>")
    (built / "fr" / "404.html").write_text(FRENCH_404)
    assert "Lost in the docs" in (built / "404.html").read_text()
    return built


def nginx_site(site: Path) -> str:
    return f"""
        root {site};
        error_page 404 /404.html;
        location /fr/ {{ error_page 404 /fr/404.html; }}
        gzip on;
        gzip_types text/html text/css application/javascript;
        gzip_min_length 20;
    """


class Reader:
    """One HTTP client (nothing decompressed or normalized) against one gateway."""

    def __init__(self, server: BaseTestServer, http: aiohttp.ClientSession,
                 cookie: str) -> None:
        self.server = server
        self.http = http
        self.cookie = cookie

    async def ask(self, method: str, path: str, headers: dict[str, str]) -> Answer:
        sent = {**headers, "Cookie": self.cookie} if self.cookie else dict(headers)
        async with self.http.request(method, str(self.server.make_url(path)), headers=sent,
                                     allow_redirects=False) as response:
            body = await response.read()
            kept = sorted((name.lower(), value) for name, value in response.headers.items()
                          if name.lower() not in VOLATILE)
            return response.status, kept, body


Start = Callable[..., Awaitable[Reader]]


@pytest.fixture(params=["nginx", "root"])
async def start(request: pytest.FixtureRequest, site: Path, tmp_path: Path,
                gateway: GatewayFactory) -> AsyncIterator[Start]:
    """The shared gateway over the site, behind nginx or straight from the folder;
    ``start(user)`` gives a reader's client (None: anonymous)."""
    async with aiohttp.ClientSession(auto_decompress=False,
                                     cookie_jar=aiohttp.DummyCookieJar()) as http:
        if request.param == "nginx":
            async with nginx_serving(tmp_path, nginx_site(site)) as origin:
                yield readers(await gateway(upstream_url=origin, access=ACCESS), http)
        else:
            yield readers(await gateway(upstream_url=None, upstream={"root": str(site)},
                                        access=ACCESS), http)


def readers(client: Client, http: aiohttp.ClientSession) -> Start:
    """Readers of the gateway ``client`` talks to, each asking through ``http``."""
    app = app_of(client)

    async def go(user: Any = None) -> Reader:
        cookie = ""
        if user is not None:
            cookies = await session_cookies(app, user)
            cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
        return Reader(client.server, http, cookie)

    return go


CLIENTS = {
    "browser": {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
                "Accept-Encoding": "gzip, deflate, br", "Accept-Language": "en"},
    "plain": {"Accept-Encoding": "identity"},
    "json": {"Accept": "application/json"},
    "ranged": {"Accept": "text/html", "Range": "bytes=0-10", "If-None-Match": '"x"'},
}


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("client", list(CLIENTS))
async def test_a_denied_address_answers_as_a_missing_one(start: Start, method: str,
                                                         client: str) -> None:
    reader = await start(make_user("bob", groups=("reader",)))
    for denied, missing in PAIRS:
        headers = CLIENTS[client]
        refused = await reader.ask(method, denied, headers)
        absent = await reader.ask(method, missing, headers)
        assert refused == absent, (denied, missing)
        assert refused[0] == 404
        assert b"ADMIN-ONLY" not in refused[2] and b"SECRET" not in refused[2]
    if method == "GET" and client == "browser":
        # It is the site's own page, not a stand-in.
        _status, _headers, body = await reader.ask("GET", "/admin/", {
            "Accept": "text/html", "Accept-Encoding": "identity"})
        assert b"Lost in the docs" in body
        _status, _headers, body = await reader.ask("GET", "/fr/secret/", {
            "Accept": "text/html", "Accept-Encoding": "identity"})
        assert b"Page introuvable" in body or b"Lost in the docs" in body


async def test_other_methods_answer_as_on_a_missing_address(start: Start) -> None:
    reader = await start(make_user("bob", groups=("reader",)))
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        refused = await reader.ask(method, "/admin/keys/", {"Accept": "text/html"})
        absent = await reader.ask(method, "/no/such/page/", {"Accept": "text/html"})
        assert refused == absent, method
        assert refused[0] in (404, 405)


# Addresses of other shapes: a suffix, an index's name. A denial's stand-in keeps the shape,
# so it gets the handling a missing address of that shape gets.
SHAPED = [
    ("/admin/keys.pdf", "/nothing.pdf"),
    ("/admin/keys.json", "/nothing.json"),
    ("/admin/keys.png", "/no/such/keys.png"),
    ("/admin/sitemap.xml", "/nothing/sitemap.xml"),
    ("/admin/search/search_index.json", "/nothing/search/search_index.json"),
]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "OPTIONS"])
async def test_an_address_of_any_shape_answers_as_a_missing_one(start: Start,
                                                                method: str) -> None:
    reader = await start(make_user("bob", groups=("reader",)))
    for denied, missing in SHAPED:
        for headers in ({"Accept": "text/html", "Accept-Encoding": "gzip"},
                        {"Accept-Encoding": "identity"}):
            refused = await reader.ask(method, denied, headers)
            absent = await reader.ask(method, missing, headers)
            assert refused == absent, (method, denied, missing, headers)


async def test_a_websocket_to_a_denied_address_fails_as_to_a_missing_one(start: Start) -> None:
    reader = await start(make_user("bob", groups=("reader",)))
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    for denied, missing in PAIRS[:3]:
        refused = await reader.ask("GET", denied, upgrade)
        absent = await reader.ask("GET", missing, upgrade)
        assert refused == absent, (denied, missing)


async def test_anonymous_readers_are_asked_to_log_in_either_way(start: Start) -> None:
    reader = await start()
    refused = await reader.ask("GET", "/admin/keys/", {"Accept": "text/html"})
    absent = await reader.ask("GET", "/no/such/page/", {"Accept": "text/html"})
    assert refused[0] == absent[0] == 302
    # Where to come back to differs, and only that.
    assert [h for h in refused[1] if h[0] != "location"] == \
        [h for h in absent[1] if h[0] != "location"]
    logged_in = await (await start(make_user("bob"))).ask("GET", "/admin/keys/", {
        "Accept": "text/html", "Accept-Encoding": "identity"})
    assert logged_in[0] == 404 and b"Lost in the docs" in logged_in[2]


async def test_readers_with_the_group_still_open_the_page(start: Start) -> None:
    reader = await start(make_user("ada", groups=("admin",)))
    status, _headers, body = await reader.ask("GET", "/admin/keys/", {
        "Accept": "text/html", "Accept-Encoding": "identity"})
    assert status == 200 and b"ADMIN-ONLY-KEYS" in body
    other = await start(make_user("bob"))
    status, _headers, body = await other.ask("GET", "/admin/keys/", {
        "Accept": "text/html", "Accept-Encoding": "identity"})
    assert status == 404 and b"Lost in the docs" in body


@pytest.mark.parametrize(("denied", "status", "site_page"), [
    ("forbidden", 403, False), ("not_found", 404, True)])
async def test_forbidden_mode_still_says_so(site: Path, gateway: GatewayFactory, denied: str,
                                            status: int, site_page: bool) -> None:
    client = await gateway(upstream_url=None, upstream={"root": str(site)},
                           access={**ACCESS, "denied": denied})
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        reader = await readers(client, http)(make_user("bob"))
        answered, headers, body = await reader.ask("GET", "/admin/", {"Accept": "text/html"})
    assert answered == status
    assert (b"Lost in the docs" in body) is site_page
    assert (("cache-control", "no-store") in headers) is not site_page
    assert b"ADMIN-ONLY" not in body


async def test_when_the_docs_server_is_down_both_are_502(gateway: GatewayFactory,
                                                         unused_tcp_port: int) -> None:
    client = await gateway(upstream_url=f"http://127.0.0.1:{unused_tcp_port}", access=ACCESS)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        reader = await readers(client, http)(make_user("bob"))
        refused = await reader.ask("GET", "/admin/keys/", {"Accept": "application/json"})
        absent = await reader.ask("GET", "/no/such/page/", {"Accept": "application/json"})
    assert refused == absent
    assert refused[0] == 502


def gated_404_upstream() -> web.Application:
    """A docs server with its own 404 page, gated by its metadata under /gated/; under
    /app/ it answers every address with a page (a single-page app), under /broken/ 500."""
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        if request.path.startswith("/app/"):
            return web.Response(content_type="text/html", text="<p>APP-SHELL</p>")
        if request.path.startswith("/broken/"):
            return web.Response(status=500, text="BROKEN")
        head = '<meta name="gateway:groups" content="staff">' \
            if request.path.startswith("/gated/") else ""
        return web.Response(status=404, content_type="text/html", text=(
            f"<!doctype html><head>{head}</head><p>SITE-404</p>"))

    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_a_gated_404_page_gives_the_plain_page_never_an_error(
        aiohttp_server: Any, gateway: GatewayFactory) -> None:
    upstream: TestServer = await aiohttp_server(gated_404_upstream())
    rules = [{"path": f"/{folder}/secret/**", "groups": ["admin"]}
             for folder in ("gated", "app", "broken")]
    access = {**ACCESS, "rules": [*ACCESS["rules"], *rules]}
    client = await gateway(upstream_url=str(upstream.make_url("")).rstrip("/"), access=access)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        reader = await readers(client, http)(make_user("bob"))
        refused = await reader.ask("GET", "/admin/keys/", {"Accept": "text/html"})
        absent = await reader.ask("GET", "/no/such/page/", {"Accept": "text/html"})
        assert refused == absent
        assert refused[0] == 404 and b"SITE-404" in refused[2]
        # The site's missing page is gated itself: the gateway's own page, as for a
        # missing address there.
        refused = await reader.ask("GET", "/gated/secret/x", {"Accept": "text/html"})
        absent = await reader.ask("GET", "/gated/nothing", {"Accept": "text/html"})
        assert refused[:2] == absent[:2]
        assert without_id(refused[2]) == without_id(absent[2])
        assert refused[0] == 404 and b"SITE-404" not in refused[2]
        # No missing page to copy (a page for every address, or an error): a denial is
        # still a 404, the gateway's own.
        for folder in ("app", "broken"):
            for method in ("GET", "HEAD"):
                status, headers, body = await reader.ask(method, f"/{folder}/secret/x",
                                                         {"Accept": "text/html"})
                assert status == 404, (folder, method)
                assert ("cache-control", "no-store") in headers
                assert b"APP-SHELL" not in body and b"BROKEN" not in body


def without_id(body: bytes) -> bytes:
    """The gateway's own page without the request id it shows."""
    return re.sub(rb"[0-9a-f]{16}", b"", body)
