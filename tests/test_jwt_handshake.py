"""The JWT handshake end to end: a real echo upstream, the gateway, signed and hostile tokens."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.app import build_app
from gateway.handshakes import jwt_token
from gateway.handshakes.replay import ReplayCache
from gateway.keys import kid_of, private_pem, public_jwk, public_pem
from gateway.services import GATEWAY
from gateway.shared import MemoryKeyspace
from tests.helpers import HS_SECRET, echo_app, header_map, make_config

Client = TestClient[web.Request, web.Application]
LOGIN_URL = "https://dash.example.com/docs-login"
HOST = "docs.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def enc(obj: Any) -> str:
    return b64(json.dumps(obj).encode())


@dataclass
class Keys:
    """Login keys written as PEM files in tmp_path."""

    ed: ed25519.Ed25519PrivateKey
    ec: ec.EllipticCurvePrivateKey
    rsa: rsa.RSAPrivateKey
    other_ed: ed25519.Ed25519PrivateKey
    folder: Path

    def pub(self, name: str) -> str:
        return str(self.folder / f"{name}.pub.pem")


@pytest.fixture(scope="module")
def key_set(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    keys = Keys(ed=ed25519.Ed25519PrivateKey.generate(), ec=ec.generate_private_key(ec.SECP256R1()),
                rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
                other_ed=ed25519.Ed25519PrivateKey.generate(), folder=folder)
    for name in ("ed", "ec", "rsa", "other_ed"):
        key = getattr(keys, name)
        (folder / f"{name}.pub.pem").write_bytes(public_pem(key))
        (folder / f"{name}.pem").write_bytes(private_pem(key))
    return keys


def claims(**changes: Any) -> dict[str, Any]:
    """A valid payload: the user object plus exp, iat, host."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": "ada", "exp": now + 30, "iat": now, "host": HOST,
                               "groups": ["admin"], "content": {"firstName": "Ada"}}
    for name, value in changes.items():
        if value is ...:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def sign(key: Any, alg: str = "EdDSA", headers: dict[str, Any] | None = None,
         **changes: Any) -> str:
    return jwt.encode(claims(**changes), key, algorithm=alg, headers=headers)


def ed_raw(key: ed25519.Ed25519PrivateKey, header: dict[str, Any], payload: Any) -> str:
    """An Ed25519 token with any header, signed for real."""
    signing = f"{enc(header)}.{enc(payload)}"
    return f"{signing}.{b64(key.sign(signing.encode()))}"


Start = Callable[..., Awaitable[Client]]


@pytest.fixture
def start(aiohttp_server: Any, aiohttp_client: Any, key_set: Keys) -> Start:
    """Start the echo upstream and a gateway with ``handshake.jwt`` settings overridden."""

    async def starter(*, compat: list[str] | None = None, mode: str = "authenticate",
                      session: dict[str, Any] | None = None, **jwt_settings: Any) -> Client:
        upstream = await aiohttp_server(echo_app())
        settings = {"login_urls": [{"name": "Dashboard", "url": LOGIN_URL}],
                    "public_keys": [key_set.pub("ed")], "algorithms": ["EdDSA"],
                    "require_host": True, **jwt_settings}
        sections: dict[str, Any] = {"handshake": {"method": "jwt", "jwt": settings},
                                    "mode": mode}
        if compat is not None:
            sections["server"] = {"listen": "127.0.0.1:0", "public_url": f"http://{HOST}",
                                  "compat": compat}
        if session is not None:
            sections["session"] = session
        config = make_config(str(upstream.make_url("")), base=key_set.folder, **sections)
        client: Client = await aiohttp_client(await build_app(config))
        return client

    return starter


async def post_token(client: Client, token: str, path: str = "/_gateway/jwt-callback",
                     redirect: str = "/guide", **headers: str) -> Any:
    return await client.post(f"{path}?redirect={redirect}", data={"token": token},
                             headers=headers, allow_redirects=False)


async def assertion_sub(client: Client, path: str = "/guide") -> str | None:
    """The sub of the assertion the upstream received, verified with the gateway's JWKS."""
    response = await client.get(path)
    assert response.status == 200
    headers = header_map(await response.json())
    if "x-gateway-assertion" not in headers:
        return None
    token = headers["x-gateway-assertion"][0]
    jwks = await (await client.get("/_gateway/jwks.json")).json()
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    decoded = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]],
                         options={"verify_aud": False})
    return str(decoded["sub"])


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256", "HS256"])
async def test_login_with_each_algorithm_reaches_the_upstream_as_the_user(
        start: Start, key_set: Keys, alg: str) -> None:
    if alg == "HS256":
        client = await start(public_keys=[], secret=HS_SECRET, algorithms=["HS256"])
        token = sign(HS_SECRET, "HS256", sub=f"user-{alg}")
    else:
        name = {"EdDSA": "ed", "ES256": "ec", "RS256": "rsa"}[alg]
        client = await start(public_keys=[key_set.pub(name)], algorithms=[alg])
        token = sign(getattr(key_set, name), alg, sub=f"user-{alg}")
    assert (await client.get("/guide")).status == 401
    response = await post_token(client, token)
    assert response.status == 303
    assert response.headers["Location"] == "/guide"
    assert response.headers["Cache-Control"] == "no-store"
    assert "docs_session=" in " ".join(response.headers.getall("Set-Cookie"))
    assert await assertion_sub(client) == f"user-{alg}"
    user = await (await client.get("/_gateway/user")).json()
    assert user["groups"] == ["admin"] and user["content"] == {"firstName": "Ada"}


async def test_mintlify_url_shapes_with_compat(start: Start, key_set: Keys) -> None:
    client = await start(compat=["mintlify"])
    page = await client.get("/login/jwt-callback?redirect=%2Fguide%2Fintro")
    assert page.status == 200
    assert 'name="redirect" value="/guide/intro"' in await page.text()
    login = await client.get("/login?redirect=%2Fguide", allow_redirects=False)
    assert login.status == 302
    assert login.headers["Location"] == f"{LOGIN_URL}?redirect=%2Fguide"
    response = await post_token(client, sign(key_set.ed), path="/login/jwt-callback",
                                redirect="%2Fguide%2Fintro")
    assert response.status == 303 and response.headers["Location"] == "/guide/intro"
    assert await assertion_sub(client, "/guide/intro") == "ada"


async def test_compat_callback_is_a_docs_path_without_compat(start: Start, key_set: Keys) -> None:
    client = await start()
    response = await post_token(client, sign(key_set.ed), path="/login/jwt-callback")
    assert response.status == 401
    assert "Set-Cookie" not in response.headers


async def test_callback_page_is_self_contained_under_a_strict_policy(start: Start) -> None:
    client = await start()
    first = await client.get("/_gateway/jwt-callback?redirect=%2Fguide")
    second = await client.get("/_gateway/jwt-callback?redirect=%2Fguide")
    body = await first.text()
    csp = first.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([\w-]+)'", csp)
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}">' in body
    assert "default-src 'none'" in csp and "form-action 'self'" in csp
    assert "unsafe-inline" not in csp
    assert nonce.group(1) not in second.headers["Content-Security-Policy"]
    assert first.headers["Referrer-Policy"] == "no-referrer"
    assert first.headers["Cache-Control"] == "no-store"
    assert "src=" not in body and "http://" not in body and "https://" not in body


async def test_callback_page_ignores_a_foreign_redirect(start: Start) -> None:
    client = await start()
    page = await client.get("/_gateway/jwt-callback?redirect=https%3A%2F%2Fevil.example%2F")
    assert 'name="redirect" value="/"' in await page.text()
    assert "evil.example" not in await page.text()


async def test_json_body_and_a_foreign_redirect_lands_on_the_root(start: Start,
                                                                  key_set: Keys) -> None:
    client = await start()
    response = await client.post("/_gateway/jwt-callback", json={
        "token": sign(key_set.ed), "redirect": "//evil.example/x"}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/"


async def test_legacy_anchor_is_kept(start: Start, key_set: Keys) -> None:
    client = await start()
    response = await client.post("/_gateway/jwt-callback", data={
        "token": sign(key_set.ed), "redirect": "/guide", "anchor": "intro"},
        allow_redirects=False)
    assert response.headers["Location"] == "/guide#intro"
    bad = await client.post("/_gateway/jwt-callback", data={
        "token": sign(key_set.ed, sub="b"), "redirect": "/guide", "anchor": "x\"><script>"},
        allow_redirects=False)
    assert bad.headers["Location"] == "/guide"


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "http://docs.test.evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://docs.test"},
])
async def test_login_post_from_another_site_is_refused(start: Start, key_set: Keys,
                                                       headers: dict[str, str]) -> None:
    client = await start()
    response = await post_token(client, sign(key_set.ed), **headers)
    assert response.status == 403
    assert (await response.json())["error"] == "cross_site"
    assert "Set-Cookie" not in response.headers
    assert (await client.get("/_gateway/user")).status == 401


@pytest.mark.parametrize("headers", [
    {}, {"Origin": "http://docs.test"}, {"Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "same-origin", "Origin": "null"},
])
async def test_login_post_from_this_site_is_accepted(start: Start, key_set: Keys,
                                                     headers: dict[str, str]) -> None:
    client = await start()
    response = await post_token(client, sign(key_set.ed), **headers)
    assert response.status == 303


async def test_null_origin_is_accepted_with_the_callback_pages_own_form(
        start: Start, key_set: Keys) -> None:
    # Over plain http a no-referrer page's form POST carries "Origin: null" and no
    # Sec-Fetch-Site; the page's cookie-bound form value still proves where it came from.
    client = await start()
    page = await (await client.get("/_gateway/jwt-callback?redirect=%2Fguide")).text()
    match = re.search(r'name="csrf" value="([\w-]+)"', page)
    assert match is not None
    forged = await client.post("/_gateway/jwt-callback", data={
        "token": sign(key_set.ed), "csrf": "guess"}, headers={"Origin": "null"},
        allow_redirects=False)
    assert forged.status == 403
    response = await client.post("/_gateway/jwt-callback", data={
        "token": sign(key_set.ed), "csrf": match.group(1), "redirect": "/guide"},
        headers={"Origin": "null"}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/guide"


@dataclass
class Ctx:
    keys: Keys
    attacker: str  # URL of a server that counts every request it gets


def _none(alg: str) -> Callable[[Ctx], str]:
    return lambda c: f"{enc({'alg': alg, 'typ': 'JWT'})}.{enc(claims())}."


def _hs_with_public_pem(c: Ctx) -> str:
    signing = f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc(claims())}"
    mac = hmac.new(public_pem(c.keys.ed), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(mac)}"


def _tamper_payload(c: Ctx) -> str:
    head, _, sig = sign(c.keys.ed).split(".")
    return f"{head}.{enc(claims(groups=['admin', 'owner']))}.{sig}"


def _tamper_header(c: Ctx) -> str:
    _, body, sig = sign(c.keys.ed).split(".")
    return f"{enc({'alg': 'EdDSA', 'typ': 'JWT', 'kid': 'x'})}.{body}.{sig}"


def _tamper_signature(c: Ctx) -> str:
    head, body, sig = sign(c.keys.ed).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[0] ^= 1
    return f"{head}.{body}.{b64(bytes(raw))}"


def _pointer(name: str) -> Callable[[Ctx], str]:
    def build(c: Ctx) -> str:
        value: Any = f"{c.attacker}/{name}"
        if name == "jwk":
            value = public_jwk(c.keys.other_ed)
        elif name == "x5c":
            value = [base64.b64encode(b"not a certificate").decode()]
        return sign(c.keys.other_ed, headers={name: value})
    return build


def _noncanonical(c: Ctx) -> str:
    head, body, sig = sign(c.keys.ed).split(".")
    return f"{head}=.{body}.{sig}"


def _signed_raw(c: Ctx, payload: bytes) -> str:
    signing = f"{enc({'alg': 'EdDSA'})}.{b64(payload)}"
    return f"{signing}.{b64(c.keys.ed.sign(signing.encode()))}"


def _duplicate_alg(c: Ctx) -> str:
    header = b64(b'{"alg":"HS256","alg":"EdDSA"}')
    signing = f"{header}.{enc(claims())}"
    return f"{signing}.{b64(c.keys.ed.sign(signing.encode()))}"


ISSUER = {"issuer": "https://dash.example.com"}
HOSTILE: dict[str, tuple[Callable[[Ctx], str], str, dict[str, Any]]] = {
    "alg none": (_none("none"), "unsupported_alg", {}),
    "alg None": (_none("None"), "unsupported_alg", {}),
    "alg NONE": (_none("NONE"), "unsupported_alg", {}),
    "alg nOnE with a signature": (
        lambda c: _none("nOnE")(c) + b64(b"x" * 64), "unsupported_alg", {}),
    "HS256 with the public key PEM as secret": (_hs_with_public_pem, "unsupported_alg", {}),
    "RS256 not in the allow-list": (lambda c: sign(c.keys.rsa, "RS256"), "unsupported_alg", {}),
    "ES256 not in the allow-list": (lambda c: sign(c.keys.ec, "ES256"), "unsupported_alg", {}),
    "ES256 allowed but no key of its family": (
        lambda c: sign(c.keys.ec, "ES256"), "unknown_key", {"algorithms": ["EdDSA", "ES256"]}),
    "another key": (lambda c: sign(c.keys.other_ed), "bad_signature", {}),
    "tampered payload": (_tamper_payload, "bad_signature", {}),
    "tampered header": (_tamper_header, "bad_signature", {}),
    "tampered signature": (_tamper_signature, "bad_signature", {}),
    "expired": (lambda c: sign(c.keys.ed, iat=int(time.time()) - 200,
                               exp=int(time.time()) - 100), "expired", {}),
    "nbf ahead": (lambda c: sign(c.keys.ed, nbf=int(time.time()) + 120), "not_yet_valid", {}),
    "iat ahead": (lambda c: sign(c.keys.ed, iat=int(time.time()) + 120,
                                 exp=int(time.time()) + 150), "not_yet_valid", {}),
    "exp missing": (lambda c: sign(c.keys.ed, exp=...), "missing_exp", {}),
    "exp a string": (lambda c: sign(c.keys.ed, exp=str(int(time.time()) + 30)),
                     "malformed", {}),
    "exp a boolean": (lambda c: sign(c.keys.ed, exp=True), "malformed", {}),
    "exp astronomically far": (lambda c: sign(c.keys.ed, exp=10**400), "malformed", {}),
    "too old by iat": (lambda c: sign(c.keys.ed, iat=int(time.time()) - 3600), "too_old", {}),
    "lives longer than max_age": (lambda c: sign(c.keys.ed, exp=int(time.time()) + 86400),
                                  "too_old", {}),
    "no iat and a far exp": (lambda c: sign(c.keys.ed, iat=..., exp=int(time.time()) + 86400),
                             "too_old", {}),
    "wrong host": (lambda c: sign(c.keys.ed, host="evil.example"), "wrong_host", {}),
    "host missing": (lambda c: sign(c.keys.ed, host=...), "wrong_host", {}),
    "wrong issuer": (lambda c: sign(c.keys.ed, iss="https://evil.example"), "wrong_issuer",
                     ISSUER),
    "issuer missing": (lambda c: sign(c.keys.ed), "wrong_issuer", ISSUER),
    "wrong audience": (lambda c: sign(c.keys.ed, aud="someone-else"), "wrong_audience",
                       {"audience": "docs"}),
    "audience missing": (lambda c: sign(c.keys.ed), "wrong_audience", {"audience": "docs"}),
    "huge": (lambda c: sign(c.keys.ed, content={"pad": "x" * 9000}), "too_large", {}),
    "non-JSON header": (lambda c: f"{b64(b'not json')}.{enc(claims())}.{b64(b'sig')}",
                        "malformed", {}),
    "non-JSON payload": (lambda c: _signed_raw(c, b"{not json"), "malformed", {}),
    "payload a list": (lambda c: _signed_raw(c, b"[1, 2]"), "malformed", {}),
    "duplicate alg in the header": (_duplicate_alg, "malformed", {}),
    "2 segments": (lambda c: ".".join(sign(c.keys.ed).split(".")[:2]), "malformed", {}),
    "4 segments": (lambda c: sign(c.keys.ed) + ".AAAA", "malformed", {}),
    "JWE (5 segments)": (lambda c: f"{enc({'alg': 'RSA-OAEP', 'enc': 'A256GCM'})}.a.b.c.d",
                         "malformed", {}),
    "padded base64": (_noncanonical, "malformed", {}),
    "not base64": (lambda c: "abc$.def.ghi", "malformed", {}),
    "crit": (lambda c: sign(c.keys.ed, headers={"crit": ["exp"]}), "crit_unsupported", {}),
    "crit b64": (lambda c: _signed_raw_header(c, {"alg": "EdDSA", "crit": ["b64"],
                                                  "b64": False}), "crit_unsupported", {}),
    "jku to an attacker": (_pointer("jku"), "bad_signature", {}),
    "x5u to an attacker": (_pointer("x5u"), "bad_signature", {}),
    "embedded jwk": (_pointer("jwk"), "bad_signature", {}),
    "embedded x5c": (_pointer("x5c"), "bad_signature", {}),
    "kid ../../etc/passwd": (
        lambda c: sign(c.keys.other_ed, headers={"kid": "../../etc/passwd"}),
        "bad_signature", {}),
    "kid /dev/null": (lambda c: sign(c.keys.other_ed, headers={"kid": "/dev/null"}),
                      "bad_signature", {}),
    "kid a number": (lambda c: _signed_raw_header(c, {"alg": "EdDSA", "kid": 7}),
                     "malformed", {}),
    "typ of an access token": (lambda c: sign(c.keys.ed, headers={"typ": "at+jwt"}),
                               "malformed", {}),
    "groups a string": (lambda c: sign(c.keys.ed, groups="admin"), "invalid_user", {}),
    "groups with a number": (lambda c: sign(c.keys.ed, groups=["admin", 1]),
                             "invalid_user", {}),
    "content a list": (lambda c: sign(c.keys.ed, content=["a"]), "invalid_user", {}),
    "expiresAt a string": (lambda c: sign(c.keys.ed, expiresAt="tomorrow"),
                           "invalid_user", {}),
    "expiresAt in the past": (lambda c: sign(c.keys.ed, expiresAt=1), "invalid_user", {}),
    "no subject": (lambda c: sign(c.keys.ed, sub=..., content={"name": "x"}),
                   "invalid_user", {}),
    "unknown playground input": (
        lambda c: sign(c.keys.ed, apiPlaygroundInputs={"body": {}}), "invalid_user", {}),
}


def _signed_raw_header(c: Ctx, header: dict[str, Any]) -> str:
    signing = f"{enc(header)}.{enc(claims())}"
    return f"{signing}.{b64(c.keys.ed.sign(signing.encode()))}"


@pytest.fixture
async def attacker(aiohttp_server: Any) -> tuple[str, list[str]]:
    """A server that records every request (a jku/x5u target must never be fetched)."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"keys": [public_jwk(ed25519.Ed25519PrivateKey.generate())]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    server: TestServer = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), hits


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_token_is_refused_with_its_code(
        start: Start, key_set: Keys, attacker: tuple[str, list[str]], case: str) -> None:
    build, code, settings = HOSTILE[case]
    client = await start(**settings)
    response = await post_token(client, build(Ctx(key_set, attacker[0])))
    body = await response.json()
    assert (response.status, body["error"]) == (400, code), body
    assert "Set-Cookie" not in response.headers
    assert (await client.get("/_gateway/user")).status == 401
    assert attacker[1] == []


def test_there_are_at_least_thirty_hostile_cases() -> None:
    assert len(HOSTILE) >= 30


async def test_a_token_works_once(start: Start, key_set: Keys) -> None:
    client = await start()
    token = sign(key_set.ed)
    assert (await post_token(client, token)).status == 303
    client.session.cookie_jar.clear()
    again = await post_token(client, token)
    assert (again.status, (await again.json())["error"]) == (400, "replayed")
    assert "Set-Cookie" not in again.headers
    assert (await client.get("/_gateway/user")).status == 401


async def test_ecdsa_signature_in_its_other_form_is_still_a_replay(start: Start,
                                                                   key_set: Keys) -> None:
    client = await start(public_keys=[key_set.pub("ec")], algorithms=["ES256"])
    token = sign(key_set.ec, "ES256")
    head, body, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    s = int.from_bytes(raw[32:], "big")
    twin = f"{head}.{body}.{b64(raw[:32] + (order - s).to_bytes(32, 'big'))}"
    assert (await post_token(client, token)).status == 303
    client.session.cookie_jar.clear()
    again = await post_token(client, twin)
    assert (await again.json())["error"] == "replayed"


async def test_refusal_is_logged_with_its_code_and_never_the_token(
        start: Start, key_set: Keys, caplog: pytest.LogCaptureFixture) -> None:
    client = await start()
    token = sign(key_set.ed, host="evil.example")
    with caplog.at_level(logging.INFO, logger="gateway"):
        await post_token(client, token)
        await post_token(client, sign(key_set.ed))
    refused = [r for r in caplog.records if getattr(r, "reason", None) == "wrong_host"]
    assert refused and refused[0].name == "gateway"
    logins = [r for r in caplog.records if getattr(r, "event", None) == "login"]
    assert logins and getattr(logins[0], "sub", None) == "ada"
    for record in caplog.records:
        text = record.getMessage() + json.dumps(record.__dict__, default=str)
        for part in token.split("."):
            assert part not in text
    metrics = client.app[GATEWAY].metrics.render().decode()
    assert 'reason="wrong_host"' in metrics


async def test_failure_is_a_page_for_a_browser(start: Start, key_set: Keys) -> None:
    client = await start()
    response = await client.post("/_gateway/jwt-callback", data={
        "token": sign(key_set.ed, exp=int(time.time()) - 100, iat=int(time.time()) - 120)},
        headers={"Accept": "text/html"}, allow_redirects=False)
    assert response.status == 400
    assert response.content_type == "text/html"
    text = await response.text()
    assert "expired" in text and 'href="/_gateway/login"' in text


async def test_missing_or_mistyped_token_field(start: Start) -> None:
    client = await start()
    empty = await client.post("/_gateway/jwt-callback", data={"redirect": "/"})
    assert (await empty.json())["error"] == "malformed"
    typed = await client.post("/_gateway/jwt-callback", json={"token": 12})
    assert (await typed.json())["error"] == "malformed"
    broken = await client.post("/_gateway/jwt-callback", data=b"{",
                               headers={"Content-Type": "application/json"})
    assert (await broken.json())["error"] == "malformed"


async def test_user_expires_at_is_the_session_end_not_the_token_exp(start: Start,
                                                                    key_set: Keys) -> None:
    client = await start()
    ends = int(time.time()) + 7200
    assert (await post_token(client, sign(key_set.ed, expiresAt=ends))).status == 303
    user = await (await client.get("/_gateway/user")).json()
    assert user["expiresAt"] == ends


async def test_host_claim_must_match_the_port_too(start: Start, key_set: Keys) -> None:
    client = await start()
    wrong = await post_token(client, sign(key_set.ed, host="docs.test:8443"))
    assert (await wrong.json())["error"] == "wrong_host"
    assert (await post_token(client, sign(key_set.ed, host="DOCS.test:80"))).status == 303


async def test_audience_in_a_list(start: Start, key_set: Keys) -> None:
    client = await start(audience="docs")
    assert (await post_token(client, sign(key_set.ed, aud=["app", "docs"]))).status == 303


async def test_a_kid_naming_a_configured_file_picks_it(start: Start, key_set: Keys) -> None:
    client = await start(public_keys=[key_set.pub("other_ed"), key_set.pub("ed")])
    token = sign(key_set.ed, headers={"kid": kid_of(key_set.ed)})
    assert (await post_token(client, token)).status == 303
    client.session.cookie_jar.clear()
    mislabeled = sign(key_set.ed, sub="eve", headers={"kid": kid_of(key_set.other_ed)})
    assert (await (await post_token(client, mislabeled)).json())["error"] == "bad_signature"


async def test_login_redirects_to_the_login_url_with_a_relative_return_path(
        start: Start) -> None:
    client = await start(login_urls=[{"name": "App", "url": f"{LOGIN_URL}?team=7#top"}])
    response = await client.get("/_gateway/login?redirect=%2Fguide%3Fa%3D1",
                                allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == f"{LOGIN_URL}?team=7&redirect=%2Fguide%3Fa%3D1#top"
    anonymous = await client.get("/guide", headers={"Accept": "text/html"},
                                 allow_redirects=False)
    assert anonymous.headers["Location"].startswith("/_gateway/login?redirect=")


async def test_several_login_urls_show_an_escaped_chooser(start: Start) -> None:
    client = await start(login_urls=[
        {"name": "Staff <b>SSO</b>", "url": "https://sso.example.com/login"},
        {"name": "Customers", "url": "https://app.example.com/docs?x=1&y=2"}])
    response = await client.get("/_gateway/login?redirect=%2Fguide")
    assert response.status == 200
    text = await response.text()
    assert "Staff &lt;b&gt;SSO&lt;/b&gt;" in text and "<b>" not in text
    assert 'href="https://sso.example.com/login?redirect=%2Fguide"' in text
    assert 'href="https://app.example.com/docs?x=1&amp;y=2&amp;redirect=%2Fguide"' in text
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("param", ["jwt_token", "auth_token"])
async def test_query_token_logs_in_and_is_dropped_from_the_url(start: Start, key_set: Keys,
                                                               param: str) -> None:
    client = await start(accept_query_token=True)
    response = await client.get(f"/guide/a?x=1&{param}={sign(key_set.ed)}&y=a%26b",
                                allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/guide/a?x=1&y=a%26b"
    assert await assertion_sub(client, "/guide/a?x=1&y=a%26b") == "ada"


async def test_hostile_query_token_is_refused(start: Start, key_set: Keys) -> None:
    client = await start(accept_query_token=True)
    response = await client.get(f"/guide?jwt_token={sign(key_set.other_ed)}",
                                allow_redirects=False)
    assert (response.status, (await response.json())["error"]) == (400, "bad_signature")
    assert "Set-Cookie" not in response.headers


async def test_query_token_is_ignored_when_disabled(start: Start, key_set: Keys) -> None:
    client = await start(mode="personalize")
    token = sign(key_set.ed)
    response = await client.get(f"/guide?jwt_token={token}", allow_redirects=False)
    assert response.status == 200
    assert "Set-Cookie" not in response.headers
    assert (await response.json())["path"] == f"/guide?jwt_token={token}"


async def test_redis_replay_cache_is_shared_by_replicas(start: Start, key_set: Keys,
                                                        redis_server: Any) -> None:
    session = {"store": "redis", "redis_url": redis_server.url, "secrets": ["s" * 40]}
    first = await start(session=session)
    second = await start(session=session)
    token = sign(key_set.ed)
    assert (await post_token(first, token)).status == 303
    again = await post_token(second, token)
    assert (await again.json())["error"] == "replayed"
    assert "Set-Cookie" not in again.headers


async def test_memory_replay_cache_forgets_expired_tokens_and_stays_bounded() -> None:
    now = [0.0]
    keyspace = MemoryKeyspace(max_entries=3, clock=lambda: now[0])
    cache = ReplayCache(keyspace)
    assert await cache.first_use("a", 10)
    assert not await cache.first_use("a", 10)
    for name in "bcde":
        assert await cache.first_use(name, 10)
    assert len(keyspace) == 3
    now[0] = 11.0
    assert await cache.first_use("e", 10)
    assert len(keyspace) == 1


def test_token_command_signs_a_token_the_gateway_accepts(
        key_set: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(key=str(key_set.folder / "ed.pem"), sub="u9", host=HOST,
                              groups=["admin"], content={"name": "Ada"}, ttl=10.0)
    assert jwt_token.main(args) == 0
    token = capsys.readouterr().out.strip()
    decoded = jwt.decode(token, key_set.ed.public_key(), algorithms=["EdDSA"])
    assert decoded["sub"] == "u9" and decoded["host"] == HOST
    assert decoded["groups"] == ["admin"] and decoded["content"] == {"name": "Ada"}
    assert decoded["exp"] - decoded["iat"] == 10
    assert jwt.get_unverified_header(token)["kid"] == kid_of(key_set.ed)


async def test_token_command_output_logs_in(start: Start, key_set: Keys,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    client = await start()
    args = argparse.Namespace(key=str(key_set.folder / "ed.pem"), sub="cli-user", host=HOST,
                              groups=[], content={}, ttl=10.0)
    assert jwt_token.main(args) == 0
    assert (await post_token(client, capsys.readouterr().out.strip())).status == 303
    assert await assertion_sub(client) == "cli-user"


def test_token_command_reports_a_bad_key_in_one_line(
        tmp_path: Path, key_set: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(key=str(tmp_path / "missing.pem"), sub="u", host=None,
                              groups=[], content={}, ttl=10.0)
    assert jwt_token.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.pem: file not found" in err
    public = argparse.Namespace(key=key_set.pub("ed"), sub="u", host=None, groups=[],
                                content={}, ttl=10.0)
    assert jwt_token.main(public) == 1
    assert "public key" in capsys.readouterr().err
