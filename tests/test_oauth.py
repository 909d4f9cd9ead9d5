"""The OAuth 2.0 / OIDC handshake against a real Authlib authorization server on loopback.

The "browser" is an aiohttp client that follows redirects by hand: gateway URLs
(``http://docs.test/...``) go to the gateway's test client, everything else to the IdP.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import jwt
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway.errors import HandshakeFailed
from gateway.handshakes import oauth_flow as flow
from gateway.services import GATEWAY
from gateway.sessions.base import CookieJar
from tests.authserver import TestIdP
from tests.helpers import GatewayFactory, header_map

PUBLIC = "http://docs.test"
REDIRECT_URI = PUBLIC + "/_gateway/callback"
HTML = {"Accept": "text/html,application/xhtml+xml"}


@dataclass
class Hop:
    """One response the browser saw."""

    status: int
    location: str | None
    body: bytes
    headers: Any


class Browser:
    """Follows redirects by hand between the gateway and the IdP, keeping cookies."""

    def __init__(self, gateway: TestClient[Any, Any]) -> None:
        self.gateway = gateway
        self.idp = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, url: str, **kwargs: Any) -> Hop:
        if url.startswith(PUBLIC) or url.startswith("/"):
            path = url[len(PUBLIC):] if url.startswith(PUBLIC) else url
            response = await self.gateway.get(path, allow_redirects=False, **kwargs)
        else:
            response = await self.idp.get(url, allow_redirects=False, **kwargs)
        async with response:
            return Hop(response.status, response.headers.get("Location"), await response.read(),
                       response.headers)

    async def start(self, path: str = "/guide") -> str:
        """Start a login: the URL of the IdP's authorization endpoint it redirects to."""
        hop = await self.get(f"/_gateway/login?{urlencode({'redirect': path})}")
        assert hop.status == 302, hop.body
        assert hop.location is not None
        return hop.location

    async def authorize(self, authorize_url: str) -> str:
        """Visit the IdP (it auto-approves): the callback URL it sends the browser to."""
        hop = await self.get(authorize_url)
        assert hop.status == 302, hop.body
        assert hop.location is not None and hop.location.startswith(REDIRECT_URI), hop.location
        return hop.location

    async def login(self, path: str = "/guide") -> Hop:
        """A whole login; the callback's response."""
        return await self.get(await self.authorize(await self.start(path)))

    def cookies(self) -> dict[str, str]:
        return {c.key: c.value for c in self.gateway.session.cookie_jar}

    async def close(self) -> None:
        await self.idp.close()


Start = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def idp(aiohttp_server: Any) -> AsyncIterator[TestIdP]:
    server = TestIdP()
    running = await aiohttp_server(server.app())
    server.issuer = str(running.make_url("")).rstrip("/")
    server.add_client("docs", REDIRECT_URI)
    server.login_as("ada", email="ada@example.com", name="Ada")
    yield server
    server.release()


@pytest.fixture
async def browsers() -> AsyncIterator[list[Browser]]:
    made: list[Browser] = []
    yield made
    for browser in made:
        await browser.close()


@pytest.fixture
def gateway(gateway: GatewayFactory, idp: TestIdP, browsers: list[Browser]) -> Start:
    """A browser on a gateway in front of the echo upstream, logging in at ``idp``."""

    async def start(session: dict[str, Any] | None = None, server: dict[str, Any] | None = None,
                    **oauth: Any) -> Browser:
        settings = {"issuer": idp.issuer, "client_id": "docs", **oauth}
        sections: dict[str, Any] = {"handshake": {"method": "oauth", "oauth": settings},
                                    "access": {"public": [], "rules": [
                                        {"path": "/admin/**", "groups": ["admin"]}]}}
        if session:
            sections["session"] = session
        if server:
            sections["server"] = server
        browser = Browser(await gateway(**sections))
        browsers.append(browser)
        return browser

    return start


async def assertion(browser: Browser, path: str = "/guide") -> dict[str, Any]:
    """The verified assertion the upstream received for a docs request."""
    hop = await browser.get(path)
    assert hop.status == 200, hop.body
    token = header_map(json.loads(hop.body))["x-gateway-assertion"][0]
    keys = jwt.PyJWKSet.from_json((await browser.get("/_gateway/jwks.json")).body.decode())
    key = next(k for k in keys.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=[key.algorithm_name],
                                        options={"verify_aud": False})
    return claims


async def me(browser: Browser) -> tuple[int, Any]:
    hop = await browser.get("/_gateway/user")
    return hop.status, json.loads(hop.body)


async def make_stale(browser: Browser) -> None:
    """Age the browser's session past refresh_interval (as if time had passed)."""
    gw = browser.gateway.app[GATEWAY]
    cookies = browser.cookies()
    session = (await gw.store.load(cookies)).session
    assert session is not None
    jar = CookieJar()
    await gw.store.save(replace(session, refreshed_at=session.refreshed_at - 3600), cookies, jar)
    browser.gateway.session.cookie_jar.update_cookies(
        {name: value for name, (value, _) in jar.sets.items()},
        response_url=URL(str(browser.gateway.make_url("/"))))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    params = query_of(url)
    params.update(changes)
    return url.split("?")[0] + "?" + urlencode(params)


# -- logging in ----------------------------------------------------------------------


async def test_public_client_login_ends_on_saved_path_with_assertion(gateway: Start,
                                                                     idp: TestIdP) -> None:
    browser = await gateway()
    authorize_url = await browser.start("/guide/intro?tab=2")
    sent = query_of(authorize_url)
    assert authorize_url.startswith(idp.issuer + "/authorize?")
    assert sent["redirect_uri"] == REDIRECT_URI
    assert sent["response_type"] == "code" and sent["client_id"] == "docs"
    assert sent["code_challenge_method"] == "S256" and len(sent["code_challenge"]) == 43
    assert sent["nonce"] and sent["state"] and sent["scope"] == "openid email"
    hop = await browser.get(await browser.authorize(authorize_url))
    assert hop.status == 303
    assert hop.location == "/guide/intro?tab=2"
    exchange = idp.token_requests[-1]
    assert exchange["client_id"] == "docs" and len(exchange["code_verifier"]) >= 43
    assert "Authorization" not in idp.token_headers[-1]
    claims = await assertion(browser, hop.location)
    assert claims["sub"] == "ada"
    assert claims["content"]["email"] == "ada@example.com"
    assert claims["method"] == "oauth"
    # The login-state cookie is used up; only the session remains.
    assert [name for name in browser.cookies() if "_state_" in name] == []


@pytest.mark.parametrize("token_auth", ["client_secret_basic", "client_secret_post"])
async def test_confidential_client_login(gateway: Start, idp: TestIdP, token_auth: str) -> None:
    idp.add_client("docs-private", REDIRECT_URI, "s3cret:&=", token_auth)
    browser = await gateway(client_id="docs-private", client_secret="s3cret:&=",
                            token_auth=token_auth)
    hop = await browser.login("/guide")
    assert hop.status == 303 and hop.location == "/guide"
    form, headers = idp.token_requests[-1], idp.token_headers[-1]
    if token_auth == "client_secret_basic":
        user, _, password = base64.b64decode(headers["Authorization"][6:]).decode().partition(":")
        assert (user, password) == ("docs-private", "s3cret%3A%26%3D")
        assert "client_secret" not in form
    else:
        assert form["client_secret"] == "s3cret:&=" and "Authorization" not in headers
    assert (await assertion(browser))["sub"] == "ada"


async def test_user_object_comes_from_info_api(gateway: Start, idp: TestIdP) -> None:
    idp.users["ada"].info = {"sub": "ada", "groups": ["admin"], "content": {"plan": "pro"},
                             "apiPlaygroundInputs": {"header": {"X-Key": "k"}}}
    browser = await gateway(info_api_url=idp.issuer + "/userinfo")
    assert (await browser.login()).status == 303
    status, user = await me(browser)
    assert status == 200
    assert user["groups"] == ["admin"] and user["content"] == {"plan": "pro"}
    assert (await browser.get("/admin/page")).status == 200


@pytest.mark.parametrize(("claim", "groups"), [("eng, docs ,,admin", ["eng", "docs", "admin"]),
                                                (["eng", "admin"], ["eng", "admin"])])
async def test_groups_from_id_token_claim(gateway: Start, idp: TestIdP, claim: Any,
                                          groups: list[str]) -> None:
    idp.login_as("ada", roles=claim)
    browser = await gateway(groups_from={"source": "id_token", "claim": "roles"})
    assert (await browser.login()).status == 303
    _, user = await me(browser)
    assert user["groups"] == groups
    assert "roles" not in user["content"]


async def test_groups_from_jwt_access_token(gateway: Start, idp: TestIdP) -> None:
    idp.jwt_access_tokens = True
    idp.login_as("ada", team="beta|admin")
    browser = await gateway(groups_from={"source": "access_token", "claim": "team",
                                         "delimiter": "|"})
    assert (await browser.login()).status == 303
    assert (await me(browser))[1]["groups"] == ["beta", "admin"]


async def test_two_tabs_log_in_at_once(gateway: Start) -> None:
    browser = await gateway()
    first = await browser.authorize(await browser.start("/one"))
    second = await browser.authorize(await browser.start("/two"))
    assert len([n for n in browser.cookies() if "_state_" in n]) == 2
    assert (await browser.get(second)).location == "/two"
    assert (await browser.get(first)).location == "/one"
    assert (await assertion(browser))["sub"] == "ada"


async def test_state_cookie_is_private_to_the_callback(gateway: Start) -> None:
    browser = await gateway(server={"public_url": "https://docs.test"})
    response = await browser.gateway.get("/_gateway/login?redirect=/guide",
                                         allow_redirects=False)
    assert response.status == 302
    assert query_of(response.headers["Location"])["redirect_uri"] == \
        "https://docs.test/_gateway/callback"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Secure-docs_session_state_")
    for attribute in ("Secure", "HttpOnly", "Path=/_gateway", "SameSite=Lax", "Max-Age=600"):
        assert attribute in cookie
    assert query_of(response.headers["Location"])["state"] not in cookie


async def test_redirect_uri_ignores_spoofed_host(gateway: Start) -> None:
    browser = await gateway()
    hop = await browser.get("/_gateway/login?redirect=/x", headers={
        "Host": "evil.example", "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https"})
    assert query_of(hop.location or "")["redirect_uri"] == REDIRECT_URI


async def test_mintlify_compat_callback_names_work(gateway: Start) -> None:
    browser = await gateway(server={"compat": ["mintlify"]})
    callback = await browser.authorize(await browser.start("/guide"))
    hop = await browser.get(callback.replace("/_gateway/callback", "/login/callback/oauth"))
    assert hop.status == 303 and hop.location == "/guide"


async def test_explicit_urls_work_without_discovery(gateway: Start, idp: TestIdP) -> None:
    browser = await gateway(issuer=None, authorization_url=idp.issuer + "/authorize",
                            token_url=idp.issuer + "/token", jwks_url=idp.issuer + "/jwks")
    assert (await browser.login()).status == 303
    assert (await assertion(browser))["sub"] == "ada"


async def test_gateway_starts_while_provider_is_down(gateway: Start, idp: TestIdP) -> None:
    idp.faults.discovery_down = True
    browser = await gateway()
    hop = await browser.get("/_gateway/login?redirect=/guide")
    assert hop.status == 503
    assert b"idp_unavailable" in hop.body
    idp.faults.discovery_down = False
    assert (await browser.login()).status == 303


# -- refusing bad answers ------------------------------------------------------------


async def test_tampered_state_is_refused(gateway: Start) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    attempt = query_of(callback)["state"].split(".")[0]
    hop = await browser.get(with_query(callback, state=attempt + ".forged"))
    assert hop.status == 400 and b"state_mismatch" in hop.body
    hop = await browser.get(with_query(callback, state="other.forged"))
    assert hop.status == 400 and b"state_mismatch" in hop.body
    assert (await me(browser))[0] == 401


async def test_replayed_callback_is_refused(gateway: Start) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    state_cookies = {k: v for k, v in browser.cookies().items() if "_state_" in k}
    assert (await browser.get(callback)).status == 303
    hop = await browser.get(callback)
    assert hop.status == 400 and b"state_mismatch" in hop.body
    # Even with a copy of the state cookie, the state is used up.
    browser.gateway.session.cookie_jar.update_cookies(
        state_cookies, response_url=URL(str(browser.gateway.make_url("/_gateway/"))))
    hop = await browser.get(callback)
    assert hop.status == 400 and b"state_mismatch" in hop.body


@pytest.mark.parametrize("mode", ["omit", "forge"])
async def test_missing_or_forged_iss_is_refused(gateway: Start, idp: TestIdP, mode: str) -> None:
    browser = await gateway()
    idp.faults.iss = mode
    hop = await browser.login()
    assert hop.status == 400 and b"iss_mismatch" in hop.body
    assert idp.grants("authorization_code") == 0
    assert (await me(browser))[0] == 401


async def test_missing_iss_is_accepted_when_not_announced(gateway: Start, idp: TestIdP) -> None:
    idp.announce_iss = False
    idp.faults.iss = "omit"
    browser = await gateway()
    assert (await browser.login()).status == 303


async def test_replayed_code_is_refused(gateway: Start, idp: TestIdP) -> None:
    browser = await gateway()
    first = await browser.authorize(await browser.start())
    second = await browser.authorize(await browser.start())
    assert (await browser.get(first)).status == 303
    hop = await browser.get(with_query(second, code=query_of(first)["code"]))
    assert hop.status == 400 and b"token_error" in hop.body


async def test_code_from_another_attempt_fails_pkce(gateway: Start) -> None:
    browser = await gateway()
    first = await browser.authorize(await browser.start())
    second = await browser.authorize(await browser.start())
    hop = await browser.get(with_query(second, code=query_of(first)["code"]))
    assert hop.status == 400 and b"token_error" in hop.body
    assert (await me(browser))[0] == 401


async def test_declined_login_shows_a_way_to_retry(gateway: Start, idp: TestIdP) -> None:
    browser = await gateway()
    idp.faults.deny = True
    authorize = await browser.start("/guide")
    callback = (await browser.get(authorize)).location or ""
    hop = await browser.get(callback, headers=HTML)
    assert hop.status == 400
    page = hop.body.decode()
    assert "declined" in page and "access_denied" in page
    assert 'href="/_gateway/login?redirect=/guide"' in page


@pytest.mark.parametrize(("fault", "status", "code"), [
    ({"token_status": 400}, 400, "token_error"),
    ({"token_status": 500}, 502, "token_error"),
    ({"token_hang": True}, 504, "token_error"),
])
async def test_token_endpoint_failures(gateway: Start, idp: TestIdP, fault: dict[str, Any],
                                       status: int, code: str) -> None:
    browser = await gateway(timeout="300ms")
    callback = await browser.authorize(await browser.start())
    idp.faults = replace(idp.faults, **fault)
    hop = await browser.get(callback)
    assert hop.status == status
    assert json.loads(hop.body)["error"] == code
    assert "token endpoint" in json.loads(hop.body)["message"]
    assert (await me(browser))[0] == 401


@pytest.mark.parametrize("fault", ["bad_signature", "wrong_aud", "wrong_nonce", "expired"])
async def test_bad_id_token_is_refused(gateway: Start, idp: TestIdP, fault: str) -> None:
    browser = await gateway()
    idp.faults.id_token = fault
    hop = await browser.login()
    assert hop.status == 400 and b"id_token_invalid" in hop.body
    assert (await me(browser))[0] == 401


@pytest.mark.parametrize(("fault", "status"), [(401, 400), (500, 502), ("garbage", 502)])
async def test_info_api_failures(gateway: Start, idp: TestIdP, fault: Any, status: int) -> None:
    browser = await gateway(info_api_url=idp.issuer + "/userinfo")
    idp.faults.userinfo = fault
    hop = await browser.login()
    assert hop.status == status and b"info_api_error" in hop.body
    assert (await me(browser))[0] == 401


# -- refresh -------------------------------------------------------------------------


async def test_refresh_picks_up_changed_groups(gateway: Start, idp: TestIdP) -> None:
    idp.login_as("ada", groups=["beta"])
    browser = await gateway(info_api_url=idp.issuer + "/userinfo")
    assert (await browser.login()).status == 303
    assert (await browser.get("/admin/x")).status == 404
    idp.users["ada"].claims["groups"] = ["admin"]
    assert (await me(browser))[1]["groups"] == ["beta"]  # not due yet
    await make_stale(browser)
    assert (await me(browser))[1]["groups"] == ["admin"]
    assert idp.grants("refresh_token") == 1
    assert (await browser.get("/admin/x")).status == 200
    assert idp.grants("refresh_token") == 1  # the refreshed session is fresh again


async def test_refresh_reads_groups_from_new_id_token(gateway: Start, idp: TestIdP) -> None:
    idp.login_as("ada", groups=["beta"])
    browser = await gateway(groups_from={"source": "id_token", "claim": "groups"})
    assert (await browser.login()).status == 303
    idp.users["ada"].claims["groups"] = ["admin"]
    await make_stale(browser)
    assert (await me(browser))[1]["groups"] == ["admin"]


async def test_concurrent_requests_refresh_once(gateway: Start, idp: TestIdP) -> None:
    browser = await gateway(info_api_url=idp.issuer + "/userinfo")
    assert (await browser.login()).status == 303
    await make_stale(browser)
    results = await asyncio.gather(*(me(browser) for _ in range(4)))
    assert [status for status, _ in results] == [200] * 4
    assert idp.grants("refresh_token") == 1


async def test_fatal_refresh_error_logs_out(gateway: Start, idp: TestIdP) -> None:
    browser = await gateway(info_api_url=idp.issuer + "/userinfo")
    assert (await browser.login()).status == 303
    idp.faults.refresh = "invalid_grant"
    await make_stale(browser)
    hop = await browser.get("/_gateway/user")
    assert hop.status == 401
    assert "docs_session" not in browser.cookies()
    assert (await browser.get("/guide")).status == 401


async def test_transient_refresh_error_keeps_session(gateway: Start, idp: TestIdP) -> None:
    idp.login_as("ada", groups=["beta"])
    browser = await gateway(info_api_url=idp.issuer + "/userinfo")
    assert (await browser.login()).status == 303
    idp.faults.refresh = "500"
    await make_stale(browser)
    status, user = await me(browser)
    assert status == 200 and user["groups"] == ["beta"]
    assert (await browser.get("/guide")).status == 200


async def test_refresh_with_redis_store(gateway: Start, idp: TestIdP, redis_server: Any) -> None:
    idp.login_as("ada", groups=["beta"])
    browser = await gateway(session={"store": "redis", "redis_url": redis_server.url},
                            info_api_url=idp.issuer + "/userinfo")
    assert (await browser.login()).status == 303
    idp.users["ada"].claims["groups"] = ["admin"]
    await make_stale(browser)
    results = await asyncio.gather(*(me(browser) for _ in range(3)))
    assert {tuple(user["groups"]) for _, user in results} == {("admin",)}
    assert idp.grants("refresh_token") == 1
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.keys("dg:lock:*") == []
    finally:
        await client.aclose()


# -- logout --------------------------------------------------------------------------


async def test_logout_goes_to_end_session_endpoint(gateway: Start, idp: TestIdP) -> None:
    browser = await gateway()
    assert (await browser.login()).status == 303
    hop = await browser.get("/_gateway/logout", headers={"Sec-Fetch-Site": "same-origin"})
    assert hop.status == 303
    assert hop.location is not None and hop.location.startswith(idp.issuer + "/logout?")
    params = query_of(hop.location)
    assert params["post_logout_redirect_uri"] == PUBLIC + "/"
    hint = jwt.decode(params["id_token_hint"], options={"verify_signature": False})
    assert hint["sub"] == "ada" and hint["aud"] == ["docs"]
    assert (await me(browser))[0] == 401


async def test_logout_url_is_used_exactly(gateway: Start) -> None:
    target = "https://login.example.com/bye?from=docs&x=%2F"
    browser = await gateway(logout_url=target)
    assert (await browser.login()).status == 303
    response = await browser.gateway.post("/_gateway/logout", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == target


# -- pure parts ----------------------------------------------------------------------


def test_groups_claim_rules() -> None:
    assert flow.groups_from_claim(" a ,b,, c ", ",") == ("a", "b", "c")
    assert flow.groups_from_claim(["a", "b c"], ",") == ("a", "b c")
    assert flow.groups_from_claim(None, ",") == ()
    with pytest.raises(HandshakeFailed, match="string"):
        flow.groups_from_claim({"a": 1}, ",")


def test_state_cookie_is_sealed_and_expires() -> None:
    codec = flow.StateCodec(["k" * 40], "docs_session")
    login = flow.new_login_state("/guide", with_nonce=True)
    name = codec.cookie_name(login.state)
    assert name is not None and name.startswith("docs_session_state_")
    value = codec.seal(login)
    assert codec.open(name, value).verifier == login.verifier
    assert login.verifier not in repr(login) and login.state not in repr(login)
    with pytest.raises(HandshakeFailed, match="expired"):
        codec.open(name, value, now=time.time() + 601)
    with pytest.raises(HandshakeFailed, match="does not match"):
        codec.open(name + "x", value)
