"""Open redirect on every route that takes a return path.

From the advisories: oauth2-proxy's ``rd=//evil`` and ``rd=/\\evil`` (GHSA-qqxw-m5fj-f7gv),
its ``state`` carrying ``//evil`` back from the provider, tab and newline tricks around
"//" that browsers drop, and lookalike hosts. Whatever the value, the browser is sent to
a relative path on the docs origin (or to the configured login URL carrying one).
"""

from __future__ import annotations

import html
import re
import time
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urljoin, urlsplit

import jwt
import pytest

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
from tests.authserver import TestIdP
from tests.helpers import HS_SECRET, GatewayFactory, make_user, session_cookies
from tests.test_oauth import Browser
from tests.test_oauth import idp as idp  # the real Authlib server fixture

LOGIN_URL = "https://dash.example.com/docs-login"
ORIGIN = "http://docs.test"

PAYLOADS = [
    # protocol-relative and slash runs
    "//evil.example", "//evil.example/%2e%2e", "///evil.example", "////evil.example/x",
    # backslashes (browsers read "\" as "/")
    "/\\evil.example", "\\\\evil.example", "/\\/evil.example", "\\/evil.example",
    "//evil.example\\@docs.test",
    # encoded slashes and backslashes, once and twice
    "/%2f%2fevil.example", "/%2F/evil.example", "%2f%2fevil.example", "/%5cevil.example",
    "/%5C%5Cevil.example", "/%252f%252fevil.example", "/%25252f%25252fevil.example",
    # whitespace and controls that browsers strip before reading "//"
    "/\t/evil.example", "/%09/evil.example", "/\n/evil.example", "/%0a/evil.example",
    " //evil.example", "\t//evil.example", "%20//evil.example", "/\x00//evil.example",
    # header injection
    "/%0d%0aSet-Cookie:%20docs_session=x", "/\r\nLocation: https://evil.example",
    # schemes
    "https://evil.example", "https:evil.example", "http:/evil.example",
    "javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<script>alert(1)</script>",
    # userinfo and lookalike hosts
    "http://docs.test@evil.example", "//docs.test@evil.example",
    "https://docs.test.evil.example/", "//docs.test.evil.example", "//evil\u3002example",
    "https://evil.example/docs.test",
    # dot segments that resolve to "//"
    "/..//evil.example", "/.//evil.example", "/%2e%2e//evil.example",
    # oversize
    "/" + "a" * 5000,
]


def assert_on_docs(location: str) -> None:
    """A single-slash relative path that stays on the docs origin however it is read."""
    assert all(0x21 <= ord(ch) <= 0x7E for ch in location), repr(location)
    assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
    assert "\\" not in location
    joined = urlsplit(urljoin(ORIGIN + "/base/page", location))
    assert (joined.scheme, joined.netloc) == ("http", "docs.test"), location
    layer = location
    for _ in range(4):
        layer = unquote(layer)
        assert not layer.startswith("//") and "\\" not in layer[:2], location


def query_param(url: str, name: str) -> str:
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get(name, [])
    assert len(values) == 1, url
    return values[0]


def with_redirect(path: str, value: str) -> str:
    return f"{path}?redirect={quote(value, safe='')}"


def token() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "ada", "exp": now + 30, "iat": now}, HS_SECRET, algorithm="HS256")


async def send(client: Client, target: str, **options: Any) -> Reply:
    return await exchange(port_of(client), raw_request(target, **options))


@pytest.mark.parametrize("value", PAYLOADS)
async def test_login(start: Start, value: str) -> None:
    client, _ = await start()
    reply = await send(client, with_redirect("/_gateway/login", value))
    assert reply.status == 302
    location = reply.header("Location") or ""
    assert location.startswith(LOGIN_URL + "?")
    assert_on_docs(query_param(location, "redirect"))


@pytest.mark.parametrize("value", PAYLOADS)
async def test_mintlify_login(start: Start, value: str) -> None:
    client, _ = await start(server={"listen": "127.0.0.1:0", "public_url": ORIGIN,
                                    "compat": ["mintlify"]})
    reply = await send(client, with_redirect("/login", value))
    assert reply.status == 302
    assert_on_docs(query_param(reply.header("Location") or "", "redirect"))


@pytest.mark.parametrize("value", PAYLOADS)
async def test_logout_get(start: Start, value: str) -> None:
    client, _ = await start()
    reply = await send(client, with_redirect("/_gateway/logout", value),
                       headers=[("Sec-Fetch-Site", "same-origin")])
    assert reply.status == 303
    assert_on_docs(reply.header("Location") or "")


@pytest.mark.parametrize("value", PAYLOADS)
async def test_logout_post(start: Start, value: str) -> None:
    client, _ = await start()
    cookie = cookie_header(await session_cookies(app_of(client), make_user("ada")))
    reply = await send(client, "/_gateway/logout", method="POST",
                       body=urlencode({"redirect": value}).encode(), headers=[
                           ("Content-Type", "application/x-www-form-urlencoded"),
                           ("Cookie", cookie)])
    assert reply.status == 303
    assert_on_docs(reply.header("Location") or "")


@pytest.mark.parametrize("value", PAYLOADS)
async def test_jwt_callback_post(start: Start, value: str) -> None:
    client, _ = await start()
    reply = await send(client, with_redirect("/_gateway/jwt-callback", value), method="POST",
                       body=urlencode({"token": token(), "redirect": value}).encode(),
                       headers=[("Content-Type", "application/x-www-form-urlencoded")])
    assert reply.status == 303
    assert_on_docs(reply.header("Location") or "")


@pytest.mark.parametrize("value", PAYLOADS)
async def test_jwt_callback_page(start: Start, value: str) -> None:
    # The page's form posts the redirect back; what it holds must already be safe.
    client, _ = await start()
    reply = await send(client, with_redirect("/_gateway/jwt-callback", value))
    assert reply.status == 200
    page = reply.body.decode()
    match = re.search(r'name="redirect" value="([^"]*)"', page)
    assert match is not None
    assert_on_docs(html.unescape(match.group(1)))
    for href in re.findall(r'href="([^"]*)"', page):
        link = html.unescape(href)
        assert link.startswith("/_gateway/login?")
        assert_on_docs(query_param(link, "redirect"))


@pytest.mark.parametrize("value", PAYLOADS)
async def test_shared_session_login_sends_an_absolute_docs_url(start: Start,
                                                                value: str) -> None:
    client, _ = await start(handshake={"method": "shared_session", "shared_session": {
        "info_api_url": "http://127.0.0.1:9/api/user", "cookies": ["session"],
        "login_url": "https://dash.example.com/login"}})
    reply = await send(client, with_redirect("/_gateway/login", value))
    assert reply.status == 302
    location = reply.header("Location") or ""
    assert location.startswith("https://dash.example.com/login?")
    target = query_param(location, "redirect")
    assert target.startswith(ORIGIN + "/")
    assert_on_docs(target[len(ORIGIN):])


@pytest.mark.parametrize("anchor", ["x\r\nSet-Cookie: a=b", "/\\evil.example", "a b",
                                    "#x", "%0d%0a", "x" * 200])
async def test_jwt_callback_anchor_cannot_carry_anything(start: Start, anchor: str) -> None:
    client, _ = await start()
    reply = await send(client, "/_gateway/jwt-callback", method="POST",
                       body=urlencode({"token": token(), "redirect": "/guide",
                                       "anchor": anchor}).encode(),
                       headers=[("Content-Type", "application/x-www-form-urlencoded")])
    assert reply.status == 303
    assert reply.header("Location") == "/guide"


@pytest.mark.parametrize(("target", "status"), [
    ("//evil.example/x", 302),
    ("///evil.example", 302),
    ("/%2f%2fevil.example", 400),
    ("/\\evil.example", 400),
])
async def test_the_login_redirect_of_a_protected_page_stays_relative(start: Start, target: str,
                                                                     status: int) -> None:
    client, _ = await start()
    reply = await send(client, target, headers=[("Accept", "text/html")])
    assert reply.status == status
    if status == 302:
        location = reply.header("Location") or ""
        assert location.startswith("/_gateway/login?redirect=")
        assert_on_docs(unquote(location.split("=", 1)[1]))


# -- the OAuth saved path: chosen at login, used after the provider's round trip -------


@pytest.mark.parametrize("value", PAYLOADS)
async def test_oauth_saved_path(gateway: GatewayFactory, idp: TestIdP, value: str) -> None:
    browser = Browser(await gateway(handshake={"method": "oauth", "oauth": {
        "issuer": idp.issuer, "client_id": "docs"}}))
    try:
        hop = await browser.get(await browser.authorize(await browser.start(value)))
    finally:
        await browser.close()
    assert hop.status == 303
    assert_on_docs(hop.location or "")
