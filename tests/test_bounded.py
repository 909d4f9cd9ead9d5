from __future__ import annotations

import asyncio

from gateway.bounded import (
    HEAD_MEMO_FIELDS,
    HEAD_MEMO_LENGTH,
    Bounded,
    Expiring,
    KeyedLocks,
    OneTime,
    keep_for_head,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bounded_forgets_the_least_recently_written_beyond_its_limit() -> None:
    seen: Bounded[str, int] = Bounded(2)
    seen.put("a", 1)
    seen.put("b", 2)
    seen.put("a", 3)  # rewritten: now the newest
    seen.put("c", 4)
    assert dict(seen) == {"a": 3, "c": 4}


def test_expiring_entries_end_at_their_ttl() -> None:
    clock = Clock()
    cache: Expiring[str, str] = Expiring(10, clock=clock)
    cache.put("short", "s", 1)
    cache.put("long", "l", 5)
    clock.now = 1.0
    assert cache.get("short") is None
    assert cache.get("short", "gone") == "gone"
    assert cache.get("long") == "l"
    assert len(cache) == 1  # the expired entry went when it was read


def test_expiring_evicts_the_least_recently_written_or_touched() -> None:
    cache: Expiring[str, int] = Expiring(2, clock=Clock())
    cache.put("a", 1, 60)
    cache.put("b", 2, 60)
    cache.touch("a")
    cache.put("c", 3, 60)
    assert cache.get("a") == 1 and cache.get("b") is None and cache.get("c") == 3


def test_expiring_by_weight_keeps_the_total_under_its_limit() -> None:
    cache: Expiring[str, bytes] = Expiring(10, clock=Clock(), weigh=len)
    cache.put("a", b"aaaa", 60)
    cache.put("b", b"bbbb", 60)
    cache.put("a", b"a", 60)  # a replaced entry no longer counts at its old size
    assert cache.weight == 5
    cache.put("c", b"cccccc", 60)
    assert cache.get("b") is None and cache.get("a") == b"a" and cache.get("c") == b"cccccc"
    assert cache.weight == 7
    cache.clear()
    assert cache.weight == 0 and len(cache) == 0


def test_put_new_refuses_a_live_key_and_takes_it_again_once_expired() -> None:
    clock = Clock()
    seen: Expiring[str, None] = Expiring(100, clock=clock)
    assert seen.put_new("token", None, 10)
    assert not seen.put_new("token", None, 10)
    clock.now = 10.0
    assert seen.put_new("token", None, 10)


def test_put_new_purges_expired_entries_so_the_map_stays_small() -> None:
    clock = Clock()
    seen: Expiring[str, None] = Expiring(100, clock=clock)
    for index in range(50):
        seen.put_new(str(index), None, 1)
    clock.now = 2.0
    seen.put_new("fresh", None, 1)
    assert len(seen) == 1


def test_one_time_refuses_a_second_use_within_its_ttl() -> None:
    clock = Clock()
    once = OneTime(600, limit=2, clock=clock)
    assert once.first_use("state-1")
    assert not once.first_use("state-1")
    clock.now = 600.0
    assert once.first_use("state-1")
    once.first_use("state-2")
    once.first_use("state-3")
    assert len(once) == 2


async def test_keyed_locks_serialize_one_key_and_let_others_run() -> None:
    locks = KeyedLocks()
    events: list[str] = []
    inside = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with locks.hold("session-a"):
            events.append("first in")
            inside.set()
            await release.wait()
            events.append("first out")

    async def second() -> None:
        async with locks.hold("session-a"):
            events.append("second in")

    async def other() -> None:
        async with locks.hold("session-b"):
            events.append("other in")

    running = asyncio.gather(first(), second())
    await inside.wait()
    await other()  # another key is not held up
    release.set()
    await running
    assert events == ["first in", "other in", "first out", "second in"]
    assert locks._locks == {}  # nobody holds or waits: nothing is kept


def test_what_is_made_of_a_small_head_is_kept_and_the_oldest_goes() -> None:
    memo: dict[str, str] = {}
    small = (("Content-Type", "text/html"),)
    for number in range(5):
        keep_for_head(memo, f"key{number}", f"made{number}", small, 3)
    assert memo == {"key2": "made2", "key3": "made3", "key4": "made4"}
    for head in ((("X-Long", "v" * HEAD_MEMO_LENGTH),),
                 tuple((f"X-{number}", "") for number in range(HEAD_MEMO_FIELDS + 1))):
        keep_for_head(memo, "big", "made", head, 3)
        assert "big" not in memo and len(memo) == 3
    largest = tuple((f"X-{number}", "") for number in range(HEAD_MEMO_FIELDS))
    keep_for_head(memo, "largest", "made", largest, 3)
    assert memo["largest"] == "made" and "key2" not in memo
