"""``docs-gateway init`` in real docs project folders: it finds the generator, writes a
``gateway.yaml`` that ``docs-gateway check`` accepts and keys, and its printed steps work."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.app import build_app
from gateway.cli import main
from gateway.config.load import load_config

# Outside the compiled request path: run once, on the plain package.
pytestmark = pytest.mark.plain_only

ROOT = Path(__file__).resolve().parent.parent

#: Each generator's project files, as its own quickstart writes them.
PROJECTS: dict[str, dict[str, str]] = {
    "mkdocs": {"mkdocs.yml": "site_name: Widget Docs\nnav:\n  - Home: index.md\n",
               "docs/index.md": "# Widget Docs\n\nWelcome to the widget.\n"},
    "docusaurus": {"docusaurus.config.js": "module.exports = {\n  title: 'Widget Docs',\n"
                                           "  url: 'https://docs.example.com',\n"
                                           "  baseUrl: '/docs/',\n"
                                           "  presets: [['classic', {docs: {}}]],\n};\n",
                   "package.json": '{"scripts": {"build": "docusaurus build"}}\n',
                   "docs/intro.md": "# Intro\n"},
    "sphinx": {"docs/conf.py": "project = 'Widget Docs'\nextensions = []\n",
               "docs/index.rst": "Widget Docs\n===========\n"},
    "hugo": {"hugo.toml": "baseURL = 'https://example.com/handbook/'\ntitle = 'Widget Docs'\n",
             "content/_index.md": "---\ntitle: Widget Docs\n---\n"},
    "hugo-legacy": {"config.toml": "baseURL = 'https://docs.example.com/'\n",
                    "content/_index.md": "---\ntitle: Widget Docs\n---\n"},
}
#: Where each generator writes the built site, and the build command the steps name.
LABELS = {"mkdocs": "MkDocs", "docusaurus": "Docusaurus", "sphinx": "Sphinx", "hugo": "Hugo"}
#: The path each project is built for, where the gateway serves it.
BASES = {"mkdocs": "", "docusaurus": "/docs", "sphinx": "", "hugo": "/handbook",
         "hugo-legacy": ""}
BUILDS = {"mkdocs": ("site", "mkdocs build"), "docusaurus": ("build", "npm run build"),
          "sphinx": ("docs/_build/html", "sphinx-build -b html docs docs/_build/html"),
          "hugo": ("public", "hugo"), "hugo-legacy": ("public", "hugo")}


def project(root: Path, kind: str) -> Path:
    for name, text in PROJECTS[kind].items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def run(capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str, str]:
    status = main(list(words))
    out, err = capsys.readouterr()
    return status, out, err


def command(cwd: Path, *words: str) -> subprocess.CompletedProcess[str]:
    """``python -m <words>`` run in ``cwd``, with this checkout's package."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", *words], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def steps(out: str) -> list[str]:
    return re.findall(r"^  \d\. (.*)$", out, re.M)


@pytest.mark.parametrize("kind", list(PROJECTS))
def test_init_writes_a_config_check_accepts(kind: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path, kind)
    status, out, err = run(capsys, "init", "--dir", str(root))
    assert (status, err) == (0, "")
    assert out.startswith(f"Found a {LABELS[kind.split('-')[0]]} project")
    output, build = BUILDS[kind]
    first, login, last = steps(out)
    assert f"`{build}` writes {output}/" in first and "Page metadata" in first
    assert "login.pem" in login and f"`docs-gateway check -c {root / 'gateway.yaml'}`" in last
    written = root / "gateway.yaml"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    for name in ("login.pem", "login.pub.pem", "gateway.pem", "gateway.pub.pem"):
        assert (root / "gateway-keys" / name).is_file()
    assert "*.pem\n!*.pub.pem" in (root / "gateway-keys" / ".gitignore").read_text()
    assert run(capsys, "check", "-c", str(written))[0] == 0
    config = load_config(written)
    assert config.upstream.root == root / output and config.handshake.method == "jwt"
    # The site's own title names the gateway's pages.
    assert config.brand.name == (None if kind == "hugo-legacy" else "Widget Docs")
    assert config.server.public_url == "http://127.0.0.1:8080" + BASES[kind]
    assert last.endswith(f"open http://127.0.0.1:8080{BASES[kind]}/.")


@pytest.mark.parametrize("method", ["shared_session", "oauth"])
def test_each_handshake_gets_its_section_and_steps(method: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path, "sphinx")
    status, out, _ = run(capsys, "init", "--dir", str(root), "--method", method)
    assert status == 0
    assert load_config(root / "gateway.yaml").handshake.method == method
    assert not (root / "gateway-keys" / "login.pem").exists()
    login = steps(out)[1]
    assert {"shared_session": "info_api_url", "oauth": "/_gateway/callback"}[method] in login


def test_an_existing_config_is_kept_unless_forced(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path, "hugo")
    assert run(capsys, "init", "--dir", str(root))[0] == 0
    key = (root / "gateway-keys" / "login.pem").read_bytes()
    (root / "gateway.yaml").write_text("# mine\n")
    status, out, err = run(capsys, "init", "--dir", str(root))
    assert (status, out) == (1, "")
    assert err == f"docs-gateway: {root / 'gateway.yaml'} already exists; pass --force to " \
                  "replace it\n"
    assert (root / "gateway.yaml").read_text() == "# mine\n"
    status, out, _ = run(capsys, "init", "--dir", str(root), "--force")
    assert status == 0 and "kept " in out
    # The keys a login flow may already sign with are never replaced.
    assert (root / "gateway-keys" / "login.pem").read_bytes() == key


def test_a_public_key_alone_is_never_replaced(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # The dashboard's public key put where init would write the login pair (the dashboard
    # keeps the private half), and a link planted where a key goes: neither is written
    # through, and nothing else is written either.
    root = project(tmp_path, "mkdocs")
    folder = root / "gateway-keys"
    folder.mkdir()
    theirs = b"-----BEGIN PUBLIC KEY-----\ntheirs\n-----END PUBLIC KEY-----\n"
    (folder / "login.pub.pem").write_bytes(theirs)
    status, out, err = run(capsys, "init", "--dir", str(root))
    assert (status, out) == (1, "")
    assert err == (f"docs-gateway: {folder / 'login.pub.pem'} exists without "
                   f"{folder / 'login.pem'}; move it away, or keep both halves there\n")
    assert (folder / "login.pub.pem").read_bytes() == theirs
    assert sorted(path.name for path in folder.iterdir()) == ["login.pub.pem"]
    assert not (root / "gateway.yaml").exists()
    (folder / "login.pub.pem").unlink()
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (folder / "gateway.pub.pem").symlink_to(victim)
    status, _, err = run(capsys, "init", "--dir", str(root))
    assert status == 1 and "gateway.pub.pem exists without" in err
    assert victim.read_text() == "keep me\n"
    assert not (root / "gateway.yaml").exists() and not (folder / "login.pem").exists()
    # A link where the folder's .gitignore goes is left as it is, never written through.
    (folder / "gateway.pub.pem").unlink()
    (folder / ".gitignore").symlink_to(tmp_path / "planted")
    assert run(capsys, "init", "--dir", str(root))[0] == 0
    assert not (tmp_path / "planted").exists()


def test_keys_are_never_put_where_the_site_is_served(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Keys inside the built site (or a site built into the project folder itself) would be
    # files the gateway serves: login.pem would let anyone sign in as anyone.
    root = project(tmp_path / "a", "mkdocs")
    for keys in ("site/keys", "site", "./site/k"):
        status, out, err = run(capsys, "init", "--dir", str(root), "--keys", keys)
        assert (status, out) == (1, ""), keys
        assert err == (f"docs-gateway: --keys must be outside site/, the folder the gateway "
                       f"serves, not {keys!r}\n"), keys
        assert not (root / "site").exists() and not (root / "gateway.yaml").exists()
    here = project(tmp_path / "b", "mkdocs")
    (here / "mkdocs.yml").write_text("site_name: Widget\nsite_dir: .\n")
    status, out, err = run(capsys, "init", "--dir", str(here))
    assert (status, out) == (1, "")
    assert err == ("docs-gateway: the site is built into ., which holds the project folder: "
                   "the gateway would serve its own config and keys; build it into a folder "
                   "of its own\n")
    assert not (here / "gateway.yaml").exists() and not (here / "gateway-keys").exists()


def test_no_project_or_two_is_one_line(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "init", "--dir", str(tmp_path))
    assert status == 1 and err.count("\n") == 1
    assert err.startswith(f"docs-gateway: no docs project in {tmp_path}: looked for mkdocs.yml")
    project(tmp_path, "mkdocs")
    project(tmp_path, "hugo")
    status, _, err = run(capsys, "init", "--dir", str(tmp_path))
    assert status == 1
    assert "more than one docs project (mkdocs: mkdocs.yml, hugo: hugo.toml); choose one " \
           "with --generator" in err
    status, out, _ = run(capsys, "init", "--dir", str(tmp_path), "--generator", "hugo")
    assert status == 0 and "Found a Hugo project" in out


@pytest.mark.slow  # builds the site with MkDocs, runs the command line in processes
async def test_the_printed_steps_gate_a_real_mkdocs_site(
        tmp_path: Path, aiohttp_client: Any) -> None:
    root = project(tmp_path, "mkdocs")
    result = command(root, "gateway", "init")
    assert result.returncode == 0, result.stderr
    first, login, last = steps(result.stdout)
    commands = [re.findall(r"`([^`]+)`", step) for step in (first, login, last)]
    # 1: the build the step names, with the generator itself.
    build = commands[0][0]
    assert build == "mkdocs build"
    assert command(root, *shlex.split(build), "-q").returncode == 0
    # 3: the check it names.
    check = shlex.split(commands[2][0])
    assert check[:2] == ["docs-gateway", "check"]
    assert command(root, "gateway", *check[1:]).returncode == 0
    # 2: a token as the step makes it, taken by the callback the step names.
    token_command = shlex.split(commands[1][0])
    made = command(root, "gateway", *token_command[1:])
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    client = await aiohttp_client(await build_app(load_config(root / "gateway.yaml")))
    html = {"Accept": "text/html"}
    response = await client.get("/", headers=html, allow_redirects=False)
    assert response.status == 302 and response.headers["Location"].startswith("/_gateway/login")
    response = await client.post("/_gateway/jwt-callback", data={"token": token, "redirect": "/"},
                                 headers={"Origin": "http://127.0.0.1:8080"},
                                 allow_redirects=False)
    assert response.status == 303, await response.text()
    response = await client.get("/", headers=html, allow_redirects=False)
    assert response.status == 200 and "Welcome to the widget." in await response.text()
