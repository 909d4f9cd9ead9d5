"""The JWKS cache against a real key server, and logins verified with published keys."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.app import build_app
from gateway.crypto import b64url_encode
from gateway.errors import Unavailable
from gateway.handshakes.jwks import JwksCache
from gateway.handshakes.jws import TokenError, key_fits
from gateway.keys import public_jwk
from tests.helpers import make_config

ED = ed25519.Ed25519PrivateKey.generate()
ED2 = ed25519.Ed25519PrivateKey.generate()
EC = ec.generate_private_key(ec.SECP256R1())
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    out = public_jwk(key)
    out.pop("alg")
    return {**out, "kid": kid, **extra}


@dataclass
class KeyServer:
    """A JWKS endpoint whose keys and status a test changes; counts fetches."""

    keys: list[Any] = field(default_factory=list)
    status: int = 200
    body: bytes | None = None
    hits: int = 0
    url: str = ""


@pytest.fixture
async def key_server(aiohttp_server: Any) -> KeyServer:
    state = KeyServer(keys=[jwk(ED, "ed-1")])

    async def jwks(request: web.Request) -> web.Response:
        state.hits += 1
        if state.body is not None:
            return web.Response(body=state.body, content_type="application/json")
        return web.json_response({"keys": state.keys}, status=state.status)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    server: TestServer = await aiohttp_server(app)
    state.url = str(server.make_url("/.well-known/jwks.json"))
    return state


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_key_is_fetched_once_and_cached(key_server: KeyServer, http: Any) -> None:
    cache = JwksCache(http, key_server.url)
    first = await cache.get_key("ed-1", "EdDSA")
    second = await cache.get_key("ed-1", "EdDSA")
    assert first is second
    assert key_server.hits == 1


async def test_unknown_kid_refetches_at_most_once_a_minute(key_server: KeyServer,
                                                           http: Any) -> None:
    clock = Clock()
    cache = JwksCache(http, key_server.url, clock=clock)
    await cache.get_key("ed-1", "EdDSA")
    key_server.keys.append(jwk(ED2, "ed-2"))
    with pytest.raises(TokenError) as caught:
        await cache.get_key("ed-2", "EdDSA")
    assert caught.value.code == "unknown_key"
    assert key_server.hits == 1  # too soon after the first fetch
    clock.now += 61
    assert await cache.get_key("ed-2", "EdDSA") is not None  # rotation picked up
    for kid in ("nope", "../../etc/passwd", "/dev/null"):
        with pytest.raises(TokenError):
            await cache.get_key(kid, "EdDSA")
    assert key_server.hits == 2


async def test_concurrent_unknown_kids_share_one_fetch(key_server: KeyServer,
                                                       http: Any) -> None:
    clock = Clock()
    cache = JwksCache(http, key_server.url, clock=clock)
    await cache.get_key("ed-1", "EdDSA")
    key_server.keys.append(jwk(ED2, "ed-2"))
    clock.now += 61
    keys = await asyncio.gather(*(cache.get_key("ed-2", "EdDSA") for _ in range(20)))
    assert len({id(k) for k in keys}) == 1
    assert key_server.hits == 2


async def test_keys_are_refetched_after_max_age(key_server: KeyServer, http: Any) -> None:
    clock = Clock()
    cache = JwksCache(http, key_server.url, clock=clock, max_age=3600)
    await cache.get_key("ed-1", "EdDSA")
    key_server.keys = [jwk(ED2, "ed-2")]  # ed-1 retired
    clock.now += 3601
    with pytest.raises(TokenError):
        await cache.get_key("ed-1", "EdDSA")
    assert key_server.hits == 2


async def test_a_failed_refresh_keeps_the_known_keys(key_server: KeyServer, http: Any) -> None:
    clock = Clock()
    cache = JwksCache(http, key_server.url, clock=clock)
    await cache.get_key("ed-1", "EdDSA")
    key_server.status = 500
    clock.now += 7200
    assert await cache.get_key("ed-1", "EdDSA") is not None
    assert key_server.hits == 2


async def test_unreachable_jwks_is_unavailable_until_it_answers(key_server: KeyServer,
                                                                http: Any) -> None:
    key_server.status = 503
    cache = JwksCache(http, key_server.url)
    with pytest.raises(Unavailable):
        await cache.get_key("ed-1", "EdDSA")
    key_server.status = 200
    assert await cache.get_key("ed-1", "EdDSA") is not None


@pytest.mark.parametrize("body", [b"<html>", b'{"keys": 1}', b"[]",
                                  b'{"keys": []' + b" " * 600_000 + b"}"])
async def test_a_broken_jwks_document_is_unavailable(key_server: KeyServer, http: Any,
                                                     body: bytes) -> None:
    key_server.body = body
    with pytest.raises(Unavailable):
        await JwksCache(http, key_server.url).get_key("ed-1", "EdDSA")


async def test_each_key_verifies_only_its_own_family(key_server: KeyServer, http: Any) -> None:
    key_server.keys = [jwk(ED, "ed"), jwk(EC, "ec"), jwk(RSA, "rsa"),
                       jwk(RSA, "rsa-rs256", alg="RS256")]
    cache = JwksCache(http, key_server.url)
    for kid, good, bad in [("ed", ["EdDSA"], ["ES256", "RS256", "HS256"]),
                           ("ec", ["ES256"], ["ES384", "EdDSA", "RS256", "HS256"]),
                           ("rsa", ["RS256", "PS256", "RS512"], ["ES256", "EdDSA", "HS256"]),
                           ("rsa-rs256", ["RS256"], ["PS256", "RS512"])]:
        for alg in good:
            assert await cache.get_key(kid, alg) is not None
        for alg in bad:
            with pytest.raises(TokenError):
                await cache.get_key(kid, alg)


async def test_symmetric_encryption_and_odd_keys_are_never_used(key_server: KeyServer,
                                                                http: Any) -> None:
    secret = b64url_encode(b"k" * 32)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    key_server.keys = [{"kty": "oct", "k": secret, "kid": "oct"},
                       jwk(ED, "enc", use="enc"), jwk(small, "small"),
                       {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "off-curve"},
                       {"kty": "OKP", "crv": "Ed448", "x": "AA", "kid": "ed448"},
                       "not an object", jwk(ED, "ok")]
    cache = JwksCache(http, key_server.url)
    for kid, alg in [("oct", "HS256"), ("enc", "EdDSA"), ("small", "RS256"),
                     ("off-curve", "ES256"), ("ed448", "EdDSA")]:
        with pytest.raises(TokenError):
            await cache.get_key(kid, alg)
    assert await cache.get_key("ok", "EdDSA") is not None


async def test_without_kid_only_a_single_fitting_key_is_chosen(key_server: KeyServer,
                                                               http: Any) -> None:
    key_server.keys = [jwk(ED, "a"), jwk(EC, "b")]
    cache = JwksCache(http, key_server.url)
    assert await cache.get_key(None, "EdDSA") is not None
    key_server.keys.append(jwk(ED2, "c"))
    await cache.refresh(force=True)
    with pytest.raises(TokenError):
        await cache.get_key(None, "EdDSA")
    assert len(await cache.get_keys(None, "EdDSA")) == 2


def test_key_families() -> None:
    assert key_fits(ED.public_key(), "EdDSA") and not key_fits(ED.public_key(), "ES256")
    assert key_fits(EC.public_key(), "ES256") and not key_fits(EC.public_key(), "ES384")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    assert key_fits(p384, "ES384") and not key_fits(p384, "ES256")
    assert key_fits(RSA.public_key(), "PS256") and not key_fits(RSA.public_key(), "HS256")


async def _gateway(aiohttp_server: Any, aiohttp_client: Any, key_server: KeyServer) -> Any:
    async def upstream(request: web.Request) -> web.Response:
        return web.Response(text="docs")

    app = web.Application()
    app.router.add_get("/{tail:.*}", upstream)
    docs = await aiohttp_server(app)
    config = make_config(str(docs.make_url("")), handshake={"method": "jwt", "jwt": {
        "jwks_url": key_server.url, "algorithms": ["EdDSA", "ES256"],
        "login_urls": [{"name": "Dashboard", "url": "https://dash.example.com/login"}]}})
    return await aiohttp_client(await build_app(config))


def token(key: Any, alg: str, kid: str | None, sub: str = "ada") -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "exp": now + 30, "iat": now, "host": "docs.test"}, key,
                      algorithm=alg, headers={"kid": kid} if kid else None)


async def test_login_with_published_keys(aiohttp_server: Any, aiohttp_client: Any,
                                         key_server: KeyServer) -> None:
    key_server.keys = [jwk(ED, "ed-1"), jwk(EC, "ec-1")]
    client = await _gateway(aiohttp_server, aiohttp_client, key_server)
    for key, alg, kid in [(ED, "EdDSA", "ed-1"), (EC, "ES256", "ec-1"), (ED, "EdDSA", None)]:
        client.session.cookie_jar.clear()
        response = await client.post("/_gateway/jwt-callback?redirect=%2Fa",
                                     data={"token": token(key, alg, kid, sub=f"{alg}{kid}")},
                                     allow_redirects=False)
        assert response.status == 303, await response.text()
        user = await (await client.get("/_gateway/user")).json()
        assert user["sub"] == f"{alg}{kid}"


async def test_hostile_kids_cannot_make_the_gateway_hammer_the_key_server(
        aiohttp_server: Any, aiohttp_client: Any, key_server: KeyServer) -> None:
    client = await _gateway(aiohttp_server, aiohttp_client, key_server)
    codes = []
    for kid in ["../../etc/passwd", "/dev/null", "x" * 200, "ed-2", "ed-3", "ed-4"]:
        response = await client.post("/_gateway/jwt-callback",
                                     data={"token": token(ED2, "EdDSA", kid)})
        codes.append((response.status, (await response.json())["error"]))
    assert codes == [(400, "unknown_key")] * 6
    assert key_server.hits == 1
    forged = await client.post("/_gateway/jwt-callback", data={"token": token(ED2, "EdDSA",
                                                                               "ed-1")})
    assert (await forged.json())["error"] == "bad_signature"


async def test_login_is_503_while_the_key_server_is_down(aiohttp_server: Any,
                                                         aiohttp_client: Any,
                                                         key_server: KeyServer) -> None:
    key_server.status = 500
    client = await _gateway(aiohttp_server, aiohttp_client, key_server)
    response = await client.post("/_gateway/jwt-callback",
                                 data={"token": token(ED, "EdDSA", "ed-1")})
    assert response.status == 503
    assert "Set-Cookie" not in response.headers
    key_server.status = 200
    response = await client.post("/_gateway/jwt-callback",
                                 data={"token": token(ED, "EdDSA", "ed-1")},
                                 allow_redirects=False)
    assert response.status == 303
