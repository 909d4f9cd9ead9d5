"""The OAuth handshake under attack: state, code injection, issuer mix-up, PKCE downgrade,
redirect_uri spoofing and hostile id_tokens, against a real Authlib server.

Every refused callback is checked for the same three things: its error code, no session
cookie, and (where the attack comes before the code exchange) no call to the token
endpoint at all.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc import jwt as jose_jwt
from yarl import URL

from gateway.errors import ConfigError
from gateway.handshakes import oauth_flow as flow
from gateway.keys import public_jwk
from gateway.services import GATEWAY
from tests.authserver import KID, SIGNING_KEY, TestIdP
from tests.helpers import GatewayFactory, make_config
from tests.test_oauth import REDIRECT_URI, Browser, Hop, query_of, with_query

HTML = {"Accept": "text/html"}


class HostileIdP(TestIdP):
    """The test IdP with switches: the PKCE methods it advertises, id_tokens rewritten,
    and raw bodies answered instead of its discovery, token and Info API documents."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.pkce_methods: list[str] | None = ["S256"]
        self.rewrite: Callable[[dict[str, Any]], str] | None = None
        self.token_body: bytes | None = None
        self.userinfo_body: bytes | None = None
        self.discovery_body: bytes | None = None

    async def discovery(self, request: web.Request) -> web.Response:
        if self.discovery_body is not None:
            return web.Response(body=self.discovery_body, content_type="application/json")
        response = await super().discovery(request)
        doc = json.loads(response.body)  # type: ignore[arg-type]
        if self.pkce_methods is None:
            doc.pop("code_challenge_methods_supported")
        else:
            doc["code_challenge_methods_supported"] = self.pkce_methods
        return web.json_response(doc)

    async def token(self, request: web.Request) -> web.Response:
        response = await super().token(request)
        if self.token_body is not None:
            return web.Response(body=self.token_body, content_type="application/json")
        if self.rewrite is None or response.status != 200:
            return response
        body = json.loads(response.body)  # type: ignore[arg-type]
        body["id_token"] = self.rewrite(self.claims())
        return web.json_response(body)

    async def userinfo(self, request: web.Request) -> web.Response:
        if self.userinfo_body is not None:
            return web.Response(body=self.userinfo_body, content_type="application/json")
        return await super().userinfo(request)

    def claims(self) -> dict[str, Any]:
        """What an honest id_token for the last authorization request holds."""
        now = int(time.time())
        return {"iss": self.issuer, "sub": "ada", "aud": "docs", "iat": now, "exp": now + 300,
                "nonce": self.authorize_requests[-1].get("nonce")}


@pytest.fixture
async def idp(aiohttp_server: Any) -> AsyncIterator[HostileIdP]:
    server = HostileIdP()
    running = await aiohttp_server(server.app())
    server.issuer = str(running.make_url("")).rstrip("/")
    server.add_client("docs", REDIRECT_URI)
    server.login_as("ada", email="ada@example.com")
    yield server
    server.release()


Start = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def gateway(gateway: GatewayFactory, idp: HostileIdP) -> AsyncIterator[Start]:
    """A browser on a gateway in front of the echo upstream, logging in at ``idp``."""
    made: list[Browser] = []

    async def start(server: dict[str, Any] | None = None, **oauth: Any) -> Browser:
        sections: dict[str, Any] = {"handshake": {"method": "oauth", "oauth": {
            "issuer": idp.issuer, "client_id": "docs", **oauth}}}
        if server is not None:
            sections["server"] = server
        browser = Browser(await gateway(**sections))
        made.append(browser)
        return browser

    yield start
    for browser in made:
        await browser.close()


@contextlib.asynccontextmanager
async def another_browser(browser: Browser) -> AsyncIterator[Browser]:
    """A second browser (its own cookie jar) on the same gateway."""
    other = Browser(TestClient(browser.gateway.server))
    try:
        yield other
    finally:
        await other.close()
        await other.gateway.session.close()


def session_cookie(hop: Hop) -> bool:
    """Whether a response sets a (non-empty) session cookie."""
    return any(line.startswith("docs_session=") and not line.startswith("docs_session=;")
               for line in hop.headers.getall("Set-Cookie", []))


async def refused(browser: Browser, url: str, code: str, status: int = 400) -> Hop:
    hop = await browser.get(url)
    assert hop.status == status, hop.body
    assert json.loads(hop.body)["error"] == code
    assert not session_cookie(hop)
    assert (await browser.get("/_gateway/user")).status == 401
    return hop


# -- state ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["", "nodot", "../../etc.x", "a" * 5000, "AAAAAAAA.forged",
                                   "é.é", "%00.x"])
async def test_a_callback_without_its_state_never_reaches_the_token_endpoint(
        gateway: Start, idp: HostileIdP, state: str) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    await refused(browser, with_query(callback, state=state), "state_mismatch")
    assert idp.grants("authorization_code") == 0


async def test_a_callback_with_no_state_at_all(gateway: Start, idp: HostileIdP) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    code = query_of(callback)["code"]
    await refused(browser, f"{REDIRECT_URI}?code={code}", "state_mismatch")
    assert idp.grants("authorization_code") == 0


async def test_an_attackers_callback_does_not_log_the_victim_in(gateway: Start,
                                                                idp: HostileIdP) -> None:
    # Login CSRF: the attacker finishes a login up to the callback and sends the victim
    # there; the victim's browser holds no state cookie for it.
    attacker = await gateway()
    callback = await attacker.authorize(await attacker.start())
    async with another_browser(attacker) as victim:
        await refused(victim, callback, "state_mismatch")
    assert idp.grants("authorization_code") == 0


async def test_a_state_cookie_renamed_to_another_attempt_is_refused(gateway: Start,
                                                                    idp: HostileIdP) -> None:
    browser = await gateway()
    first = await browser.authorize(await browser.start("/one"))
    jar = browser.gateway.session.cookie_jar
    cookies = {c.key: c.value for c in jar}
    [name] = [n for n in cookies if "_state_" in n]
    jar.clear()
    forged_state = "Zzzzzzzz." + query_of(first)["state"].split(".", 1)[1]
    jar.update_cookies({name.rsplit("_", 1)[0] + "_Zzzzzzzz": cookies[name]},
                       response_url=URL(str(browser.gateway.make_url("/_gateway/"))))
    await refused(browser, with_query(first, state=forged_state), "state_mismatch")
    assert idp.grants("authorization_code") == 0


async def test_an_expired_login_attempt_is_refused(gateway: Start, idp: HostileIdP) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    handshake: Any = browser.gateway.app[GATEWAY].handshake
    jar = browser.gateway.session.cookie_jar
    [cookie] = [c for c in jar if "_state_" in c.key]
    login = handshake.codec.open(cookie.key, cookie.value)
    old = handshake.codec.seal(replace(login, created_at=time.time() - 3600))
    jar.update_cookies({cookie.key: old},
                       response_url=URL(str(browser.gateway.make_url("/_gateway/"))))
    await refused(browser, callback, "state_expired")
    assert idp.grants("authorization_code") == 0


async def test_a_state_cookie_from_another_deployment_is_refused(gateway: Start,
                                                                 idp: HostileIdP) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    jar = browser.gateway.session.cookie_jar
    [cookie] = [c for c in jar if "_state_" in c.key]
    other = flow.StateCodec(["o" * 40], "docs_session")
    forged = other.seal(flow.LoginState(state=query_of(callback)["state"], verifier="v" * 64,
                                        nonce=None, return_to="/", created_at=time.time()))
    jar.update_cookies({cookie.key: forged},
                       response_url=URL(str(browser.gateway.make_url("/_gateway/"))))
    await refused(browser, callback, "state_mismatch")
    assert idp.grants("authorization_code") == 0


async def test_a_used_callback_is_refused_on_the_compat_route_too(gateway: Start) -> None:
    browser = await gateway(server={"compat": ["mintlify"]})
    callback = await browser.authorize(await browser.start())
    assert (await browser.get(callback)).status == 303
    browser.gateway.session.cookie_jar.clear()
    for name in ("/login/callback/oauth", "/mintlify-oauth-callback"):
        hop = await browser.get(callback.replace("/_gateway/callback", name))
        assert hop.status == 400 and json.loads(hop.body)["error"] == "state_mismatch"


# -- codes ----------------------------------------------------------------------------


async def test_an_attackers_code_fails_pkce_in_the_victims_flow(gateway: Start,
                                                                idp: HostileIdP) -> None:
    attacker = await gateway()
    stolen = query_of(await attacker.authorize(await attacker.start()))["code"]
    async with another_browser(attacker) as victim:
        callback = await victim.authorize(await victim.start())
        await refused(victim, with_query(callback, code=stolen), "token_error")


async def test_an_error_answer_never_exchanges_its_code(gateway: Start, idp: HostileIdP) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    await refused(browser, with_query(callback, error="access_denied"), "access_denied")
    assert idp.grants("authorization_code") == 0


async def test_an_error_description_is_escaped(gateway: Start, idp: HostileIdP) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    hop = await browser.get(with_query(callback, error="<script>x</script>",
                                       error_description="<img src=x onerror=alert(1)>"),
                            headers=HTML)
    assert hop.status == 400
    assert b"<img" not in hop.body and b"<script>x" not in hop.body
    assert b"idp_error" in hop.body


# -- issuer mix-up (RFC 9207) ------------------------------------------------------------


@pytest.mark.parametrize("iss", [
    "https://evil.example", "{issuer}/evil", "{issuer}x", "{issuer}#", "{issuer}?x=1",
    "{issuer}//",
    "http://evil@{host}", "",
])
async def test_an_answer_naming_another_issuer_is_refused_before_the_exchange(
        gateway: Start, idp: HostileIdP, iss: str) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    value = iss.format(issuer=idp.issuer, host=urlsplit(idp.issuer).netloc)
    await refused(browser, with_query(callback, iss=value), "iss_mismatch")
    assert idp.grants("authorization_code") == 0


async def test_the_issuer_with_a_trailing_slash_is_the_same_issuer(gateway: Start,
                                                                   idp: HostileIdP) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    assert (await browser.get(with_query(callback, iss=idp.issuer + "/"))).status == 303


# -- PKCE -------------------------------------------------------------------------------


@pytest.mark.parametrize("advertised", [["plain"], ["plain", "S256"], [], None])
async def test_pkce_is_always_s256_whatever_the_provider_advertises(
        gateway: Start, idp: HostileIdP, advertised: list[str] | None) -> None:
    idp.pkce_methods = advertised
    browser = await gateway()
    hop = await browser.get(await browser.authorize(await browser.start()))
    assert hop.status == 303
    sent = idp.authorize_requests[-1]
    assert sent["code_challenge_method"] == "S256"
    verifier = idp.token_requests[-1]["code_verifier"]
    assert 43 <= len(verifier) <= 128 and verifier != sent["code_challenge"]
    assert flow.pkce_challenge(verifier) == sent["code_challenge"]
    assert "client_secret" not in idp.token_requests[-1]


@pytest.mark.parametrize("name", ["code_challenge_method", "code_challenge", "state",
                                  "redirect_uri", "nonce", "response_type", "client_id", "scope"])
def test_extra_params_cannot_override_the_protocol(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(handshake={"method": "oauth", "oauth": {
            "issuer": "https://idp.example", "client_id": "docs",
            "extra_params": {name: "plain"}}})
    assert any(f"extra_params.{name}" in problem for problem in caught.value.problems)


# -- redirect_uri: fixed by public_url, never by the request ------------------------------


@pytest.mark.parametrize("headers", [
    {"Host": "evil.example"},
    {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    {"Forwarded": "host=evil.example;proto=https"},
    {"X-Original-Host": "evil.example", "X-Host": "evil.example"},
    {"X-Forwarded-Prefix": "/evil", "X-Forwarded-Port": "8443"},
])
async def test_redirect_uri_never_comes_from_the_request(gateway: Start, idp: HostileIdP,
                                                         headers: dict[str, str]) -> None:
    browser = await gateway()
    hop = await browser.get("/_gateway/login?redirect=/guide", headers=headers)
    assert query_of(hop.location or "")["redirect_uri"] == REDIRECT_URI
    assert (await browser.get(await browser.authorize(hop.location or ""))).status == 303
    assert idp.token_requests[-1]["redirect_uri"] == REDIRECT_URI


async def test_redirect_uri_ignores_a_trusted_proxys_host_too(gateway: Start,
                                                               idp: HostileIdP) -> None:
    browser = await gateway(server={"trusted_proxies": ["127.0.0.0/8"]})
    hop = await browser.get("/_gateway/login?redirect=/guide", headers={
        "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"})
    assert query_of(hop.location or "")["redirect_uri"] == REDIRECT_URI


# -- hostile id_tokens ------------------------------------------------------------------

ATTACKER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    head = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": KID}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}."


def _honest(claims: dict[str, Any]) -> str:
    return jose_jwt.encode({"alg": "RS256", "kid": KID}, claims, SIGNING_KEY)


def _changed(**changes: Any) -> Callable[[dict[str, Any]], str]:
    def build(claims: dict[str, Any]) -> str:
        for name, value in changes.items():
            if value is ...:
                claims.pop(name, None)
            else:
                claims[name] = value
        return _honest(claims)
    return build


def _signed_raw(header: dict[str, Any], payload: str, *, pad: bool = False) -> str:
    """A token the provider's own key signs over exactly these bytes."""
    def segment(data: bytes) -> str:
        text = base64.urlsafe_b64encode(data).decode()
        return text if pad else text.rstrip("=")
    signing = segment(json.dumps(header).encode()) + "." + segment(payload.encode())
    key: Any = jwt.PyJWK(SIGNING_KEY.as_dict(private=True)).key
    signature = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing + "." + _b64(signature)


def _twice(name: str, value: Any) -> Callable[[dict[str, Any]], str]:
    def build(claims: dict[str, Any]) -> str:
        text = json.dumps(claims)
        return _signed_raw({"alg": "RS256", "kid": KID},
                           text[:-1] + f", {json.dumps(name)}: {json.dumps(value)}}}")
    return build


def _public_pem() -> bytes:
    key: Any = jwt.PyJWK(SIGNING_KEY.as_dict(private=False)).key
    pem: bytes = key.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem


def _hmac_with(secret: bytes) -> Callable[[dict[str, Any]], str]:
    def build(claims: dict[str, Any]) -> str:
        signing = (_b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode()) + "."
                   + _b64(json.dumps(claims).encode()))
        return signing + "." + _b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())
    return build


def _attacker(headers: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
    return lambda claims: jwt.encode(claims, ATTACKER_KEY, algorithm="RS256", headers=headers)


HOSTILE_ID_TOKENS: dict[str, Callable[[dict[str, Any]], str]] = {
    "alg none": _unsigned,
    "alg none with the right kid": lambda c: _unsigned(c, "None"),
    "HS256 with an empty key": _hmac_with(b""),
    "HS256 with the provider's public key": lambda c: _hmac_with(_public_pem())(c),
    "an attacker's key, same kid": _attacker({"kid": KID}),
    "an attacker's key in an embedded jwk": _attacker({
        "kid": KID, "jwk": public_jwk(ATTACKER_KEY.public_key(), "RS256")}),
    "an attacker's key behind jku": _attacker({"kid": "x", "jku": "http://127.0.0.1:9/jwks"}),
    "an unknown kid": _attacker({"kid": "unknown-kid"}),
    "another issuer": _changed(iss="https://evil.example"),
    "for another client": _changed(aud="someone-else"),
    "for two clients without azp": _changed(aud=["docs", "evil"]),
    "authorized to another party": _changed(azp="evil"),
    "no nonce": _changed(nonce=...),
    "another nonce": _changed(nonce="replayed-from-another-login"),
    "no sub": _changed(sub=...),
    "no exp": _changed(exp=...),
    "no iat": _changed(iat=...),
    "expired long ago": _changed(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    "not a JWT": lambda c: "not-a-jwt",
    # The strict reading login tokens get, ID tokens get too: one token, one reading.
    "a payload naming sub twice": _twice("sub", "mallory"),
    "a payload naming aud twice": _twice("aud", "someone-else"),
    "padded base64url": lambda c: _signed_raw({"alg": "RS256", "kid": KID}, json.dumps(c),
                                              pad=True),
    "critical header extensions": lambda c: _signed_raw(
        {"alg": "RS256", "kid": KID, "crit": ["exp"]}, json.dumps(c)),
    "a typ of another kind": lambda c: _signed_raw(
        {"alg": "RS256", "kid": KID, "typ": "secevent+jwt"}, json.dumps(c)),
}


@pytest.mark.parametrize("case", list(HOSTILE_ID_TOKENS))
async def test_a_hostile_id_token_is_refused(gateway: Start, idp: HostileIdP, case: str) -> None:
    browser = await gateway()
    idp.rewrite = HOSTILE_ID_TOKENS[case]
    callback = await browser.authorize(await browser.start())
    await refused(browser, callback, "id_token_invalid")


async def test_the_honest_rewrite_logs_in(gateway: Start, idp: HostileIdP) -> None:
    # The harness itself: an unchanged token signed by the provider passes.
    browser = await gateway()
    idp.rewrite = _changed()
    hop = await browser.get(await browser.authorize(await browser.start("/guide")))
    assert hop.status == 303 and hop.location == "/guide"


# -- answers that nest deeper than a JSON parser follows ----------------------------------

DEEP = b"[" * 100000 + b"]" * 100000


async def test_a_deeply_nested_token_answer_is_refused(gateway: Start, idp: HostileIdP) -> None:
    browser = await gateway()
    callback = await browser.authorize(await browser.start())
    idp.token_body = DEEP
    await refused(browser, callback, "token_error")


async def test_a_deeply_nested_info_api_answer_is_refused(gateway: Start,
                                                          idp: HostileIdP) -> None:
    browser = await gateway(info_api_url=idp.issuer + "/userinfo")
    callback = await browser.authorize(await browser.start())
    idp.userinfo_body = DEEP
    await refused(browser, callback, "info_api_error", status=502)


async def test_a_deeply_nested_discovery_document_is_an_outage_not_a_crash(
        gateway: Start, idp: HostileIdP) -> None:
    idp.discovery_body = DEEP
    browser = await gateway()
    hop = await browser.get("/_gateway/login?redirect=/guide")
    assert hop.status == 503 and json.loads(hop.body)["error"] == "idp_unavailable"
