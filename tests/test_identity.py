from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway import identity as identity_module
from gateway.identity import AssertionSigner, IdentityHeaders, header_value, sid_of
from gateway.keys import (
    KeyFileError,
    generate_private_key,
    kid_of,
    load_private_key,
    load_public_key,
    private_pem,
    public_pem,
    write_key_files,
)
from gateway.user import User
from tests.helpers import make_config

NOW = 1_700_000_000.0
PUBLIC_URL = "https://docs.example.com/handbook"
SERVER = {"public_url": PUBLIC_URL}
UPSTREAM = "http://10.0.0.5:3000/base"
SESSION_ID = "s3cr3t-session-id-abcdefghijklmnop"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


def key_file(tmp_path: Path, alg: str, name: str = "gateway") -> Path:
    path = tmp_path / f"{name}.pem"
    path.write_bytes(private_pem(generate_private_key(alg)))
    return path


def make_user(**changes: Any) -> User:
    fields: dict[str, Any] = {
        "sub": "user-1", "expires_at": NOW + 3600, "groups": ("admin",),
        "content": {"email": "ada@example.com", "firstName": "Ada"},
        "api_playground_inputs": {"header": {"X-Api-Key": "k"}},
        "extra": {"name": "Ada"},
    }
    fields.update(changes)
    return User(**fields)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def verify(token: str, jwks: dict[str, Any],
           audience: str = "http://10.0.0.5:3000") -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    return jwt.decode(token, key, algorithms=[key.algorithm_name], audience=audience,
                      issuer="https://docs.example.com", options={"verify_exp": False,
                                                                  "verify_iat": False})


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_assertion_verifies_with_the_published_jwks(tmp_path: Path, alg: str) -> None:
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={"assertion": {
        "private_key": str(key_file(tmp_path, alg)), "algorithm": alg}})
    signer = AssertionSigner(config, clock=Clock())
    user = make_user()
    token = signer.sign(user, SESSION_ID, "jwt")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": signer.kid, "typ": "JWT"}
    claims = verify(token, signer.jwks())
    assert set(claims) == {"iss", "aud", "sub", "iat", "exp", "sid", "method", "groups", "content"}
    assert claims["iss"] == "https://docs.example.com"
    assert claims["aud"] == "http://10.0.0.5:3000"
    assert claims["sub"] == "user-1"
    assert claims["method"] == "jwt"
    assert claims["groups"] == ["admin"]
    assert claims["content"] == {"email": "ada@example.com", "firstName": "Ada"}
    assert claims["iat"] == int(NOW)
    assert claims["exp"] == int(NOW) + 60
    assert claims["exp"] <= user.expires_at


def test_sid_never_reveals_the_session_id(tmp_path: Path) -> None:
    signer = AssertionSigner(make_config(UPSTREAM, base=tmp_path, server=SERVER), clock=Clock())
    claims = verify(signer.sign(make_user(), SESSION_ID, "jwt"), signer.jwks())
    assert claims["sid"] == sid_of(SESSION_ID)
    assert SESSION_ID not in claims["sid"]
    assert sid_of(SESSION_ID) != sid_of(SESSION_ID + "x")
    token = signer.sign(make_user(), SESSION_ID, "jwt")
    assert SESSION_ID not in token
    # Every attribute the signer keeps (a compiled build has no __dict__ to look in).
    kept = {name: getattr(signer, name) for name in dir(signer) if not name.startswith("__")}
    assert SESSION_ID not in repr(kept)


def test_expiry_never_passes_the_users_expires_at(tmp_path: Path) -> None:
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={"assertion": {
        "ttl": "10m"}})
    signer = AssertionSigner(config, clock=Clock())
    user = make_user(expires_at=NOW + 30.5)
    claims = verify(signer.sign(user, SESSION_ID, "jwt"), signer.jwks())
    assert claims["exp"] == int(NOW) + 30
    assert claims["exp"] <= user.expires_at


def test_configured_claims_and_audience(tmp_path: Path) -> None:
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={"assertion": {
        "audience": "docs-upstream", "claims": ["content.email", "name", "content.nothing"]}})
    signer = AssertionSigner(config, clock=Clock())
    claims = verify(signer.sign(make_user(), SESSION_ID, "oauth"), signer.jwks(),
                    audience="docs-upstream")
    assert set(claims) == {"iss", "aud", "sub", "iat", "exp", "sid", "method", "email", "name"}
    assert claims["email"] == "ada@example.com"
    assert claims["method"] == "oauth"


def test_user_fields_cannot_replace_registered_claims(tmp_path: Path) -> None:
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={"assertion": {
        "claims": ["content.sub", "content.iss", "exp"]}})
    signer = AssertionSigner(config, clock=Clock())
    user = make_user(content={"sub": "admin", "iss": "https://evil.example"},
                     extra={"exp": NOW + 10**6})
    claims = verify(signer.sign(user, SESSION_ID, "jwt"), signer.jwks())
    assert claims["sub"] == "user-1"
    assert claims["iss"] == "https://docs.example.com"
    assert claims["exp"] == int(NOW) + 60


def test_audience_for_a_served_folder_is_the_public_origin(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    config = make_config(None, base=tmp_path, server=SERVER, upstream={"root": "site"})
    signer = AssertionSigner(config, clock=Clock())
    claims = verify(signer.sign(make_user(), SESSION_ID, "jwt"), signer.jwks(),
                    audience="https://docs.example.com")
    assert claims["aud"] == "https://docs.example.com"


def test_without_a_session_the_sid_is_left_out(tmp_path: Path) -> None:
    signer = AssertionSigner(make_config(UPSTREAM, base=tmp_path, server=SERVER), clock=Clock())
    claims = verify(signer.sign(make_user(), None, "shared_session"), signer.jwks())
    assert "sid" not in claims
    assert claims["method"] == "shared_session"


def test_rotation_publishes_every_key_and_signs_with_the_first(tmp_path: Path) -> None:
    first = key_file(tmp_path, "EdDSA", "new")
    second = key_file(tmp_path, "RS256", "old")
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={"assertion": {
        "private_key": ["new.pem", "old.pem"]}})
    signer = AssertionSigner(config, clock=Clock())
    kids = [k["kid"] for k in signer.jwks()["keys"]]
    assert kids == [kid_of(load_private_key(first)), kid_of(load_private_key(second))]
    token = signer.sign(make_user(), SESSION_ID, "jwt")
    assert jwt.get_unverified_header(token)["kid"] == kids[0]
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    verify(token, signer.jwks())


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_jwks_holds_public_material_only(tmp_path: Path, alg: str) -> None:
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={"assertion": {
        "private_key": str(key_file(tmp_path, alg)), "algorithm": alg}})
    jwks = AssertionSigner(config).jwks()
    (jwk,) = jwks["keys"]
    assert not PRIVATE_MEMBERS & set(jwk)
    assert jwk["use"] == "sig"
    assert jwk["alg"] == alg
    assert jwk["kty"] == {"EdDSA": "OKP", "ES256": "EC", "RS256": "RSA"}[alg]
    pem = (tmp_path / "gateway.pem").read_text()
    assert not any(line and line in str(jwks) for line in pem.splitlines()[1:-1])


def test_ephemeral_key_is_made_with_a_warning(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={"assertion": {
        "algorithm": "ES256"}})
    with caplog.at_level(logging.WARNING, logger="gateway"):
        signer = AssertionSigner(config, clock=Clock())
    assert "private_key" in caplog.text
    (jwk,) = signer.jwks()["keys"]
    assert jwk["kty"] == "EC"
    verify(signer.sign(make_user(), SESSION_ID, "jwt"), signer.jwks())
    other = AssertionSigner(config)
    assert other.kid != signer.kid


def test_same_session_gets_the_same_token_until_a_quarter_of_ttl_remains(tmp_path: Path) -> None:
    clock = Clock()
    signer = AssertionSigner(make_config(UPSTREAM, base=tmp_path, server=SERVER), clock=clock)
    first = signer.sign(make_user(), SESSION_ID, "jwt")
    clock.now += 44
    assert signer.sign(make_user(), SESSION_ID, "jwt") == first
    clock.now += 2  # 14 s of 60 left: below ttl/4
    renewed = signer.sign(make_user(), SESSION_ID, "jwt")
    assert renewed != first
    assert verify(renewed, signer.jwks())["iat"] == int(NOW) + 46


def test_a_changed_user_or_another_session_gets_a_new_token(tmp_path: Path) -> None:
    clock = Clock()
    signer = AssertionSigner(make_config(UPSTREAM, base=tmp_path, server=SERVER), clock=clock)
    first = signer.sign(make_user(), SESSION_ID, "jwt")
    clock.now += 1
    refreshed = signer.sign(make_user(groups=("admin", "beta")), SESSION_ID, "jwt")
    assert refreshed != first
    assert verify(refreshed, signer.jwks())["groups"] == ["admin", "beta"]
    other = signer.sign(make_user(), SESSION_ID + "-2", "jwt")
    assert verify(other, signer.jwks())["sid"] != verify(first, signer.jwks())["sid"]


def test_token_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity_module, "CACHE_SIZE", 2)
    clock = Clock()
    signer = AssertionSigner(make_config(UPSTREAM, base=tmp_path, server=SERVER), clock=clock)
    first = signer.sign(make_user(), "session-a", "jwt")
    clock.now += 1
    signer.sign(make_user(), "session-b", "jwt")
    assert signer.sign(make_user(), "session-a", "jwt") == first
    signer.sign(make_user(), "session-c", "jwt")  # evicts b, the least recently used
    assert signer.sign(make_user(), "session-a", "jwt") == first
    assert len(signer._cache) == 2


@pytest.mark.parametrize(("name", "stripped"), [
    ("X-Gateway-User", True),
    ("x_gateway_user", True),
    ("X-GATEWAY-ASSERTION", True),
    ("x-gateway-anything-new", True),
    ("X-Email", True),
    ("x_email", True),
    ("X-EMAIL", True),
    ("X-Docs-Assertion", True),
    ("x_docs_assertion", True),
    ("X-Gateway", False),
    ("X-Emails", False),
    ("Authorization", False),
    ("Cookie", False),
    ("X-Forwarded-For", False),
])
def test_identity_headers_are_recognized_in_any_spelling(tmp_path: Path, name: str,
                                                         stripped: bool) -> None:
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={
        "assertion": {"header": "X-Docs-Assertion"}, "headers": {"X-Email": "content.email"}})
    headers = IdentityHeaders(config)
    assert headers.is_identity_header(name) is stripped
    assert headers.names == {"x-email", "x-docs-assertion"}


def test_anonymous_visitors_get_no_identity_headers(tmp_path: Path) -> None:
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={"headers": {
        "X-Gateway-User": "sub"}})
    assert IdentityHeaders(config).upstream_headers(None, None, "jwt") == []


def test_logged_in_visitor_gets_assertion_and_plain_headers(tmp_path: Path) -> None:
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={"headers": {
        "X-Gateway-User": "sub", "X-Gateway-Groups": "groups", "X-Email": "content.email",
        "X-Phone": "content.phone"}})
    headers = IdentityHeaders(config)
    user = make_user(groups=("admin", "beta"))
    out = headers.upstream_headers(user, SESSION_ID, "jwt")
    names = [name for name, _ in out]
    assert names == ["X-Gateway-Assertion", "X-Gateway-User", "X-Gateway-Groups", "X-Email"]
    values = dict(out)
    assert values["X-Gateway-User"] == "user-1"
    assert values["X-Gateway-Groups"] == "admin,beta"
    assert values["X-Email"] == "ada@example.com"
    assert verify(values["X-Gateway-Assertion"], headers.signer.jwks())["sub"] == "user-1"


def test_header_values_with_line_breaks_are_dropped(tmp_path: Path) -> None:
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={
        "assertion": {"header": None},
        "headers": {"X-Name": "content.name", "X-Email": "content.email"}})
    user = make_user(content={"name": "Ada\r\nX-Gateway-Admin: yes", "email": "a@example.com"})
    assert IdentityHeaders(config).upstream_headers(user, SESSION_ID, "jwt") == [
        ("X-Email", "a@example.com")]


def test_header_value_formats() -> None:
    assert header_value("Ada") == "Ada"
    assert header_value(42) == "42"
    assert header_value(True) == "true"
    assert header_value(["a", "b"]) == "a,b"
    assert header_value({"plan": "pro"}) == '{"plan":"pro"}'
    assert header_value({"note": "a\nb"}) == '{"note":"a\\nb"}'
    assert header_value(None) is None
    assert header_value("a\nb") is None
    assert header_value("a\x00b") is None


async def test_upstream_verifies_the_assertion_with_fetched_jwks(tmp_path: Path) -> None:
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={"assertion": {
        "private_key": str(key_file(tmp_path, "ES256")), "algorithm": "ES256",
        "audience": "docs"}})
    identity = IdentityHeaders(config)

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(identity.signer.jwks())

    jwks_app = web.Application()
    jwks_app.router.add_get("/_gateway/jwks.json", jwks)

    async def page(request: web.Request) -> web.Response:
        token = request.headers.get("X-Gateway-Assertion")
        if token is None:
            return web.Response(status=401)
        async with aiohttp.ClientSession() as http, http.get(jwks_url) as resp:
            key_set = jwt.PyJWKSet.from_dict(await resp.json())
        key = key_set[jwt.get_unverified_header(token)["kid"]]
        claims = jwt.decode(token, key, algorithms=["ES256"], audience="docs")
        return web.Response(text=f"hello {claims['content']['firstName']}")

    upstream_app = web.Application()
    upstream_app.router.add_get("/", page)
    async with TestServer(jwks_app, host="127.0.0.1") as jwks_server, \
            TestServer(upstream_app, host="127.0.0.1") as upstream:
        jwks_url = jwks_server.make_url("/_gateway/jwks.json")
        user = make_user(expires_at=2**40)
        headers = identity.upstream_headers(user, SESSION_ID, "jwt")
        async with aiohttp.ClientSession() as http:
            async with http.get(upstream.make_url("/"), headers=headers) as resp:
                assert resp.status == 200
                assert await resp.text() == "hello Ada"
            async with http.get(upstream.make_url("/")) as resp:
                assert resp.status == 401


@pytest.mark.parametrize(("write", "problem"), [
    (None, "file not found"),
    (lambda p: p.write_text("not a key"), "not a PEM private key"),
    (lambda p: p.write_bytes(public_pem(generate_private_key("EdDSA"))), "public key"),
    (lambda p: p.write_bytes(generate_private_key("EdDSA").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"))), "encrypted"),
    (lambda p: p.write_bytes(private_pem(rsa.generate_private_key(65537, 1024))), "1024 bits"),
    (lambda p: p.write_bytes(private_pem(ec.generate_private_key(ec.SECP384R1()))), "curve"),
])
def test_bad_private_key_files_name_the_file_and_problem(
        tmp_path: Path, write: Callable[[Path], Any] | None, problem: str) -> None:
    path = tmp_path / "gateway.pem"
    if write is not None:
        write(path)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)


def test_a_key_file_broken_after_the_check_stops_the_signer(tmp_path: Path) -> None:
    path = key_file(tmp_path, "EdDSA")
    config = make_config(UPSTREAM, base=tmp_path, server=SERVER, identity={"assertion": {
        "private_key": "gateway.pem"}})
    path.write_text("garbage")
    with pytest.raises(KeyFileError, match=r"gateway\.pem"):
        AssertionSigner(config)


def test_public_key_files_load_and_private_ones_are_refused(tmp_path: Path) -> None:
    key = generate_private_key("ES256")
    private, public = write_key_files(key, tmp_path / "login")
    assert kid_of(load_public_key(public)) == kid_of(key)
    with pytest.raises(KeyFileError, match="private key"):
        load_public_key(private)


def test_written_private_key_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    key = generate_private_key("EdDSA")
    private, public = write_key_files(key, tmp_path / "gateway")
    assert private.name == "gateway.pem"
    assert public.name == "gateway.pub.pem"
    assert os.stat(private).st_mode & 0o777 == 0o600
    assert kid_of(load_private_key(private)) == kid_of(key)
    with pytest.raises(FileExistsError):
        write_key_files(generate_private_key("EdDSA"), tmp_path / "gateway")
    assert kid_of(load_private_key(private)) == kid_of(key)


def test_kid_is_the_rfc7638_thumbprint() -> None:
    # The RSA example key of RFC 7638 section 3.1.
    n = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
         "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
         "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhA"
         "I4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
    jwk = jwt.PyJWK({"kty": "RSA", "n": n, "e": "AQAB"}, algorithm="RS256")
    assert kid_of(jwk.key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
