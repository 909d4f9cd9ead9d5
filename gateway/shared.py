"""What the gateway keeps beside its sessions: used login tokens and OAuth states, cached
Info API answers, refresh locks. One keyspace per app, in this process's memory or in
Redis (``session.store: redis``, so every replica shares it: one server, Sentinel or
Cluster), over one Redis client with one timeout policy. Every operation names one key, so
each is whole on any node of a Cluster.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from gateway.bounded import Expiring
from gateway.config.model import Config
from gateway.config.redisurl import parse_redis_url, redis_kind
from gateway.crypto import random_token
from gateway.errors import Unavailable

log = logging.getLogger("gateway")

#: One policy for every Redis command the gateway sends: a dead Redis is noticed within it.
REDIS_TIMEOUT = 2.0
#: Entries kept in memory at most (oldest first out): each is small and short-lived.
MAX_ENTRIES = 100_000
# Deletes the lock only if it still holds this holder's token (it may have expired and
# been taken by another replica since).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"
# A session saved over the one it replaces, in one step (not in a Cluster: two slots).
_PUT_REPLACING = ("redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
                  "redis.call('del', KEYS[2]) return 1")


class Keyspace(ABC):
    """Keys with a lifetime: set once, read, replaced, deleted, and held as a lock.

    Every method but ``lock`` and ``ping`` raises ``Unavailable`` when the backend cannot
    be reached; what that means (refuse a login, fall back to memory) is the caller's.
    """

    #: Whether other processes see the same keys (Redis) or only this one (memory).
    shared: bool = False

    @abstractmethod
    async def first_use(self, key: str, ttl: float) -> bool:
        """Record ``key`` for ``ttl`` seconds; False when it was already recorded."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None."""

    @abstractmethod
    async def put(self, key: str, value: bytes, ttl: float, *,
                  replacing: str | None = None) -> None:
        """Keep ``value`` for ``ttl`` seconds; ``replacing`` is deleted in the same step."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Forget ``key``."""

    @abstractmethod
    def lock(self, key: str, ttl: float) -> AbstractAsyncContextManager[bool]:
        """Hold ``key`` for at most ``ttl`` seconds while the block runs; yields whether it
        is held (False: someone else holds it, or the backend cannot be reached)."""

    async def ping(self) -> bool:
        """Whether the backend answers."""
        return True

    async def start(self) -> None:  # noqa: B027 - memory has nothing to reach
        """Reach the backend once at start (and say whether it answers)."""

    def note(self, reachable: bool, error: BaseException | None = None) -> None:  # noqa: B027
        """What an operation on the backend (this keyspace's or another connection's to the
        same backend) found: it answered, or it could not be reached."""

    async def close(self) -> None:  # noqa: B027 - memory holds nothing to release
        """Release connections."""


class MemoryKeyspace(Keyspace):
    """Keys in this process's memory, bounded (oldest first out) and expiring."""

    def __init__(self, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # Lifetimes are short and alike, so expired keys leave from the front.
        self._values: Expiring[str, bytes] = Expiring(max_entries, clock=clock)

    def __len__(self) -> int:
        return len(self._values)

    async def first_use(self, key: str, ttl: float) -> bool:
        """Record ``key``; False when it is still remembered."""
        return self._values.put_new(key, b"", max(ttl, 1.0))

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None."""
        return self._values.get(key)

    async def put(self, key: str, value: bytes, ttl: float, *,
                  replacing: str | None = None) -> None:
        """Keep ``value`` for ``ttl`` seconds."""
        if replacing is not None:
            self._values.discard(replacing)
        if ttl > 0:
            self._values.put(key, value, ttl)

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        self._values.discard(key)

    @asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[bool]:
        """One process: its own locks (the callers' asyncio locks) are all there is."""
        yield True


def redis_where(url: str) -> str:
    """Where a Redis URL points, for a log line: host, port and database (the sentinels and
    the master's name, the cluster's seed nodes), never a user name or password."""
    parts = urlsplit(url)
    kind = redis_kind(url)
    if parts.scheme in ("redis", "rediss"):
        try:
            port = parts.port or 6379
        except ValueError:
            port = 6379
        return f"{parts.hostname or ''}:{port}{parts.path}"
    if kind in ("sentinel", "cluster"):
        return f"{kind} {parts.netloc.rpartition('@')[2]}{parts.path}"
    return f"{parts.scheme}:"


def redis_client(url: str, timeout: float = REDIS_TIMEOUT) -> Any:
    """A redis-py asyncio client for ``session.redis_url``: one server, the master a set of
    sentinels names (found again after a failover), or a Redis Cluster.

    Every command times out after ``timeout`` seconds and is tried once more on a fresh
    connection: after a restart or a failover, pooled connections are dead (or point at a
    demoted master), and the first command on each would fail although a new one succeeds.
    """
    # Imported here: deployments on the cookie store never load the Redis client.
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import ExponentialBackoff

    target = parse_redis_url(url)
    common: dict[str, Any] = {
        "socket_connect_timeout": timeout, "socket_timeout": timeout,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1)}
    if target.kind == "server":
        return aioredis.Redis.from_url(url, **common)
    login: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.tls:
        login["ssl"] = True
    if target.kind == "sentinel":
        sentinel = Sentinel(target.hosts, sentinel_kwargs={
            "socket_connect_timeout": timeout, "socket_timeout": timeout,
            "username": target.sentinel_username, "password": target.sentinel_password,
            **({"ssl": True} if target.tls else {})})
        return sentinel.master_for(target.service, db=target.db, **common, **login)
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
                        **common, **login)


class RedisKeyspace(Keyspace):
    """Keys in Redis (one server, Sentinel or Cluster) over one client, with one timeout and
    one retry.

    Behind Sentinel, each write waits until the replica has it (``WAIT 1``), and fails as
    unreachable when none confirms: a session, a used login token or a logout that only the
    master held would be lost by a failover (Redis replicates asynchronously), bringing back
    a logged-out session or letting a token be used twice.
    """

    shared = True

    def __init__(self, url: str, timeout: float = REDIS_TIMEOUT) -> None:
        from redis.exceptions import RedisError

        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)
        self.kind = redis_kind(url)
        self.redis = redis_client(url, timeout)
        #: Replicas that must confirm each write, and how long they get (inside the timeout).
        self._replicas = 1 if self.kind == "sentinel" else 0
        self._wait_ms = max(1, int(timeout * 500))
        self.where = redis_where(url)
        #: Whether Redis answered the last operation (None: nothing asked yet).
        self.reachable: bool | None = None

    def __repr__(self) -> str:
        return "RedisKeyspace(...)"  # the URL may hold a password

    def _unavailable(self, exc: BaseException) -> Unavailable:
        self.note(False, exc)
        # The exception text can carry the Redis URL (and its password): the kind only.
        return Unavailable(f"Redis is unreachable ({exc.__class__.__name__})")

    def note(self, reachable: bool, error: BaseException | None = None) -> None:
        """Log a change of reachability (and the first word on it): up to down, down to up.
        Every operation reports here, so no polling is needed to notice either."""
        if reachable is self.reachable:
            return
        was, self.reachable = self.reachable, reachable
        fields = {"redis": self.where}
        if was is not None:
            fields["was"] = "reachable" if was else "unreachable"
        if reachable:
            log.info("Redis reachable", extra=fields)
        else:
            # The exception text can carry the Redis URL (and its password): the kind only.
            kind = error.__class__.__name__ if error is not None else "no answer"
            log.warning("Redis unreachable", extra={**fields, "error": kind})

    async def start(self) -> None:
        """PING once, so the log says at start whether Redis answers."""
        await self.ping()

    def _confirmed(self, acknowledged: object) -> None:
        """Raise Unavailable when fewer replicas than needed confirmed the write."""
        if isinstance(acknowledged, int) and acknowledged < self._replicas:
            raise Unavailable("no Redis replica confirmed the write")

    async def first_use(self, key: str, ttl: float) -> bool:
        """``SET key 1 NX EX ttl``: False when some replica already recorded it."""
        seconds = max(1, math.ceil(ttl))
        acknowledged = None
        try:
            if not self._replicas:
                recorded = await self.redis.set(key, b"1", nx=True, ex=seconds)
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(key, b"1", nx=True, ex=seconds)
                    pipe.wait(self._replicas, self._wait_ms)
                    recorded, acknowledged = await pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc) from None
        if self.reachable is not True:
            self.note(True)
        if recorded and self._replicas:
            self._confirmed(acknowledged)
        return bool(recorded)

    async def get(self, key: str) -> bytes | None:
        """``GET key``."""
        try:
            value = await self.redis.get(key)
        except self._errors as exc:
            raise self._unavailable(exc) from None
        if self.reachable is not True:
            self.note(True)
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float, *,
                  replacing: str | None = None) -> None:
        """``SET key value PX ttl``, and ``DEL replacing`` in the same step (one script).

        In a Cluster the two keys live in different slots, where no step spans both: the
        old key goes first, so a failure in between leaves no session rather than two.
        """
        ttl_ms = max(1, math.ceil(ttl * 1000))
        try:
            results: list[Any] = []
            if self.kind == "cluster":
                if replacing is not None:
                    await self.redis.delete(replacing)
                await self.redis.set(key, value, px=ttl_ms)
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    if replacing is None:
                        pipe.set(key, value, px=ttl_ms)
                    else:
                        pipe.eval(_PUT_REPLACING, 2, key, replacing, value, ttl_ms)
                    if self._replicas:
                        pipe.wait(self._replicas, self._wait_ms)
                    results = await pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc) from None
        if self.reachable is not True:
            self.note(True)
        if self._replicas:
            self._confirmed(results[-1])

    async def delete(self, key: str) -> None:
        """``DEL key``."""
        acknowledged = None
        try:
            if not self._replicas:
                await self.redis.delete(key)
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.delete(key)
                    pipe.wait(self._replicas, self._wait_ms)
                    _, acknowledged = await pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc) from None
        if self.reachable is not True:
            self.note(True)
        if self._replicas:
            self._confirmed(acknowledged)

    @asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[bool]:
        """``SET key <token> NX PX ttl``, released only by its holder (it expires anyway)."""
        token = random_token(16)
        try:
            held = bool(await self.redis.set(key, token, nx=True, px=max(1, int(ttl * 1000))))
        except self._errors as exc:
            self.note(False, exc)
            held = False
        else:
            if self.reachable is not True:
                self.note(True)
        try:
            yield held
        finally:
            if held:
                try:
                    await self.redis.eval(_RELEASE, 1, key, token)
                except self._errors:
                    pass  # the lock expires on its own

    async def ping(self) -> bool:
        """Whether Redis answers PING."""
        try:
            answered = bool(await self.redis.ping())
        except self._errors as exc:
            self.note(False, exc)
            return False
        self.note(answered)
        return answered

    async def close(self) -> None:
        """Close the connection pool (and the connections to the sentinels)."""
        await self.redis.aclose()
        sentinels = getattr(getattr(self.redis, "connection_pool", None), "sentinel_manager", None)
        for client in getattr(sentinels, "sentinels", ()):
            await client.aclose()


def create_keyspace(config: Config) -> Keyspace:
    """Redis when sessions live there (replicas share it), this process's memory otherwise."""
    if config.session.store == "redis":
        return RedisKeyspace(config.session.redis_url)
    return MemoryKeyspace()
