"""Each login token is usable once: a cache of the tokens already seen, until they expire.

In memory for one process; with ``session.store: redis``, in Redis (``SET NX EX``), so a
token used on one replica is refused on every other.
"""

from __future__ import annotations

import hashlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from gateway.bounded import Expiring
from gateway.config.model import Config
from gateway.errors import Unavailable

KEY_PREFIX = "dg:jti:"
#: Entries kept in memory at most; only tokens that passed their signature check get in,
#: and each leaves when its token expires (minutes), so this is never reached in practice.
MAX_ENTRIES = 100_000
REDIS_TIMEOUT = 2.0


def token_digest(token: str | bytes) -> str:
    """SHA-256 hex of a token (the cache never holds the token itself)."""
    data = token.encode("utf-8") if isinstance(token, str) else token
    return hashlib.sha256(data).hexdigest()


class ReplayCache(ABC):
    """Remembers tokens until they expire."""

    @abstractmethod
    async def first_use(self, token: str | bytes, ttl: float) -> bool:
        """Record the token for ``ttl`` seconds; False when it was already recorded.

        Raises ``gateway.errors.Unavailable`` when the backend cannot be reached.
        """

    async def close(self) -> None:  # noqa: B027 - most caches hold nothing to release
        """Release connections."""


class MemoryReplayCache(ReplayCache):
    """A bounded map of digests to expiry times, oldest evicted first when full."""

    def __init__(self, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        # Token lifetimes are short and similar, so expired digests leave from the front.
        self._seen: Expiring[str, None] = Expiring(max_entries, clock=clock)

    def __len__(self) -> int:
        return len(self._seen)

    async def first_use(self, token: str | bytes, ttl: float) -> bool:
        """Record the token; False when it is still remembered."""
        return self._seen.put_new(token_digest(token), None, max(ttl, 1.0))


class RedisReplayCache(ReplayCache):
    """``SET dg:jti:<sha256> 1 NX EX <ttl>`` on its own Redis connection pool."""

    def __init__(self, url: str, timeout: float = REDIS_TIMEOUT) -> None:
        # Imported here: deployments on the cookie store never load the Redis client.
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)
        self._redis = aioredis.Redis.from_url(url, socket_connect_timeout=timeout,
                                              socket_timeout=timeout)

    def __repr__(self) -> str:
        return "RedisReplayCache(...)"

    async def first_use(self, token: str | bytes, ttl: float) -> bool:
        """Record the token in Redis; False when some replica already did."""
        try:
            created = await self._redis.set(KEY_PREFIX + token_digest(token), b"1", nx=True,
                                            ex=max(1, math.ceil(ttl)))
        except self._errors:
            raise Unavailable("The login cannot be checked right now (Redis is unreachable); "
                              "try again in a moment.") from None
        return bool(created)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def create_replay_cache(config: Config) -> ReplayCache:
    """Redis when sessions live in Redis (replicas share it), memory otherwise."""
    if config.session.store == "redis":
        return RedisReplayCache(config.session.redis_url)
    return MemoryReplayCache()
