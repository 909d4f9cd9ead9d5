"""A real Docusaurus 3 site, from the npm registry, built twice with the README's recipe
(``docs.exclude`` from an environment variable) and served per audience.

With one build, the page metadata recipe closes the page's HTML, yet the page's text sits
in a script chunk under ``/assets/js/`` that any reader can fetch: the case audience
builds exist for. With a build per audience, the admin build's chunks are not there for
anyone else. The installed packages and the builds are kept in a cache folder between
runs of the suite (``DOCS_GATEWAY_TEST_CACHE``, default ``~/.cache/docs-gateway-tests``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import build_app
from gateway.config.load import load_config
from tests.helpers import SECRET as SECRET_KEY
from tests.helpers import make_config, make_user, session_cookies
from tests.nginx import audience_builds, nginx_serving, site_block
from tests.ports import free_port
from tests.test_audit import audit, write_keys

pytestmark = pytest.mark.slow

ADMIN = make_user("ada", groups=("admin",))
READER = make_user("bob", groups=("staff",))
SECRET = "ROTATE-THE-VAULT-KEYS-EVERY-QUARTER"
VERSION = "3.10.2"
PACKAGE = {
    "name": "gated-docs", "private": True,
    "dependencies": {"@docusaurus/core": VERSION, "@docusaurus/preset-classic": VERSION,
                     "@mdx-js/react": "^3.0.0", "clsx": "^2.0.0",
                     "prism-react-renderer": "^2.3.0", "react": "^19.0.0",
                     "react-dom": "^19.0.0"},
}
CONFIG = """\
// The admin pages are built only for the admin audience (the README's recipe).
module.exports = {
  title: 'Gated docs', url: 'http://docs.test', baseUrl: '/',
  onBrokenLinks: 'warn',
  presets: [['classic', {
    docs: {routeBasePath: '/docs', %s},
    blog: false, theme: {},
  }]],
};
"""
# The README's recipe, as it is written there.
RECIPE = "exclude: process.env.DOCS_AUDIENCE === 'admin' ? [] : ['admin/**']"
CONFIG = CONFIG % RECIPE
DOCS = {
    "docs/intro.md": "# Intro\n\nWelcome to the product.\n",
    "docs/guide.md": "# Guide\n\nHow to use it.\n",
    "docs/admin/secrets.md": "---\ntitle: Admin secrets\n---\n\n<head>\n  <meta name=\"gateway:"
                             f"groups\" content=\"admin\" />\n</head>\n\n{SECRET}.\n",
}


def cache_root() -> Path:
    folder = os.environ.get("DOCS_GATEWAY_TEST_CACHE")
    return Path(folder) if folder else Path.home() / ".cache" / "docs-gateway-tests"


def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        pytest.fail("npm is not installed (Debian: apt-get install nodejs npm)", pytrace=False)
    return found


def site_folder() -> Path:
    """The site with its packages installed, made once per version of this recipe."""
    key = hashlib.sha256(json.dumps([PACKAGE, CONFIG, DOCS]).encode()).hexdigest()[:16]
    site = cache_root() / f"docusaurus-{key}"
    if (site / "node_modules" / ".bin" / "docusaurus").exists():
        return site
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    (site / "package.json").write_text(json.dumps(PACKAGE, indent=2))
    (site / "docusaurus.config.js").write_text(CONFIG)
    for name, text in DOCS.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    subprocess.run([npm(), "install", "--no-audit", "--no-fund", "--loglevel=error"],
                   cwd=site, check=True, timeout=600, capture_output=True)
    return site


def build(site: Path, audience: str) -> Path:
    out = site / f"build-{audience}"
    if not (out / "index.html").exists() and not (out / "docs").exists():
        env = {**os.environ, "DOCS_AUDIENCE": audience}
        subprocess.run([str(site / "node_modules" / ".bin" / "docusaurus"), "build",
                        "--out-dir", str(out)], cwd=site, env=env, check=True, timeout=600,
                       capture_output=True)
    return out


@pytest.fixture(scope="module")
def builds() -> tuple[Path, Path]:
    site = site_folder()
    return build(site, "admin"), build(site, "everyone")


def chunks_with(folder: Path, text: str) -> list[str]:
    """The addresses of the build's scripts that hold ``text``."""
    return sorted("/" + path.relative_to(folder).as_posix()
                  for path in (folder / "assets" / "js").glob("*.js")
                  if text.encode() in path.read_bytes())


def test_the_recipe_keeps_the_admin_page_out_of_the_build_for_everyone(
        builds: tuple[Path, Path]) -> None:
    admin, everyone = builds
    assert chunks_with(admin, SECRET), "the admin build holds the page in a chunk"
    leaks = [str(path) for path in everyone.rglob("*")
             if path.is_file() and SECRET.encode() in path.read_bytes()]
    assert leaks == []




async def test_with_one_build_page_metadata_leaves_the_chunk_open(
        builds: tuple[Path, Path], tmp_path: Path, aiohttp_client: Any) -> None:
    admin, _everyone = builds
    async with nginx_serving(tmp_path, site_block(admin)) as origin:
        # The defaults: assets are public, pages need a reader, metadata closes a page.
        client = await aiohttp_client(await build_app(make_config(origin)))
        reader = await session_cookies(client.app, READER)
        page = await client.get("/docs/admin/secrets/", cookies=reader)
        assert page.status == 404 and SECRET not in await page.text()
        # The README says so: the chunk is open to anyone.
        chunk = await client.get(chunks_with(admin, SECRET)[0])
        assert chunk.status == 200 and SECRET in await chunk.text()


@pytest.fixture
async def audiences(builds: tuple[Path, Path], tmp_path: Path,
                    aiohttp_client: Any) -> AsyncIterator[Any]:
    async with audience_builds(tmp_path, *builds) as entries:
        config = make_config(None, upstream={"audiences": entries}, access={"public": ["/**"]})
        yield await aiohttp_client(await build_app(config))


async def test_with_audience_builds_no_chunk_of_the_admin_build_reaches_others(
        builds: tuple[Path, Path], audiences: Any) -> None:
    admin, _everyone = builds
    secret_chunks = chunks_with(admin, SECRET)
    admin_cookies = await session_cookies(audiences.app, ADMIN)
    opened = await audiences.get("/docs/admin/secrets/", cookies=admin_cookies)
    assert opened.status == 200
    for path in secret_chunks:
        assert SECRET in await (await audiences.get(path, cookies=admin_cookies)).text()
    for user in (None, READER):
        cookies = {} if user is None else await session_cookies(audiences.app, user)
        page = await audiences.get("/docs/admin/secrets/", cookies=cookies)
        assert page.status == 404 and SECRET not in await page.text()
        for path in secret_chunks:
            chunk = await audiences.get(path, cookies=cookies)
            assert chunk.status == 404 and SECRET not in await chunk.text(), (user, path)
        intro = await audiences.get("/docs/intro/", cookies=cookies)
        assert intro.status == 200 and "Admin secrets" not in await intro.text()


async def test_in_chromium_only_the_admin_reaches_the_admin_page(
        audiences: Any, browser: Any) -> None:
    base = str(audiences.make_url("")).rstrip("/")
    for user, sees in ((ADMIN, True), (READER, False)):
        cookies = await session_cookies(audiences.app, user)
        context = await browser.new_context()
        await context.add_cookies([{"name": name, "value": value, "url": base}
                                   for name, value in cookies.items()])
        page = await context.new_page()
        await page.goto(base + "/docs/intro/")
        await page.wait_for_load_state("networkidle")
        category = page.locator("a.menu__link--sublist", has_text="admin")
        if sees:
            # The sidebar's category opens; its page's link routes in the browser, from
            # the chunks.
            await category.click()
            await page.locator('a[href="/docs/admin/secrets"]').click()
            await page.wait_for_function(f"document.body.innerText.includes({SECRET!r})")
            assert page.url.rstrip("/").endswith("/docs/admin/secrets")
        else:
            assert await category.count() == 0
            assert await page.locator('a[href="/docs/admin/secrets"]').count() == 0
            # Routed in the browser all the same: the reader's build has no such route.
            await page.evaluate("history.pushState({}, '', '/docs/admin/secrets');"
                                "window.dispatchEvent(new PopStateEvent('popstate'))")
            await page.wait_for_function("document.body.innerText.includes('Page Not Found')")
            assert SECRET not in await page.content()
        await context.close()


AUDIT_CONFIG = """\
server:
  listen: "127.0.0.1:{port}"
  public_url: "http://127.0.0.1:{port}"
upstream:
{upstream}
handshake:
  method: jwt
  jwt:
    login_urls: [{{name: Dashboard, url: "https://dash.example.com/docs-login"}}]
    public_keys: ["keys/login.pub.pem"]
    algorithms: ["EdDSA"]
session:
  secrets: ["{secret}"]
logging:
  level: error
"""


async def run_audit(tmp_path: Path, aiohttp_server: Any, upstream: str,
                    capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    """A gateway with ``upstream`` (YAML lines) on a known port, audited as an anonymous
    reader, a reader and an admin."""
    port = free_port()
    key = write_keys(tmp_path)
    path = tmp_path / "gateway.yaml"
    path.write_text(AUDIT_CONFIG.format(port=port, upstream=upstream, secret=SECRET_KEY))
    await aiohttp_server(await build_app(load_config(path)), port=port)
    return await audit(capsys, "-c", str(path), "--as", "everyone", "--as", "readers:staff",
                       "--as", "admins:admin", "--key", str(key))


async def test_the_audit_finds_the_open_chunk_of_a_single_build(
        builds: tuple[Path, Path], tmp_path: Path, aiohttp_server: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    admin, _everyone = builds
    async with nginx_serving(tmp_path, site_block(admin)) as origin:
        status, lines, messages = await run_audit(tmp_path, aiohttp_server,
                                                  f'  url: "{origin}"', capsys)
    assert status == 1, messages
    chunk = chunks_with(admin, SECRET)[0]
    assert any(line.startswith("everyone  ") and line.split()[1].endswith(chunk)
               and "/docs/admin/secrets" in line for line in lines), lines
    assert not any(line.startswith("admins  ") for line in lines), lines


async def test_the_audit_finds_nothing_in_audience_builds(
        builds: tuple[Path, Path], tmp_path: Path, aiohttp_server: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    async with audience_builds(tmp_path, *builds) as entries:
        upstream = "  audiences:\n" + "".join(f"    - {json.dumps(entry)}\n" for entry in entries)
        status, lines, messages = await run_audit(tmp_path, aiohttp_server, upstream, capsys)
    assert (status, lines) == (0, []), messages


def test_the_recipe_built_here_is_the_readmes() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"`{RECIPE}`" in readme
