"""Cross-site requests that change who is logged in: logout CSRF.

A page on another site can make the reader's browser POST anywhere. Logging out must need
a request from a page of this site (the login callback's rule: ``Sec-Fetch-Site``, then
``Origin``).
The browser tests run a real Chromium between two origins of one site (two ports of
127.0.0.1, as a sibling app on the same domain would be), where ``SameSite=Lax`` cookies go
along with a form POST and only the gateway's own check stands.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from aiohttp import web

from gateway.app import build_app
from tests.attack import (
    Client,
    Recorder,
    Reply,
    Start,
    app_of,
    cookie_header,
    exchange,
    port_of,
    raw_request,
    recording_upstream,
)
from tests.attack import start as start  # the shared fixture
from tests.helpers import HS_SECRET, SECRET, make_config, make_user, runner_for, session_cookies

ORIGIN = "http://docs.test"
SESSION = "docs_session"


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
        aiohttp_server: Any, aiohttp_client: Any, redis_server: Any) -> None:
    upstream: Recorder = await recording_upstream(aiohttp_server)
    client: Client = await aiohttp_client(await build_app(make_config(
        upstream.url, server=compat(),
        session={"secrets": [SECRET], "store": "redis", "redis_url": redis_server.url})))
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
