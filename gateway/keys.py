"""Signing keys: load and generate PEM files, name their algorithm, publish them as JWKs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.crypto import b64url_encode as _b64

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: Algorithms the gateway signs with.
SIGNING_ALGORITHMS = ("EdDSA", "ES256", "RS256")
MIN_RSA_BITS = 2048
_CURVES: dict[str, tuple[str, int]] = {  # cryptography's curve name -> (JWK crv, bytes)
    "secp256r1": ("P-256", 32),
    "secp384r1": ("P-384", 48),
}
_SUPPORTED = "an Ed25519 (EdDSA), P-256 (ES256) or RSA >= 2048-bit (RS256) key"


class KeyFileError(Exception):
    """A key file is missing, unreadable, or not a usable key; the message names the file."""


def load_private_key(path: str | Path) -> PrivateKey:
    """Read a PEM private key (PKCS#8 or traditional, unencrypted) the gateway can sign with."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"{path}: the key is encrypted with a password; "
                           "the gateway needs it unencrypted (file mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        if b"PUBLIC KEY-----" in data:
            raise KeyFileError(f"{path}: holds a public key; give the private key") from None
        raise KeyFileError(f"{path}: is not a PEM private key "
                           "(create one with: docs-gateway keys generate)") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
                      | rsa.RSAPrivateKey):
        raise KeyFileError(f"{path}: unsupported key type; use {_SUPPORTED}")
    _check(key.public_key(), path, signing=True)
    return key


def load_public_key(path: str | Path) -> PublicKey:
    """Read a PEM public key that login tokens are verified with (Ed25519, P-256/384, RSA)."""
    data = _read(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        if b"PRIVATE KEY-----" in data:
            raise KeyFileError(f"{path}: holds a private key; give only the public key "
                               "(the .pub.pem file)") from None
        raise KeyFileError(f"{path}: is not a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
                      | rsa.RSAPublicKey):
        raise KeyFileError(f"{path}: unsupported key type; use Ed25519, P-256, P-384 or RSA")
    _check(key, path, signing=False)
    return key


def generate_private_key(alg: str) -> PrivateKey:
    """A new key for ``EdDSA`` (Ed25519), ``ES256`` (P-256) or ``RS256`` (RSA 2048)."""
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=MIN_RSA_BITS)
    raise ValueError(f"unknown algorithm {alg!r}; use one of {', '.join(SIGNING_ALGORITHMS)}")


def private_pem(key: PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: PrivateKey | PublicKey) -> bytes:
    """The public half as SubjectPublicKeyInfo PEM."""
    return _public(key).public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)


def write_key_files(key: PrivateKey, prefix: str | Path) -> tuple[Path, Path]:
    """Write ``PREFIX.pem`` (private, mode 0600 from the start) and ``PREFIX.pub.pem``."""
    private_path = Path(f"{prefix}.pem")
    public_path = Path(f"{prefix}.pub.pem")
    # O_EXCL: never overwrite a key that may already be in use.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem(key))
    public_path.write_bytes(public_pem(key))
    return private_path, public_path


def alg_of(key: PrivateKey | PublicKey) -> str:
    """The JWS algorithm a key signs with: ``EdDSA``, ``ES256``/``ES384`` or ``RS256``."""
    public = _public(key)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return "ES384" if public.curve.name == "secp384r1" else "ES256"
    return "RS256"


def kid_of(key: PrivateKey | PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key."""
    members = _members(_public(key))
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode()).digest())


def public_jwk(key: PrivateKey | PublicKey, alg: str | None = None) -> dict[str, Any]:
    """The public JWK (``kty``/``crv``/``x``/``y``/``n``/``e``) with ``kid``, ``alg``, ``use``."""
    public = _public(key)
    natural = alg_of(public)
    alg = alg or natural
    if alg != natural and not (natural == "RS256" and alg in ("RS384", "RS512", "PS256")):
        raise ValueError(f"a {natural} key cannot sign {alg}")
    return {**_members(public), "kid": kid_of(public), "alg": alg, "use": "sig"}


def _members(public: PublicKey) -> dict[str, str]:
    """The RFC 7638 required members, public material only."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    if isinstance(public, ec.EllipticCurvePublicKey):
        crv, size = _CURVES[public.curve.name]
        numbers = public.public_numbers()
        return {"kty": "EC", "crv": crv, "x": _b64(numbers.x.to_bytes(size, "big")),
                "y": _b64(numbers.y.to_bytes(size, "big"))}
    rsa_numbers = public.public_numbers()
    return {"kty": "RSA", "n": _b64(_uint(rsa_numbers.n)), "e": _b64(_uint(rsa_numbers.e))}


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise KeyFileError(f"{path}: is a folder, not a key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be read ({exc.strerror or exc.__class__.__name__})") \
            from None


def _check(public: PublicKey, path: str | Path, *, signing: bool) -> None:
    if isinstance(public, ec.EllipticCurvePublicKey):
        allowed = ("secp256r1",) if signing else tuple(_CURVES)
        if public.curve.name not in allowed:
            raise KeyFileError(f"{path}: elliptic curve {public.curve.name} is not supported; "
                               f"use {_SUPPORTED if signing else 'P-256 or P-384'}")
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        raise KeyFileError(f"{path}: RSA key has {public.key_size} bits; "
                           f"use at least {MIN_RSA_BITS}")


def _public(key: PrivateKey | PublicKey) -> PublicKey:
    if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
                  | rsa.RSAPrivateKey):
        return key.public_key()
    return key


def _uint(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
