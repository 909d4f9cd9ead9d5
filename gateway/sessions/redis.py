"""The Redis store: the cookie names the session, Redis keeps it encrypted, with a TTL.

The cookie is ``seal("<session id>.<per-session key>")``. Redis holds, under
``dg:s:<sha256(id)>``, the session encrypted with the per-session key, which only the
visitor's cookie carries: a copy of Redis alone reveals nothing, and a forged cookie is
refused before any Redis round trip. Logging out deletes the key, so every replica
sharing the Redis sees the session gone at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.bounded import Bounded
from gateway.config.model import Config
from gateway.config.redisurl import redis_kind
from gateway.crypto import (
    KEY_BYTES,
    InvalidSealed,
    Sealer,
    aead_decrypt,
    aead_encrypt,
    b64url_decode,
    b64url_encode,
)
from gateway.errors import Unavailable
from gateway.sessions.base import (
    CookieJar,
    Loaded,
    Session,
    SessionStore,
    cookie_max_age,
    present_names,
)
from gateway.sessions.codec import InvalidSession, decode_session, encode_session
from gateway.sessions.tracking import TrackedSessions
from gateway.shared import REDIS_TIMEOUT, Keyspace, RedisKeyspace

log = logging.getLogger(__name__)

KEY_PREFIX = "dg:s:"
#: Cookie values remembered with the session id and key they were opened to.
TICKET_CACHE = 2048
#: Seconds to connect to Redis and to wait for one reply; a session lookup sits on every
#: request, so a stuck Redis must fail fast (503) rather than hold visitors.


def redis_key(session_id: str) -> str:
    """Where a session lives in Redis: a hash, so the id (half the cookie) is not in a dump."""
    return KEY_PREFIX + hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Ticket:
    """What the cookie carries: the session id and the key its Redis value is sealed with."""

    session_id: str
    key: bytes

    def __repr__(self) -> str:
        return "_Ticket(...)"


class RedisStore(SessionStore):
    """Keeps sessions in Redis (encrypted per session); the cookie holds id and key."""

    def __init__(self, config: Config, *, keyspace: Keyspace | None = None,
                 timeout: float = REDIS_TIMEOUT) -> None:
        super().__init__(config)
        self._sealer = Sealer(config.session.secrets, "redis-cookie")
        self._aad = self.cookies.name.encode("utf-8")
        # The app's keyspace (one Redis client per app); a store made alone has its own.
        self._owned = keyspace is None
        self._keyspace = keyspace if keyspace is not None else \
            RedisKeyspace(config.session.redis_url, timeout)
        # Cookie value -> what it names: opening the seal and hashing the id, done once.
        self._tickets: Bounded[str, tuple[_Ticket, str]] = Bounded(TICKET_CACHE)
        ttl = config.session.redis_cache
        # Kept copies need one connection that sees every change: a single server's. Behind
        # Sentinel or Cluster every request reads Redis.
        single = redis_kind(config.session.redis_url) == "server"
        self._tracked = TrackedSessions(config.session.redis_url, KEY_PREFIX, ttl,
                                        timeout=timeout, notify=self._keyspace.note) \
            if ttl > 0 and single else None

    def __repr__(self) -> str:
        return f"RedisStore(cookie={self.cookies.name!r})"

    def _ticket(self, cookies: Mapping[str, str]) -> _Ticket | None:
        value = cookies.get(self.cookies.name)
        if value is None:
            return None
        try:
            text = self._sealer.open(value, self._aad).decode("utf-8")
            session_id, _, key_text = text.rpartition(".")
            key = b64url_decode(key_text)
        except (InvalidSealed, UnicodeDecodeError, ValueError):
            return None
        if not session_id or len(key) != KEY_BYTES:
            return None
        return _Ticket(session_id, key)

    async def load(self, cookies: Mapping[str, str]) -> Loaded:
        """The session the cookie names; anonymous plus stale names when unusable.

        Raises Unavailable when Redis cannot be reached.
        """
        ours = present_names(self, cookies)
        if not ours:
            return Loaded(None)
        value = cookies.get(self.cookies.name)
        if value is None:
            return Loaded(None, stale=ours)
        found = self._tickets.get(value)
        if found is None:
            ticket = self._ticket(cookies)
            if ticket is None:
                return Loaded(None, stale=ours)
            found = (ticket, redis_key(ticket.session_id))
            self._tickets.put(value, found)
        ticket, key = found
        stale = tuple(n for n in ours if n != self.cookies.name)
        tracked = self._tracked
        if tracked is not None:
            kept = tracked.get(key)
            if kept is not None and kept.id == ticket.session_id and not kept.expired():
                return Loaded(kept, stale=stale)
            generation = tracked.generation
        try:
            blob = await self._keyspace.get(key)
        except Unavailable as exc:
            raise self._unavailable(exc) from None
        if blob is None:
            return Loaded(None, stale=ours)
        try:
            session = decode_session(aead_decrypt(ticket.key, blob, key.encode()))
        except (InvalidSealed, InvalidSession) as exc:
            log.debug("session record rejected: %s", exc)
            return Loaded(None, stale=ours)
        if session.id != ticket.session_id or session.expired():
            return Loaded(None, stale=ours)
        if tracked is not None:
            tracked.put(key, session, generation)
        return Loaded(session, stale=stale)

    async def save(self, session: Session, cookies: Mapping[str, str], jar: CookieJar) -> None:
        """Write the session to Redis with a TTL at ``expiresAt`` and its cookie into the jar.

        Saving a different session over an existing cookie (a new login) ends the old one.
        """
        previous = self._ticket(cookies)
        if previous is not None and previous.session_id == session.id:
            # Re-saving (a refresh) keeps the key, so concurrent requests of one browser
            # cannot leave it holding a cookie for a key Redis no longer uses.
            ticket = previous
        else:
            ticket = _Ticket(session.id, os.urandom(KEY_BYTES))
        key = redis_key(session.id)
        blob = aead_encrypt(ticket.key, encode_session(session), key.encode())
        ttl = max(0.001, session.user.expires_at - time.time())
        replaced = redis_key(previous.session_id) \
            if previous is not None and previous.session_id != session.id else None
        try:
            await self._keyspace.put(key, blob, ttl, replacing=replaced)
        except Unavailable as exc:
            raise self._unavailable(exc) from None
        self._forget(key, redis_key(previous.session_id) if previous is not None else None)
        value = self._sealer.seal(f"{session.id}.{b64url_encode(ticket.key)}".encode(), self._aad)
        for name in present_names(self, cookies):
            if name != self.cookies.name:
                jar.delete(name)
        jar.set(self.cookies.name, value, cookie_max_age(session))

    async def delete(self, cookies: Mapping[str, str], jar: CookieJar) -> None:
        """Delete the session from Redis (every replica sees it gone) and clear the cookies.

        Raises Unavailable when Redis cannot be reached, rather than leave a live session.
        """
        ticket = self._ticket(cookies)
        if ticket is not None:
            key = redis_key(ticket.session_id)
            try:
                await self._keyspace.delete(key)
            except Unavailable as exc:
                raise self._unavailable(exc) from None
            self._forget(key)
        for name in {self.cookies.name, *present_names(self, cookies)}:
            jar.delete(name)

    async def ping(self) -> bool:
        """Whether Redis answers PING."""
        return await self._keyspace.ping()

    def _forget(self, *keys: str | None) -> None:
        """Drop this worker's copies at once (Redis tells the others, and this one again)."""
        if self._tracked is not None:
            self._tracked.invalidate([key for key in keys if key is not None])

    async def close(self) -> None:
        """Stop tracking and close the connection pool."""
        if self._tracked is not None:
            await self._tracked.close()
        if self._owned:
            await self._keyspace.close()

    @staticmethod
    def _unavailable(exc: Unavailable) -> Unavailable:
        # The keyspace's message names the failure's kind only, never the URL.
        # The keyspace logs the change (reachable to unreachable); the request's own
        # access line says 503 with reason unavailable.
        log.debug("session store unreachable: %s", exc.message)
        return Unavailable("session store unreachable")
