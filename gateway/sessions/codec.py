"""A Session as compact JSON bytes and back, with every type checked on the way in.

Short keys keep cookie sessions small. The bytes are only ever stored encrypted, but
``decode_session`` still checks every field: a value written by an older or newer
gateway must become "no session", never a half-built one.
"""

from __future__ import annotations

import json
import math
from typing import Any

from gateway.sessions.base import Session
from gateway.user import User

FORMAT = 1


class InvalidSession(ValueError):
    """Bytes that do not hold a session in the format this gateway writes."""


def encode_session(session: Session) -> bytes:
    """The session as compact UTF-8 JSON."""
    user = session.user
    record: dict[str, Any] = {
        "v": FORMAT,
        "id": session.id,
        "m": session.method,
        "ca": session.created_at,
        "ra": session.refreshed_at,
        "u": {
            "sub": user.sub,
            "exp": user.expires_at,
            "g": list(user.groups),
            "c": dict(user.content),
            "api": dict(user.api_playground_inputs),
            "x": dict(user.extra),
        },
    }
    for key, token in (("rt", session.refresh_token), ("it", session.id_token),
                       ("at", session.access_token)):
        if token is not None:
            record[key] = token
    try:
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidSession(f"session cannot be stored: {exc.__class__.__name__}") from None


def decode_session(data: bytes) -> Session:
    """The Session in ``data``; InvalidSession when anything is missing or of the wrong type."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidSession("session is not JSON") from None
    record = _mapping(record, "session")
    if record.get("v") != FORMAT:
        raise InvalidSession("session has an unknown format version")
    raw_user = _mapping(record.get("u"), "u")
    groups = raw_user.get("g")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InvalidSession("u.g must be a list of strings")
    user = User(
        sub=_string(raw_user.get("sub"), "u.sub"),
        expires_at=_number(raw_user.get("exp"), "u.exp"),
        groups=tuple(groups),
        content=_mapping(raw_user.get("c"), "u.c"),
        api_playground_inputs=_mapping(raw_user.get("api"), "u.api"),
        extra=_mapping(raw_user.get("x"), "u.x"),
    )
    session_id = _string(record.get("id"), "id")
    if not session_id:
        raise InvalidSession("id must not be empty")
    return Session(
        id=session_id,
        user=user,
        method=_string(record.get("m"), "m"),
        created_at=_number(record.get("ca"), "ca"),
        refreshed_at=_number(record.get("ra"), "ra"),
        refresh_token=_optional_string(record.get("rt"), "rt"),
        id_token=_optional_string(record.get("it"), "it"),
        access_token=_optional_string(record.get("at"), "at"),
    )


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidSession(f"{name} must be an object")
    return value


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidSession(f"{name} must be a string")
    return value


def _optional_string(value: Any, name: str) -> str | None:
    return None if value is None else _string(value, name)


def _number(value: Any, name: str) -> float:
    # bool is an int subclass, and JSON's NaN/Infinity extensions parse as floats.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSession(f"{name} must be a finite number")
    return float(value)

