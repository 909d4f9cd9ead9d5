"""What the gateway keeps beside its sessions: used login tokens and OAuth states, cached
Info API answers, refresh locks. One keyspace per app, in this process's memory or in
Redis (``session.store: redis``, so every replica shares it), over one Redis client with
one timeout policy.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from gateway.bounded import Expiring
from gateway.config.model import Config
from gateway.crypto import random_token
from gateway.errors import Unavailable

#: One policy for every Redis command the gateway sends: a dead Redis is noticed within it.
REDIS_TIMEOUT = 2.0
#: Entries kept in memory at most (oldest first out): each is small and short-lived.
MAX_ENTRIES = 100_000
# Deletes the lock only if it still holds this holder's token (it may have expired and
# been taken by another replica since).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


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


class RedisKeyspace(Keyspace):
    """Keys in Redis over one connection pool, with one timeout and one retry."""

    shared = True

    def __init__(self, url: str, timeout: float = REDIS_TIMEOUT) -> None:
        # Imported here: deployments on the cookie store never load the Redis client.
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import RedisError

        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)
        # One retry: after Redis restarts, pooled connections are dead, and the first
        # command on each would fail although a fresh connection would succeed.
        self.redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1))

    def __repr__(self) -> str:
        return "RedisKeyspace(...)"  # the URL may hold a password

    def _unavailable(self, exc: BaseException) -> Unavailable:
        # The exception text can carry the Redis URL (and its password): the kind only.
        return Unavailable(f"Redis is unreachable ({exc.__class__.__name__})")

    async def first_use(self, key: str, ttl: float) -> bool:
        """``SET key 1 NX EX ttl``: False when some replica already recorded it."""
        try:
            return bool(await self.redis.set(key, b"1", nx=True, ex=max(1, math.ceil(ttl))))
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def get(self, key: str) -> bytes | None:
        """``GET key``."""
        try:
            value = await self.redis.get(key)
        except self._errors as exc:
            raise self._unavailable(exc) from None
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float, *,
                  replacing: str | None = None) -> None:
        """``SET key value PX ttl`` (and ``DEL replacing``) in one transaction."""
        ttl_ms = max(1, math.ceil(ttl * 1000))
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(key, value, px=ttl_ms)
                if replacing is not None:
                    pipe.delete(replacing)
                await pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def delete(self, key: str) -> None:
        """``DEL key``."""
        try:
            await self.redis.delete(key)
        except self._errors as exc:
            raise self._unavailable(exc) from None

    @asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[bool]:
        """``SET key <token> NX PX ttl``, released only by its holder (it expires anyway)."""
        token = random_token(16)
        try:
            held = bool(await self.redis.set(key, token, nx=True, px=max(1, int(ttl * 1000))))
        except self._errors:
            held = False
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
            return bool(await self.redis.ping())
        except self._errors:
            return False

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()


def create_keyspace(config: Config) -> Keyspace:
    """Redis when sessions live there (replicas share it), this process's memory otherwise."""
    if config.session.store == "redis":
        return RedisKeyspace(config.session.redis_url)
    return MemoryKeyspace()
