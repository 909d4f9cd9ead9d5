"""Audience builds: a real MkDocs site built twice with the README's recipe (the admin
pages left out of the build for everyone else), each build served by its own nginx, and
the gateway serving each reader from the build of their audience."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import build_app
from gateway.config.load import build_config
from gateway.errors import ConfigError
from tests.helpers import make_config, make_user, session_cookies
from tests.nginx import nginx_serving

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
    admin, everyone = builds
    server = "        root {};\n        error_page 404 /404.html;\n"
    async with contextlib.AsyncExitStack() as stack:
        admins = await stack.enter_async_context(
            nginx_serving(tmp_path / "a", server.format(admin)))
        rest = await stack.enter_async_context(
            nginx_serving(tmp_path / "e", server.format(everyone)))
        config = make_config(None, upstream={"audiences": [
            {"name": "admins", "groups": ["admin"], "url": admins},
            {"name": "everyone", "url": rest}]}, access={"public": ["/**"]})
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
