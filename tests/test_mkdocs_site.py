"""A real MkDocs site behind the gateway: pages, gated parts, sitemap and search per reader.

The site is built once per test session with ``mkdocs build`` (and once more with Material
for MkDocs, for its search); a theme override turns each page's ``gateway_public`` /
``gateway_groups`` frontmatter into the page metadata (``<meta name="gateway:...">``) in
its head.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import build_app
from gateway.html.head import PageMeta
from gateway.html.page import meta_fetcher
from gateway.indexes.filter import Learned
from gateway.proxy.static import StaticSite
from gateway.proxy.upstream import Upstream
from gateway.user import User
from tests.helpers import build_mkdocs, make_config, make_user, session_cookies
from tests.nginx import nginx_serving

HTML = {"Accept": "text/html,application/xhtml+xml"}
ADMIN = make_user("ada", groups=("admin",), firstName="Ada")
READER = make_user("bob", firstName="Bob")
SECRET_PARAGRAPH = "ROTATION-SECRET"
SECRET_PAGE = "ADMIN-ONLY-PAGE"
#: Gated text of the team page beside the paragraph: in a sentence, and a whole section.
SECRET_SPAN = "PHONE-SECRET"
SECRET_SECTION = "QUORUM-SECRET"

MKDOCS_YML = """\
site_name: Gated Docs
site_url: http://docs.test/
theme:
  name: mkdocs
  custom_dir: overrides
nav:
  - Home: index.md
  - Guide: guide.md
  - Team: team.md
  - Admin: admin.md
plugins:
  - search
markdown_extensions:
  - md_in_html
"""
MAIN_HTML = """\
{% extends "base.html" %}
{% block extrahead %}
{%- if page and page.meta.gateway_public %}<meta name="gateway:public" content="true">{% endif %}
{%- if page and page.meta.gateway_groups %}
<meta name="gateway:groups" content="{{ page.meta.gateway_groups }}">{% endif %}
{% endblock %}
"""
PAGES = {
    "index.md": """\
---
gateway_public: true
---
# Home

Welcome to the docs.

<p data-gateway-anonymous>Log in to read the guide.</p>

<p data-gateway-authenticated>Hello, <span data-gateway-field="content.firstName">reader</span>!</p>
""",
    "guide.md": "# Guide\n\n## Setup\n\nInstall the widget.\n",
    "team.md": f"""\
# Team

Shared notes for everyone who is logged in.

The on-call phone is <span data-gateway-groups="admin">{SECRET_SPAN}</span>, ask the lead.

<div data-gateway-groups="admin">
<h2 id="rotation">Key rotation</h2>
<p>Rotate the master key every 30 days: {SECRET_PARAGRAPH}.</p>
</div>

End of the notes.

<div data-gateway-groups="admin" markdown>
## Vault unsealing

Run `vault unseal` and wait for **{SECRET_SECTION}** shares.
</div>

## Escalation

Page the TEAMLEAD-PUBLIC first.
""",
    "admin.md": f"---\ngateway_groups: admin\n---\n# Admin\n\n{SECRET_PAGE} text.\n",
}
ACCESS = {"public": ["/sitemap.xml", "/sitemap.xml.gz", "/search/**", "/css/**", "/js/**",
                     "/img/**", "/webfonts/**", "/404.html"]}

Client = TestClient[web.Request, web.Application]
Start = Callable[[], Awaitable[Client]]


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built site (``mkdocs build``), once for the session."""
    return build_mkdocs(tmp_path_factory.mktemp("mkdocs"), MKDOCS_YML, {
        "overrides/main.html": MAIN_HTML,
        **{f"docs/{name}": text for name, text in PAGES.items()}})


@pytest.fixture(scope="session")
def material_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same pages built with Material for MkDocs, whose search index keeps some tags."""
    return build_mkdocs(tmp_path_factory.mktemp("material"),
                        MKDOCS_YML.replace("name: mkdocs", "name: material"), {
        "overrides/main.html": MAIN_HTML,
        **{f"docs/{name}": text for name, text in PAGES.items()}})


def nginx_site(root: Path) -> str:
    """nginx serving the built site as a docs host would (index pages, its 404 page)."""
    return f"        root {root};\n        error_page 404 /404.html;\n"


@pytest.fixture(params=["root", "upstream"])
async def start(request: pytest.FixtureRequest, site: Path, aiohttp_client: Any,
                tmp_path: Path) -> AsyncIterator[Start]:
    """The gateway over the built site: served from ``upstream.root``, or from nginx."""
    async with contextlib.AsyncExitStack() as stack:

        async def make() -> Client:
            if request.param == "root":
                config = make_config(None, upstream={"root": str(site)}, access=ACCESS)
            else:
                origin = await stack.enter_async_context(nginx_serving(tmp_path, nginx_site(site)))
                config = make_config(origin, access=ACCESS)
            client: Client = await aiohttp_client(await build_app(config))
            return client

        yield make


async def cookies_for(client: Client, user: User | None) -> dict[str, str]:
    return {} if user is None else await session_cookies(client.app, user)


async def fetch(client: Client, path: str, user: User | None,
                headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    cookies = await cookies_for(client, user)
    async with client.get(path, cookies=cookies, headers=headers or HTML,
                          allow_redirects=False) as response:
        return response.status, (await response.read()).decode("utf-8", "replace"), \
            response.headers


def sitemap_paths(body: str) -> list[str]:
    return [loc.removeprefix("http://docs.test") for loc in re.findall(r"<loc>(.*?)</loc>", body)]


# -- pages ------------------------------------------------------------------------------


async def test_home_is_public_by_its_metadata_and_personal(start: Start) -> None:
    client = await start()
    status, body, headers = await fetch(client, "/", None)
    assert status == 200
    assert "Log in to read the guide." in body
    assert "Hello," not in body
    # Gated parts make the page depend on the reader, anonymous ones included.
    assert "private" in headers["Cache-Control"]
    status, body, _ = await fetch(client, "/", READER)
    assert "Log in to read the guide." not in body
    assert '<span data-gateway-field="content.firstName">Bob</span>' in body


async def test_gated_paragraph_only_for_admins(start: Start) -> None:
    client = await start()
    status, _, headers = await fetch(client, "/team/", None)
    assert status == 302 and "/_gateway/login" in headers["Location"]
    status, body, _ = await fetch(client, "/team/", READER)
    assert status == 200
    assert "End of the notes." in body and "ask the lead" in body
    for secret in (SECRET_PARAGRAPH, "Key rotation", SECRET_SPAN, SECRET_SECTION):
        assert secret not in body
    status, body, _ = await fetch(client, "/team/", ADMIN)
    assert SECRET_PARAGRAPH in body and "Key rotation" in body and SECRET_SPAN in body


async def test_admin_page_by_its_metadata(start: Start) -> None:
    client = await start()
    assert (await fetch(client, "/admin/", READER))[0] == 404
    status, body, _ = await fetch(client, "/admin/", ADMIN)
    assert status == 200 and SECRET_PAGE in body


async def test_a_range_request_cannot_skip_the_rewriting(start: Start) -> None:
    client = await start()
    for path, user, secret in (("/team/", READER, SECRET_PARAGRAPH),
                               ("/admin/", READER, SECRET_PAGE)):
        status, body, _ = await fetch(client, path, user, {**HTML, "Range": "bytes=0-"})
        assert secret not in body, (path, status)
        status, body, _ = await fetch(client, path, user, {**HTML, "If-None-Match": "*"})
        assert secret not in body, (path, status)


# -- sitemap and search (these need the pipeline to filter index files) -----------------


@pytest.mark.parametrize(("user", "expected"), [
    (None, ["/"]),
    (READER, ["/", "/guide/", "/team/"]),
    (ADMIN, ["/", "/guide/", "/team/", "/admin/"]),
])
async def test_sitemap_lists_exactly_the_readers_pages(start: Start, user: User | None,
                                                       expected: list[str]) -> None:
    client = await start()
    status, body, headers = await fetch(client, "/sitemap.xml", user, {})
    assert status == 200
    assert sorted(sitemap_paths(body)) == sorted(expected)
    assert "private" in headers["Cache-Control"] and "Cookie" in headers["Vary"]
    cookies = await cookies_for(client, user)
    async with client.get("/sitemap.xml.gz", cookies=cookies) as response:
        assert response.status == 200
        assert sorted(sitemap_paths(gzip.decompress(await response.read()).decode())) == \
            sorted(expected)


@pytest.mark.parametrize(("user", "pages"), [
    (None, {""}),
    (READER, {"", "guide/", "team/"}),
    (ADMIN, {"", "guide/", "team/", "admin/"}),
])
async def test_search_index_lists_exactly_the_readers_pages(start: Start, user: User | None,
                                                            pages: set[str]) -> None:
    client = await start()
    status, body, headers = await fetch(client, "/search/search_index.json", user, {})
    assert status == 200
    assert "private" in headers["Cache-Control"]
    docs = json.loads(body)["docs"]
    assert {doc["location"].split("#")[0] for doc in docs} == pages
    # Words from gated parts reach search only for the readers who may see them.
    for secret in (SECRET_PARAGRAPH, "Key rotation", SECRET_SPAN, SECRET_SECTION):
        assert (secret in body) == (user is ADMIN)
    assert (SECRET_PAGE in body) == (user is ADMIN)
    if user is not None:
        assert any(doc["location"] == "guide/#setup" for doc in docs)


def search(index: dict[str, Any], word: str) -> set[str]:
    """The pages whose entries a search for ``word`` finds, as the site's search reads the
    index: titles and texts cut at the index's separator, tags left out, no case."""
    separator = re.compile(index["config"]["separator"])
    found = set()
    for doc in index["docs"]:
        text = re.sub(r"<[^>]*>", " ", f"{doc['title']} {doc['text']}")
        terms = {re.sub(r"^\W+|\W+$", "", term).lower() for term in separator.split(text)}
        if word.lower() in terms:
            found.add(doc["location"].split("#")[0])
    return found


#: Words of the team page: its open text, and its gated text (only admins may see it).
OPEN_WORDS = ("shared", "phone", "lead", "notes", "teamlead", "escalation")
GATED_WORDS = ("rotation", "rotate", "secret", "vault", "unsealing", "quorum", "shares")


async def search_per_reader(client: Client) -> None:
    indexes = []
    for user in (None, READER, ADMIN):
        status, body, _ = await fetch(client, "/search/search_index.json", user, {})
        assert status == 200
        indexes.append(json.loads(body))
    anonymous, reader, admin = indexes
    # A page with gated parts is found by its other words by whoever may open it ...
    for word in OPEN_WORDS:
        assert search(anonymous, word) == set(), word
        assert search(reader, word) == {"team/"}, word
        assert search(admin, word) == {"team/"}, word
    # ... and by its gated words only by those who may see them.
    for word in GATED_WORDS:
        assert search(reader, word) == set(), word
        assert search(admin, word) == {"team/"}, word
    # The home page's parts for anonymous and for logged-in readers, each to their own.
    assert search(anonymous, "log") == {""} and search(anonymous, "hello") == set()
    assert search(reader, "log") == set() and search(reader, "hello") == {""}
    assert search(reader, "welcome") == {""}


async def test_search_keeps_the_words_a_reader_may_see(start: Start) -> None:
    await search_per_reader(await start())


async def test_material_search_keeps_the_words_a_reader_may_see(material_site: Path,
                                                                 aiohttp_client: Any) -> None:
    config = make_config(None, upstream={"root": str(material_site)}, access=ACCESS)
    client: Client = await aiohttp_client(await build_app(config))
    await search_per_reader(client)
    _, body, _ = await fetch(client, "/search/search_index.json", READER, {})
    assert "<p>Shared notes for everyone who is logged in.</p>" in body  # its tags kept


async def test_search_index_cannot_be_fetched_in_parts(start: Start) -> None:
    client = await start()
    status, body, _ = await fetch(client, "/search/search_index.json", None,
                                  {"Range": "bytes=0-"})
    assert SECRET_PAGE not in body
    assert status == 200


# -- learning pages ---------------------------------------------------------------------

EXPECTED = {
    "/": Learned(PageMeta(public=True), fragments=True),
    "/guide/": Learned(PageMeta(), fragments=False),
    "/team/": Learned(PageMeta(), fragments=True),
    "/admin/": Learned(PageMeta(groups=("admin",)), fragments=False),
    "/css/base.css": Learned(PageMeta(), fragments=False),
    "/missing/": None,
}


async def test_pages_are_learned_from_the_built_folder(site: Path) -> None:
    fetch = meta_fetcher(StaticSite(site))
    learned = {path: await fetch(path) for path in EXPECTED}
    assert learned == EXPECTED
    # With what their gated parts hold, for search.
    team = learned["/team/"]
    assert team is not None and team.text is not None
    assert [sorted(part.markers[0]) for part in team.text.parts] == [
        [b"data-gateway-groups"]] * 3


async def test_pages_are_learned_from_the_upstream(site: Path, tmp_path: Path) -> None:
    async with nginx_serving(tmp_path, nginx_site(site)) as origin:
        config = make_config(origin, access=ACCESS)
        upstream = Upstream(config, lambda name: False, lambda name: False)
        await upstream.start()
        try:
            fetch = meta_fetcher(upstream)
            assert {path: await fetch(path) for path in EXPECTED} == EXPECTED
        finally:
            await upstream.close()
