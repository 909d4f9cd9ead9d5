"""Sessions read from Redis, kept for a few seconds while Redis reports every change.

Each worker holds one connection with ``CLIENT TRACKING ON BCAST PREFIX dg:s:``, redirected
to itself and subscribed to ``__redis__:invalidate``: whenever any session key changes (a
logout on any replica, a refresh, an operator's ``DEL``, the TTL running out), Redis
pushes its name and the copy here is dropped. While that connection is not up, nothing
is kept and every request asks Redis, as without the cache. The entry lifetime bounds
what a silently broken connection could leave stale.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.exceptions import RedisError, ResponseError

from gateway.bounded import Expiring
from gateway.sessions.base import Session

log = logging.getLogger(__name__)

CHANNEL = b"__redis__:invalidate"
#: Sessions kept per worker at most (the busiest; as many as the cookie store keeps opened).
LIMIT = 2048
#: Seconds between attempts to bring the tracking connection back.
RETRY_AFTER = 1.0


class TrackedSessions:
    """A per-worker copy of recently read sessions, valid while Redis tracks their keys."""

    def __init__(self, url: str, prefix: str, ttl: float, *, timeout: float,
                 limit: int = LIMIT, clock: Callable[[], float] = time.monotonic,
                 notify: Callable[[bool, BaseException | None], None] | None = None) -> None:
        self._url = url
        #: Told whether Redis answered each time the connection comes up or breaks.
        self._notify = notify
        self._timeout = timeout
        self._prefix = prefix
        self._ttl = ttl
        self._entries: Expiring[str, Session] = Expiring(limit, clock=clock)
        #: Whether the tracking connection is subscribed: the copies are trusted only then.
        self.live = False
        #: Counts invalidations, so a read that raced one is not kept.
        self.generation = 0
        self._task: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None
        self._closed = False
        self._refused = False

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Session | None:
        """The session kept under a Redis key; None when not kept or not trusted now."""
        if self._task is None and not self._closed:
            # A context of its own: its lines belong to no request (not the first one's).
            self._task = asyncio.create_task(self._track(), context=contextvars.Context())
        if not self.live:
            return None
        return self._entries.get(key)

    def put(self, key: str, session: Session, generation: int) -> None:
        """Keep a session read when ``generation`` was current, unless a change came since."""
        if self.live and generation == self.generation:
            self._entries.purge()  # expired copies go first, not only beyond the limit
            self._entries.put(key, session, self._ttl)

    def invalidate(self, keys: list[bytes | str] | None) -> None:
        """Drop the named keys (None: Redis was flushed, drop everything)."""
        self.generation += 1
        if keys is None:
            self._entries.clear()
            return
        for key in keys:
            self._entries.discard(key.decode() if isinstance(key, bytes) else key)

    async def close(self) -> None:
        """Stop tracking."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closed = True
        task.cancel()
        if self._conn is not None:
            # Closing the socket ends a read that a cancellation alone may not reach.
            await self._conn.disconnect(nowait=True)
        if task.get_loop() is asyncio.get_running_loop():  # else that loop is not running
            await asyncio.wait({task}, timeout=self._timeout)

    async def _track(self) -> None:
        while not self._closed:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                # Redis refused a command (CLIENT TRACKING needs Redis 6): say it once.
                if not self._refused:
                    self._refused = True
                    log.warning("session cache off: Redis refused client tracking (%s); "
                                "every request asks Redis", str(exc)[:80])
            except (RedisError, OSError, ValueError) as exc:
                log.debug("session tracking interrupted: %s", exc.__class__.__name__)
                if self._notify is not None and not self._closed:
                    self._notify(False, exc)
            await asyncio.sleep(RETRY_AFTER)

    def _drop_all(self) -> None:
        self.live = False
        self.generation += 1
        self._entries.clear()

    async def _follow(self) -> None:
        """One tracking connection, from subscribing until it fails."""
        # RESP2, where the invalidations arrive as plain pub/sub messages on this connection.
        options: dict[str, Any] = dict(parse_url(self._url))
        connection_class: type[AbstractConnection] = options.pop("connection_class", Connection)
        conn = self._conn = connection_class(**options, protocol=2,
                                             socket_timeout=self._timeout,
                                             socket_connect_timeout=self._timeout)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_command("CLIENT", "ID")
            client_id = await conn.read_response()
            await conn.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST",
                                    "PREFIX", self._prefix)
            await conn.read_response()
            await conn.send_command("SUBSCRIBE", CHANNEL)
            await conn.read_response()
            self.live = True
            if self._notify is not None:
                self._notify(True, None)
            while not self._closed:
                message = await conn.read_response(timeout=math.inf)
                if isinstance(message, list) and len(message) == 3 and message[0] == b"message" \
                        and message[1] == CHANNEL:
                    payload = message[2]
                    self.invalidate(payload if isinstance(payload, list) else None)
        finally:
            self._drop_all()
            await conn.disconnect(nowait=True)
