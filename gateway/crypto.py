"""Key derivation, AEAD seal/open with a version byte, random tokens, and MACs.

A sealed token is URL-safe base64 (no padding) of::

    version (1 byte) | key id (1 byte) | nonce (12 bytes) | AES-256-GCM ciphertext + tag

The version and key id are authenticated with the caller's associated data, so none of
the header can be changed without the tag failing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets as _secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
#: The longest token ``Sealer.open`` reads unless told otherwise; bounds work per request.
MAX_TOKEN = 16 * 1024

_HEADER_BYTES = 2
_MIN_SEALED = _HEADER_BYTES + NONCE_BYTES + TAG_BYTES
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class InvalidSealed(ValueError):
    """A sealed value is malformed, too large, from another key, or tampered with."""


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of ``b64url_encode``; ValueError on anything it would not produce."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded URL-safe base64")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error:
        raise ValueError("not unpadded URL-safe base64") from None
    # Unused low bits of the last character would otherwise give several spellings of one
    # value; one spelling only keeps every changed character a rejected token.
    if b64url_encode(data) != text:
        raise ValueError("not canonical base64")
    return data


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose: HKDF-SHA256 with info ``b"docs-gateway " + purpose``."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=b"docs-gateway " + purpose.encode("utf-8"))
    return hkdf.derive(secret.encode("utf-8"))


def random_token(nbytes: int = 32) -> str:
    """A random URL-safe string carrying ``nbytes`` of entropy."""
    return _secrets.token_urlsafe(nbytes)


def hmac_hex(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 of ``data`` as lower-case hex."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    """Compare two secrets without leaking where they differ through timing."""
    left = a.encode("utf-8") if isinstance(a, str) else a
    right = b.encode("utf-8") if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


def aead_encrypt(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """AES-256-GCM under ``key`` with a fresh random nonce: ``nonce | ciphertext | tag``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    """Inverse of ``aead_encrypt``; InvalidSealed when the blob is short or fails its tag."""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise InvalidSealed("sealed value is too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise InvalidSealed("sealed value does not verify") from None


def _key_id(key: bytes) -> int:
    return hmac.new(key, b"docs-gateway key id", hashlib.sha256).digest()[0]


class Sealer:
    """Seals and opens values for one purpose; the first secret seals, every secret opens."""

    __slots__ = ("_keys", "_max_token", "purpose")

    def __init__(self, secrets: Sequence[str], purpose: str, *, max_token: int = MAX_TOKEN) -> None:
        if isinstance(secrets, str) or not secrets:
            raise ValueError("Sealer needs a non-empty list of secrets")
        self.purpose = purpose
        self._max_token = max_token
        keys = [derive_key(secret, purpose) for secret in secrets]
        self._keys: tuple[tuple[int, AESGCM], ...] = tuple((_key_id(k), AESGCM(k)) for k in keys)

    def __repr__(self) -> str:
        return f"Sealer(purpose={self.purpose!r}, keys={len(self._keys)})"

    def seal(self, plaintext: bytes, aad: bytes = b"") -> str:
        """Encrypt and authenticate ``plaintext``, bound to ``aad``, as a URL-safe string."""
        key_id, aead = self._keys[0]
        header = bytes((VERSION, key_id))
        nonce = os.urandom(NONCE_BYTES)
        return b64url_encode(header + nonce + aead.encrypt(nonce, plaintext, header + aad))

    def open(self, token: str, aad: bytes = b"") -> bytes:
        """The plaintext of a token ``seal`` made with the same ``aad``; else InvalidSealed."""
        if not isinstance(token, str) or len(token) > self._max_token:
            raise InvalidSealed("sealed value is missing or too large")
        try:
            raw = b64url_decode(token)
        except ValueError:
            raise InvalidSealed("sealed value is not base64") from None
        if len(raw) < _MIN_SEALED:
            raise InvalidSealed("sealed value is too short")
        if raw[0] != VERSION:
            raise InvalidSealed("sealed value has an unknown version")
        body_start = _HEADER_BYTES + NONCE_BYTES
        header, nonce, body = raw[:_HEADER_BYTES], raw[_HEADER_BYTES:body_start], raw[body_start:]
        # A key id is one byte, so two secrets may share one: try each that matches.
        for key_id, aead in self._keys:
            if key_id != header[1]:
                continue
            try:
                return aead.decrypt(nonce, body, header + aad)
            except InvalidTag:
                continue
        raise InvalidSealed("sealed value does not verify under any configured secret")
