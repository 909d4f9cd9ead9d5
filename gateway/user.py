"""The user object (Mintlify's format): parse, validate, subject, views."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from gateway.errors import HandshakeFailed

#: The Mintlify fields, by their names in the user object.
FIELDS = ("expiresAt", "groups", "content", "apiPlaygroundInputs")
PLAYGROUND_KINDS = ("header", "query", "cookie", "path", "server")
#: Deepest nesting of objects and lists a user object may have (the object itself is 1).
MAX_DEPTH = 32
#: Largest user object, counted as its compact JSON in UTF-8 (about); the largest answer
#: any source is read up to, so one built from several sources is held to it too.
MAX_SIZE = 1024 * 1024


# A plain class when compiled: its class-level code and status override the base's.
@mypyc_attr(native_class=False)
class InvalidUser(HandshakeFailed):
    """The user object has a field of the wrong type, no subject, or has expired."""

    code = "invalid_user"


@dataclass(frozen=True)
class User:
    """A validated user object plus the gateway's subject."""

    sub: str
    expires_at: float
    groups: tuple[str, ...] = ()
    content: Mapping[str, Any] = field(default_factory=dict)
    # Playground inputs often carry the reader's API key: keep them out of repr and logs.
    api_playground_inputs: Mapping[str, Any] = field(default_factory=dict, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def field_value(self, name: str) -> Any:
        """A top-level field by its user-object name (``sub`` is the gateway's subject)."""
        if name == "sub":
            return self.sub
        if name == "expiresAt":
            return _number(self.expires_at)
        if name == "groups":
            return list(self.groups)
        if name == "content":
            return self.content
        if name == "apiPlaygroundInputs":
            return self.api_playground_inputs
        return self.extra.get(name)

    def fields_digest(self) -> str:
        """A digest of every value a page may be filled from: readers with the same one
        read the same page (a new session of the same subject may hold other values)."""
        text = json.dumps([self.sub, self.expires_at, self.groups, self.content,
                           self.api_playground_inputs, self.extra],
                          sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                               digest_size=16).hexdigest()

    def view(self, expose: Sequence[str]) -> dict[str, Any]:
        """``sub`` plus the exposed Mintlify fields, as held here: to be read (written out
        as JSON), never changed."""
        view: dict[str, Any] = {"sub": self.sub}
        for name in expose:
            if name in FIELDS:
                view[name] = self.field_value(name)
        return view

    def to_json(self, expose: Sequence[str]) -> dict[str, Any]:
        """The JSON endpoint's view, a copy its caller may change."""
        return copy.deepcopy(self.view(expose))

    def claims(self, names: Sequence[str]) -> dict[str, Any]:
        """Claims for the assertion: each named field under its own name.

        A dotted path is stored under its last segment ("content.email" -> ``email``);
        a path that names nothing is left out.
        """
        out: dict[str, Any] = {}
        for name in names:
            value = user_get(self, name)
            if value is not None:
                out[name.rsplit(".", 1)[-1]] = copy.deepcopy(value)
        return out


def user_get(user: User, dotted_path: str) -> Any:
    """The value at a dotted path ("sub", "groups", "content.email"), or None."""
    head, _, rest = dotted_path.partition(".")
    value = user.field_value(head)
    return _walk(value, rest) if rest else value


def parse_user(data: Any, *, subject_paths: Sequence[str], max_age: float,
               now: float | None = None) -> User:
    """Validate a Mintlify user object into a User; raise InvalidUser naming the bad field.

    A JSON ``null`` counts as an absent field. Nothing is half-used: it is all or an error.
    """
    now = time.time() if now is None else now
    if not isinstance(data, Mapping):
        raise InvalidUser(f"the user object must be a JSON object, not {_kind(data)}")
    # Before anything copies or walks it recursively: every source (a login token, an
    # Info API, an id_token) is bounded the same way.
    check_bounds(data)
    expires_at = _expires_at(data.get("expiresAt"), now, max_age)
    groups = _groups(data.get("groups"))
    content = _object(data.get("content"), "content")
    inputs = _playground(data.get("apiPlaygroundInputs"))
    sub = _subject(data, subject_paths)
    extra = {k: copy.deepcopy(v) for k, v in data.items() if k not in FIELDS}
    return User(sub=sub, expires_at=expires_at, groups=groups, content=content,
                api_playground_inputs=inputs, extra=extra)


def check_bounds(data: Mapping[str, Any]) -> None:
    """Raise InvalidUser unless ``data`` is plain JSON within MAX_DEPTH and MAX_SIZE.

    Walked without recursion, and stopped as soon as a bound is passed, so neither a deep
    nor a large answer costs more than the bounds themselves. Numbers must be finite and
    strings must encode as UTF-8 (no lone surrogates), as JSON requires.
    """
    budget = MAX_SIZE
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, str):
            budget -= _text_size(value, where) + 2
        elif value is None or isinstance(value, bool):
            budget -= 5
        elif isinstance(value, int):
            budget -= value.bit_length() // 3 + 1
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidUser(f"{where or 'the user object'} holds a number that is not "
                                  "finite")
            budget -= 8
        elif isinstance(value, Mapping | list | tuple):
            if depth > MAX_DEPTH:
                raise InvalidUser(f"{where or 'the user object'} is nested more than "
                                  f"{MAX_DEPTH} levels deep")
            budget -= 2
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise InvalidUser(f"{where or 'the user object'} keys must be strings, "
                                          f"not {_kind(key)}")
                    budget -= _text_size(key, where) + 4
                    if budget < 0:
                        break
                    # Messages name at most two levels: "apiPlaygroundInputs.header".
                    inner = where if depth > 2 else f"{where}.{key}" if where else key
                    stack.append((item, depth + 1, inner))
            else:
                for item in value:
                    budget -= 1
                    if budget < 0:
                        break
                    stack.append((item, depth + 1, where))
        else:
            raise InvalidUser(f"{where or 'the user object'} holds {_kind(value)}, which is "
                              "not JSON")
        if budget < 0:
            raise InvalidUser(f"the user object is larger than {MAX_SIZE // 1024} KB")


def _text_size(text: str, where: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidUser(f"{where or 'the user object'} holds a string that is not valid "
                          "Unicode") from None


def _expires_at(value: Any, now: float, max_age: float) -> float:
    cap = now + max_age
    if value is None:
        return cap
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidUser("expiresAt must be a number of seconds since the epoch, "
                          f"not {_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidUser("expiresAt must be a finite number of seconds since the epoch")
    if value <= now:
        raise InvalidUser("the user object has expired: expiresAt is in the past")
    # min() before float(): a huge integer would overflow float() but is simply capped.
    return float(min(value, cap))


def _groups(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise InvalidUser(f"groups must be a list of strings, not {_kind(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidUser(f"groups must be a list of strings; item {index} is {_kind(item)}")
        # Groups travel as comma-separated lists (plain identity headers, page metadata,
        # data-gateway-groups): a name holding the delimiter, or that a reader of such a
        # list would trim, could pass for other groups ("reader,admin" for "admin").
        if "," in item or item != item.strip():
            raise InvalidUser(f"groups item {index} ({item[:40]!r}) contains a comma or "
                              "starts or ends with whitespace; group names cannot")
    return tuple(value)


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidUser(f"{name} must be an object, not {_kind(value)}")
    _string_keys(value, name)
    return copy.deepcopy(dict(value))


def _playground(value: Any) -> dict[str, Any]:
    inputs = _object(value, "apiPlaygroundInputs")
    for key, item in inputs.items():
        if key not in PLAYGROUND_KINDS:
            raise InvalidUser(f"apiPlaygroundInputs has an unknown key {key!r}; "
                              f"allowed: {', '.join(PLAYGROUND_KINDS)}")
        if item is None:
            continue
        # Mintlify accepts a bare server URL as well as a {url, ...} object.
        if key == "server" and isinstance(item, str):
            continue
        if not isinstance(item, Mapping):
            raise InvalidUser(f"apiPlaygroundInputs.{key} must be an object, not {_kind(item)}")
        _string_keys(item, f"apiPlaygroundInputs.{key}")
    return {k: v for k, v in inputs.items() if v is not None}


def _subject(data: Mapping[str, Any], paths: Sequence[str]) -> str:
    for path in paths:
        value = _walk(data, path)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, float) and math.isfinite(value):
            return str(int(value)) if value.is_integer() else repr(value)
    raise InvalidUser("the user object has no subject: none of "
                      f"{', '.join(paths) or '(no paths)'} is a non-empty string or number "
                      "(see user.subject)")


def _walk(value: Any, dotted_path: str) -> Any:
    for segment in dotted_path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(segment)
    return value


def _string_keys(mapping: Mapping[Any, Any], name: str) -> None:
    for key in mapping:
        if not isinstance(key, str):
            raise InvalidUser(f"{name} keys must be strings, not {_kind(key)}")


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
