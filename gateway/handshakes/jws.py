"""Compact JWS, strictly: every token the gateway verifies (login tokens, ID tokens,
access tokens) is split, checked and verified here, one way.

Every segment must be canonical unpadded base64url and every JSON object free of
duplicate names, so one token has one reading. The header only ever *names* a key
(``kid``) and an algorithm: keys come from configuration or a configured key set, never
from ``jku``, ``x5u``, ``jwk`` or ``x5c``; ``none`` is never accepted, ``crit`` is
refused, and a key verifies only its own algorithm family.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.crypto import b64url_decode
from gateway.errors import HandshakeFailed

VerifyKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
MIN_RSA_BITS = 2048
EC_ALGS = {"ES256": "secp256r1", "ES384": "secp384r1"}
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
HMAC_ALGS = ("HS256", "HS384", "HS512")


class TokenError(HandshakeFailed):
    """A token was refused; ``code`` says why (malformed, bad_signature, unknown_key...)."""


def key_fits(key: VerifyKey, alg: str) -> bool:
    """Whether ``alg`` is the one family ``key`` may verify (Ed25519 only EdDSA, and so on)."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return alg == "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return EC_ALGS.get(alg) == key.curve.name
    if isinstance(key, rsa.RSAPublicKey):
        return alg in RSA_ALGS and key.key_size >= MIN_RSA_BITS
    return False


@dataclass(frozen=True)
class Compact:
    """A compact JWS split and decoded, not yet verified."""

    header: dict[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        """The header's ``alg`` (checked to be a string by ``split_jws``)."""
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        """The header's ``kid``, if any."""
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def strict_json(data: bytes, what: str) -> Any:
    """Parse JSON, refusing duplicate member names (two parsers could pick different ones)."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in items:
            if name in out:
                raise TokenError(f"the token's {what} names {name!r} twice", code="malformed")
            out[name] = value
        return out

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=pairs)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise TokenError(f"the token's {what} is not JSON", code="malformed") from None


def split_jws(token: str, max_size: int) -> Compact:
    """Split and decode a compact JWS strictly; TokenError for anything malformed.

    Every segment must be canonical unpadded base64url, so one token has one spelling.
    """
    if len(token) > max_size:
        raise TokenError(f"the token is larger than {max_size} bytes", code="too_large")
    parts = token.split(".")
    if len(parts) == 5:
        raise TokenError("encrypted tokens (JWE) are not accepted; sign the token instead",
                         code="malformed")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise TokenError("the token is not a signed JWT (header.payload.signature)",
                         code="malformed")
    try:
        raw = [b64url_decode(part) for part in parts]
    except ValueError:
        raise TokenError("the token is not base64url-encoded", code="malformed") from None
    header = strict_json(raw[0], "header")
    if not isinstance(header, dict):
        raise TokenError("the token's header is not a JSON object", code="malformed")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise TokenError("the token's header has no algorithm", code="malformed")
    if "kid" in header and not isinstance(header["kid"], str):
        raise TokenError("the token's kid is not a string", code="malformed")
    return Compact(header=header, payload=raw[1], signing_input=f"{parts[0]}.{parts[1]}".encode(),
                   signature=raw[2])


def verify_signature(compact: Compact, key: VerifyKey | bytes) -> bool:
    """Whether ``compact`` is signed by ``key`` with its ``alg`` (the family is checked first)."""
    alg = compact.alg
    if isinstance(key, bytes):
        if alg not in HMAC_ALGS:
            return False
    elif not key_fits(key, alg):
        return False
    try:
        algorithm = jwt.get_algorithm_by_name(alg)
        prepared = algorithm.prepare_key(key)
        return bool(algorithm.verify(compact.signing_input, prepared, compact.signature))
    except (NotImplementedError, jwt.PyJWTError, ValueError, TypeError):
        return False


def check_header(compact: Compact, allowed: Sequence[str], *,
                 types: Sequence[str] = ("JWT",)) -> None:
    """Refuse an algorithm outside ``allowed`` (``none`` never), critical extensions, and a
    ``typ`` outside ``types`` (compared without case; absent is fine)."""
    alg = compact.alg
    if alg.lower() == "none" or alg not in allowed:
        raise TokenError(f"tokens signed with {alg[:16]!r} are not accepted; allowed: "
                         f"{', '.join(allowed)}", code="unsupported_alg",
                         expected=", ".join(allowed), received=repr(alg[:16]))
    if "crit" in compact.header:
        raise TokenError("the token has critical header extensions this gateway does not "
                         "understand", code="crit_unsupported")
    typ = compact.header.get("typ")
    if typ is not None and (not isinstance(typ, str)
                            or typ.upper() not in {t.upper() for t in types} | {""}):
        raise TokenError(f"the token's typ is not {' or '.join(types)}", code="malformed")


def verified_claims(compact: Compact, keys: Sequence[VerifyKey | bytes]) -> dict[str, Any]:
    """The payload of a token one of ``keys`` signed, as a JSON object; TokenError else."""
    if not any(verify_signature(compact, key) for key in keys):
        raise TokenError("the token's signature does not verify", code="bad_signature")
    claims = strict_json(compact.payload, "payload")
    if not isinstance(claims, dict):
        raise TokenError("the token's payload is not a JSON object", code="malformed")
    return claims
