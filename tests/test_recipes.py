"""The README's per-generator recipes, taken from the README as they are written, built
with the real generators (MkDocs, Material for MkDocs, Sphinx, Hugo) and served by nginx
behind the gateway: a page marked ``groups: [admin]`` is closed to other readers, its
entry leaves their navigation, and a page marked ``public: true`` opens to anyone."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.app import build_app
from tests.helpers import build_mkdocs, make_config, make_user, session_cookies
from tests.nginx import nginx_serving

README = Path(__file__).resolve().parent.parent / "README.md"
ADMIN = make_user("ada", groups=("admin",))
READER = make_user("bob", groups=("staff",))
SECRET_TITLE = "Quarterly acquisitions"


def recipe(after: str, language: str) -> str:
    """The first ``language`` code block of the README after the line ``after``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(after)
    found = re.compile(rf"```{re.escape(language)}\n(.*?)```", re.S).search(text, start)
    assert found is not None, f"no {language} block after {after!r}"
    return found.group(1)


def mkdocs_build(root: Path, theme: str) -> Path:
    override = recipe("MkDocs and Material for MkDocs (with `theme.custom_dir", "jinja")
    return build_mkdocs(root, f"site_name: Recipes\ntheme:\n  name: {theme}\n"
                        "  custom_dir: overrides\n", {
                            "overrides/main.html": override,
                            "docs/index.md": "---\npublic: true\n---\n# Welcome\n",
                            "docs/guide.md": "# Guide\n\nFor readers.\n",
                            "docs/deals.md": f"---\ngroups: [admin]\n---\n# {SECRET_TITLE}\n",
                        })


def sphinx_build(root: Path) -> Path:
    source = root / "source"
    (source / "_templates").mkdir(parents=True)
    (source / "_templates" / "layout.html").write_text(
        recipe("Sphinx (any theme), `_templates/layout.html`", "jinja"))
    (source / "conf.py").write_text("project = 'Recipes'\ntemplates_path = ['_templates']\n")
    (source / "index.rst").write_text(":public: true\n\nWelcome\n=======\n\n.. toctree::\n\n"
                                      "   guide\n   deals\n")
    (source / "guide.rst").write_text("Guide\n=====\n\nFor readers.\n")
    (source / "deals.rst").write_text(f":groups: admin\n\n{SECRET_TITLE}\n"
                                      f"{'=' * len(SECRET_TITLE)}\n\nNumbers.\n")
    subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(source),
                    str(root / "site")], check=True, timeout=180)
    return root / "site"


def hugo_build(root: Path) -> Path:
    hugo = shutil.which("hugo")
    if hugo is None:
        pytest.fail("hugo is not installed (Debian: apt-get install hugo)", pytrace=False)
    head = recipe("Hugo, in the `<head>` of `layouts/_default/baseof.html`",
                  "go-html-template")
    layouts = root / "layouts" / "_default"
    layouts.mkdir(parents=True)
    (layouts / "baseof.html").write_text(
        f"<!doctype html><html><head><title>{{{{ .Title }}}}</title>{head}</head><body>"
        "<nav><ul>{{ range .Site.RegularPages }}<li><a href=\"{{ .RelPermalink }}\">"
        "{{ .Title }}</a></li>{{ end }}</ul></nav>"
        "<main>{{ block \"main\" . }}{{ end }}</main></body></html>")
    (layouts / "single.html").write_text('{{ define "main" }}{{ .Content }}{{ end }}')
    (layouts / "list.html").write_text('{{ define "main" }}{{ .Content }}{{ end }}')
    (root / "layouts" / "index.html").write_text('{{ define "main" }}Welcome{{ end }}')
    (root / "hugo.toml").write_text("baseURL = 'http://docs.test/'\ntitle = 'Recipes'\n"
                                    "disableKinds = ['RSS', 'taxonomy', 'term', 'sitemap']\n")
    content = root / "content"
    content.mkdir()
    (content / "_index.md").write_text("---\npublic: true\n---\n")
    (content / "guide.md").write_text("---\ntitle: Guide\n---\nFor readers.\n")
    (content / "deals.md").write_text(f"---\ntitle: {SECRET_TITLE}\ngroups: [admin]\n---\n"
                                      "Numbers.\n")
    subprocess.run([hugo, "--quiet", "-s", str(root), "-d", str(root / "site")], check=True,
                   timeout=120)
    return root / "site"


# generator: (build, home page, the admin page, the reader page)
GENERATORS: dict[str, tuple[Callable[[Path], Path], str, str, str]] = {
    "mkdocs": (lambda root: mkdocs_build(root, "mkdocs"), "/", "/deals/", "/guide/"),
    "material": (lambda root: mkdocs_build(root, "material"), "/", "/deals/", "/guide/"),
    "sphinx": (sphinx_build, "/index.html", "/deals.html", "/guide.html"),
    "hugo": (hugo_build, "/", "/deals/", "/guide/"),
}


@pytest.fixture(scope="module", params=sorted(GENERATORS))
def built(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    build, home, admin_page, reader_page = GENERATORS[request.param]
    return build(tmp_path_factory.mktemp(request.param)), home, admin_page, reader_page


async def test_the_recipe_marks_pages_and_the_gateway_follows_it(
        built: tuple[Path, str, str, str], tmp_path: Path, aiohttp_client: Any) -> None:
    site, home, admin_page, reader_page = built
    assert b'<meta name="gateway:groups" content="admin">' in \
        (site / (admin_page.strip("/") + ("/index.html" if admin_page.endswith("/") else ""))
         ).read_bytes()
    server = f"        root {site};\n"
    async with nginx_serving(tmp_path, server) as origin:
        client = await aiohttp_client(await build_app(make_config(origin)))
        anonymous = await client.get(home, allow_redirects=False)
        assert anonymous.status == 200, "public: true opens the home page to anyone"
        assert SECRET_TITLE not in await anonymous.text()
        reader = await session_cookies(client.app, READER)
        assert (await client.get(reader_page, cookies=reader)).status == 200
        closed = await client.get(admin_page, cookies=reader)
        assert closed.status == 404 and SECRET_TITLE not in await closed.text()
        assert SECRET_TITLE not in await (await client.get(home, cookies=reader)).text()
        admin = await session_cookies(client.app, ADMIN)
        opened = await client.get(admin_page, cookies=admin)
        assert opened.status == 200 and SECRET_TITLE in await opened.text()
        assert SECRET_TITLE in await (await client.get(home, cookies=admin)).text()
