"""``docs-gateway audit``: a small built site served by nginx behind a running gateway (a
``jwt`` setup with login states), read as an anonymous reader, a reader and an admin."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway import cli
from gateway.app import build_app
from gateway.audit import AuditError, Site, page_text, parse_reader, readers_of, webpack_chunks
from gateway.config.load import load_config
from gateway.keys import private_pem, public_pem
from tests.helpers import SECRET, make_config, make_user, session_cookies
from tests.nginx import nginx_serving
from tests.ports import free_port

pytestmark = pytest.mark.slow

SECRET_SENTENCE = "Rotate the master signing key every thirty days without fail."
GATED_SENTENCE = "The staging database password changes every Monday morning."
MARKER = "staging-build-7Q2"
READERS = ["--as", "everyone", "--as", "readers:reader", "--as", "admins:admin"]

CONFIG = """\
server:
  listen: "127.0.0.1:{port}"
  public_url: "http://127.0.0.1:{port}"
upstream:
  url: "{origin}"
handshake:
  method: jwt
  jwt:
    login_urls: [{{name: Dashboard, url: "https://dash.example.com/docs-login"}}]
    public_keys: ["keys/login.pub.pem"]
    algorithms: ["EdDSA"]
    bind_state: true
session:
  secrets: ["{secret}"]
access:
  public: ["/", "/index.html", "/assets/**", "/sitemap.xml", "/404.html"]
  rules: [{{path: "/admin/**", groups: [admin]}}]
logging:
  level: error
"""


def page(title: str, text: str, gated: str = "") -> str:
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{title} | Widget Docs'
            '</title><link rel="stylesheet" href="/assets/css/site.css"></head><body>'
            '<nav><a href="/">Home</a> <a href="/guide/">Guide</a> <a href="/admin/">Admin</a>'
            f"</nav><main><h1>{title}</h1><p>{text}</p>{gated}</main>"
            "<footer><p>Built for the widget team with plenty of care.</p></footer>"
            '<script src="/assets/js/runtime.js"></script></body></html>')


def chunk(number: int, text: str) -> str:
    """A webpack chunk as Docusaurus writes one for a page: the page's text as JSX."""
    return (f'"use strict";(self.webpackChunk=self.webpackChunk||[]).push([[{number}],'
            f'{{{number}:(e,t,n)=>{{n.r(t);const c={{children:"{text}"}};}}}}]);')


def build_site(folder: Path, public: str, *, leaky: bool) -> Path:
    """The built site; ``leaky`` adds the admin page's chunk under the public /assets/ and
    the guide's admin-only paragraph to a public JSON file."""
    chunks = {12: ("home", "aa11", "Welcome to the docs of the widget, open to every reader.")}
    if leaky:
        chunks[34] = ("admin", "bb22", SECRET_SENTENCE)
    names = ",".join(f'{n}:"{name}"' for n, (name, _, _) in chunks.items())
    hashes = ",".join(f'{n}:"{digest}"' for n, (_, digest, _) in chunks.items())
    files = {
        "index.html": page("Home", chunks[12][2]),
        "guide/index.html": page("Guide", "Install the widget with the package manager you "
                                          "like best.",
                                 f'<p data-gateway-groups="admin">{GATED_SENTENCE}</p>'),
        "assets/data/notes.json": '{"notes": [{"url": "/guide/", "text": "%s"}]}\n'
                                  % (GATED_SENTENCE if leaky else "Nothing to note."),
        "admin/index.html": page("Admin", SECRET_SENTENCE),
        "404.html": page("Not found", "This page could not be found on the widget docs."),
        "sitemap.xml": '<?xml version="1.0" encoding="UTF-8"?>\n'
                       '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                       + "".join(f"<url><loc>{public}{path}</loc></url>"
                                 for path in ("/", "/guide/", "/admin/")) + "</urlset>\n",
        "assets/css/site.css": 'body{background:url("../img/bg.png")}\n',
        "assets/js/runtime.js": f'(()=>{{var r={{}};r.p="/";var build="{MARKER}";'
                                f'r.u=e=>"assets/js/"+({{{names}}}[e]||e)+"."+{{{hashes}}}[e]'
                                '+".js";fetch("/assets/data/notes.json");})();\n',
        **{f"assets/js/{name}.{digest}.js": chunk(n, text)
           for n, (name, digest, text) in chunks.items()},
    }
    root = folder / "site"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@dataclass
class Deployment:
    config: Path
    key: Path
    public: str
    server: TestServer


Start = Callable[..., Awaitable[Deployment]]


def write_keys(folder: Path) -> Path:
    """The login key pair: the private half for the audit, the public one for the gateway."""
    key = ed25519.Ed25519PrivateKey.generate()
    keys = folder / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    (keys / "login.pem").write_bytes(private_pem(key))
    (keys / "login.pub.pem").write_bytes(public_pem(key))
    return keys / "login.pem"


@pytest.fixture
async def start(tmp_path: Path, aiohttp_server: Any) -> AsyncIterator[Start]:
    """Starts nginx serving the built site and the gateway in front of it."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(*, leaky: bool = False) -> Deployment:
            port = free_port()
            public = f"http://127.0.0.1:{port}"
            root = build_site(tmp_path, public, leaky=leaky)
            origin = await stack.enter_async_context(nginx_serving(
                tmp_path, f"        root {root};\n        error_page 404 /404.html;\n"))
            key = write_keys(tmp_path)
            path = tmp_path / "gateway.yaml"
            path.write_text(CONFIG.format(port=port, origin=origin, secret=SECRET))
            server: TestServer = await aiohttp_server(await build_app(load_config(path)),
                                                      port=port)
            return Deployment(path, key, public, server)

        yield make


async def audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    """Run ``docs-gateway audit ARGS`` (in a thread: the gateway runs on this loop); its
    status, its output lines and its messages."""
    capsys.readouterr()
    status = await asyncio.get_running_loop().run_in_executor(None, cli.main, ["audit", *args])
    out, err = capsys.readouterr()
    messages = "\n".join(line for line in err.splitlines() if line.startswith("docs-gateway:"))
    return status, out.splitlines(), messages


async def test_a_clean_site_exits_0(start: Start, capsys: pytest.CaptureFixture[str]) -> None:
    site = await start()
    status, lines, messages = await audit(capsys, "-c", str(site.config), *READERS,
                                          "--key", str(site.key))
    assert (status, lines) == (0, []), messages
    # The anonymous reader was sent to log in for the guide and the admin page; the reader
    # got the missing page for the admin page; the admin opened all three.
    assert "everyone (anonymous): " in messages and "2 pages closed to it" in messages
    assert re.search(r"readers \(groups reader\): \d+ addresses read, 1 page closed", messages)
    assert re.search(r"admins \(groups admin\): \d+ addresses read, 0 pages closed", messages)
    assert messages.endswith(")") and "no leaks" in messages


async def test_a_public_chunk_with_an_admin_page_s_text_is_a_leak(
        start: Start, capsys: pytest.CaptureFixture[str]) -> None:
    site = await start(leaky=True)
    status, lines, messages = await audit(capsys, "-c", str(site.config), *READERS,
                                          "--key", str(site.key))
    assert status == 1, messages
    chunk_url = f"{site.public}/assets/js/admin.bb22.js"
    expected = f'"{SECRET_SENTENCE}" (text of /admin/)'
    notes = f'{site.public}/assets/data/notes.json  "{GATED_SENTENCE}" (text of /guide/)'
    assert sorted(lines) == sorted([f"everyone  {chunk_url}  {expected}", f"everyone  {notes}",
                                    f"readers  {chunk_url}  {expected}", f"readers  {notes}"])


async def test_markers_are_found_where_no_open_page_shows_them(
        start: Start, capsys: pytest.CaptureFixture[str]) -> None:
    site = await start()
    status, lines, _ = await audit(capsys, "-c", str(site.config), *READERS,
                                   "--key", str(site.key), "--marker", MARKER,
                                   "--marker", "Rotate the master signing key")
    assert status == 1
    runtime = f"{site.public}/assets/js/runtime.js"
    assert sorted(lines) == sorted(f"{name}  {runtime}  marker {MARKER!r}"
                                   for name in ("everyone", "readers", "admins"))


async def test_readers_given_by_cookie(start: Start, capsys: pytest.CaptureFixture[str]) -> None:
    site = await start()
    assert site.server.app is not None
    cookies = await session_cookies(site.server.app, make_user("bob", groups=("reader",)))
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    status, lines, messages = await audit(capsys, "-c", str(site.config), "--as", "everyone",
                                          "--as", "readers", "--cookie", f"readers={header}")
    assert (status, lines) == (0, []), messages
    assert "readers (with its cookies): " in messages and "0 pages closed" in messages
    assert "everyone (anonymous): " in messages and "1 page closed" in messages

    status, lines, messages = await audit(capsys, "-c", str(site.config), "--as", "readers",
                                          "--cookie", "readers=docs_session=forged")
    assert (status, lines) == (2, [])
    assert messages == ("docs-gateway: audit: readers: login failed: /_gateway/user answers 401 "
                        "(unauthenticated)")


async def test_a_login_the_gateway_refuses_exits_2(
        start: Start, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    site = await start()
    other = write_keys(tmp_path / "other")
    status, lines, messages = await audit(capsys, "-c", str(site.config), "--as", "admins:admin",
                                          "--key", str(other))
    assert (status, lines) == (2, [])
    assert messages == ("docs-gateway: audit: admins: login failed: the JWT callback answers "
                        "400 (bad_signature: the token's signature does not verify)")


async def test_a_crawl_cut_short_is_no_clean_result(
        start: Start, capsys: pytest.CaptureFixture[str]) -> None:
    site = await start()
    status, lines, messages = await audit(capsys, "-c", str(site.config), *READERS,
                                          "--key", str(site.key), "--max-pages", "3")
    assert (status, lines) == (2, [])
    assert "everyone: stopped at --max-pages 3; " in messages
    assert messages.splitlines()[-1].startswith(
        "docs-gateway: audit: no leaks in what was read, but the site was not read whole")


def test_a_bad_config_exits_2_with_one_line_per_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("server:\n  workers: on\n  public_url: ftp://docs\n"
                    "session:\n  secrets: [short]\n")
    assert cli.main(["check", "-c", str(path)]) == 2
    expected = capsys.readouterr().err
    assert cli.main(["audit", "-c", str(path), "--as", "everyone"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", expected)
    assert len(err.splitlines()) >= 2
    assert not any(line.startswith("docs-gateway") for line in err.splitlines())


def test_an_unreachable_gateway_exits_2(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    write_keys(tmp_path)
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.replace("http://127.0.0.1:{port}", "https://docs.example.com")
                    .format(port=free_port(), origin="http://127.0.0.1:9", secret=SECRET))
    port = free_port()
    status = cli.main(["audit", "-c", str(path), "--as", "everyone",
                       "--url", f"http://127.0.0.1:{port}"])
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert err.startswith(f"docs-gateway: audit: cannot reach the gateway at "
                          f"http://127.0.0.1:{port}: ")
    assert len(err.splitlines()) == 1


def test_bad_readers_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.yaml"
    write_keys(tmp_path)
    path.write_text(CONFIG.format(port=free_port(), origin="http://127.0.0.1:9", secret=SECRET))
    for args, said in (
            (["--as", "a", "--as", "a:x"], "--as names a more than once"),
            (["--as", "a", "--cookie", "b=s=1"], "--cookie b: no --as names b"),
            (["--as", "a", "--cookie", "a"],
             "--cookie 'a': write NAME=COOKIE-HEADER, like readers=session=abc"),
            (["--as", ":x"], "--as ':x': give a name, like everyone or admins:admin")):
        assert cli.main(["audit", "-c", str(path), *args]) == 2
        assert capsys.readouterr().err == f"docs-gateway: audit: {said}\n"


def test_reader_names() -> None:
    assert parse_reader("everyone").groups is None
    assert parse_reader("readers:").groups == ()
    assert parse_reader("admins:admin, beta").groups == ("admin", "beta")
    readers = readers_of(["everyone", "bob:"], ["bob=session=abc; x=1"])
    assert [(r.name, r.logged_in, r.cookie) for r in readers] == [
        ("everyone", False, None), ("bob", True, "session=abc; x=1")]
    with pytest.raises(AuditError):
        parse_reader("two words:x")


def test_webpack_chunk_names() -> None:
    runtime = ('r.u=e=>"assets/js/"+({48:"a94703ab","61":"1f391b9e"}[e]||e)+"."+'
               '{48:"3c6b",61:"77aa",99:"00ff"}[e]+".js",r.miniCssF=e=>"x.css";'
               'o.u=function(e){return"chunks/"+e+"-"+{7:"abc"}[e]+".mjs"}')
    assert webpack_chunks(runtime) == ["assets/js/a94703ab.3c6b.js", "assets/js/1f391b9e.77aa.js",
                                       "assets/js/99.00ff.js", "chunks/7-abc.mjs"]


def test_page_text_sentences_and_title() -> None:
    text = page_text("<title>Key rotation | Docs</title><script>var no = 'not shown';</script>"
                     "<p>First sentence has five words. Short one.</p>"
                     "<p>Rotate the <code>master</code> key every thirty days.</p>"
                     "<pre>line one of the code block\nsecond line</pre>")
    assert [s.text for s in text.segments] == [
        "Key rotation | Docs", "First sentence has five words.",
        "Rotate the master key every thirty days.", "line one of the code block"]
    assert "not shown" not in text.text


def test_which_addresses_are_read() -> None:
    config = make_config(server={"public_url": "https://docs.example.com/docs",
                                 "compat": ["mintlify"]})
    site = Site.of(config, "http://127.0.0.1:8080")
    assert site.address("https://docs.example.com/docs/guide/#setup") == "/docs/guide/"
    assert site.address("http://127.0.0.1:8080/docs/a b?x=1") == "/docs/a%20b?x=1"
    for url in ("https://docs.example.com/docs/_gateway/logout", "https://other.example/docs/",
                "https://docs.example.com/elsewhere", "https://docs.example.com/docs/logo.png",
                "https://docs.example.com/docs/logout", "mailto:a@example.com"):
        assert site.address(url) is None, url
    assert site.is_login("https://docs.example.com/docs/_gateway/login?redirect=%2F")
    assert site.is_login("https://dash.example.com/login")
    assert not site.is_login("https://docs.example.com/docs/guide/")
