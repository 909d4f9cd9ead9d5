"""In-memory maps that stay small whatever visitors do: capped, expiring, or dropped when idle.

``Bounded`` is a dict capped by entry count (least recently written, or touched, first
out); ``Expiring`` adds a lifetime per entry and may cap by size instead; ``OneTime``
refuses a value seen within its lifetime; ``KeyedLocks`` holds a lock per key only while
someone uses it. None of them does I/O; each belongs to one process.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, Generic, TypeVar, overload

#: What a request header (a Cookie header) reads as is kept for so many distinct values,
#: each at most so long: a reader sends the same value with every request until it changes.
HEADER_MEMO: Final = 256
HEADER_MEMO_LENGTH: Final = 4096
#: What is made of a response head is kept only for heads of at most so many fields and
#: characters (a field costs far more than its characters).
HEAD_MEMO_FIELDS: Final = 32
HEAD_MEMO_LENGTH: Final = 2048

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class Bounded(OrderedDict[K, V], Generic[K, V]):
    """A dict that forgets its oldest entries beyond ``limit``."""

    def __init__(self, limit: int = 10000) -> None:
        super().__init__()
        self.limit = limit

    def __repr__(self) -> str:
        # Keys and values are often tokens or sessions: the size only.
        return f"Bounded({len(self)} of {self.limit})"

    def put(self, key: K, value: V) -> None:
        """Insert or refresh an entry, evicting the oldest beyond the limit."""
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def keep_for_head(memo: dict[K, V], key: K, value: V, head: tuple[tuple[str, str], ...],
                  limit: int) -> None:
    """Keep ``value``, made of the response head ``head``, under ``key`` when the head is
    small enough (``HEAD_MEMO_FIELDS``, ``HEAD_MEMO_LENGTH``); beyond ``limit`` entries the
    oldest goes."""
    if len(head) <= HEAD_MEMO_FIELDS \
            and sum(len(name) + len(text) for name, text in head) <= HEAD_MEMO_LENGTH:
        memo[key] = value
        if len(memo) > limit:
            del memo[next(iter(memo))]


class Expiring(Generic[K, V]):
    """A map whose entries live ``ttl`` seconds each, capped at ``limit``: entries count one
    each, or what ``weigh`` says (bytes, say). The least recently written or touched go first.
    """

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic,
                 weigh: Callable[[V], int] | None = None) -> None:
        self.limit = limit
        self._clock = clock
        self._weigh = weigh
        self._weight = 0
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def weight(self) -> int:
        """What the live and not yet dropped entries weigh together (their count by default)."""
        return self._weight

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: D) -> V | D: ...

    def get(self, key: K, default: V | D | None = None) -> V | D | None:
        """The live value for ``key``, else ``default``; an expired entry is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return default
        if entry[1] <= self._clock():
            self._drop(key)
            return default
        return entry[0]

    def touch(self, key: K) -> None:
        """Count ``key`` as just used, so it is evicted last."""
        self._entries.move_to_end(key)

    def put(self, key: K, value: V, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds, evicting the oldest entries beyond the limit."""
        self._put(key, value, self._clock() + ttl)

    def put_new(self, key: K, value: V, ttl: float) -> bool:
        """``put`` unless ``key`` is live: whether it was put (expired entries are purged)."""
        now = self._clock()
        self.purge(now)
        entry = self._entries.get(key)
        if entry is not None and entry[1] > now:
            return False
        self._put(key, value, now + ttl)
        return True

    def discard(self, key: K) -> None:
        """Forget ``key`` if present."""
        if key in self._entries:
            self._drop(key)

    def purge(self, now: float | None = None) -> None:
        """Drop expired entries from the oldest on, up to the first live one.

        Where lifetimes are alike, insertion order is expiry order, so this keeps the map
        at its live entries for O(1) a call.
        """
        now = self._clock() if now is None else now
        while self._entries:
            key, (_, expiry) = next(iter(self._entries.items()))
            if expiry > now:
                break
            self._drop(key)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._weight = 0

    def _put(self, key: K, value: V, expiry: float) -> None:
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, expiry)
        self._weight += 1 if self._weigh is None else self._weigh(value)
        while self._weight > self.limit:
            _, (dropped, _) = self._entries.popitem(last=False)
            self._weight -= 1 if self._weigh is None else self._weigh(dropped)

    def _drop(self, key: K) -> None:
        value, _ = self._entries.pop(key)
        self._weight -= 1 if self._weigh is None else self._weigh(value)


class OneTime:
    """Values used in the last ``ttl`` seconds, to refuse a second use."""

    def __init__(self, ttl: float, limit: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._seen: Expiring[str, None] = Expiring(limit, clock=clock)

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, value: str) -> bool:
        """Record ``value``; False when it was already used and is still remembered."""
        return self._seen.put_new(value, None, self.ttl)


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold the key's lock for the block."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
