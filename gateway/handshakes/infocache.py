"""The Info API answer cache: one entry per forwarded cookie set, and single flight.

Entries are keyed by an HMAC of the cookie names and values, so neither memory nor Redis
ever holds a raw dashboard cookie. With the Redis store, answers are shared between
replicas under ``dg:info:<hmac>``, sealed with a key derived from the same cookies: a copy
of Redis alone cannot be read, and nobody without the cookies can find their entry.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from gateway.bounded import Expiring
from gateway.crypto import InvalidSealed, aead_decrypt, aead_encrypt, derive_key
from gateway.errors import Unavailable
from gateway.shared import Keyspace
from gateway.user import InvalidUser, User

log = logging.getLogger(__name__)

KEY_PREFIX = "dg:info:"
#: Most entries one process keeps; the oldest go first.
MAX_ENTRIES = 50_000
#: Seconds to reach Redis and wait for one reply: a cache must never be slower than a miss.
#: After a Redis failure, the local cache alone is used for this long.
REDIS_BACKOFF = 2.0

T = TypeVar("T")


class Kind(enum.Enum):
    """What the Info API said about a cookie set."""

    USER = "user"
    ANONYMOUS = "anonymous"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Answer:
    """One Info API answer: a user (with the JSON it came from), anonymous, or unavailable."""

    kind: Kind
    user: User | None = None
    data: Any = field(default=None, repr=False)
    reason: str = ""


ANONYMOUS = Answer(Kind.ANONYMOUS)


@dataclass(frozen=True)
class CacheKey:
    """Where a cookie set's answer is kept (``id``) and the key that seals it in Redis."""

    id: str
    seal_key: bytes = field(repr=False)


class CacheKeys:
    """Derives cache keys from cookie sets with a key derived from ``session.secrets``."""

    def __init__(self, secret: str) -> None:
        self._key = derive_key(secret, "info-cache")

    def __repr__(self) -> str:
        return "CacheKeys(...)"

    def key_for(self, cookies: Sequence[tuple[str, str]]) -> CacheKey:
        """The key for the cookies as forwarded (names and values, in order)."""
        # JSON of the pairs is unambiguous: no two cookie sets share one encoding.
        material = json.dumps(cookies, separators=(",", ":")).encode("utf-8")
        # One HMAC-SHA512, split: the half Redis shows as the key name says nothing
        # about the half that seals the value.
        digest = hmac.new(self._key, material, hashlib.sha512).digest()
        return CacheKey(id=digest[:32].hex(), seal_key=digest[32:])


class InfoCache(ABC):
    """Keeps answers for a while; an entry never outlives its ttl."""

    @abstractmethod
    async def get(self, key: CacheKey) -> Answer | None:
        """The live answer for a key, or None."""

    @abstractmethod
    async def put(self, key: CacheKey, answer: Answer, ttl: float) -> None:
        """Keep an answer for ``ttl`` seconds."""

    @abstractmethod
    async def close(self) -> None:
        """Release what the cache holds."""


class MemoryCache(InfoCache):
    """An in-process cache with a cap on entries (oldest evicted first)."""

    def __init__(self, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: Expiring[str, Answer] = Expiring(max_entries, clock=clock)

    def __len__(self) -> int:
        return len(self._entries)

    def get_now(self, key: CacheKey) -> Answer | None:
        """``get`` without awaiting (the memory cache never waits)."""
        return self._entries.get(key.id)

    def put_now(self, key: CacheKey, answer: Answer, ttl: float) -> None:
        """``put`` without awaiting."""
        if ttl <= 0:
            return
        if answer.data is not None:
            answer = replace(answer, data=None)  # only Redis needs the JSON again
        self._entries.put(key.id, answer, ttl)

    async def get(self, key: CacheKey) -> Answer | None:
        """The live answer for a key, or None."""
        return self.get_now(key)

    async def put(self, key: CacheKey, answer: Answer, ttl: float) -> None:
        """Keep an answer for ``ttl`` seconds."""
        self.put_now(key, answer, ttl)

    async def close(self) -> None:
        """Forget every entry."""
        self._entries.clear()


class RedisCache(InfoCache):
    """Users and anonymous answers shared in Redis; unavailability stays per process.

    When Redis fails, the process falls back to its own memory for a moment rather
    than fail the request: the cache only saves Info API calls.
    """

    def __init__(self, keyspace: Keyspace, parse: Callable[[Any], User], *,
                 max_entries: int = MAX_ENTRIES) -> None:
        self._keyspace = keyspace
        self._parse = parse
        self._local = MemoryCache(max_entries)
        self._skip_until = 0.0

    def __repr__(self) -> str:
        return "RedisCache(...)"

    async def get(self, key: CacheKey) -> Answer | None:
        """The local answer, else the shared one."""
        answer = self._local.get_now(key)
        if answer is not None or not self._redis_usable():
            return answer
        name = KEY_PREFIX + key.id
        try:
            blob = await self._keyspace.get(name)
        except Unavailable as exc:
            self._failed(exc)
            return None
        if blob is None:
            return None
        try:
            plain = aead_decrypt(key.seal_key, blob, name.encode())
            if plain == b"a":
                return ANONYMOUS
            if plain[:1] == b"u":
                data = json.loads(plain[1:])
                return Answer(Kind.USER, user=self._parse(data), data=data)
        except (InvalidSealed, ValueError, InvalidUser):
            pass
        return None

    async def put(self, key: CacheKey, answer: Answer, ttl: float) -> None:
        """Share users and anonymous answers; keep unavailability local."""
        ttl_ms = int(ttl * 1000)
        if ttl_ms <= 0:
            return
        if answer.kind is Kind.UNAVAILABLE or not self._redis_usable():
            self._local.put_now(key, answer, ttl)
            return
        name = KEY_PREFIX + key.id
        plain = b"a" if answer.kind is Kind.ANONYMOUS else \
            b"u" + json.dumps(answer.data, separators=(",", ":")).encode("utf-8")
        try:
            await self._keyspace.put(name, aead_encrypt(key.seal_key, plain, name.encode()),
                                     ttl)
        except Unavailable as exc:
            self._failed(exc)
            self._local.put_now(key, answer, ttl)

    async def close(self) -> None:
        """Forget the local entries (the keyspace is the app's to close)."""
        await self._local.close()

    def _redis_usable(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + REDIS_BACKOFF
        # The exception text can carry the Redis URL (and its password): the kind only.
        log.warning("Info API cache: Redis unreachable (%s); using local memory for %gs",
                    exc.__class__.__name__, REDIS_BACKOFF)


def create_cache(keyspace: Keyspace, parse: Callable[[Any], User]) -> InfoCache:
    """Shared through the keyspace when it is shared by replicas (Redis), else memory."""
    if keyspace.shared:
        return RedisCache(keyspace, parse)
    return MemoryCache()


class SingleFlight(Generic[T]):
    """Concurrent callers with the same key share one run of the work.

    The work runs as its own task, so a caller that goes away does not cancel it for the
    others.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, key: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The result of ``work()``, started now unless a run for ``key`` is under way."""
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(work())
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    async def close(self) -> None:
        """Cancel work still under way (at shutdown)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
