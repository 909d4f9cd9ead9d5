"""Key sets: a JWK read into a key, and the cache of a JWKS URL (fetched without
following redirects, refetched for an unknown ``kid``).

Shared by the JWT handshake (login tokens) and the OAuth handshake (ID tokens); the
tokens themselves are read and verified in ``handshakes.jws``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.crypto import b64url_decode
from gateway.errors import Unavailable
from gateway.handshakes.base import read_limited
from gateway.handshakes.jws import MIN_RSA_BITS, TokenError, VerifyKey, key_fits

log = logging.getLogger("gateway")

#: Largest JWKS document read; real ones are a few kilobytes.
MAX_JWKS_BYTES = 512 * 1024
_JWK_CURVES: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}

def jwk_to_key(jwk: Mapping[str, Any]) -> VerifyKey:
    """The public key of one JWK (OKP Ed25519, EC P-256/P-384, RSA); ValueError otherwise.

    Symmetric (``oct``) keys are refused: a key published in a JWKS is public.
    """
    kty = jwk.get("kty")
    if kty == "OKP" and jwk.get("crv") == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(_member(jwk, "x"))
    if kty == "EC" and jwk.get("crv") in _JWK_CURVES:
        curve = _JWK_CURVES[str(jwk["crv"])]
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(_member(jwk, "x"), "big"), int.from_bytes(_member(jwk, "y"), "big"),
            curve)
        return numbers.public_key()
    if kty == "RSA":
        public = rsa.RSAPublicNumbers(int.from_bytes(_member(jwk, "e"), "big"),
                                      int.from_bytes(_member(jwk, "n"), "big")).public_key()
        if public.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {public.key_size} bits")
        return public
    raise ValueError(f"unsupported key type {kty!r}")


def _member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"member {name!r} missing")
    return b64url_decode(value)


@dataclass(frozen=True)
class _Entry:
    kid: str | None
    alg: str | None
    key: VerifyKey


class JwksCache:
    """Keys from a JWKS URL: fetched on first use, refetched on an unknown ``kid`` at most
    once per ``min_refresh_interval`` seconds, and after ``max_age`` seconds anyway."""

    def __init__(self, http: aiohttp.ClientSession, url: str, min_refresh_interval: float = 60.0,
                 *, max_age: float = 3600.0, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.http = http
        self.url = url
        self.min_refresh_interval = min_refresh_interval
        self.max_age = max_age
        self.timeout = timeout
        self._clock = clock
        self._entries: tuple[_Entry, ...] = ()
        self._fetched_at: float | None = None
        self._generation = 0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"JwksCache(url={self.url!r}, keys={len(self._entries)})"

    async def get_key(self, kid: str | None, alg: str) -> VerifyKey:
        """The key named ``kid`` that fits ``alg`` (without kid: the only one that fits)."""
        keys = await self.get_keys(kid, alg)
        if kid is None and len(keys) > 1:
            raise TokenError(f"the token has no kid and {len(keys)} published keys fit {alg}",
                             code="unknown_key")
        return keys[0]

    async def get_keys(self, kid: str | None, alg: str) -> list[VerifyKey]:
        """Every published key that may verify a token with this ``kid`` and ``alg``.

        Raises TokenError (``unknown_key``) when none does, Unavailable when the JWKS
        was never fetched and cannot be.
        """
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self.max_age:
            await self.refresh(force=True)
        found = self._match(kid, alg)
        if not found and self._may_refresh():
            await self.refresh()
            found = self._match(kid, alg)
        if not found:
            raise TokenError("the token was signed with a key the login server does not "
                             "publish", code="unknown_key")
        return found

    def _match(self, kid: str | None, alg: str) -> list[VerifyKey]:
        return [e.key for e in self._entries
                if (kid is None or e.kid == kid) and (e.alg is None or e.alg == alg)
                and key_fits(e.key, alg)]

    def _may_refresh(self) -> bool:
        return self._fetched_at is None or \
            self._clock() - self._fetched_at >= self.min_refresh_interval

    async def refresh(self, *, force: bool = False) -> None:
        """Fetch the JWKS again (unless another caller just did, or it is too soon)."""
        generation = self._generation
        async with self._lock:
            # Callers that queued behind a fetch use its result instead of fetching again.
            if self._generation != generation:
                return
            if not force and not self._may_refresh():
                return
            try:
                entries = await self._fetch()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("jwks fetch failed", extra={"url": self.url, "reason": str(exc)})
                if self._fetched_at is None:
                    raise Unavailable("The login server's keys cannot be fetched right now; "
                                      "try again in a moment.") from None
                # Keep the keys we have, and do not hammer the server.
                self._fetched_at = self._clock()
                self._generation += 1
                return
            self._entries = entries
            self._fetched_at = self._clock()
            self._generation += 1

    async def _fetch(self) -> tuple[_Entry, ...]:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        # Keys come from the configured URL only: a redirect (to another host, or a path
        # someone else controls) is a failed fetch, as for every identity fetch.
        async with self.http.get(self.url, timeout=timeout, allow_redirects=False,
                                 headers={"Accept": "application/json"}) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await read_limited(response, MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError("the JWKS document is too large")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise ValueError("the JWKS document is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("the JWKS document has no keys list")
        entries: list[_Entry] = []
        for jwk in document["keys"]:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                key = jwk_to_key(jwk)
            except ValueError:
                continue  # a key of a kind the gateway does not verify with; the rest still count
            kid, alg = jwk.get("kid"), jwk.get("alg")
            entries.append(_Entry(kid=kid if isinstance(kid, str) else None,
                                  alg=alg if isinstance(alg, str) else None, key=key))
        return tuple(entries)
