"""Listings of real builds behind the gateway, per reader: a MkDocs site with mkdocs-llmstxt
(llms.txt, llms-full.txt and the pages' Markdown copies) and mkdocs-rss-plugin (RSS and
JSON feeds, as Material for MkDocs' blog writes them), and Docusaurus' local search index
(the plugin's own output, ``tests/data/docusaurus``) beside Docusaurus-shaped pages.

The site is built once per test session and served by nginx, or from ``upstream.root``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import build_app
from gateway.config.model import Config
from gateway.html.page import meta_fetcher
from gateway.indexes.filter import PageIndex, filter_index, match_index, text_fetcher
from gateway.policy import Policy
from gateway.proxy.origin import Origin
from gateway.proxy.static import StaticSite
from gateway.proxy.upstream import Upstream
from gateway.user import User
from tests.helpers import build_mkdocs, make_config, make_user, session_cookies
from tests.nginx import nginx_serving
from tests.test_mkdocs_site import MAIN_HTML

pytestmark = pytest.mark.slow

ADMIN = make_user("ada", groups=("admin",))
READER = make_user("bob")
ADMIN_TITLE = "Keyvault Administration"
ADMIN_TEXT = "ADMIN-ONLY-PAGE"
SECRET_PARAGRAPH = "ROTATION-SECRET"
DATA = Path(__file__).resolve().parent / "data" / "docusaurus"

MKDOCS_YML = """\
site_name: Gated Docs
site_url: http://docs.test/
site_description: Docs for the widget.
theme:
  name: mkdocs
  custom_dir: overrides
plugins:
  - search
  - llmstxt:
      full_output: llms-full.txt
      sections:
        Usage:
          - index.md: where to start
          - guide.md
          - team.md
        Internal:
          - admin.md: keys and rotation
  - rss:
      use_git: false
      match_path: ".*"
      date_from_meta:
        as_creation: date
"""
PAGES = {
    "index.md": "---\ngateway_public: true\ndate: 2024-01-01\n---\n# Home\n\nWelcome.\n",
    "guide.md": "---\ndate: 2024-01-02\n---\n# Guide\n\n## Setup\n\nInstall the widget.\n",
    "team.md": f"""\
---
date: 2024-01-03
---
# Team

Shared notes.

<div data-gateway-groups="admin">
<p>Rotate the master key: {SECRET_PARAGRAPH}.</p>
</div>
""",
    "admin.md": f"---\ngateway_groups: admin\ndate: 2024-01-04\n---\n# {ADMIN_TITLE}\n\n"
                f"{ADMIN_TEXT} text.\n",
}
# Docusaurus-shaped pages for the plugin's search index: /docs/intro is public, the guide
# open to any reader, the team page holds a part for admins and one for anonymous readers
# (so no reader sees it whole: its words stay out for all), the admin page is for admins.
DOCUSAURUS_PAGES = {
    "intro": '<meta name="gateway:public" content="true">',
    "guide": "",
    "team": "",
    "admin": '<meta name="gateway:groups" content="admin">',
}
ACCESS = {"public": ["/llms.txt", "/llms.txt.gz", "/llms.txt.br", "/llms-full.txt",
                     "/feed_*", "/search-index.json", "/index.md", "/sitemap.xml",
                     "/css/**", "/js/**", "/404.html"]}

Client = TestClient[web.Request, web.Application]
Start = Callable[[], Awaitable[Client]]


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built site, its listings' packed copies, and the Docusaurus pages and index."""
    root = build_mkdocs(tmp_path_factory.mktemp("listings"), MKDOCS_YML, {
        "overrides/main.html": MAIN_HTML,
        **{f"docs/{name}": text for name, text in PAGES.items()}})
    llms = (root / "llms.txt").read_bytes()
    (root / "llms.txt.gz").write_bytes(gzip.compress(llms))
    (root / "llms.txt.br").write_bytes(b"\x1b\x00 not filtered here")
    (root / "feed_rss_created.xml.gz").write_bytes(
        gzip.compress((root / "feed_rss_created.xml").read_bytes()))
    for name, meta in DOCUSAURUS_PAGES.items():
        gated = f'<div data-gateway-groups="admin"><p>{SECRET_PARAGRAPH}</p></div>' \
            '<p data-gateway-anonymous>Log in to read the notes.</p>' if name == "team" else ""
        (root / "docs" / name).mkdir(parents=True)
        (root / "docs" / name / "index.html").write_text(
            f"<!doctype html><html><head><title>{name}</title>{meta}</head><body><article>"
            f"<h1>{name}</h1>{gated}</article></body></html>")
    shutil.copy(DATA / "search-index.json", root / "search-index.json")
    return root


def test_the_build_wrote_the_listings(site: Path) -> None:
    for name in ("llms.txt", "llms-full.txt", "admin/index.md", "feed_rss_created.xml",
                 "feed_json_created.json"):
        assert (site / name).is_file(), name
    assert ADMIN_TITLE in (site / "llms.txt").read_text()
    assert SECRET_PARAGRAPH in (site / "llms-full.txt").read_text()
    assert ADMIN_TITLE in (site / "feed_rss_created.xml").read_text()


def nginx_site(root: Path) -> str:
    return f"        root {root};\n        error_page 404 /404.html;\n"


def config_for(origin: str | None, site: Path) -> Config:
    if origin is None:
        return make_config(None, upstream={"root": str(site)}, access=ACCESS)
    return make_config(origin, access=ACCESS)


@pytest.fixture(params=["upstream", "root"])
async def start(request: pytest.FixtureRequest, site: Path, aiohttp_client: Any,
                tmp_path: Path) -> AsyncIterator[Start]:
    """The gateway over the built site: from nginx, or served from ``upstream.root``."""
    async with contextlib.AsyncExitStack() as stack:

        async def make() -> Client:
            origin = None
            if request.param == "upstream":
                origin = await stack.enter_async_context(nginx_serving(tmp_path,
                                                                       nginx_site(site)))
            client: Client = await aiohttp_client(await build_app(config_for(origin, site)))
            return client

        yield make


async def fetch(client: Client, path: str, user: User | None) -> tuple[int, bytes, Any]:
    cookies = {} if user is None else await session_cookies(client.app, user)
    async with client.get(path, cookies=cookies, allow_redirects=False) as response:
        return response.status, await response.read(), response.headers


READERS = [(None, "anonymous"), (READER, "reader"), (ADMIN, "admin")]


@pytest.mark.parametrize(("user", "who"), READERS)
async def test_llms_txt_per_reader(start: Start, user: User | None, who: str) -> None:
    client = await start()
    status, body, headers = await fetch(client, "/llms.txt", user)
    assert status == 200 and "private" in headers["Cache-Control"]
    text = body.decode()
    assert (ADMIN_TITLE in text) == (who == "admin")
    assert ("keys and rotation" in text) == (who == "admin")
    assert ("## Internal" in text) == (who == "admin")  # an emptied section goes whole
    assert "[Home](http://docs.test/index.md): where to start" in text
    assert ("[Guide](" in text) == (who != "anonymous")
    status, packed, _ = await fetch(client, "/llms.txt.gz", user)
    assert status == 200 and gzip.decompress(packed) == body
    status, refused, _ = await fetch(client, "/llms.txt.br", user)
    assert status == 502 and b"not filtered here" not in refused


@pytest.mark.parametrize(("user", "who"), READERS)
async def test_llms_full_txt_never_shows_a_closed_page(start: Start, user: User | None,
                                                       who: str) -> None:
    client = await start()
    status, body, _ = await fetch(client, "/llms-full.txt", user)
    # mkdocs-llmstxt's llms-full.txt names no page: it is filtered where the gateway hands
    # the filter a way to read the llms.txt and page copies beside it, else refused.
    assert status in (200, 502)
    assert (SECRET_PARAGRAPH.encode() in body) == (status == 200 and who == "admin")
    assert (ADMIN_TITLE.encode() in body) == (status == 200 and who == "admin")


@pytest.mark.parametrize("served", ["nginx", "root"])
async def test_llms_full_txt_is_filtered_from_the_files_beside_it(site: Path, tmp_path: Path,
                                                                  served: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        origin: Origin
        if served == "nginx":
            url = await stack.enter_async_context(nginx_serving(tmp_path, nginx_site(site)))
            upstream = Upstream(config_for(url, site), lambda name: False, lambda name: False)
            await upstream.start()
            stack.push_async_callback(upstream.close)
            origin = upstream
        else:
            origin = StaticSite(site)
        body = (site / "llms-full.txt").read_bytes()
        index = match_index("/llms-full.txt")
        assert index is not None
        results = {}
        for user, who in READERS:
            results[who] = (await filter_index(
                index, body, user, Policy(config_for(None, site)),
                PageIndex(fragments=True), meta_fetcher(origin), text_fetcher(origin))).decode()
        for who, text in results.items():
            assert (ADMIN_TITLE in text) == (who == "admin"), who
            assert (ADMIN_TEXT in text) == (who == "admin"), who
            # The team page has a gated part: whole for admins, who may see it, else bare.
            assert (SECRET_PARAGRAPH in text) == (who == "admin"), who
            assert ("# Internal" in text) == (who == "admin")
        assert "Welcome." in results["anonymous"] and "Install the widget" not in \
            results["anonymous"]
        assert "Install the widget" in results["reader"]
        assert "# Team\n" in results["reader"] and "Shared notes" not in results["reader"]


@pytest.mark.parametrize(("user", "who"), READERS)
async def test_feeds_per_reader(start: Start, user: User | None, who: str) -> None:
    client = await start()
    for path in ("/feed_rss_created.xml", "/feed_json_created.json", "/feed_rss_updated.xml"):
        status, body, headers = await fetch(client, path, user)
        assert status == 200, path
        assert "private" in headers["Cache-Control"]
        assert (ADMIN_TITLE.encode() in body) == (who == "admin"), path
        assert (ADMIN_TEXT.encode() in body) == (who == "admin"), path
        # The team page has a gated part: its item is whole for admins, else bare.
        assert (SECRET_PARAGRAPH.encode() in body) == (who == "admin"), path
        assert (b"Guide" in body) == (who != "anonymous"), path
        assert b"Home" in body
    status, packed, _ = await fetch(client, "/feed_rss_created.xml.gz", user)
    assert status == 200
    assert (ADMIN_TITLE.encode() in gzip.decompress(packed)) == (who == "admin")


@pytest.mark.parametrize(("user", "who"), READERS)
async def test_docusaurus_search_index_per_reader(start: Start, user: User | None,
                                                  who: str) -> None:
    client = await start()
    status, body, headers = await fetch(client, "/search-index.json", user)
    assert status == 200 and "private" in headers["Cache-Control"]
    assert json.loads(body) == json.loads((DATA / f"{who}.json").read_bytes())
    assert (b"Admin Secret Title" in body) == (who == "admin")
