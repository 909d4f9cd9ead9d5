"""The JWT handshake under attack, beyond the hostile tokens of test_jwt_handshake.py.

Added here: ECDSA's "psychic signature" (CVE-2022-21449) and signature encodings, curve
and family confusion, algorithm spellings, hostile kids and a JWKS flood, JSON that
nests deep enough to break a parser, replays through every door, and claim values
(NaN, huge numbers, control characters) that must never become half a session.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils

from gateway.errors import ConfigError
from gateway.keys import private_pem, public_jwk, public_pem
from tests.attack import (
    ADMIN_RULES,
    Recorder,
    Reply,
    exchange,
    port_of,
    raw_request,
    recording_upstream,
)
from tests.helpers import Client, GatewayFactory, make_config

HOST = "docs.test"
LOGIN = [{"name": "Dashboard", "url": "https://dash.example.com/docs-login"}]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": "ada", "exp": now + 30, "iat": now, "host": HOST,
                               "groups": ["reader"]}
    for name, value in changes.items():
        if value is ...:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


@dataclass
class Keys:
    ed: ed25519.Ed25519PrivateKey
    ec: ec.EllipticCurvePrivateKey
    rsa: rsa.RSAPrivateKey
    attacker: ed25519.Ed25519PrivateKey
    folder: Path

    def pub(self, name: str) -> str:
        return str(self.folder / f"{name}.pub.pem")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("attack-keys")
    made = Keys(ed=ed25519.Ed25519PrivateKey.generate(),
                ec=ec.generate_private_key(ec.SECP256R1()),
                rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
                attacker=ed25519.Ed25519PrivateKey.generate(), folder=folder)
    for name in ("ed", "ec", "rsa"):
        key = getattr(made, name)
        (folder / f"{name}.pub.pem").write_bytes(public_pem(key))
        (folder / f"{name}.pem").write_bytes(private_pem(key))
    return made


Start = Callable[..., Awaitable[tuple[Client, Recorder]]]


@pytest.fixture
def start(aiohttp_server: Any, gateway: GatewayFactory, keys: Keys) -> Start:
    """The shared gateway with ``ADMIN_RULES`` and the JWT handshake on ``keys`` (EdDSA with
    the Ed25519 key, the host required; keywords change the handshake's settings), in front
    of a recording upstream of its own per call; gives the client and that upstream."""

    async def starter(session: dict[str, Any] | None = None, compat: bool = False,
                      identity: dict[str, Any] | None = None,
                      **settings: Any) -> tuple[Client, Recorder]:
        upstream = await recording_upstream(aiohttp_server)
        jwt_settings = {"login_urls": LOGIN, "public_keys": [keys.pub("ed")],
                        "algorithms": ["EdDSA"], "require_host": True, **settings}
        sections: dict[str, Any] = {"handshake": {"method": "jwt", "jwt": jwt_settings},
                                    "access": ADMIN_RULES}
        if identity is not None:
            sections["identity"] = identity
        if session is not None:
            sections["session"] = session
        if compat:
            sections["server"] = {"public_url": f"http://{HOST}", "compat": ["mintlify"]}
        client = await gateway(upstream_url=upstream.url, base=keys.folder, **sections)
        return client, upstream

    return starter


async def post(client: Client, token: str, path: str = "/_gateway/jwt-callback",
               as_json: bool = False) -> Reply:
    if as_json:
        body = json.dumps({"token": token, "redirect": "/guide"}).encode()
        kind = "application/json"
    else:
        body = f"token={token}&redirect=/guide".encode()
        kind = "application/x-www-form-urlencoded"
    return await exchange(port_of(client), raw_request(path, method="POST", body=body,
                                                       headers=[("Content-Type", kind)]))


def error_of(reply: Reply) -> str:
    return str(json.loads(reply.body)["error"])


def logged_in(reply: Reply) -> bool:
    return any(v.startswith("docs_session=") and not v.startswith("docs_session=;")
               for v in reply.all("Set-Cookie"))


def refused_with(reply: Reply, code: str, status: int = 400) -> None:
    assert (reply.status, error_of(reply)) == (status, code), reply.body
    assert not logged_in(reply)


def raw_token(header: Any, payload: Any, sign: Callable[[bytes], bytes]) -> str:
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing = f"{b64(head)}.{b64(body)}"
    return f"{signing}.{b64(sign(signing.encode()))}"


def ed_signer(key: ed25519.Ed25519PrivateKey) -> Callable[[bytes], bytes]:
    return key.sign


# -- ECDSA and family confusion ----------------------------------------------------------


def _es256_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes

    r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


ECDSA_CASES: dict[str, Callable[[Keys], str]] = {
    "psychic signature r=s=0": lambda k: raw_token(
        {"alg": "ES256"}, claims(), lambda _: b"\x00" * 64),
    "r=s=n (the curve order)": lambda k: raw_token(
        {"alg": "ES256"}, claims(), lambda _: bytes.fromhex(
            "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551") * 2),
    "DER-encoded signature": lambda k: raw_token(
        {"alg": "ES256"}, claims(), lambda data: utils.encode_dss_signature(
            int.from_bytes(_es256_raw(k.ec, data)[:32], "big"),
            int.from_bytes(_es256_raw(k.ec, data)[32:], "big"))),
    "signature one byte short": lambda k: raw_token(
        {"alg": "ES256"}, claims(), lambda data: _es256_raw(k.ec, data)[:-1]),
    "empty signature": lambda k: raw_token({"alg": "ES256"}, claims(), lambda _: b""),
}


@pytest.mark.parametrize("case", list(ECDSA_CASES))
async def test_broken_ecdsa_signatures_are_refused(start: Start, keys: Keys, case: str) -> None:
    client, _ = await start(public_keys=[keys.pub("ec")], algorithms=["ES256"])
    refused_with(await post(client, ECDSA_CASES[case](keys)), "bad_signature")


async def test_an_honest_es256_token_passes_the_same_harness(start: Start, keys: Keys) -> None:
    client, _ = await start(public_keys=[keys.pub("ec")], algorithms=["ES256"])
    token = raw_token({"alg": "ES256"}, claims(), lambda data: _es256_raw(keys.ec, data))
    assert (await post(client, token)).status == 303


@pytest.mark.parametrize(("alg", "key", "allowed", "code"), [
    ("ES384", "ec", ["ES256", "ES384"], "unknown_key"),   # a P-256 key, a P-384 token
    ("PS256", "rsa", ["RS256"], "unsupported_alg"),        # same family, not allowed
    ("RS256", "ec", ["RS256", "ES256"], "unknown_key"),    # the EC key is no RSA key
])
async def test_a_key_only_verifies_its_own_family_and_curve(start: Start, keys: Keys, alg: str,
                                                            key: str, allowed: list[str],
                                                            code: str) -> None:
    client, _ = await start(public_keys=[keys.pub(key)], algorithms=allowed)
    signer = keys.rsa if alg.startswith(("RS", "PS")) else ec.generate_private_key(ec.SECP384R1())
    refused_with(await post(client, jwt.encode(claims(), signer, algorithm=alg)), code)


def test_hs256_next_to_public_keys_is_a_config_error(keys: Keys) -> None:
    # The classic confusion (the public key's PEM used as an HMAC secret) needs a verifier
    # that accepts HS256 next to public keys; the configuration cannot say that.
    with pytest.raises(ConfigError) as caught:
        make_config(base=keys.folder, handshake={"method": "jwt", "jwt": {
            "login_urls": LOGIN, "public_keys": [keys.pub("ed")],
            "algorithms": ["EdDSA", "HS256"]}})
    assert any("algorithms" in problem for problem in caught.value.problems)


@pytest.mark.parametrize("alg", ["eddsa", "EDDSA", "EdDSA ", " EdDSA", "EdDSA\u0000", "Ed25519",
                                 "none ", "nonE"])
async def test_algorithm_names_match_exactly(start: Start, keys: Keys, alg: str) -> None:
    client, _ = await start()
    token = raw_token({"alg": alg}, claims(), ed_signer(keys.ed))
    refused_with(await post(client, token), "unsupported_alg")


@pytest.mark.parametrize("alg", [["EdDSA"], 1, None, {"name": "EdDSA"}, ""])
async def test_an_algorithm_that_is_not_a_string_is_malformed(start: Start, keys: Keys,
                                                              alg: Any) -> None:
    client, _ = await start()
    token = raw_token({"alg": alg}, claims(), ed_signer(keys.ed))
    refused_with(await post(client, token), "malformed")


@pytest.mark.parametrize("crit", [[], "b64", None, ["x-unknown"], [{"b64": False}]])
async def test_any_crit_member_is_refused_whatever_it_holds(start: Start, keys: Keys,
                                                            crit: Any) -> None:
    # RFC 7515 4.1.11: extensions the verifier does not understand make the token invalid;
    # an empty or malformed crit is no excuse to ignore it.
    client, _ = await start()
    token = raw_token({"alg": "EdDSA", "crit": crit}, claims(), ed_signer(keys.ed))
    refused_with(await post(client, token), "crit_unsupported")


@pytest.mark.parametrize("kid", ["' OR 1=1 --", "../../../../dev/null", "k\u0000id",
                                 "http://127.0.0.1:9/key", "$(id)", "\u202eevil"])
async def test_a_hostile_kid_never_picks_a_key(start: Start, keys: Keys, kid: str) -> None:
    client, _ = await start()
    token = raw_token({"alg": "EdDSA", "kid": kid}, claims(), ed_signer(keys.attacker))
    refused_with(await post(client, token), "bad_signature")


# -- a JWKS URL: pointers in the token are never followed, unknown kids cannot flood it --


@pytest.fixture
async def jwks_server(aiohttp_server: Any, keys: Keys) -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []

    async def serve(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"keys": [{**public_jwk(keys.ed, "EdDSA"), "kid": "login-1"}]})

    app = web.Application()
    app.router.add_get("/jwks", serve)
    server: TestServer = await aiohttp_server(app)
    yield str(server.make_url("/jwks")), hits


async def test_unknown_kids_refetch_the_jwks_at_most_once(start: Start, keys: Keys,
                                                          jwks_server: tuple[str, list[str]]
                                                          ) -> None:
    url, hits = jwks_server
    client, _ = await start(public_keys=[], jwks_url=url)
    start_hits = len(hits)
    replies = await asyncio.gather(*(post(client, raw_token(
        {"alg": "EdDSA", "kid": f"random-{i}"}, claims(), ed_signer(keys.attacker)))
        for i in range(20)))
    for reply in replies:
        refused_with(reply, "unknown_key")
    assert len(hits) - start_hits <= 1
    honest = raw_token({"alg": "EdDSA", "kid": "login-1"}, claims(), ed_signer(keys.ed))
    assert (await post(client, honest)).status == 303


@pytest.mark.parametrize("header", ["jku", "x5u"])
async def test_a_key_url_in_the_token_is_never_fetched_with_a_jwks_url(
        start: Start, keys: Keys, jwks_server: tuple[str, list[str]],
        aiohttp_server: Any, header: str) -> None:
    url, _ = jwks_server
    attacker_hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        attacker_hits.append(request.path)
        return web.json_response({"keys": [{**public_jwk(keys.attacker, "EdDSA"),
                                            "kid": "login-1"}]})

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    evil: TestServer = await aiohttp_server(app)
    client, _ = await start(public_keys=[], jwks_url=url)
    token = raw_token({"alg": "EdDSA", "kid": "login-1", header: str(evil.make_url("/k"))},
                      claims(), ed_signer(keys.attacker))
    refused_with(await post(client, token), "bad_signature")
    assert attacker_hits == []


# -- JSON that nests deeper than a parser can follow ------------------------------------


@pytest.mark.parametrize("part", ["header", "header object"])
async def test_a_deeply_nested_token_header_is_malformed(start: Start, part: str) -> None:
    client, _ = await start()
    # Deeper than the parser's recursion limit, still under the 8 KiB token limit.
    header = b"[" * 5000 if part == "header" else b'{"":' * 1100 + b"1" + b"}" * 1100
    token = f"{b64(header)}.{b64(json.dumps(claims()).encode())}.{b64(b'sig')}"
    refused_with(await post(client, token), "malformed")


async def test_a_deeply_nested_json_body_is_malformed(start: Start) -> None:
    client, _ = await start()
    body = b'{"token": ' + b"[" * 20000 + b"]" * 20000 + b"}"
    reply = await exchange(port_of(client), raw_request(
        "/_gateway/jwt-callback", method="POST", body=body,
        headers=[("Content-Type", "application/json")]))
    refused_with(reply, "malformed")


async def test_a_deeply_nested_jwks_document_is_an_outage_not_a_crash(
        start: Start, keys: Keys, aiohttp_server: Any) -> None:
    async def deep(request: web.Request) -> web.Response:
        return web.Response(body=b"[" * 100000 + b"]" * 100000,
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks", deep)
    server: TestServer = await aiohttp_server(app)
    client, _ = await start(public_keys=[], jwks_url=str(server.make_url("/jwks")))
    token = raw_token({"alg": "EdDSA", "kid": "login-1"}, claims(), ed_signer(keys.ed))
    refused_with(await post(client, token), "unavailable", status=503)


# -- replay through every door ----------------------------------------------------------


@pytest.mark.parametrize("second", ["the same route", "the mintlify route", "a JSON body",
                                    "with spaces around it", "the query parameter"])
async def test_a_used_token_is_refused_everywhere(start: Start, keys: Keys, second: str) -> None:
    client, upstream = await start(compat=True, accept_query_token=True)
    token = jwt.encode(claims(), keys.ed, algorithm="EdDSA")
    assert (await post(client, token)).status == 303
    if second == "the query parameter":
        reply = await exchange(port_of(client), raw_request(f"/guide?jwt_token={token}"))
    elif second == "the mintlify route":
        reply = await post(client, token, path="/login/jwt-callback")
    elif second == "a JSON body":
        reply = await post(client, token, as_json=True)
    elif second == "with spaces around it":
        reply = await post(client, f"++{token}++")
    else:
        reply = await post(client, token)
    refused_with(reply, "replayed")
    assert upstream.seen == []


async def test_concurrent_replays_log_in_exactly_once(start: Start, keys: Keys) -> None:
    client, _ = await start()
    token = jwt.encode(claims(), keys.ed, algorithm="EdDSA")
    replies = await asyncio.gather(*(post(client, token) for _ in range(12)))
    assert sorted(r.status for r in replies) == [303] + [400] * 11
    assert sum(logged_in(r) for r in replies) == 1


async def test_a_token_in_the_callback_query_is_not_a_login(start: Start, keys: Keys) -> None:
    # The GET callback only serves the page that reads the fragment; a token in its query
    # (where it would be logged) is never used.
    client, _ = await start()
    token = jwt.encode(claims(), keys.ed, algorithm="EdDSA")
    reply = await exchange(port_of(client), raw_request(
        f"/_gateway/jwt-callback?token={token}&jwt={token}"))
    assert reply.status == 200 and not logged_in(reply)


async def test_a_bearer_token_is_never_a_session(start: Start, keys: Keys) -> None:
    client, upstream = await start()
    token = jwt.encode(claims(), keys.ed, algorithm="EdDSA")
    reply = await exchange(port_of(client), raw_request("/admin/x", headers=[
        ("Authorization", f"Bearer {token}")]))
    assert reply.status == 401 and not logged_in(reply)
    assert upstream.seen == []


# -- claims ------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "code"), [
    ({"exp": math.nan}, "malformed"),
    ({"exp": math.inf}, "malformed"),
    ({"iat": math.nan}, "malformed"),
    ({"nbf": "0"}, "malformed"),
    ({"exp": 1e300}, "malformed"),
    ({"iat": -1e15}, "malformed"),
    ({"expiresAt": math.nan}, "invalid_user"),
    ({"expiresAt": math.inf}, "invalid_user"),
    ({"expiresAt": True}, "invalid_user"),
    ({"sub": "   ", "content": {}}, "invalid_user"),
    ({"sub": ["ada"], "content": {}}, "invalid_user"),
    ({"groups": [["admin"]]}, "invalid_user"),
    ({"groups": {"admin": True}}, "invalid_user"),
    ({"content": "admin"}, "invalid_user"),
    ({"apiPlaygroundInputs": []}, "invalid_user"),
    ({"host": "docs.test.evil.example"}, "wrong_host"),
    ({"host": "evil.example@docs.test"}, "wrong_host"),
    ({"host": "docs.test/evil"}, "wrong_host"),
    ({"host": "http://docs.test"}, "wrong_host"),
    ({"host": ["docs.test"]}, "wrong_host"),
    ({"host": "docs.test:8080"}, "wrong_host"),
])
async def test_hostile_claim_values_are_refused(start: Start, keys: Keys,
                                                changes: dict[str, Any], code: str) -> None:
    client, _ = await start()
    token = raw_token({"alg": "EdDSA"}, json.dumps(claims(**changes)).encode(),
                      ed_signer(keys.ed))
    refused_with(await post(client, token), code)


@pytest.mark.parametrize("host", ["DOCS.TEST", "docs.test:80", "Docs.Test"])
async def test_the_host_claim_compares_as_a_host(start: Start, keys: Keys, host: str) -> None:
    client, _ = await start()
    assert (await post(client, jwt.encode(claims(host=host), keys.ed,
                                          algorithm="EdDSA"))).status == 303


async def test_a_far_expires_at_is_capped_by_the_session_max_age(start: Start,
                                                                 keys: Keys) -> None:
    client, _ = await start()
    token = jwt.encode(claims(expiresAt=32503680000), keys.ed, algorithm="EdDSA")
    reply = await post(client, token)
    assert reply.status == 303
    [cookie] = [v for v in reply.all("Set-Cookie") if v.startswith("docs_session=")]
    max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
    assert 0 < max_age <= 14 * 86400


async def test_control_characters_in_the_subject_never_reach_a_header(start: Start,
                                                                      keys: Keys) -> None:
    client, upstream = await start(identity={"headers": {"X-Gateway-User": "sub"}})
    token = jwt.encode(claims(sub="ada\r\nX-Injected: 1"), keys.ed, algorithm="EdDSA")
    reply = await post(client, token)
    assert reply.status == 303
    [cookie] = [v.split(";")[0] for v in reply.all("Set-Cookie") if v.startswith("docs_session")]
    page = await exchange(port_of(client), raw_request("/guide", headers=[("Cookie", cookie)]))
    assert page.status == 200
    seen = upstream.seen[-1]
    assert seen.header("X-Gateway-User") == [] and seen.header("X-Injected") == []
    assert len(seen.header("X-Gateway-Assertion")) == 1


@pytest.mark.parametrize("size", [8 * 1024 + 1, 60 * 1024])
async def test_an_oversized_token_is_refused_before_any_work(start: Start, keys: Keys,
                                                             size: int) -> None:
    client, _ = await start()
    reply = await post(client, "a" * size)
    refused_with(reply, "too_large")


async def test_a_body_over_the_limit_is_413(start: Start) -> None:
    client, _ = await start()
    reply = await post(client, "a" * (70 * 1024))
    assert reply.status == 413 and not logged_in(reply)
