"""Navigation per reader on real generator builds: MkDocs, Material for MkDocs, Sphinx
(Alabaster and Furo) and Hugo, each built here and served by nginx behind the gateway.

For an anonymous reader, a reader outside ``admin`` and an admin, every address reachable
from the pages (links, scripts, styles, the sitemap and search index they name) is
crawled through the gateway: the first two never meet the title or the text of an admin
page, and the admin finds the admin pages in the navigation.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from gateway.app import build_app
from gateway.user import User
from tests.helpers import Client, build_mkdocs, make_config, make_user, session_cookies
from tests.nginx import nginx_serving

ADMIN = make_user("ada", groups=("admin",))
READER = make_user("bob", groups=("staff",))
HANDBOOK = "Admin handbook"
RUNBOOK = "Incident runbook"
SECRET = "ROTATE-THE-VAULT-KEYS"
TERM = "Vaultkeeper"
# Everything is public but the admin pages.
ACCESS = {"public": ["/**"], "rules": [{"path": "/admin/**", "groups": ["admin"]}]}

MKDOCS_PAGES = {
    "docs/index.md": "# Welcome\n\nStart with the [guide](guide.md). Operators read "
                     "[the handbook](admin/handbook.md).\n\nRead next:\n\n"
                     f"- [{RUNBOOK}](admin/runbook.md)\n- [FAQ](zz-faq.md)\n\n"
                     "| Page | When |\n|---|---|\n| [Runbook](admin/runbook.md) | on call |\n"
                     "| [FAQ](zz-faq.md) | always |\n",
    "docs/guide.md": "# Guide\n\nHow to use the product.\n",
    "docs/admin/handbook.md": f"# {HANDBOOK}\n\n{SECRET} every quarter.\n",
    "docs/admin/runbook.md": f"# {RUNBOOK}\n\nCall the on-call. {SECRET}.\n",
    "docs/zz-faq.md": "# FAQ\n\nQuestions.\n",
}
MKDOCS_NAV = f"""\
nav:
  - Home: index.md
  - Guide: guide.md
  - Admin:
      - {HANDBOOK}: admin/handbook.md
      - {RUNBOOK}: admin/runbook.md
  - FAQ: zz-faq.md
"""


def build_mkdocs_default(root: Path) -> Path:
    return build_mkdocs(root, "site_name: Gated\nsite_url: http://docs.test/\n"
                        "theme:\n  name: mkdocs\n" + MKDOCS_NAV, MKDOCS_PAGES)


def build_material(root: Path) -> Path:
    return build_mkdocs(root, "site_name: Gated\nsite_url: http://docs.test/\n"
                        "theme:\n  name: material\n  features:\n    - navigation.tabs\n"
                        "    - navigation.footer\n    - navigation.instant\n"
                        "    - navigation.path\n" + MKDOCS_NAV, MKDOCS_PAGES)


def build_material_offline(root: Path) -> Path:
    # The offline plugin writes the search index as a script too (search_index.js).
    return build_mkdocs(root, "site_name: Gated\nsite_url: http://docs.test/\n"
                        "theme:\n  name: material\nplugins:\n  - search\n  - offline\n"
                        + MKDOCS_NAV, MKDOCS_PAGES)


SPHINX_PAGES = {
    "index.rst": "Welcome\n=======\n\nStart with :doc:`guide`. Operators read "
                 ":doc:`the handbook <admin/handbook>`.\n\n"
                 "====================  ======\nPage                  When\n"
                 "====================  ======\n:doc:`admin/runbook`  on call\n"
                 ":doc:`faq`            always\n====================  ======\n\n"
                 ".. toctree::\n   :maxdepth: 2\n\n"
                 "   guide\n   admin/handbook\n   admin/runbook\n   faq\n",
    # A hidden toctree shows nothing in the page's text; its source still names the page.
    "guide.rst": "Guide\n=====\n\nHow to use the product.\n\n.. toctree::\n   :hidden:\n\n"
                 "   admin/runbook\n",
    "admin/handbook.rst": f"{HANDBOOK}\n{'=' * len(HANDBOOK)}\n\n{SECRET} every quarter.\n",
    # An index term only the runbook files entries under: the general index lists the
    # term over its entries.
    "admin/runbook.rst": f"{RUNBOOK}\n{'=' * len(RUNBOOK)}\n\n.. index:: single: {TERM}; "
                         f"rotation\n\nCall the on-call. {SECRET}.\n",
    "faq.rst": "FAQ\n===\n\nQuestions.\n",
}


def build_sphinx(root: Path, theme: str) -> Path:
    source = root / "source"
    for name, text in SPHINX_PAGES.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    (source / "conf.py").write_text(f"project = 'Gated'\nhtml_theme = {theme!r}\n")
    subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(source),
                    str(root / "site")], check=True, timeout=180)
    return root / "site"


# A docs theme: sections with their pages in a sidebar, previous/next in the footer.
HUGO_BASEOF = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ .Title }}</title>
{{ with .NextInSection }}<link rel="next" href="{{ .RelPermalink }}" title="{{ .Title }}">{{ end }}
</head><body>
<nav class="sidebar"><ul>
{{ range .Site.Sections }}<li class="section"><span>{{ .Title }}</span><ul>
{{ range .Pages }}<li><a href="{{ .RelPermalink }}">{{ .Title }}</a></li>{{ end }}
</ul></li>{{ end }}
{{ range where .Site.RegularPages "Section" "" }}
<li><a href="{{ .RelPermalink }}">{{ .Title }}</a></li>{{ end }}
</ul></nav>
<main>{{ block "main" . }}{{ end }}</main>
<footer>{{ with .PrevInSection }}
<a class="prev" href="{{ .RelPermalink }}">{{ .Title }}</a>{{ end }}
{{ with .NextInSection }}
<a class="next" href="{{ .RelPermalink }}">{{ .Title }}</a>{{ end }}</footer>
</body></html>
"""


def build_hugo(root: Path) -> Path:
    hugo = shutil.which("hugo")
    if hugo is None:
        pytest.fail("hugo is not installed (Debian: apt-get install hugo)", pytrace=False)
    files = {
        "hugo.toml": "baseURL = 'http://docs.test/'\ntitle = 'Gated'\ntheme = 'docs'\n"
                     "disableKinds = ['RSS', 'taxonomy', 'term']\n",
        "themes/docs/layouts/_default/baseof.html": HUGO_BASEOF,
        "themes/docs/layouts/_default/single.html":
            '{{ define "main" }}<h1>{{ .Title }}</h1>{{ .Content }}{{ end }}',
        "themes/docs/layouts/_default/list.html":
            '{{ define "main" }}<h1>{{ .Title }}</h1>{{ .Content }}<ul>{{ range .Pages }}'
            '<li><a href="{{ .RelPermalink }}">{{ .Title }}</a></li>{{ end }}</ul>{{ end }}',
        "themes/docs/layouts/index.html":
            '{{ define "main" }}<h1>Welcome</h1>{{ .Content }}{{ end }}',
        "content/_index.md": "Start with the [guide](/guide/). Operators read "
                             "[the handbook](/admin/handbook/).\n\nRead next:\n\n"
                             f"- [{RUNBOOK}](/admin/runbook/)\n- [FAQ](/faq/)\n",
        "content/guide.md": "---\ntitle: Guide\n---\nHow to use the product.\n",
        "content/admin/_index.md": "---\ntitle: Admin\n---\n",
        "content/admin/handbook.md": f"---\ntitle: {HANDBOOK}\nweight: 1\n---\n"
                                     f"{SECRET} every quarter.\n",
        "content/admin/runbook.md": f"---\ntitle: {RUNBOOK}\nweight: 2\n---\n"
                                    f"Call the on-call. {SECRET}.\n",
        "content/faq.md": "---\ntitle: FAQ\n---\nQuestions.\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run([hugo, "--quiet", "-s", str(root), "-d", str(root / "site")], check=True,
                   timeout=120)
    return root / "site"


BUILDS: dict[str, tuple[Callable[[Path], Path], str]] = {
    # name: (build, the path of a page whose navigation lists every page)
    "mkdocs": (build_mkdocs_default, "/"),
    "material": (build_material, "/"),
    "material-offline": (build_material_offline, "/"),
    "sphinx-alabaster": (lambda root: build_sphinx(root, "alabaster"), "/index.html"),
    "sphinx-furo": (lambda root: build_sphinx(root, "furo"), "/index.html"),
    "hugo": (build_hugo, "/"),
}
_LINKS = re.compile(rb"""(?:href|src)\s*=\s*["']([^"'#]+)""", re.I)


@pytest.fixture(scope="module", params=sorted(BUILDS))
def built(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    name = request.param
    build, home = BUILDS[name]
    return name, build(tmp_path_factory.mktemp(name)), home


async def crawl(client: Client, cookies: dict[str, str], start: list[str]) -> dict[str, bytes]:
    """Every address reachable from ``start`` through the gateway (same origin), with the
    body each answered (unpacked when gzip)."""
    seen: dict[str, bytes] = {}
    queue = list(start)
    while queue and len(seen) < 400:
        path = queue.pop()
        if path in seen:
            continue
        async with client.get(path, cookies=cookies, allow_redirects=False,
                              headers={"Accept": "text/html,*/*"}) as response:
            body = await response.read()
            location = response.headers.get("Location")
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        if path.endswith("objects.inv") and response.status == 200:
            body = zlib.decompress(body.split(b"\n", 4)[4])  # Sphinx's inventory
        seen[path] = body
        found = [m.decode("utf-8", "replace") for m in _LINKS.findall(body)]
        if location:
            found.append(location)
        for link in found:
            target = urlsplit(urljoin("http://gw" + path, link.strip()))
            if target.netloc == "gw" and target.path not in seen:
                queue.append(target.path)
    return seen


async def cookies_for(client: Client, user: User | None) -> dict[str, str]:
    return {} if user is None else await session_cookies(client.app, user)


@pytest.fixture
async def gateway(built: tuple[str, Path, str], tmp_path: Path,
                  aiohttp_client: Any) -> Any:
    _name, site, _home = built
    server = f"        root {site};\n        error_page 404 /404.html;\n"
    async with nginx_serving(tmp_path, server) as origin:
        config = make_config(origin, access=ACCESS)
        yield await aiohttp_client(await build_app(config))


@pytest.mark.parametrize("who", ["anonymous", "reader"])
async def test_no_page_lists_what_the_reader_may_not_open(
        built: tuple[str, Path, str], gateway: Client, who: str) -> None:
    name, _site, home = built
    user = None if who == "anonymous" else READER
    pages = await crawl(gateway, await cookies_for(gateway, user),
                        [home, "/sitemap.xml", "/search/search_index.json", "/searchindex.js",
                         "/search/search_index.js", "/objects.inv",
                         # Sphinx's copies of the pages' sources, linked or not
                         *(f"/_sources/{name}.txt" for name in SPHINX_PAGES)])
    assert len([p for p, body in pages.items() if b"<html" in body.lower()]) >= 3, pages.keys()
    leaks = {path: word for path, body in pages.items()
             for word in (HANDBOOK, RUNBOOK, SECRET, TERM) if word.encode() in body}
    # The runbook is named nowhere but in its own page and in list entries that link to
    # it: no word of its title stays, in any case or as a search term (Sphinx' stems).
    leaks |= {path: "runbook" for path, body in pages.items() if b"runbook" in body.lower()}
    assert leaks == {}, f"{name}: {leaks}"
    home_page = pages[home].decode()
    assert "Guide" in home_page and "FAQ" in home_page, f"{name}: the open entries stay"


async def test_search_keeps_a_page_s_words_less_its_closed_entries(
        built: tuple[str, Path, str], gateway: Client) -> None:
    # The home page lists the runbook in its text: its entry loses that list entry's
    # words for a reader who may not open the runbook, and keeps every other word.
    name, _site, _home = built
    if not name.startswith(("mkdocs", "material")):
        pytest.skip("MkDocs' search index")
    found = {}
    for user in (READER, ADMIN):
        async with gateway.get("/search/search_index.json",
                               cookies=await cookies_for(gateway, user)) as response:
            docs = (await response.json())["docs"]
        found[user.sub] = next(doc["text"] for doc in docs
                              if doc["location"] in ("", "index.html"))
    assert "Start with the guide" in found["bob"] and "FAQ" in found["bob"], found
    assert RUNBOOK not in found["bob"], found
    assert RUNBOOK in found["ada"] and "FAQ" in found["ada"], found


async def test_a_page_copy_closes_only_where_the_page_s_text_loses_an_entry(
        built: tuple[str, Path, str], gateway: Client) -> None:
    # Material's sidebar stands inside <main>: it loses the admin pages for the reader,
    # and the guide's Markdown copy still opens; the home page's text lists the runbook,
    # and its copy opens only to the admin.
    name, site, _home = built
    if name != "material":
        pytest.skip("Material for MkDocs with a copy beside each page")
    (site / "guide" / "index.md").write_text("# Guide\n\nHow to use the product.\n")
    (site / "index.md").write_text(MKDOCS_PAGES["docs/index.md"])
    expected = {("bob", "/guide/index.md"): 200, ("bob", "/index.md"): 404,
                ("ada", "/guide/index.md"): 200, ("ada", "/index.md"): 200}
    for (who, path), status in expected.items():
        user = READER if who == "bob" else ADMIN
        async with gateway.get(path, cookies=await cookies_for(gateway, user)) as response:
            assert response.status == status, (who, path)


async def test_an_admin_finds_the_admin_pages_in_the_navigation(
        built: tuple[str, Path, str], gateway: Client) -> None:
    name, _site, home = built
    cookies = await cookies_for(gateway, ADMIN)
    async with gateway.get(home, cookies=cookies) as response:
        page = (await response.read()).decode()
    assert HANDBOOK in page and RUNBOOK in page, name


async def test_a_link_in_the_text_keeps_its_words(
        built: tuple[str, Path, str], gateway: Client) -> None:
    name, _site, home = built
    async with gateway.get(home, cookies=await cookies_for(gateway, READER)) as response:
        page = (await response.read()).decode()
    assert "the handbook" in page, name
    assert not re.search(r"href=\"[^\"]*admin/handbook", page), name


BLOG_POST = ("---\ndate: {date}\nslug: {slug}\n---\n\n# {title}\n\n{text}\n\n"
             "<!-- more -->\n\nMore.\n")


async def test_a_blog_index_keeps_no_excerpt_of_a_closed_post(
        tmp_path: Path, aiohttp_client: Any) -> None:
    # Material for MkDocs' blog plugin: the index and the archive show each post's excerpt.
    (tmp_path / "blog").mkdir()
    site = build_mkdocs(tmp_path / "blog", (
        "site_name: Gated\nsite_url: http://docs.test/\ntheme:\n  name: material\n"
        "plugins:\n  - search\n  - blog:\n      post_url_format: '{slug}'\n"), {
        "docs/index.md": "# Home\n",
        "docs/blog/index.md": "# Blog\n",
        "docs/blog/posts/secret.md": BLOG_POST.format(
            date="2024-01-05", slug="acquisition", title="Acquisition announced",
            text=f"{SECRET} talks of the deal."),
        "docs/blog/posts/open.md": BLOG_POST.format(
            date="2024-01-04", slug="release", title="Release notes", text="All open."),
    })
    access = {"public": ["/**"], "rules": [{"path": "/blog/acquisition/**",
                                            "groups": ["admin"]}]}
    server = f"        root {site};\n        error_page 404 /404.html;\n"
    async with nginx_serving(tmp_path, server) as origin:
        client = await aiohttp_client(await build_app(make_config(origin, access=access)))
        for user in (None, READER):
            pages = await crawl(client, await cookies_for(client, user),
                                ["/blog/", "/search/search_index.json"])
            assert b"Release notes" in pages["/search/search_index.json"]
            assert any(b"Release notes" in body for body in pages.values()), pages.keys()
            leaks = {path for path, body in pages.items()
                     if SECRET.encode() in body or b"Acquisition announced" in body}
            assert leaks == set(), leaks
        admin = await cookies_for(client, ADMIN)
        async with client.get("/blog/", cookies=admin) as response:
            assert SECRET in await response.text()
        async with client.get("/search/search_index.json", cookies=admin) as response:
            assert "Acquisition announced" in await response.text()
