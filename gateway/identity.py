"""Identity for the docs: the signed assertion, its JWKS, and the plain identity headers."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt

from gateway.bounded import Bounded
from gateway.config.model import Config
from gateway.crypto import b64url_encode
from gateway.keys import (
    PrivateKey,
    alg_of,
    generate_private_key,
    kid_of,
    load_private_key,
    public_jwk,
)
from gateway.user import User, user_get

logger = logging.getLogger("gateway")

#: Claims the gateway sets itself; a user field of the same name never replaces them.
REGISTERED_CLAIMS = ("iss", "aud", "sub", "iat", "exp", "sid", "method")
#: Signed assertions kept for reuse (the busiest sessions); bounded for memory per worker.
CACHE_SIZE = 2048
_RESERVED_PREFIX = "x-gateway-"


def sid_of(session_id: str) -> str:
    """A stable, non-reversible reference to a session (safe for upstreams and logs)."""
    digest = hashlib.sha256(b"docs-gateway sid\0" + session_id.encode()).digest()
    return b64url_encode(digest[:16])


@dataclass(frozen=True)
class _SigningKey:
    key: PrivateKey = field(repr=False)
    alg: str
    kid: str


@dataclass(frozen=True)
class _Cached:
    user: User = field(repr=False)
    token: str = field(repr=False)
    exp: int


class AssertionSigner:
    """Signs the assertion JWT sent upstream; the first key signs, every key is published."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        assertion = config.identity.assertion
        self._clock = clock
        self._ttl = max(1, math.ceil(assertion.ttl))
        self._claim_names = assertion.claims
        self.issuer = config.server.public_origin
        self.audience = assertion.audience or _upstream_origin(config)
        if assertion.private_keys:
            # The key decides its algorithm; identity.assertion.algorithm is for generation.
            keys = [load_private_key(path) for path in assertion.private_keys]
        else:
            keys = [generate_private_key(assertion.algorithm)]
            if assertion.header:
                logger.warning(
                    "identity.assertion.private_key is not set: signing with an ephemeral "
                    "%s key; upstreams must refetch jwks.json after each restart",
                    assertion.algorithm)
        self._keys = tuple(_SigningKey(key=k, alg=alg_of(k), kid=kid_of(k)) for k in keys)
        self._jwks = {"keys": [public_jwk(k.key, k.alg) for k in self._keys]}
        self._cache: Bounded[tuple[str, str], _Cached] = Bounded(CACHE_SIZE)

    @property
    def kid(self) -> str:
        """The id of the key that signs."""
        return self._keys[0].kid

    def jwks(self) -> dict[str, Any]:
        """The JWK Set of every configured key: public members only."""
        return {"keys": [dict(jwk) for jwk in self._jwks["keys"]]}

    def sign(self, user: User, session_id: str | None, method: str) -> str:
        """The compact JWS for this visitor, reused while more than ttl/4 of it remains.

        ``session_id`` None (no gateway session, as with shared_session) leaves out ``sid``.
        """
        now = self._clock()
        # Keyed by the session id itself (kept in memory only, like the session), so a hit
        # costs no hash; the cached assertion is reused for the very same user object.
        slot = (session_id if session_id is not None else "\0" + user.sub, method)
        cached = self._cache.get(slot)
        if cached is not None and (cached.user is user or cached.user == user) \
                and cached.exp - now > self._ttl / 4:
            self._cache.move_to_end(slot)
            return cached.token
        sid = sid_of(session_id) if session_id is not None else None
        iat = int(now)
        exp = min(iat + self._ttl, math.floor(user.expires_at))
        claims = {name: value for name, value in user.claims(self._claim_names).items()
                  if name not in REGISTERED_CLAIMS}
        claims.update(iss=self.issuer, aud=self.audience, sub=user.sub, iat=iat, exp=exp,
                      method=method)
        if sid is not None:
            claims["sid"] = sid
        signer = self._keys[0]
        token = jwt.encode(claims, signer.key, algorithm=signer.alg, headers={"kid": signer.kid})
        self._cache.put(slot, _Cached(user=user, token=token, exp=exp))
        return token


class IdentityHeaders:
    """Which request headers carry identity, and the ones to send upstream for a visitor."""

    def __init__(self, config: Config, signer: AssertionSigner | None = None) -> None:
        identity = config.identity
        self.assertion_header = identity.assertion.header
        self.plain = tuple(identity.headers.items())
        configured = [name for name, _ in self.plain]
        if self.assertion_header:
            configured.append(self.assertion_header)
        #: Lower-case names of every identity header the gateway sets.
        self.names = frozenset(name.lower() for name in configured)
        self._normalized = frozenset(_normalize(name) for name in configured)
        #: The assertion signer (also the source of jwks.json); one per app.
        self.signer = signer or AssertionSigner(config)

    def is_identity_header(self, name: str) -> bool:
        """Whether a client-sent header must be stripped: ``x-gateway-*`` or a configured name.

        Names compare in lower case with ``_`` and ``.`` read as ``-``, as some servers
        merge them.
        """
        normalized = _normalize(name)
        return normalized.startswith(_RESERVED_PREFIX) or normalized in self._normalized

    def upstream_headers(self, user: User | None, session_id: str | None,
                         method: str) -> list[tuple[str, str]]:
        """The assertion and the configured plain headers for a visitor; [] when anonymous."""
        if user is None:
            return []
        out: list[tuple[str, str]] = []
        if self.assertion_header:
            out.append((self.assertion_header, self.signer.sign(user, session_id, method)))
        for name, path in self.plain:
            value = header_value(user_get(user, path))
            if value is not None:
                out.append((name, value))
        return out


def header_value(value: Any) -> str | None:
    """A user field as a header value; None when absent or unsafe (control characters, or a
    list that could not be read back as the same items)."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        # Readers split on commas and trim: ["reader,admin"] or [" admin"] would read as
        # another list, so such a list is left out rather than sent ambiguous.
        if any("," in v or v != v.strip() for v in value):
            return None
        text = ",".join(value)
    else:
        text = json.dumps(value, separators=(",", ":"), default=str)
    # CR/LF would split the header; other control characters are refused by servers.
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in text):
        return None
    return text


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _upstream_origin(config: Config) -> str:
    url = config.upstream.url
    if not url:
        return config.server.public_origin
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
