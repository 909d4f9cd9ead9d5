from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.crypto import (
    MAX_TOKEN,
    InvalidSealed,
    Sealer,
    aead_decrypt,
    aead_encrypt,
    b64url_decode,
    b64url_encode,
    constant_time_equal,
    derive_key,
    hmac_hex,
    random_token,
)

A = "a" * 40
B = "b" * 40


def _flip(token: str, byte_index: int, bit: int = 0) -> str:
    raw = bytearray(b64url_decode(token))
    raw[byte_index] ^= 1 << bit
    return b64url_encode(bytes(raw))


def test_seal_round_trips_with_its_aad() -> None:
    sealer = Sealer([A], "session")
    token = sealer.seal(b"hello \x00 world", b"docs_session")
    assert sealer.open(token, b"docs_session") == b"hello \x00 world"
    assert sealer.seal(b"", b"") and sealer.open(sealer.seal(b"")) == b""


def test_sealed_token_is_cookie_safe_and_has_the_documented_layout() -> None:
    token = Sealer([A], "session").seal(b"x" * 10)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    raw = b64url_decode(token)
    # version, key id, 12-byte nonce, ciphertext (same length as plaintext), 16-byte tag
    assert raw[0] == 1
    assert len(raw) == 1 + 1 + 12 + 10 + 16


def test_every_seal_uses_a_fresh_nonce() -> None:
    sealer = Sealer([A], "session")
    tokens = {sealer.seal(b"same") for _ in range(20)}
    assert len(tokens) == 20


def test_a_different_aad_does_not_open() -> None:
    sealer = Sealer([A], "session")
    token = sealer.seal(b"data", b"docs_session")
    with pytest.raises(InvalidSealed):
        sealer.open(token, b"other_cookie")
    with pytest.raises(InvalidSealed):
        sealer.open(token)


def test_purposes_use_different_keys() -> None:
    token = Sealer([A], "session").seal(b"data")
    with pytest.raises(InvalidSealed):
        Sealer([A], "redis-cookie").open(token)


def test_every_single_bit_flip_is_rejected() -> None:
    sealer = Sealer([A], "session")
    token = sealer.seal(b"a small session", b"aad")
    length = len(b64url_decode(token))
    for index in range(length):
        for bit in range(8):
            with pytest.raises(InvalidSealed):
                sealer.open(_flip(token, index, bit), b"aad")


def test_every_changed_character_is_rejected() -> None:
    # Including the last one, whose unused low bits must not give a second spelling.
    sealer = Sealer([A], "session")
    token = sealer.seal(b"abcde")
    for index, char in enumerate(token):
        for other in ("A", "B", "Q", "g", "w", "-", "_"):
            if other == char:
                continue
            with pytest.raises(InvalidSealed):
                sealer.open(token[:index] + other + token[index + 1:])


@pytest.mark.parametrize("bad", ["", "a", "!!!!", "abc=", "ab cd", "ab+/cd", "AAAA" * 3,
                                 "\u00e9" * 8])
def test_garbage_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidSealed):
        Sealer([A], "session").open(bad)


def test_truncated_and_extended_tokens_are_rejected() -> None:
    sealer = Sealer([A], "session")
    token = sealer.seal(b"some session data")
    for cut in (1, 2, 4, len(token) // 2, len(token) - 4):
        with pytest.raises(InvalidSealed):
            sealer.open(token[:-cut])
    with pytest.raises(InvalidSealed):
        sealer.open(token + "AAAA")


def test_an_unknown_version_is_rejected() -> None:
    sealer = Sealer([A], "session")
    raw = bytearray(b64url_decode(sealer.seal(b"data")))
    raw[0] = 2
    with pytest.raises(InvalidSealed):
        sealer.open(b64url_encode(bytes(raw)))


def test_oversize_input_is_rejected_before_decoding() -> None:
    sealer = Sealer([A], "session")
    big = sealer.seal(b"x" * (MAX_TOKEN * 3 // 4))
    assert len(big) > MAX_TOKEN
    with pytest.raises(InvalidSealed):
        sealer.open(big)
    roomy = Sealer([A], "session", max_token=len(big))
    assert roomy.open(big) == b"x" * (MAX_TOKEN * 3 // 4)


def test_rotation_first_secret_seals_all_open() -> None:
    old = Sealer([A], "session").seal(b"from before")
    rotated = Sealer([B, A], "session")
    assert rotated.open(old) == b"from before"
    fresh = rotated.seal(b"after")
    assert Sealer([B], "session").open(fresh) == b"after"
    with pytest.raises(InvalidSealed):
        Sealer([A], "session").open(fresh)
    with pytest.raises(InvalidSealed):
        Sealer([B], "session").open(old)


def test_a_sealer_needs_secrets() -> None:
    with pytest.raises(ValueError):
        Sealer([], "session")
    with pytest.raises(ValueError):
        Sealer(A, "session")


def test_repr_holds_no_key_material() -> None:
    sealer = Sealer([A, B], "session")
    text = repr(sealer)
    assert A not in text and B not in text
    assert derive_key(A, "session").hex() not in text
    assert "session" in text


def test_derive_key_is_hkdf_sha256_with_the_documented_info() -> None:
    # An independent HKDF (RFC 5869, empty salt) so another implementation can read cookies.
    prk = hmac.new(b"\x00" * 32, A.encode(), hashlib.sha256).digest()
    expected = hmac.new(prk, b"docs-gateway session" + b"\x01", hashlib.sha256).digest()
    assert derive_key(A, "session") == expected
    assert derive_key(A, "session") != derive_key(A, "redis-cookie")
    assert derive_key(A, "session") != derive_key(B, "session")


def test_aead_round_trip_and_failures() -> None:
    key = bytes(range(32))
    blob = aead_encrypt(key, b"secret record", b"dg:s:1")
    assert aead_decrypt(key, blob, b"dg:s:1") == b"secret record"
    with pytest.raises(InvalidSealed):
        aead_decrypt(key, blob, b"dg:s:2")
    with pytest.raises(InvalidSealed):
        aead_decrypt(bytes(32), blob, b"dg:s:1")
    with pytest.raises(InvalidSealed):
        aead_decrypt(key, blob[:20], b"dg:s:1")


def test_random_token_is_url_safe_and_unique() -> None:
    tokens = {random_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert len(b64url_decode(token)) == 32
    assert len(b64url_decode(random_token(16))) == 16


def test_hmac_hex_matches_rfc_4231() -> None:
    assert hmac_hex(b"Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_constant_time_equal_accepts_text_and_bytes() -> None:
    assert constant_time_equal("state-\u00e9", "state-\u00e9")
    assert constant_time_equal(b"abc", "abc")
    assert not constant_time_equal("abc", "abd")
    assert not constant_time_equal(b"abc", b"abcd")


def test_b64url_decode_is_strict() -> None:
    assert b64url_decode(b64url_encode(b"\xff\xfe\x00")) == b"\xff\xfe\x00"
    for bad in ("ab=", "a", "ab\n", "a+b/", "AB"):
        with pytest.raises(ValueError):
            b64url_decode(bad)
