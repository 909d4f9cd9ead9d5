"""Audience builds: a real MkDocs site built twice with the README's recipe (the admin
pages left out of the build for everyone else), each build served by its own nginx, and
the gateway serving each reader from the build of their audience."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import build_app
from gateway.config.load import build_config
from gateway.errors import ConfigError
from tests.helpers import make_config, make_user, session_cookies
from tests.nginx import audience_builds

pytestmark = pytest.mark.slow

ADMIN = make_user("ada", groups=("admin",))
READER = make_user("bob", groups=("staff",))
SECRET = "ROTATE-THE-VAULT-KEYS"
MKDOCS_YML = """\
site_name: Audiences
exclude_docs: !ENV [DOCS_EXCLUDE, ""]
theme:
  name: mkdocs
"""
PAGES = {
    "index.md": "# Welcome\n\nThe product's docs.\n",
    "guide.md": "# Guide\n\nHow to use it.\n",
    "admin/index.md": f"# Admin handbook\n\n{SECRET} every quarter.\n",
}


def build(root: Path, out: str, exclude: str | None) -> Path:
    """``mkdocs build`` as the README's recipe runs it for one audience."""
    (root / "mkdocs.yml").write_text(MKDOCS_YML)
    for name, text in PAGES.items():
        (root / "docs" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "docs" / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "DOCS_EXCLUDE"}
    if exclude is not None:
        env["DOCS_EXCLUDE"] = exclude
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(root / "mkdocs.yml"),
                    "-d", str(root / out)], check=True, cwd=root, env=env, timeout=120)
    return root / out


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("audiences")
    return build(root, "build-admin", None), build(root, "build-everyone", "admin/")


def test_the_recipe_leaves_the_admin_pages_out_of_the_build_for_everyone(
        builds: tuple[Path, Path]) -> None:
    admin, everyone = builds
    assert (admin / "admin" / "index.html").exists()
    assert not (everyone / "admin").exists()
    for path in everyone.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.fixture
async def client(builds: tuple[Path, Path], tmp_path: Path, aiohttp_client: Any,
                 ) -> AsyncIterator[Any]:
    async with audience_builds(tmp_path, *builds) as audiences:
        config = make_config(None, upstream={"audiences": audiences},
                             access={"public": ["/**"]})
        yield await aiohttp_client(await build_app(config))


async def fetch(client: Any, path: str, user: Any) -> tuple[int, str, Any]:
    cookies = {} if user is None else await session_cookies(client.app, user)
    async with client.get(path, cookies=cookies, headers={"Accept": "text/html"}) as response:
        return response.status, await response.text(), response.headers


async def test_each_reader_gets_the_build_of_their_audience(client: Any) -> None:
    status, page, _ = await fetch(client, "/admin/", ADMIN)
    assert status == 200 and SECRET in page
    for user in (None, READER):
        status, page, _ = await fetch(client, "/admin/", user)
        assert status == 404 and SECRET not in page
        _, home, _ = await fetch(client, "/", user)
        assert "Admin handbook" not in home
    _, home, _ = await fetch(client, "/", ADMIN)
    assert "Admin handbook" in home


async def test_listings_come_from_the_readers_build(client: Any) -> None:
    for user, expected in ((ADMIN, True), (READER, False), (None, False)):
        status, body, _ = await fetch(client, "/search/search_index.json", user)
        assert status == 200
        texts = " ".join(doc["text"] for doc in json.loads(body)["docs"])
        assert (SECRET in texts) is expected, user


async def test_no_cache_hands_one_audiences_build_to_another(client: Any) -> None:
    # The admin's copy first, then the others: what is kept is kept per build.
    await fetch(client, "/", ADMIN)
    status, page, headers = await fetch(client, "/", None)
    assert status == 200 and "Admin handbook" not in page
    assert "Cookie" in headers["Vary"]
    _, _, reader = await fetch(client, "/", READER)
    assert "private" in reader["Cache-Control"]


def test_audiences_are_checked_one_line_per_problem(tmp_path: Path) -> None:
    data = {
        "server": {"public_url": "http://docs.test"},
        "session": {"secrets": ["s" * 40]},
        "handshake": {"method": "jwt", "jwt": {"secret": "k" * 40, "login_urls": [
            {"name": "Dashboard", "url": "https://dash.test/login"}]}},
        "upstream": {"url": "http://127.0.0.1:3000", "audiences": [
            {"name": "admins", "groups": ["admin"], "url": "http://127.0.0.1:3002",
             "root": str(tmp_path)},
            {"name": "admins", "url": "http://127.0.0.1:3001"},
            {"name": "bad name!", "groups": [], "url": "http://127.0.0.1:3003"},
            {"name": "last", "authenticated": True, "url": "ftp://x"}]},
    }
    with pytest.raises(ConfigError) as raised:
        build_config(data)
    problems = [p for p in raised.value.problems if p.startswith("upstream")]
    assert problems == [
        "upstream.audiences[0]: set exactly one of url and root, not both",
        "upstream.audiences[1].name: 'admins' is already the name of another audience",
        "upstream.audiences[1]: only the last audience may take everyone: give this one "
        "groups or authenticated: true",
        "upstream.audiences[2].name: 'bad name!' is not a short name (letters, digits, -_)",
        "upstream.audiences[2].groups: must name at least one group",
        "upstream.audiences[3].url: must be an absolute http or https URL, not 'ftp://x'",
        "upstream.audiences[3]: the last audience takes everyone else: give it no groups "
        "and no authenticated",
        "upstream: set exactly one of url, root and audiences",
    ], problems


SPHINX_CONF = """\
project = 'Audiences'
# The README's recipe: the admin pages only in the build made with -t admin, and no copy
# of the sources (which hold the text of every .. only:: block) in any build.
exclude_patterns = [] if tags.has('admin') else ['admin/*']
html_copy_source = False
"""


def sphinx_builds(root: Path) -> tuple[Path, Path]:
    source = root / "source"
    pages = {
        "conf.py": SPHINX_CONF,
        "index.rst": "Welcome\n=======\n\n.. toctree::\n   :glob:\n\n   guide\n   admin/*\n\n"
                     f".. only:: admin\n\n   Operators: {SECRET} in the handbook.\n",
        "guide.rst": "Guide\n=====\n\nHow to use it.\n",
        "admin/handbook.rst": f"Admin handbook\n==============\n\n{SECRET} every quarter.\n",
    }
    for name, text in pages.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    for out, tags in (("build-admin", ["-t", "admin"]), ("build-everyone", [])):
        # The doctrees (every page's parsed text) are kept out of the folder served.
        subprocess.run([sys.executable, "-m", "sphinx", "-q", *tags, "-b", "html",
                        "-d", str(root / f"doctrees-{out}"), str(source), str(root / out)],
                       check=True, timeout=180, capture_output=True)
    return root / "build-admin", root / "build-everyone"


def hugo_builds(root: Path) -> tuple[Path, Path]:
    hugo = shutil.which("hugo")
    if hugo is None:
        pytest.fail("hugo is not installed (Debian: apt-get install hugo)", pytrace=False)
    files = {
        "hugo.toml": "baseURL = 'http://docs.test/'\ntitle = 'Audiences'\n"
                     "disableKinds = ['RSS', 'taxonomy', 'term']\n",
        # The README's recipe: the environment for everyone leaves the admin pages out.
        "config/everyone/hugo.toml": "ignoreFiles = ['content/admin/']\n",
        "layouts/_default/baseof.html":
            "<html><body><nav><ul>{{ range .Site.RegularPages }}<li><a href=\""
            "{{ .RelPermalink }}\">{{ .Title }}</a></li>{{ end }}</ul></nav>"
            "<main>{{ block \"main\" . }}{{ end }}</main></body></html>",
        "layouts/_default/single.html": '{{ define "main" }}{{ .Content }}{{ end }}',
        "layouts/_default/list.html": '{{ define "main" }}{{ .Content }}{{ end }}',
        "content/guide.md": "---\ntitle: Guide\n---\nHow to use it.\n",
        "content/admin/_index.md": "---\ntitle: Admin\n---\n",
        "content/admin/handbook.md": f"---\ntitle: Admin handbook\n---\n{SECRET}.\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for environment in ("admin", "everyone"):
        subprocess.run([hugo, "--quiet", "-s", str(root), "--environment", environment,
                        "-d", str(root / f"build-{environment}")], check=True, timeout=120)
    return root / "build-admin", root / "build-everyone"


@pytest.mark.parametrize(("generator", "admin_page"), [
    ("sphinx", "/admin/handbook.html"), ("hugo", "/admin/handbook/")])
async def test_the_sphinx_and_hugo_recipes_build_per_audience(
        generator: str, admin_page: str, tmp_path: Path, aiohttp_client: Any) -> None:
    make = sphinx_builds if generator == "sphinx" else hugo_builds
    admin, everyone = make(tmp_path)
    page_file = admin / admin_page.strip("/")
    if not admin_page.endswith(".html"):
        page_file = page_file / "index.html"
    assert SECRET.encode() in page_file.read_bytes()
    leaks = [str(path) for path in everyone.rglob("*")
             if path.is_file() and SECRET.encode() in path.read_bytes()]
    assert leaks == []
    config = make_config(None, upstream={"audiences": [
        {"name": "admins", "groups": ["admin"], "root": str(admin)},
        {"name": "everyone", "root": str(everyone)}]}, access={"public": ["/**"]})
    client = await aiohttp_client(await build_app(config))
    assert (await fetch(client, admin_page, ADMIN))[0] == 200
    status, page, _ = await fetch(client, admin_page, READER)
    assert status == 404 and SECRET not in page


def test_forward_auth_with_audiences_is_warned_of(tmp_path: Path) -> None:
    config = make_config(None, server={"trusted_proxies": ["127.0.0.1/32"],
                                       "forward_auth": "nginx"},
                         upstream={"audiences": [{"name": "everyone", "root": str(tmp_path)}]})
    assert any(w.startswith("server.forward_auth: a proxy asking") for w in config.warnings)


README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_recipes_built_here_are_the_readmes() -> None:
    readme = " ".join(README.read_text(encoding="utf-8").split())
    for line in ('exclude_docs: !ENV [DOCS_EXCLUDE, ""]',
                 "exclude_patterns = [] if tags.has('admin') else ['admin/*']",
                 "html_copy_source = False", "ignoreFiles = ['content/admin/']"):
        assert f"`{line}`" in readme
    assert 'exclude_docs: !ENV [DOCS_EXCLUDE, ""]' in MKDOCS_YML
    assert "exclude_patterns = [] if tags.has('admin') else ['admin/*']" in SPHINX_CONF
    assert "html_copy_source = False" in SPHINX_CONF


def test_the_readmes_audiences_example_is_a_valid_config() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("```yaml\nupstream:\n  audiences:")
    example = yaml.safe_load(text[start + len("```yaml\n"):text.index("```", start + 7)])
    config = make_config(None, upstream=example["upstream"])
    assert [a.name for a in config.upstream.audiences] == ["admins", "readers", "everyone"]
    assert config.upstream.audiences[1].authenticated and config.upstream.audiences[-1].catch_all
