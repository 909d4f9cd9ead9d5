"""Identity under attack: hostile user objects from every source, the shared-session cookie
allow-list, the assertion's sid, cross-site WebSockets, refreshes that change the subject,
planted OAuth state, list values in plain headers, and key material behind redirects.

Every case runs against real servers on loopback: the gateway, a recording upstream, an
Info API, and the Authlib authorization server of tests/authserver.py.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from joserfc import jwt as jose_jwt

from gateway.handshakes import oauth_flow as flow
from gateway.keys import public_jwk
from tests.attack import (
    Recorder,
    Reply,
    Start,
    exchange,
    port_of,
    raw_request,
    reader_cookie,
    recording_upstream,
)
from tests.attack import start as start  # the shared fixture
from tests.authserver import KID, SIGNING_KEY
from tests.helpers import HS_SECRET, Client, GatewayFactory, make_config, raw_http
from tests.test_attack_oauth import HostileIdP
from tests.test_attack_oauth import idp as idp  # the hostile provider fixture
from tests.test_oauth import Browser, make_stale, me

ASSERTION = "X-Gateway-Assertion"


def nested(depth: int, leaf: Any = "x") -> Any:
    """An object ``depth`` levels deep: {"a": {"a": ... leaf}}."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def error_of(reply: Reply) -> str:
    return str(json.loads(reply.body)["error"])


def assertions(upstream: Recorder) -> list[str]:
    """Every assertion the upstream received, in order."""
    return [value for seen in upstream.seen for value in seen.header(ASSERTION)]


# -- a hostile Info API -----------------------------------------------------------------


@dataclass
class InfoApi:
    """An Info API that answers whatever body it is given, and records each call."""

    body: bytes = b'{"sub": "ada"}'
    status: int = 200
    calls: int = 0
    cookie_headers: list[str] = field(default_factory=list)
    cookies: list[dict[str, str]] = field(default_factory=list)
    server: TestServer | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/user-info", self.answer)
        return app

    async def answer(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.cookie_headers.extend(request.headers.getall("Cookie", []))
        # How an Info API built on aiohttp reads the cookies it was sent.
        self.cookies.append(dict(request.cookies))
        return web.Response(status=self.status, body=self.body, content_type="application/json")

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/user-info"))


@pytest.fixture
async def info_api(aiohttp_server: Any) -> InfoApi:
    api = InfoApi()
    api.server = await aiohttp_server(api.app())
    return api


PUBLIC = {"public": ["/public/**"]}


@pytest.fixture
def shared(start: Start, info_api: InfoApi) -> Start:
    """The attack gateway with the shared-session handshake asking ``info_api`` (more
    settings as ``shared_session=``), only /public/** public unless ``access`` is given."""

    async def starter(**sections: Any) -> tuple[Client, Recorder]:
        settings = {"info_api_url": info_api.url, "cookies": ["session"],
                    "login_url": "https://dash.example.com/login", "timeout": "2s",
                    **sections.pop("shared_session", {})}
        sections.setdefault("access", PUBLIC)
        return await start(handshake={"method": "shared_session", "shared_session": settings},
                           **sections)

    return starter


@pytest.fixture
def jwt_gateway(start: Start) -> Start:
    """The attack gateway with the default JWT handshake, only /public/** public unless
    ``access`` is given."""
    return functools.partial(start, access=PUBLIC)


async def get(client: Client, path: str, cookie: str = "session=abc",
              headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return await exchange(port_of(client), raw_request(
        path, headers=(("Cookie", cookie), *headers) if cookie else headers))


# -- 1. user objects bounded in depth and size, from every source --------------------------

HOSTILE_USERS: dict[str, Any] = {
    "content nested 600 deep": {"sub": "ada", "content": nested(600)},
    "content nested just past the bound": {"sub": "ada", "content": nested(40)},
    "an extra field nested 600 deep": {"sub": "ada", "profile": nested(600)},
    "a playground input nested 600 deep": {
        "sub": "ada", "apiPlaygroundInputs": {"header": nested(600)}},
    "a list nested 600 deep in content": {"sub": "ada", "content": {"x": json.loads(
        "[" * 600 + "]" * 600)}},
}


@pytest.mark.parametrize("case", list(HOSTILE_USERS))
async def test_an_unacceptable_info_api_user_is_unavailable_and_negatively_cached(
        shared: Start, info_api: InfoApi, case: str) -> None:
    info_api.body = json.dumps(HOSTILE_USERS[case]).encode()
    client, upstream = await shared()
    for _ in range(3):
        reply = await get(client, "/guide")
        assert (reply.status, error_of(reply)) == (503, "info_api_unavailable"), reply.body
        public = await get(client, "/public/page")
        assert public.status == 200, public.body
    user = await get(client, "/_gateway/user")
    assert user.status == 503
    # One call: the refusal is remembered like any other failure.
    assert info_api.calls == 1
    assert assertions(upstream) == []


@pytest.mark.parametrize("body", [b'{"sub": "ada", "content": {"x": NaN}}',
                                  b'{"sub": "ada", "content": {"x": [Infinity]}}',
                                  b'{"sub": "ada", "plan": -Infinity}'])
async def test_numbers_json_cannot_carry_make_the_user_invalid(
        shared: Start, info_api: InfoApi, body: bytes) -> None:
    info_api.body = body
    client, upstream = await shared()
    reply = await get(client, "/guide")
    assert (reply.status, error_of(reply)) == (503, "info_api_unavailable"), reply.body
    assert assertions(upstream) == []


async def test_a_user_object_within_the_bounds_is_accepted(shared: Start,
                                                         info_api: InfoApi) -> None:
    info_api.body = json.dumps({"sub": "ada", "content": nested(20),
                                "notes": "n" * 20_000}).encode()
    client, upstream = await shared()
    assert (await get(client, "/guide")).status == 200
    assert len(assertions(upstream)) == 1


def _id_token_with(**extra: Any) -> Callable[[dict[str, Any]], str]:
    def build(claims: dict[str, Any]) -> str:
        return jose_jwt.encode({"alg": "RS256", "kid": KID}, {**claims, **extra}, SIGNING_KEY)
    return build



OAuthStart = Callable[..., Awaitable[tuple[Browser, Recorder]]]


@pytest.fixture
async def oauth(aiohttp_server: Any, gateway: GatewayFactory,
                idp: HostileIdP) -> AsyncIterator[OAuthStart]:
    """A browser on the shared gateway with the OAuth handshake at ``idp`` (more settings as
    keywords), in front of a recording upstream of its own, and that upstream."""
    made: list[Browser] = []

    async def start(server: dict[str, Any] | None = None, session: dict[str, Any] | None = None,
                    **settings: Any) -> tuple[Browser, Recorder]:
        upstream = await recording_upstream(aiohttp_server)
        sections: dict[str, Any] = {"handshake": {"method": "oauth", "oauth": {
            "issuer": idp.issuer, "client_id": "docs", **settings}}}
        if session is not None:
            sections["session"] = session
        if server is not None:
            sections["server"] = server
        browser = Browser(await gateway(upstream_url=upstream.url, **sections))
        made.append(browser)
        return browser, upstream

    yield start
    for browser in made:
        await browser.close()


@pytest.mark.parametrize("claim", [nested(600), nested(40), [nested(33)]])
async def test_an_id_token_claim_out_of_bounds_fails_the_login(
        oauth: OAuthStart, idp: HostileIdP, claim: Any) -> None:
    browser, _ = await oauth()
    idp.rewrite = _id_token_with(profile=claim)
    hop = await browser.get(await browser.authorize(await browser.start()))
    assert (hop.status, json.loads(hop.body)["error"]) == (400, "invalid_user"), hop.body
    assert (await browser.get("/_gateway/user")).status == 401


@pytest.mark.parametrize("answer", [{"sub": "ada", "content": nested(600)},
                                    {"sub": "ada", "groups": ["a"], "x": nested(40)}])
async def test_a_userinfo_answer_out_of_bounds_fails_the_login(
        oauth: OAuthStart, idp: HostileIdP, answer: Any) -> None:
    browser, _ = await oauth(info_api_url=idp.issuer + "/userinfo")
    idp.userinfo_body = json.dumps(answer).encode()
    hop = await browser.get(await browser.authorize(await browser.start()))
    assert (hop.status, json.loads(hop.body)["error"]) == (400, "invalid_user"), hop.body


async def test_a_user_object_built_from_two_sources_is_held_to_the_size_bound(
        oauth: OAuthStart, idp: HostileIdP, redis_server: Any) -> None:
    # Each answer is under the 1 MB read limit; together they are over the bound. Redis
    # keeps sessions of any size, so only the bound refuses this one.
    browser, _ = await oauth(info_api_url=idp.issuer + "/userinfo",
                             session={"store": "redis", "redis_url": redis_server.url},
                             groups_from={"source": "id_token", "claim": "groups"})
    idp.userinfo_body = json.dumps({"sub": "ada", "content": {"notes": "n" * 600_000}}).encode()
    idp.rewrite = _id_token_with(groups=["g" * 1000] * 600)
    hop = await browser.get(await browser.authorize(await browser.start()))
    assert (hop.status, json.loads(hop.body)["error"]) == (400, "invalid_user"), hop.body


@pytest.mark.parametrize("content", [nested(600), nested(40)])
async def test_a_login_token_out_of_bounds_is_refused(gateway: GatewayFactory,
                                                      content: Any) -> None:
    client = await gateway()
    now = int(time.time())
    token = jwt.encode({"sub": "ada", "exp": now + 60, "iat": now, "content": content},
                       HS_SECRET, algorithm="HS256")
    reply = await exchange(port_of(client), raw_request(
        "/_gateway/jwt-callback", method="POST", body=f"token={token}".encode(),
        headers=[("Content-Type", "application/x-www-form-urlencoded")]))
    assert (reply.status, error_of(reply)) == (400, "invalid_user"), reply.body
    assert not any(v.startswith("docs_session=") for v in reply.all("Set-Cookie"))


# -- 2. the shared-session cookie allow-list ---------------------------------------------

OWN = "Zm9v-bar_123.x"
COOKIE_SMUGGLING = {
    "a space": f"session={OWN} admin=1",
    "a comma and a space": f"session={OWN}, admin=1",
    "a comma": f"session={OWN},admin=1",
    "a tab": f"session={OWN}\tadmin=1",
    "a quote before the semicolon": f'session={OWN}"; admin=1',
    "a quoted value with a space": f'session="{OWN} admin=1"',
    "a backslash": f"session={OWN}\\ admin=1",
    "a second cookie in a second header": f"session={OWN} admin=1\r\nCookie: theme=dark",
}


def cookie_value_ok(value: str) -> bool:
    """RFC 6265's cookie-value: cookie-octets, optionally inside one pair of quotes."""
    inner = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return all(ch in COOKIE_OCTETS for ch in inner)


COOKIE_OCTETS = frozenset(chr(c) for c in range(0x21, 0x7F)) - set('",;\\')


@pytest.mark.parametrize("case", list(COOKIE_SMUGGLING))
async def test_a_cookie_cannot_ride_along_inside_a_forwarded_one(
        shared: Start, info_api: InfoApi, case: str) -> None:
    client, _ = await shared()
    reply = await get(client, "/public/page", cookie=COOKIE_SMUGGLING[case])
    assert reply.status == 200
    for header in info_api.cookie_headers:
        name, _, value = header.partition("=")
        assert name == "session" and cookie_value_ok(value), header
    # How an Info API built on Python's SimpleCookie reads them.
    for header in info_api.cookie_headers:
        parsed = SimpleCookie()
        parsed.load(header)
        assert set(parsed) <= {"session"}, header
    assert all(set(seen) <= {"session"} for seen in info_api.cookies), info_api.cookies


@pytest.mark.parametrize("cookie", [f"session={OWN}; admin=1", f"admin=1; session={OWN}",
                                    f'session="{OWN}"; theme=dark'])
async def test_only_the_configured_cookie_is_forwarded(shared: Start, info_api: InfoApi,
                                                       cookie: str) -> None:
    client, _ = await shared()
    assert (await get(client, "/guide", cookie=cookie)).status == 200
    assert len(info_api.cookie_headers) == 1
    assert info_api.cookie_headers[0] in (f"session={OWN}", f'session="{OWN}"')


# -- 3. sid names one session, or is not sent ------------------------------------------------


def claims_of(token: str) -> dict[str, Any]:
    """An assertion's claims (its signature is checked by test_identity.py)."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def test_a_shared_session_assertion_carries_no_sid(shared: Start,
                                                         info_api: InfoApi) -> None:
    client, upstream = await shared()
    # Two dashboard sessions of the same reader.
    for cookie in ("session=first", "session=second"):
        assert (await get(client, "/guide", cookie=cookie)).status == 200
    tokens = assertions(upstream)
    assert len(tokens) == 2
    for token in tokens:
        claims = claims_of(token)
        assert claims["sub"] == "ada" and claims["method"] == "shared_session"
        assert "sid" not in claims


async def test_each_gateway_session_has_its_own_sid(aiohttp_server: Any,
                                                    gateway: GatewayFactory) -> None:
    upstream = await recording_upstream(aiohttp_server)
    client = await gateway(upstream_url=upstream.url)
    cookies = []
    for index in range(2):
        now = int(time.time())
        token = jwt.encode({"sub": "ada", "exp": now + 60, "iat": now, "jti": f"login-{index}"},
                           HS_SECRET, algorithm="HS256")
        reply = await exchange(port_of(client), raw_request(
            "/_gateway/jwt-callback", method="POST", body=f"token={token}".encode(),
            headers=[("Content-Type", "application/x-www-form-urlencoded")]))
        assert reply.status == 303, reply.body
        cookies.append("; ".join(v.split(";")[0] for v in reply.all("Set-Cookie")
                                 if v.startswith("docs_session=")))
    for cookie in cookies:
        assert (await get(client, "/guide", cookie=cookie)).status == 200
    first, second = (claims_of(token) for token in assertions(upstream))
    assert first["sub"] == second["sub"] == "ada"
    assert first["sid"] != second["sid"]


# -- 4. cross-site WebSocket hijacking -----------------------------------------------------

UPGRADE = (("Upgrade", "websocket"), ("Connection", "Upgrade"),
           ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"))
CROSS_SITE_UPGRADES: dict[str, tuple[tuple[str, str], ...]] = {
    "another site": (("Origin", "https://evil.example"),),
    "a sibling subdomain": (("Origin", "http://evil.docs.test"),),
    "another scheme": (("Origin", "https://docs.test"),),
    "another port": (("Origin", "http://docs.test:8080"),),
    "an opaque origin": (("Origin", "null"),),
    "user info in the origin": (("Origin", "http://evil@docs.test"),),
    "fetch metadata says cross-site": (("Sec-Fetch-Site", "cross-site"),
                                       ("Origin", "http://docs.test")),
    "fetch metadata says same-site": (("Sec-Fetch-Site", "same-site"),),
    "fetch metadata only": (("Sec-Fetch-Site", "cross-site"),),
}


async def upgrade(client: Client, path: str, headers: tuple[tuple[str, str], ...]) -> Reply:
    """A WebSocket handshake; only the response head and a sized body are read."""
    status, head, body = await raw_http(port_of(client), raw_request(
        path, headers=(*UPGRADE, *headers)))
    return Reply(status, tuple(head.items()), body, b"")


@pytest.mark.parametrize("case", list(CROSS_SITE_UPGRADES))
@pytest.mark.parametrize("path", ["/ws", "/public/ws"])
async def test_a_cross_site_websocket_upgrade_is_refused(jwt_gateway: Start, case: str,
                                                         path: str) -> None:
    client, upstream = await jwt_gateway()
    cookie = await reader_cookie(client)
    reply = await upgrade(client, path, (("Cookie", cookie), *CROSS_SITE_UPGRADES[case]))
    assert (reply.status, error_of(reply)) == (403, "cross_site"), reply.body
    assert upstream.seen == []


async def test_a_cross_site_upgrade_from_a_browser_gets_a_page(jwt_gateway: Start) -> None:
    client, upstream = await jwt_gateway()
    reply = await upgrade(client, "/ws", (("Cookie", await reader_cookie(client)),
                                          ("Origin", "https://evil.example"),
                                          ("Accept", "text/html")))
    assert reply.status == 403 and b"<html" in reply.body.lower()
    assert upstream.seen == []


@pytest.mark.parametrize("headers", [(("Origin", "http://docs.test"),),
                                     (("Origin", "HTTP://DOCS.TEST:80"),),
                                     (("Sec-Fetch-Site", "same-origin"),
                                      ("Origin", "http://docs.test")),
                                     ()])
async def test_a_same_origin_or_non_browser_upgrade_is_proxied(
        jwt_gateway: Start, headers: tuple[tuple[str, str], ...]) -> None:
    client, upstream = await jwt_gateway()
    cookie = await reader_cookie(client)
    async with client.ws_connect("/ws", headers={"Cookie": cookie, **dict(headers)}) as ws:
        await ws.send_str("hello")
        message = await ws.receive(timeout=5)
    assert message.data == "echo:hello"
    [seen] = upstream.seen
    assert claims_of(seen.header(ASSERTION)[0])["sub"] == "reader"


# -- 5. a refresh never changes who the session belongs to ---------------------------------


async def refreshed(browser: Browser) -> tuple[int, Any]:
    """Age the session past refresh_interval, then ask who the reader is."""
    await make_stale(browser)
    return await me(browser)


def mallory_id_token(claims: dict[str, Any]) -> str:
    return jose_jwt.encode({"alg": "RS256", "kid": KID}, {**claims, "sub": "mallory",
                                                          "groups": ["admin"]}, SIGNING_KEY)


@pytest.mark.parametrize("settings", [
    {"groups_from": {"source": "id_token", "claim": "groups"}},
    {"info_api_url": "{issuer}/userinfo"},
    {},
], ids=["user from the id_token", "user from the Info API", "user from the claims"])
async def test_a_refresh_id_token_naming_another_subject_ends_the_session(
        oauth: OAuthStart, idp: HostileIdP, settings: dict[str, Any]) -> None:
    if "info_api_url" in settings:
        settings = {"info_api_url": idp.issuer + "/userinfo"}
    browser, upstream = await oauth(**settings)
    assert (await browser.login()).status == 303
    assert (await me(browser))[1]["sub"] == "ada"
    idp.rewrite = mallory_id_token
    status, body = await refreshed(browser)
    assert (status, body) == (401, {"error": "unauthenticated"})
    assert idp.grants("refresh_token") == 1
    assert not any(name.endswith("docs_session") for name in browser.cookies())
    assert (await browser.get("/guide")).status == 401
    assert all(claims_of(token)["sub"] == "ada" for token in assertions(upstream))


async def test_a_refresh_info_api_answer_naming_another_subject_ends_the_session(
        oauth: OAuthStart, idp: HostileIdP) -> None:
    browser, upstream = await oauth(info_api_url=idp.issuer + "/userinfo", scopes=["email"])
    assert (await browser.login()).status == 303
    assert (await me(browser))[1]["sub"] == "ada"
    idp.userinfo_body = json.dumps({"sub": "mallory", "groups": ["admin"]}).encode()
    assert await refreshed(browser) == (401, {"error": "unauthenticated"})
    assert (await browser.get("/guide")).status == 401
    assert all(claims_of(token)["sub"] == "ada" for token in assertions(upstream))


async def test_a_refresh_for_the_same_subject_keeps_the_session(oauth: OAuthStart,
                                                                idp: HostileIdP) -> None:
    browser, _ = await oauth(groups_from={"source": "id_token", "claim": "groups"})
    assert (await browser.login()).status == 303
    idp.rewrite = _id_token_with(groups=["beta"])
    status, body = await refreshed(browser)
    assert status == 200 and body["sub"] == "ada" and body["groups"] == ["beta"]


# -- 6. OAuth login CSRF through a state cookie planted by a sibling host ------------------


@dataclass
class Started:
    """A login started in one browser and approved at the provider: what the callback needs."""

    callback: str
    cookies: dict[str, str]


def set_cookies(reply: Reply) -> dict[str, str]:
    """The cookies a response sets (name -> value), deletions left out."""
    jar: dict[str, str] = {}
    for line in reply.all("Set-Cookie"):
        name, _, rest = line.partition("=")
        value = rest.split(";", 1)[0]
        if value:
            jar[name] = value
    return jar


async def start_login(browser: Browser, cookie: str = "", base: str = "") -> Started:
    """Start a login with raw requests (the test client's jar keeps Secure cookies from an
    http socket) and let the provider approve it."""
    reply = await exchange(port_of(browser.gateway), raw_request(
        f"{base}/_gateway/login?redirect={base}/guide",
        headers=[("Cookie", cookie)] if cookie else []))
    assert reply.status == 302, reply.body
    location = reply.header("Location")
    assert location is not None
    async with browser.idp.get(location, allow_redirects=False) as response:
        callback = response.headers["Location"]
    return Started(callback, set_cookies(reply))


async def finish(browser: Browser, callback: str, cookies: dict[str, str]) -> Reply:
    path = callback.split("://", 1)[1].partition("/")[1:]
    return await exchange(port_of(browser.gateway), raw_request(
        "".join(path), headers=[("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))]))


def state_cookies(cookies: dict[str, str]) -> dict[str, str]:
    """Only the login-state cookies: what a sibling host can plant for the docs host."""
    return {name: value for name, value in cookies.items() if "_state_" in name}


@pytest.mark.parametrize("public_url", ["https://docs.test", "https://docs.test/docs"])
async def test_a_planted_state_cookie_does_not_log_the_victim_in(
        oauth: OAuthStart, idp: HostileIdP, public_url: str) -> None:
    idp.clients["docs"].redirect_uris.append(f"{public_url}/_gateway/callback")
    browser, _ = await oauth(server={"public_url": public_url})
    base = public_url.removeprefix("https://docs.test")
    attacker = await start_login(browser, base=base)
    # The victim never logged in here: the attacker's state cookie is all it holds.
    reply = await finish(browser, attacker.callback, state_cookies(attacker.cookies))
    assert (reply.status, error_of(reply)) == (400, "state_mismatch"), reply.body
    # Nor does it help that the victim started a login of its own: its binding differs.
    victim = await start_login(browser, base=base)
    planted = {**victim.cookies, **state_cookies(attacker.cookies)}
    reply = await finish(browser, attacker.callback, planted)
    assert (reply.status, error_of(reply)) == (400, "state_mismatch"), reply.body
    assert idp.grants("authorization_code") == 0
    # The victim's own login still completes.
    reply = await finish(browser, victim.callback, victim.cookies)
    assert reply.status == 303, reply.body


async def test_the_binding_cookie_is_host_only(oauth: OAuthStart, idp: HostileIdP) -> None:
    idp.clients["docs"].redirect_uris.append("https://docs.test/docs/_gateway/callback")
    browser, _ = await oauth(server={"public_url": "https://docs.test/docs"})
    reply = await exchange(port_of(browser.gateway), raw_request(
        "/docs/_gateway/login?redirect=/docs/guide"))
    [binding] = [line for line in reply.all("Set-Cookie") if line.startswith("__Host-")]
    attributes = {part.strip().split("=")[0].lower() for part in binding.split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite", "max-age"} <= attributes
    assert "domain" not in attributes and "Path=/;" in binding + ";"
    # Two tabs share one binding, and both logins complete.
    first = await start_login(browser, base="/docs")
    second = await start_login(browser, base="/docs", cookie="; ".join(
        f"{k}={v}" for k, v in first.cookies.items()))
    assert first.cookies.keys() & second.cookies.keys() == {"__Host-docs_session_login"}
    assert first.cookies["__Host-docs_session_login"] == \
        second.cookies["__Host-docs_session_login"]
    both = {**first.cookies, **second.cookies}
    assert (await finish(browser, second.callback, both)).status == 303
    assert (await finish(browser, first.callback, both)).status == 303


# -- 7. list values in plain identity headers ---------------------------------------------

AMBIGUOUS_GROUPS = [["reader,admin"], ["reader, admin"], ["reader", "x,admin"], [" admin"],
                    ["admin "], ["reader", "\tadmin"]]


async def jwt_login(client: Client, **payload: Any) -> Reply:
    now = int(time.time())
    token = jwt.encode({"sub": "ada", "exp": now + 60, "iat": now, **payload}, HS_SECRET,
                       algorithm="HS256")
    return await exchange(port_of(client), raw_request(
        "/_gateway/jwt-callback", method="POST", body=f"token={token}".encode(),
        headers=[("Content-Type", "application/x-www-form-urlencoded")]))


@pytest.mark.parametrize("groups", AMBIGUOUS_GROUPS)
async def test_a_group_name_a_header_list_cannot_carry_fails_the_login(
        jwt_gateway: Start, groups: list[str]) -> None:
    client, _ = await jwt_gateway(identity={"headers": {"X-Groups": "groups"}})
    reply = await jwt_login(client, groups=groups)
    assert (reply.status, error_of(reply)) == (400, "invalid_user"), reply.body


@pytest.mark.parametrize("groups", AMBIGUOUS_GROUPS[:3])
async def test_an_info_api_group_name_with_a_comma_is_an_invalid_user(
        shared: Start, info_api: InfoApi, groups: list[str]) -> None:
    info_api.body = json.dumps({"sub": "ada", "groups": groups}).encode()
    client, upstream = await shared(identity={"headers": {"X-Groups": "groups"}})
    reply = await get(client, "/guide")
    assert (reply.status, error_of(reply)) == (503, "info_api_unavailable"), reply.body
    assert upstream.seen == []


@pytest.mark.parametrize("claim", [["reader,admin"], "reader,admin;beta"])
async def test_an_id_token_group_name_with_a_comma_fails_the_login(
        oauth: OAuthStart, idp: HostileIdP, claim: Any) -> None:
    browser, _ = await oauth(groups_from={"source": "id_token", "claim": "groups",
                                          "delimiter": ";"})
    idp.rewrite = _id_token_with(groups=claim)
    hop = await browser.get(await browser.authorize(await browser.start()))
    assert (hop.status, json.loads(hop.body)["error"]) == (400, "invalid_user"), hop.body


async def test_a_list_that_cannot_be_joined_unambiguously_is_left_out(
        jwt_gateway: Start) -> None:
    client, upstream = await jwt_gateway(identity={"headers": {
        "X-Groups": "groups", "X-Tags": "content.tags", "X-Teams": "content.teams",
        "X-Ok": "content.ok"}})
    reply = await jwt_login(client, groups=["reader", "beta"], content={
        "tags": ["a,b"], "teams": ["red", " blue"], "ok": ["x", "y"]})
    assert reply.status == 303, reply.body
    cookie = "; ".join(v.split(";")[0] for v in reply.all("Set-Cookie"))
    assert (await get(client, "/guide", cookie=cookie)).status == 200
    [seen] = upstream.seen
    assert seen.header("X-Groups") == ["reader,beta"] and seen.header("X-Ok") == ["x,y"]
    assert seen.header("X-Tags") == [] and seen.header("X-Teams") == []


async def test_a_stored_group_name_with_a_comma_never_reaches_a_plain_header(
        jwt_gateway: Start) -> None:
    # A session stored before group names were checked at login.
    client, upstream = await jwt_gateway(identity={"headers": {"X-Groups": "groups"}})
    cookie = await reader_cookie(client, "reader,admin")
    assert (await get(client, "/guide", cookie=cookie)).status == 200
    [seen] = upstream.seen
    assert seen.header("X-Groups") == []


# -- 8. key material never comes from behind a redirect ------------------------------------

ATTACKER = ed25519.Ed25519PrivateKey.generate()
ATTACKER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class KeyHosts:
    """The JWKS URL the config names (it only redirects) and the attacker's key set."""

    redirector: TestServer
    attacker: TestServer

    def url(self, status: int, where: str = "elsewhere") -> str:
        return str(self.redirector.make_url(f"/jwks/{status}/{where}"))


@pytest.fixture
async def key_hosts(aiohttp_server: Any) -> KeyHosts:
    async def keys(request: web.Request) -> web.Response:
        return web.json_response({"keys": [
            {**public_jwk(ATTACKER.public_key(), "EdDSA"), "kid": "k1"},
            {**public_jwk(ATTACKER_RSA.public_key(), "RS256"), "kid": KID}]})

    attacker_app = web.Application()
    attacker_app.router.add_get("/keys", keys)
    attacker = await aiohttp_server(attacker_app)

    async def redirect(request: web.Request) -> web.Response:
        target = str(attacker.make_url("/keys")) if request.match_info["where"] == "elsewhere" \
            else "/keys"
        return web.Response(status=int(request.match_info["status"]),
                            headers={"Location": target})

    redirector_app = web.Application()
    redirector_app.router.add_get("/jwks/{status}/{where}", redirect)
    redirector_app.router.add_get("/keys", keys)
    return KeyHosts(await aiohttp_server(redirector_app), attacker)


REDIRECTS = [(301, "elsewhere"), (302, "elsewhere"), (303, "elsewhere"), (307, "elsewhere"),
             (308, "elsewhere"), (302, "same-host")]


@pytest.mark.parametrize(("status", "where"), REDIRECTS)
async def test_a_login_token_key_set_behind_a_redirect_is_not_used(
        gateway: GatewayFactory, key_hosts: KeyHosts, status: int, where: str) -> None:
    client = await gateway(handshake={"method": "jwt", "jwt": {
        "login_urls": [{"name": "Dashboard", "url": "https://dash.example.com/login"}],
        "jwks_url": key_hosts.url(status, where), "algorithms": ["EdDSA"],
        "require_host": False}})
    now = int(time.time())
    token = jwt.encode({"sub": "mallory", "exp": now + 60, "iat": now, "groups": ["admin"]},
                       ATTACKER, algorithm="EdDSA", headers={"kid": "k1"})
    reply = await exchange(port_of(client), raw_request(
        "/_gateway/jwt-callback", method="POST", body=f"token={token}".encode(),
        headers=[("Content-Type", "application/x-www-form-urlencoded")]))
    assert (reply.status, error_of(reply)) == (503, "unavailable"), reply.body
    assert not any(v.startswith("docs_session=") for v in reply.all("Set-Cookie"))


@pytest.mark.parametrize(("status", "where"), REDIRECTS)
async def test_an_id_token_key_set_behind_a_redirect_is_not_used(
        oauth: OAuthStart, idp: HostileIdP, key_hosts: KeyHosts, status: int,
        where: str) -> None:
    browser, _ = await oauth(jwks_url=key_hosts.url(status, where))
    idp.rewrite = lambda claims: jwt.encode(claims, ATTACKER_RSA, algorithm="RS256",
                                            headers={"kid": KID})
    hop = await browser.get(await browser.authorize(await browser.start()))
    assert hop.status == 503, hop.body
    assert (await browser.get("/_gateway/user")).status == 401


# -- discovery documents name only http(s) endpoints ---------------------------------------

BAD_ENDPOINTS = ["javascript:alert(document.cookie)", "data:text/html,<script>1</script>",
                 "//evil.example/authorize", "ftp://evil.example/authorize",
                 "http://user@evil.example/authorize", " http://evil.example/authorize",
                 "http://evil.example/\nauthorize"]


def discovery_with(idp: HostileIdP, **changes: Any) -> bytes:
    base = idp.issuer
    doc = {"issuer": base, "authorization_endpoint": f"{base}/authorize",
           "token_endpoint": f"{base}/token", "jwks_uri": f"{base}/jwks",
           "end_session_endpoint": f"{base}/logout",
           "id_token_signing_alg_values_supported": ["RS256"],
           "authorization_response_iss_parameter_supported": True, **changes}
    return json.dumps(doc).encode()


@pytest.mark.parametrize("endpoint", BAD_ENDPOINTS)
async def test_a_discovered_authorization_endpoint_must_be_http(
        oauth: OAuthStart, idp: HostileIdP, endpoint: str) -> None:
    idp.discovery_body = discovery_with(idp, authorization_endpoint=endpoint)
    browser, _ = await oauth()
    hop = await browser.get("/_gateway/login?redirect=/guide")
    assert (hop.status, json.loads(hop.body)["error"]) == (503, "idp_unavailable"), hop.body


@pytest.mark.parametrize("endpoint", BAD_ENDPOINTS)
async def test_a_discovered_end_session_endpoint_must_be_http(
        oauth: OAuthStart, idp: HostileIdP, endpoint: str) -> None:
    idp.discovery_body = discovery_with(idp, end_session_endpoint=endpoint.replace(
        "authorize", "logout"))
    browser, _ = await oauth()
    assert (await browser.login()).status == 303
    hop = await browser.get("/_gateway/logout", headers={"Sec-Fetch-Site": "same-origin"})
    assert hop.status == 303 and hop.location == "/", hop.location


def test_an_https_issuer_discovers_only_https_endpoints() -> None:
    config = make_config(handshake={"method": "oauth", "oauth": {
        "issuer": "https://id.example.com", "client_id": "docs"}})
    doc = {"issuer": "https://id.example.com",
           "authorization_endpoint": "https://id.example.com/authorize",
           "token_endpoint": "http://id.example.com/token",
           "jwks_uri": "http://id.example.com/jwks"}
    with pytest.raises(ValueError):
        flow.merge_endpoints(config.handshake.oauth, doc)
    endpoints = flow.merge_endpoints(config.handshake.oauth, {
        **doc, "token_endpoint": "https://id.example.com/token"})
    assert endpoints.token_url == "https://id.example.com/token"
    assert endpoints.jwks_url is None


# -- the gateway's own JSON ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/_gateway/user", "/_gateway/jwks.json", "/_gateway/healthz",
                                  "/_gateway/no-such-route", "/admin/x"])
async def test_the_gateways_json_is_never_sniffed(gateway: GatewayFactory, path: str) -> None:
    client = await gateway(access={"rules": [{"path": "/admin/**", "groups": ["admin"]}]})
    async with client.get(path, headers={"Accept": "application/json"},
                          allow_redirects=False) as response:
        assert response.headers["Content-Type"].startswith("application/json"), path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
