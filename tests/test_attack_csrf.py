"""Cross-site requests that change who is logged in: logout CSRF and login swapping.

A page on another site can make the reader's browser POST anywhere, and can send it to any
URL. Logging out must need a request from a page of this site (the login callback's rule:
``Sec-Fetch-Site``, then ``Origin``). And with ``handshake.jwt.bind_state`` a login token
must carry the ``state`` of a login this browser started, so sending a reader to
``jwt-callback#<someone else's fresh token>`` does not log the reader in as someone else.
The browser tests run a real Chromium between two origins of one site (two ports of
127.0.0.1, as a sibling app on the same domain would be), where ``SameSite=Lax`` cookies go
along with a form POST and only the gateway's own check stands.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.app import build_app
from gateway.config.load import build_config
from gateway.errors import ConfigError
from gateway.handshakes.jwt import LoginStates
from gateway.sessions.base import CookieJar
from tests.attack import (
    Client,
    Reply,
    Start,
    app_of,
    cookie_header,
    exchange,
    port_of,
    raw_request,
)
from tests.attack import start as start  # the shared fixture
from tests.helpers import (
    HS_SECRET,
    SECRET,
    GatewayFactory,
    make_config,
    make_user,
    runner_for,
    session_cookies,
)

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "http://docs.test"
SESSION = "docs_session"
STATE_COOKIE = "docs_session_jwt_state"


def set_cookies(reply: Reply) -> dict[str, str]:
    """The cookies a response sets (name -> value; empty value: cleared)."""
    out = {}
    for line in reply.all("Set-Cookie"):
        name, _, value = line.split(";", 1)[0].partition("=")
        out[name.strip()] = value.strip().strip('"')
    return out


async def who(client: Client, cookie: str) -> tuple[int, Any]:
    """The status of /_gateway/user for a Cookie header, and the sub when logged in."""
    reply = await exchange(port_of(client), raw_request("/_gateway/user",
                                                        headers=[("Cookie", cookie)]))
    return reply.status, json.loads(reply.body).get("sub") if reply.status == 200 else None


# -- logout CSRF ---------------------------------------------------------------------------

LOGOUTS = ["/_gateway/logout", "/logout"]
CROSS_SITE = {
    "Sec-Fetch-Site cross-site": [("Sec-Fetch-Site", "cross-site")],
    "Sec-Fetch-Site same-site": [("Sec-Fetch-Site", "same-site")],
    "Sec-Fetch-Site none": [("Sec-Fetch-Site", "none")],
    "cross-site despite a same Origin": [("Sec-Fetch-Site", "cross-site"), ("Origin", ORIGIN)],
    "foreign Origin": [("Origin", "https://evil.example")],
    "sibling subdomain": [("Origin", "http://evil.docs.test")],
    "look-alike host": [("Origin", "http://docs.test.evil.example")],
    "other port": [("Origin", "http://docs.test:8080")],
    "other scheme": [("Origin", "https://docs.test")],
    "opaque Origin": [("Origin", "null")],
    "Origin with user info": [("Origin", "http://docs.test@evil.example")],
}
BODIES = {
    "form": ([("Content-Type", "application/x-www-form-urlencoded")], b"redirect=%2Fguide"),
    "multipart": ([("Content-Type", "multipart/form-data; boundary=b")],
                  b'--b\r\nContent-Disposition: form-data; name="redirect"\r\n\r\n/x\r\n--b--\r\n'),
    "text": ([("Content-Type", "text/plain")], b"redirect=/guide"),
    "json": ([("Content-Type", "application/json")], b'{"redirect": "/guide"}'),
    "empty": ([], b""),
}


async def logout(client: Client, path: str, cookie: str, headers: list[tuple[str, str]],
                 body: tuple[list[tuple[str, str]], bytes] = BODIES["form"]) -> Reply:
    return await exchange(port_of(client), raw_request(
        path, method="POST", headers=[("Cookie", cookie), *body[0], *headers], body=body[1]))


def compat() -> dict[str, Any]:
    return {"listen": "127.0.0.1:0", "public_url": ORIGIN, "compat": ["mintlify"]}


@pytest.mark.parametrize("path", LOGOUTS)
@pytest.mark.parametrize("case", list(CROSS_SITE))
async def test_a_cross_site_logout_post_is_refused(start: Start, path: str, case: str) -> None:
    client, _ = await start(server=compat())
    cookie = cookie_header(await session_cookies(app_of(client), make_user("ada")))
    for body in BODIES.values():
        reply = await logout(client, path, cookie, CROSS_SITE[case], body)
        assert reply.status == 403, (case, reply.status)
        assert json.loads(reply.body)["error"] == "cross_site"
        assert not reply.all("Set-Cookie")
        assert reply.header("Location") is None
    assert await who(client, cookie) == (200, "ada")


@pytest.mark.parametrize("path", LOGOUTS)
@pytest.mark.parametrize("headers", [
    [("Sec-Fetch-Site", "same-origin")],
    [("Sec-Fetch-Site", "same-origin"), ("Origin", "null")],
    [("Origin", ORIGIN)],
    [("Origin", "http://DOCS.test:80")],
    [],  # no browser: a script or a command-line client, which no page can drive
])
async def test_a_logout_post_from_this_site_ends_the_session(
        start: Start, path: str, headers: list[tuple[str, str]]) -> None:
    client, _ = await start(server=compat())
    cookie = cookie_header(await session_cookies(app_of(client), make_user("ada")))
    reply = await logout(client, path, cookie, headers)
    assert reply.status == 303
    assert set_cookies(reply)[SESSION] == ""


async def test_with_redis_a_cross_site_logout_leaves_the_session_alive(
        gateway: GatewayFactory, redis_server: Any) -> None:
    client = await gateway(server=compat(), session={
        "secrets": [SECRET], "store": "redis", "redis_url": redis_server.url})
    cookie = cookie_header(await session_cookies(app_of(client), make_user("ada")))
    for path in LOGOUTS:
        for headers in CROSS_SITE.values():
            assert (await logout(client, path, cookie, headers)).status == 403
    assert await who(client, cookie) == (200, "ada")
    assert (await logout(client, "/logout", cookie, [("Origin", ORIGIN)])).status == 303
    assert await who(client, cookie) == (401, None)


# -- a real browser between two sites ----------------------------------------------------


def free_socket() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


@dataclass
class Site:
    """A gateway on a real port, the dashboard its JWT login points at, and an attacker's
    page on another origin of the same site."""

    gateway: str
    dashboard: str
    attacker: str
    app: web.Application


Serve = Callable[..., Awaitable[Site]]
PAGE = "<!doctype html><html><head><title>Guide</title></head><body><h1>Guide</h1></body></html>"


def signed(sub: str, **claims: Any) -> str:
    """A login token as the customer's login flow signs it."""
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 60, "groups": ["staff"],
                       "jti": secrets.token_urlsafe(12), **claims}, HS_SECRET, algorithm="HS256")


def dashboard_app(gateway: Callable[[], str]) -> web.Application:
    """The customer's docs-login endpoint: signs the reader (``as``, default ada) with the
    ``state`` it was given, and sends the browser to the callback with the token."""

    async def docs_login(request: web.Request) -> web.Response:
        claims = {"state": request.query["state"]} if "state" in request.query else {}
        token = signed(request.query.get("as", "ada"), **claims)
        redirect = quote(request.query.get("redirect", "/"), safe="")
        raise web.HTTPFound(f"{gateway()}/_gateway/jwt-callback?redirect={redirect}#{token}")

    app = web.Application()
    app.router.add_get("/docs-login", docs_login)
    return app


def attacker_app() -> web.Application:
    """Another site: a page that auto-submits a form to the URL in its query."""

    async def page(request: web.Request) -> web.Response:
        action = request.query["action"]
        return web.Response(content_type="text/html", text=(
            f'<!doctype html><html><body><form id="f" method="post" action="{action}">'
            '<input name="redirect" value="/"></form>'
            '<script>document.getElementById("f").submit()</script></body></html>'))

    app = web.Application()
    app.router.add_get("/csrf", page)
    return app


@pytest.fixture
async def serve(aiohttp_server: Any) -> AsyncIterator[Serve]:
    runners: list[web.BaseRunner] = []

    async def start(**jwt_settings: Any) -> Site:
        async def docs(request: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        upstream_app = web.Application()
        upstream_app.router.add_get("/{tail:.*}", docs)
        upstream = await aiohttp_server(upstream_app)
        sock, port = free_socket()
        base = f"http://127.0.0.1:{port}"
        dashboard = await aiohttp_server(dashboard_app(lambda: base))
        attacker = await aiohttp_server(attacker_app(), host="127.0.0.1")
        login_url = str(dashboard.make_url("/docs-login"))
        config = make_config(str(upstream.make_url("")),
                             server={"listen": "127.0.0.1:0", "public_url": base,
                                     "compat": ["mintlify"]},
                             access={"public": ["/", "/favicon.ico"]},
                             handshake={"method": "jwt", "jwt": {
                                 "secret": HS_SECRET, "algorithms": ["HS256"],
                                 "require_host": False, **jwt_settings,
                                 "login_urls": [{"name": "Dashboard", "url": login_url}]}})
        app = await build_app(config)
        runner = runner_for(app)
        await runner.setup()
        runners.append(runner)
        await web.SockSite(runner, sock).start()
        return Site(gateway=base, dashboard=str(dashboard.make_url("")).rstrip("/"),
                    attacker=str(attacker.make_url("")).rstrip("/"), app=app)

    yield start
    for runner in runners:
        await runner.cleanup()


async def user_in(page: Any) -> Any:
    """What /_gateway/user says about the page's browser (None when anonymous)."""
    return await page.evaluate(
        "fetch('/_gateway/user', {headers: {Accept: 'application/json'}})"
        ".then(r => r.status === 200 ? r.json().then(u => u.sub) : null)")


async def log_in(page: Any, site: Site) -> None:
    await page.goto(f"{site.gateway}/_gateway/login?redirect=%2Fguide")
    await page.wait_for_url(f"{site.gateway}/guide")


@pytest.mark.parametrize("path", LOGOUTS)
async def test_a_page_of_another_origin_cannot_log_the_reader_out(serve: Serve, browser: Any,
                                                                  path: str) -> None:
    site = await serve()
    profile = await browser.new_context()
    page = await profile.new_page()
    await log_in(page, site)
    assert await user_in(page) == "ada"
    attack = await profile.new_page()  # the same browser profile, another tab
    target = quote(site.gateway + path, safe="")
    await attack.goto(f"{site.attacker}/csrf?action={target}")
    await attack.wait_for_url(lambda url: url.startswith(site.gateway))
    await attack.wait_for_load_state()
    # Seen from a public page: a protected one would log the reader in again on its own.
    await page.goto(f"{site.gateway}/")
    assert await user_in(page) == "ada"
    # The site's own logout button still works.
    async with page.expect_navigation():
        await page.evaluate("window.docsGateway.logout()")
    assert page.url == f"{site.gateway}/"
    assert await user_in(page) is None
    await profile.close()


# -- bind_state: a login token belongs to the browser that started the login -----------------


async def test_a_bound_login_completes_in_the_browser_that_started_it(serve: Serve,
                                                                      browser: Any) -> None:
    site = await serve(bind_state=True)
    page = await browser.new_page()
    await log_in(page, site)
    assert await user_in(page) == "ada"
    assert "state" not in await page.evaluate(
        "fetch('/_gateway/user').then(r => r.json()).then(u => Object.keys(u).join())")


@pytest.mark.parametrize("victim_started_a_login", [False, True])
async def test_someone_elses_token_does_not_log_the_reader_in(
        serve: Serve, browser: Any, victim_started_a_login: bool) -> None:
    site = await serve(bind_state=True)
    # The attacker starts a login of their own and stops at the callback URL, whose fresh
    # token carries the attacker's own state.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{site.gateway}/_gateway/login?redirect=%2Fguide",
                            allow_redirects=False) as response:
            login_url = response.headers["Location"]
        async with http.get(login_url + "&as=mallory", allow_redirects=False) as response:
            trap = response.headers["Location"]
    assert trap.startswith(f"{site.gateway}/_gateway/jwt-callback?") and "#ey" in trap
    page = await browser.new_page()
    if victim_started_a_login:
        # The reader's own login, under way in this browser: its state cookie is here.
        started = await page.request.get(f"{site.gateway}/_gateway/login", max_redirects=0)
        assert started.status == 302
    answers: list[int] = []
    page.on("response", lambda r: answers.append(r.status) if r.request.method == "POST"
            else None)
    await page.goto(trap)
    await page.wait_for_function("document.body && document.body.innerText.includes('browser')")
    assert answers == [400]
    assert await user_in(page) is None


async def test_without_bind_state_a_token_from_elsewhere_still_logs_in(serve: Serve,
                                                                       browser: Any) -> None:
    # The default, for Mintlify's login flows, which send no state back.
    site = await serve()
    page = await browser.new_page()
    await page.goto(f"{site.gateway}/_gateway/jwt-callback?redirect=%2Fguide#{signed('ada')}")
    await page.wait_for_url(f"{site.gateway}/guide")
    assert await user_in(page) == "ada"


# -- bind_state over plain HTTP ------------------------------------------------------------

BOUND: dict[str, Any] = {"handshake": {"method": "jwt", "jwt": {
    "secret": HS_SECRET, "algorithms": ["HS256"], "require_host": False, "bind_state": True,
    "accept_query_token": True,
    "login_urls": [{"name": "Dashboard", "url": "https://dash.example.com/docs-login?x=1"}]}}}


async def start_login(client: Client, cookie: str = "") -> tuple[str, str]:
    """GET /_gateway/login; the state sent to the login URL and the state cookie's value."""
    headers = [("Cookie", cookie)] if cookie else []
    reply = await exchange(port_of(client), raw_request("/_gateway/login?redirect=/guide",
                                                        headers=headers))
    assert reply.status == 302
    query = parse_qs(urlsplit(reply.header("Location") or "").query)
    assert query["redirect"] == ["/guide"] and len(query["state"]) == 1
    # The login URL's own parameters stay.
    assert query.get("x", ["1"]) == ["1"]
    return query["state"][0], set_cookies(reply)[STATE_COOKIE]


async def callback(client: Client, token: str, cookie: str) -> Reply:
    headers = [("Content-Type", "application/x-www-form-urlencoded")]
    if cookie:
        headers.append(("Cookie", cookie))
    return await exchange(port_of(client), raw_request(
        "/_gateway/jwt-callback", method="POST", headers=headers,
        body=f"token={token}&redirect=/guide".encode()))


def refused(reply: Reply) -> bool:
    return reply.status == 400 and json.loads(reply.body)["error"] == "state_mismatch" \
        and SESSION not in set_cookies(reply)


async def test_a_token_carrying_the_browsers_state_logs_in_once(start: Start) -> None:
    client, _ = await start(**BOUND)
    state, value = await start_login(client)
    cookie = f"{STATE_COOKIE}={value}"
    reply = await callback(client, signed("ada", state=state), cookie)
    assert reply.status == 303 and reply.header("Location") == "/guide"
    after = set_cookies(reply)
    assert after[STATE_COOKIE] == ""  # the only state was used up
    assert await who(client, f"{SESSION}={after[SESSION]}") == (200, "ada")
    # The same state again, in a fresh token, with a copy of the old cookie: refused.
    assert refused(await callback(client, signed("ada", state=state), cookie))


@pytest.mark.parametrize("claims", [
    {}, {"state": ""}, {"state": None}, {"state": 1}, {"state": ["x"]}, {"state": "other"}])
async def test_a_token_without_this_browsers_state_is_refused(start: Start,
                                                              claims: dict[str, Any]) -> None:
    client, _ = await start(**BOUND)
    _state, value = await start_login(client)
    assert refused(await callback(client, signed("ada", **claims), f"{STATE_COOKIE}={value}"))


async def test_a_state_from_another_browser_is_refused(start: Start) -> None:
    client, _ = await start(**BOUND)
    attacker_state, attacker_cookie = await start_login(client)
    _state, victim_cookie = await start_login(client)
    token = signed("mallory", state=attacker_state)
    assert refused(await callback(client, token, f"{STATE_COOKIE}={victim_cookie}"))
    assert refused(await callback(client, token, ""))
    # The attacker's own browser could have used it, but it was not used up by the attempts.
    assert (await callback(client, token, f"{STATE_COOKIE}={attacker_cookie}")).status == 303


async def test_a_forged_doubled_or_stale_state_cookie_is_refused(start: Start) -> None:
    client, _ = await start(**BOUND)
    state, value = await start_login(client)
    token = signed("ada", state=state)
    _other, planted = await start_login(client)
    # Sealed by the gateway's own code: under another secret, and 10 minutes and 1 second old.
    sealed = {}
    for name, secret, created in (("forged", "f" * 40, time.time()),
                                  ("stale", SECRET, time.time() - 601)):
        jar = CookieJar()
        LoginStates([secret], STATE_COOKIE).write([(state, created)], jar)
        sealed[name] = jar.sets[STATE_COOKIE][0]
    for cookie in (f"{STATE_COOKIE}={sealed['forged']}", f"{STATE_COOKIE}={sealed['stale']}",
                   f"{STATE_COOKIE}={value[:-2]}", f"{STATE_COOKIE}=",
                   f"docs_session_jwt={value}", f"{SESSION}={value}",
                   f"{STATE_COOKIE}={planted}; {STATE_COOKIE}={value}",
                   f"{STATE_COOKIE}={value}; {STATE_COOKIE}={planted}"):
        assert refused(await callback(client, token, cookie)), cookie
    assert (await callback(client, token, f"{STATE_COOKIE}={value}")).status == 303


async def test_several_tabs_may_log_in_at_once_up_to_four(start: Start) -> None:
    client, _ = await start(**BOUND)
    cookie = ""
    states = []
    for _ in range(5):
        state, value = await start_login(client, cookie)
        states.append(state)
        cookie = f"{STATE_COOKIE}={value}"
    assert refused(await callback(client, signed("ada", state=states[0]), cookie))
    for state in states[1:]:
        reply = await callback(client, signed("ada", state=state), cookie)
        assert reply.status == 303, state
        value = set_cookies(reply)[STATE_COOKIE]
        cookie = f"{STATE_COOKIE}={value}" if value else ""
    assert cookie == ""


async def test_a_query_token_on_a_docs_url_is_bound_too(start: Start) -> None:
    client, _ = await start(**BOUND)
    state, value = await start_login(client)
    for token in (signed("ada"), signed("ada", state="other")):
        reply = await exchange(port_of(client), raw_request(
            f"/guide?jwt_token={token}", headers=[("Cookie", f"{STATE_COOKIE}={value}")]))
        assert refused(reply)
    reply = await exchange(port_of(client), raw_request(
        f"/guide?jwt_token={signed('ada', state=state)}",
        headers=[("Cookie", f"{STATE_COOKIE}={value}")]))
    assert reply.status == 303 and reply.header("Location") == "/guide"


async def test_the_chooser_page_sends_the_same_state_to_every_login_url(start: Start) -> None:
    urls = [{"name": "One", "url": "https://one.example/login"},
            {"name": "Two", "url": "https://two.example/login"}]
    client, _ = await start(handshake={"method": "jwt", "jwt": {
        **BOUND["handshake"]["jwt"], "login_urls": urls}})
    reply = await exchange(port_of(client), raw_request("/_gateway/login?redirect=/guide"))
    assert reply.status == 200 and STATE_COOKIE in set_cookies(reply)
    states = re.findall(r"[?&;]state=([A-Za-z0-9_-]+)", reply.body.decode())
    assert len(states) == 2 and len(set(states)) == 1


@pytest.mark.parametrize(("public_url", "name", "path"), [
    ("https://docs.test", f"__Host-{STATE_COOKIE}", "/"),
    ("https://docs.test/docs", STATE_COOKIE, "/docs"),
    ("http://docs.test", STATE_COOKIE, "/"),
])
async def test_the_state_cookie_is_written_like_the_gateways_other_cookies(
        start: Start, public_url: str, name: str, path: str) -> None:
    client, _ = await start(server={"listen": "127.0.0.1:0", "public_url": public_url},
                            **BOUND)
    base = urlsplit(public_url).path
    reply = await exchange(port_of(client), raw_request(f"{base}/_gateway/login"))
    line = next(c for c in reply.all("Set-Cookie") if c.startswith(name + "="))
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in line.split(";")}
    assert attributes["path"] == f"Path={path}"
    assert "httponly" in attributes and attributes["max-age"] == "Max-Age=600"
    assert ("secure" in attributes) == public_url.startswith("https")


def test_bind_state_must_be_a_boolean() -> None:
    data: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "public_url": ORIGIN},
        "upstream": {"url": "http://127.0.0.1:9"}, "session": {"secrets": [SECRET]},
        "handshake": {"jwt": {"secret": HS_SECRET, "bind_state": "yes", "login_urls": [
            {"name": "Dashboard", "url": "https://dash.example.com/docs-login"}]}}}
    with pytest.raises(ConfigError) as caught:
        build_config(data, env={})
    assert caught.value.problems == [
        "handshake.jwt.bind_state: must be true or false, not the string 'yes'"]


async def test_a_hand_signed_token_logs_in_with_the_state_from_the_login_url(
        start: Start, tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = tmp_path / "login.pem", tmp_path / "login.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    client, _ = await start(handshake={"method": "jwt", "jwt": {
        "public_keys": [str(public)], "require_host": False, "bind_state": True,
        "login_urls": [{"name": "Dashboard", "url": "https://dash.example.com/docs-login"}]}})
    state, value = await start_login(client)
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    made = subprocess.run([sys.executable, "-m", "gateway", "token", "--key", str(private),
                           "--sub", "ada", "--ttl", "60s", "--state", state],
                          capture_output=True, text=True, timeout=60, env=environ, check=True)
    token = made.stdout.strip()
    assert jwt.decode(token, options={"verify_signature": False})["state"] == state
    reply = await callback(client, token, f"{STATE_COOKIE}={value}")
    assert reply.status == 303
    assert await who(client, f"{SESSION}={set_cookies(reply)[SESSION]}") == (200, "ada")
