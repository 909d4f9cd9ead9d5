"""Verifying the login token of the JWT handshake: algorithm, key, signature, then claims.

The algorithm is checked against the allow-list and the key's family before any signature
work; the claims (exp, iat, nbf, max_age, iss, aud, host) after the signature verifies.
"""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import shown
from gateway.handshakes.base import HandshakeDeps
from gateway.handshakes.jwks import JwksCache
from gateway.handshakes.jws import (
    Compact,
    TokenError,
    VerifyKey,
    check_header,
    key_fits,
    split_jws,
    verified_claims,
)
from gateway.keys import kid_of, load_public_key

MAX_TOKEN = 8 * 1024
# Times beyond this (year ~318,000) are nonsense, and would overflow float arithmetic.
_MAX_TIME = 1e13


class JwtVerifier:
    """Checks a login token against the configured keys and claims; returns its payload."""

    def __init__(self, deps: HandshakeDeps) -> None:
        config = deps.config
        self.settings = config.handshake.jwt
        self.public_url = config.server.public_url
        self.secret = self.settings.secret.encode() if self.settings.secret is not None else None
        self.keys: tuple[tuple[str, VerifyKey], ...] = tuple(
            (kid_of(key), key) for key in map(load_public_key, self.settings.public_keys))
        self.jwks = JwksCache(deps.http, self.settings.jwks_url) \
            if self.settings.jwks_url else None

    async def verify(self, token: str, now: float | None = None) -> tuple[Compact, dict[str, Any]]:
        """The token split and its verified claims; TokenError naming the reason otherwise."""
        now = time.time() if now is None else now
        compact = split_jws(token, MAX_TOKEN)
        check_header(compact, self.settings.algorithms)
        claims = verified_claims(compact, await self._candidates(compact))
        self.check_claims(claims, now)
        return compact, claims

    async def _candidates(self, compact: Compact) -> list[VerifyKey | bytes]:
        alg, kid = compact.alg, compact.kid
        if self.secret is not None:
            return [self.secret] if alg.startswith("HS") else []
        # A kid that names one of the files (its thumbprint) picks it; any other kid is the
        # issuer's own label, and every file of the right family is tried.
        named = any(kid == own for own, _ in self.keys)
        found: list[VerifyKey | bytes] = [key for own, key in self.keys
                                          if key_fits(key, alg) and (not named or own == kid)]
        if self.jwks is not None:
            try:
                found += await self.jwks.get_keys(kid, alg)
            except TokenError:
                if not found:
                    raise
        if not found:
            raise TokenError(f"no configured key verifies {alg} tokens", code="unknown_key",
                             expected="a configured key", received=f"alg {alg!r}, kid "
                             f"{shown(kid)}")
        return found

    def check_claims(self, claims: dict[str, Any], now: float) -> None:
        """exp, iat, nbf, max_age, iss, aud and host; TokenError for the first that fails."""
        settings = self.settings
        leeway, max_age = settings.leeway, settings.max_age
        exp = _time_claim(claims, "exp")
        if exp is None:
            raise TokenError("the token has no exp (expiry); add one, a few seconds ahead",
                             code="missing_exp", expected="an exp claim", received="none")
        iat = _time_claim(claims, "iat")
        nbf = _time_claim(claims, "nbf")
        if now > exp + leeway:
            raise TokenError("the login token has expired; log in again", code="expired",
                             expected=f"exp within leeway {leeway:g}s",
                             received=f"expired {now - exp:.0f}s ago")
        if (nbf is not None and nbf > now + leeway) or (iat is not None and iat > now + leeway):
            ahead = max(nbf or now, iat or now) - now
            raise TokenError("the login token is not valid yet (check the clocks)",
                             code="not_yet_valid", expected=f"iat and nbf within leeway "
                             f"{leeway:g}s", received=f"{ahead:.0f}s in the future")
        if iat is not None:
            if now - iat > max_age + leeway or exp - iat > max_age:
                raise TokenError("the login token is older or longer-lived than max_age allows",
                                 code="too_old", expected=f"max_age {max_age:g}s",
                                 received=f"issued {now - iat:.0f}s ago, lives "
                                          f"{exp - iat:.0f}s")
        elif exp - now > max_age + leeway:
            raise TokenError("a login token without iat must expire within max_age",
                             code="too_old", expected=f"max_age {max_age:g}s",
                             received=f"no iat, expires in {exp - now:.0f}s")
        if settings.issuer is not None and claims.get("iss") != settings.issuer:
            raise TokenError("the token's issuer (iss) is not the configured one",
                             code="wrong_issuer", expected=repr(settings.issuer),
                             received=shown(claims.get("iss")))
        if settings.audience is not None and not _has_audience(claims.get("aud"),
                                                               settings.audience):
            raise TokenError("the token's audience (aud) is not the configured one",
                             code="wrong_audience", expected=repr(settings.audience),
                             received=shown(claims.get("aud")))
        if settings.require_host and not _same_host(claims.get("host"), self.public_url):
            raise TokenError("the token's host claim is not this docs site's host",
                             code="wrong_host", expected=repr(urlsplit(self.public_url).netloc),
                             received=shown(claims.get("host")))


def _time_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not -_MAX_TIME < value < _MAX_TIME or not math.isfinite(value):
        raise TokenError(f"the token's {name} is not a number of seconds since the epoch",
                         code="malformed")
    return float(value)


def _has_audience(aud: Any, wanted: str) -> bool:
    if isinstance(aud, str):
        return aud == wanted
    return isinstance(aud, list) and wanted in aud


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.path or parts.query or "@" in netloc:
        return None
    return parts.hostname.lower(), port or {"https": 443, "http": 80}.get(scheme)


def _same_host(claim: Any, public_url: str) -> bool:
    """Whether the ``host`` claim names public_url's host (and port, default ones implied)."""
    if not isinstance(claim, str) or not claim:
        return False
    url = urlsplit(public_url)
    mine = _host_port(url.netloc, url.scheme)
    return mine is not None and _host_port(claim, url.scheme) == mine
