"""The Handshake base every login method implements, and what it is given."""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import aiohttp
from aiohttp import web
from mypy_extensions import mypyc_attr

from gateway.config.model import Config
from gateway.metrics import Metrics
from gateway.sessions.base import CookieJar, Session, SessionStore
from gateway.shared import Keyspace
from gateway.types import Handler
from gateway.user import User


@dataclass(frozen=True)
class Route:
    """One of a handshake's own routes; ``path`` is relative to the route base (``/_gateway``)
    unless ``absolute`` (then relative to the public base path, for compat routes)."""

    method: str
    path: str
    handler: Handler
    absolute: bool = False


@dataclass
class HandshakeDeps:
    """What a handshake may use: the config, the session store, one HTTP client, and the
    app's keyspace (used tokens and states, caches, locks)."""

    config: Config
    store: SessionStore
    http: aiohttp.ClientSession
    metrics: Metrics
    keyspace: Keyspace


# Compiled with the request path; the shared-session and OAuth handshakes subclass it
# from plain Python.
@mypyc_attr(allow_interpreted_subclasses=True)
class Handshake(ABC):
    """Identifies visitors; the pipeline calls ``identify`` and the login routes."""

    method: ClassVar[str]
    #: False for shared_session: the dashboard's cookie is the session.
    sets_session: ClassVar[bool] = True

    def __init__(self, deps: HandshakeDeps) -> None:
        self.deps = deps
        self.config = deps.config

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Fetch what is needed before serving (keys, discovery)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``start`` acquired."""

    async def identify(self, request: web.Request, session: Session | None,
                       jar: CookieJar) -> User | None:
        """The visitor's user object, or None for anonymous. Default: the session's user."""
        if session is None or session.expired():
            return None
        return session.user

    async def intercept(self, request: web.Request) -> web.StreamResponse | None:
        """A chance to answer a docs request before policy (e.g. a token in the query)."""
        return None

    @abstractmethod
    async def login(self, request: web.Request, return_to: str) -> web.StreamResponse:
        """Start a login that comes back to ``return_to`` (a validated relative path)."""

    def routes(self) -> list[Route]:
        """The handshake's own routes (callbacks)."""
        return []

    def outcome(self, outcome: str, reason: str) -> None:
        """Count a handshake outcome (``ok`` or ``failed``) and its reason."""
        self.deps.metrics.handshakes.labels(self.method, outcome, reason).inc()

    def logout_target(self, session: Session | None) -> str | None:
        """Where the browser goes after logout; None: the docs root."""
        return None

    async def new_session(self, user: User, jar: CookieJar, request: web.Request, *,
                          refresh_token: str | None = None, id_token: str | None = None,
                          access_token: str | None = None) -> Session:
        """Start a fresh session (always a new id: no fixation) and put its cookies in jar."""
        now = time.time()
        session = Session(id=secrets.token_urlsafe(24), user=user, method=self.method,
                          created_at=now, refreshed_at=now, refresh_token=refresh_token,
                          id_token=id_token, access_token=access_token)
        await self.deps.store.save(session, request.cookies, jar)
        return session


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes and a little more when it is longer.

    ``content.read(n)`` alone returns what has arrived so far, which for a large answer
    is only its first part.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)
