"""The Session record, the SessionStore base that owns cookie settings, and the factory."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from mypy_extensions import mypyc_attr

from gateway.bounded import HEADER_MEMO, HEADER_MEMO_LENGTH, Bounded
from gateway.config.model import Config
from gateway.user import User


@dataclass(frozen=True)
class Session:
    """A logged-in visitor's session as the stores keep it."""

    id: str
    user: User
    method: str
    created_at: float
    refreshed_at: float
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)

    def expired(self, now: float | None = None) -> bool:
        """Whether the session is past the user's ``expiresAt``."""
        return (time.time() if now is None else now) >= self.user.expires_at

    def with_user(self, user: User, **changes: Any) -> Session:
        """A copy with a new user object (after a refresh)."""
        return replace(self, user=user, refreshed_at=time.time(), **changes)


@dataclass(init=False)
class CookieJar:
    """Cookie changes decided for one response, applied before the response starts."""

    sets: dict[str, tuple[str, int | None]]
    deletes: set[str]

    # Written out (init=False): compiled, it runs natively; it is made once per request.
    def __init__(self) -> None:
        self.sets = {}
        self.deletes = set()

    def set(self, name: str, value: str, max_age: int | None = None) -> None:
        """Set a cookie (``max_age`` None: a browser-session cookie)."""
        self.deletes.discard(name)
        self.sets[name] = (value, max_age)

    def delete(self, name: str) -> None:
        """Expire a cookie in the browser."""
        self.sets.pop(name, None)
        self.deletes.add(name)

    def clear(self) -> None:
        """Forget the changes once they are written onto a response."""
        self.sets.clear()
        self.deletes.clear()

    def __bool__(self) -> bool:
        return bool(self.sets or self.deletes)


@dataclass(frozen=True)
class CookieSettings:
    """How the gateway's cookies are written: name, path, Secure, SameSite."""

    name: str
    path: str
    secure: bool
    same_site: str

    def apply(self, jar: CookieJar, response: web.StreamResponse) -> None:
        """Write the jar's changes onto a response that has not started yet."""
        for name in jar.deletes:
            response.del_cookie(name, path=self.path, secure=self.secure, httponly=True,
                                samesite=self.same_site.capitalize())
        for name, (value, max_age) in jar.sets.items():
            response.set_cookie(name, value, path=self.path, secure=self.secure, httponly=True,
                                samesite=self.same_site.capitalize(), max_age=max_age)


def cookie_settings(config: Config) -> CookieSettings:
    """The session cookie's settings; ``__Host-`` on https at the site root."""
    server = config.server
    name = config.session.cookie_name
    if server.https and not server.base_path:
        name = "__Host-" + name
    return CookieSettings(name=name, path=server.base_path or "/", secure=server.https,
                          same_site=config.session.same_site)


@dataclass(init=False)
class Loaded:
    """What a store found in the request's cookies (treat it as read-only).

    ``session`` is None for an anonymous visitor; ``stale`` names cookies that were
    present but unusable (tampered, expired, foreign) and must be cleared.
    """

    session: Session | None
    stale: tuple[str, ...]

    # Written out (init=False): compiled, it runs natively; it is made once per request.
    def __init__(self, session: Session | None, stale: tuple[str, ...] = ()) -> None:
        self.session = session
        self.stale = stale


# Compiled with the request path; the Redis store subclasses it from plain Python.
@mypyc_attr(allow_interpreted_subclasses=True)
class SessionStore(ABC):
    """Loads and saves sessions; the base owns the cookie settings, backends the storage."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cookies = cookie_settings(config)
        # The store's cookies in each Cookie header lately read.
        self._found: Bounded[str, tuple[tuple[str, str], ...]] = Bounded(HEADER_MEMO)

    def cookies_in(self, header: str) -> tuple[tuple[str, str], ...]:
        """The store's own cookies in one Cookie header, in order, as (name, value)."""
        found = self._found.get(header)
        if found is None:
            found = tuple((name, value) for name, _, value in
                          (part.strip().partition("=") for part in header.split(";"))
                          if self.owns_cookie(name))
            if len(header) <= HEADER_MEMO_LENGTH:
                self._found.put(header, found)
        return found

    def owns_cookie(self, name: str) -> bool:
        """Whether a cookie name is one of the gateway's session cookies (incl. chunks)."""
        base = self.cookies.name
        return name == base or (name.startswith(base + ".") and name[len(base) + 1:].isdigit())

    @abstractmethod
    async def load(self, cookies: Mapping[str, str]) -> Loaded:
        """Find the session in the request cookies; never raises for a bad cookie.

        Raises ``gateway.errors.Unavailable`` when the backend cannot be reached.
        """

    @abstractmethod
    async def save(self, session: Session, cookies: Mapping[str, str], jar: CookieJar) -> None:
        """Store the session and put the cookies that carry it into ``jar``."""

    @abstractmethod
    async def delete(self, cookies: Mapping[str, str], jar: CookieJar) -> None:
        """End the session the cookies name, everywhere, and clear the cookies."""

    async def ping(self) -> bool:
        """Whether the backend is reachable (for readyz)."""
        return True

    async def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release connections."""


def gateway_cookie_predicate(config: Config) -> Callable[[str], bool]:
    """Whether a cookie name belongs to the gateway (session chunks, login state, ...).

    Every gateway cookie starts with ``session.cookie_name``, with or without the
    ``__Host-``/``__Secure-`` prefix, so a client cannot smuggle one past under a variant.
    """
    stem = config.session.cookie_name

    def predicate(name: str) -> bool:
        for prefix in ("__Host-", "__Secure-"):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        return name.startswith(stem)

    return predicate


def cookie_max_age(session: Session, now: float | None = None) -> int:
    """Seconds until the user's ``expiresAt`` (0 once past), for the cookie's Max-Age."""
    remaining = session.user.expires_at - (time.time() if now is None else now)
    return max(0, math.ceil(remaining))


def present_names(store: SessionStore, cookies: Mapping[str, str]) -> tuple[str, ...]:
    """The store's cookies (base name and chunks) that the request carries, sorted."""
    return tuple(sorted(name for name in cookies if store.owns_cookie(name)))
