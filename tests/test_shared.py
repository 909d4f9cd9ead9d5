"""The app's keyspace, in memory and in a real Redis: the same suite for both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.errors import Unavailable
from gateway.shared import Keyspace, MemoryKeyspace, RedisKeyspace, create_keyspace
from tests.helpers import make_config
from tests.ports import free_port


@pytest.fixture(params=["memory", "redis"])
async def keyspace(request: pytest.FixtureRequest, redis_server: Any) -> AsyncIterator[Keyspace]:
    made: Keyspace = MemoryKeyspace() if request.param == "memory" \
        else RedisKeyspace(redis_server.url)
    yield made
    await made.close()


async def test_first_use_is_true_once(keyspace: Keyspace) -> None:
    key = f"dg:test:first:{id(keyspace)}"
    assert await keyspace.first_use(key, 5)
    assert not await keyspace.first_use(key, 5)


async def test_put_get_replace_delete(keyspace: Keyspace) -> None:
    old, new = f"dg:test:old:{id(keyspace)}", f"dg:test:new:{id(keyspace)}"
    await keyspace.put(old, b"one", 5)
    assert await keyspace.get(old) == b"one"
    await keyspace.put(new, b"two", 5, replacing=old)
    assert await keyspace.get(new) == b"two" and await keyspace.get(old) is None
    await keyspace.delete(new)
    assert await keyspace.get(new) is None


async def test_a_value_expires(keyspace: Keyspace) -> None:
    key = f"dg:test:expiring:{id(keyspace)}"
    await keyspace.put(key, b"x", 0.05)
    for _ in range(100):
        if await keyspace.get(key) is None:
            break
        await asyncio.sleep(0.02)
    assert await keyspace.get(key) is None


async def test_a_lock_is_held_by_one_holder_at_a_time(redis_server: Any) -> None:
    first, second = RedisKeyspace(redis_server.url), RedisKeyspace(redis_server.url)
    try:
        async with first.lock("dg:test:lock", 5) as held:
            assert held
            async with second.lock("dg:test:lock", 5) as also:
                assert not also
        async with second.lock("dg:test:lock", 5) as now:
            assert now  # released by its holder
    finally:
        await first.close()
        await second.close()


async def test_an_unreachable_redis_is_unavailable_never_a_crash() -> None:
    port = free_port()  # nobody listens here
    keyspace = RedisKeyspace(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    try:
        for call in (keyspace.first_use("k", 1), keyspace.get("k"), keyspace.put("k", b"v", 1),
                     keyspace.delete("k")):
            with pytest.raises(Unavailable) as caught:
                await call
            assert str(port) not in caught.value.message  # never the URL
        assert not await keyspace.ping()
        async with keyspace.lock("k", 1) as held:
            assert not held
    finally:
        await keyspace.close()


def test_the_keyspace_follows_the_session_store(redis_server: Any) -> None:
    assert isinstance(create_keyspace(make_config()), MemoryKeyspace)
    redis = make_config(session={"secrets": ["s" * 40], "store": "redis",
                                 "redis_url": redis_server.url})
    made = create_keyspace(redis)
    assert isinstance(made, RedisKeyspace) and made.shared
    asyncio.run(made.close())
