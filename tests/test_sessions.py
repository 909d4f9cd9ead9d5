"""One conformance suite run against both session stores, then each store's own behaviour."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from gateway.bounded import HEADER_MEMO, HEADER_MEMO_LENGTH
from gateway.crypto import b64url_decode, b64url_encode
from gateway.errors import HandshakeFailed, Unavailable
from gateway.sessions import create_store
from gateway.sessions.base import CookieJar, Loaded, Session, SessionStore
from gateway.sessions.cookie import CHUNK_SIZE, MAX_CHUNKS, CookieStore
from gateway.sessions.redis import RedisStore, redis_key
from gateway.user import User
from tests.helpers import make_config

A = "A" * 40
B = "B" * 40
FOREIGN = "F" * 40
NAME = "docs_session"
#: The session section the stores here start from.
SESSION = {"store": "cookie", "secrets": [A], "redis_url": "redis://127.0.0.1:6379/0"}


def make_session(expires_in: float = 3600, content: Mapping[str, Any] | None = None,
                 **user: Any) -> Session:
    now = time.time()
    fields: dict[str, Any] = {
        "sub": "user-42", "expires_at": now + expires_in, "groups": ("admin", "beta"),
        "content": {"email": "ada@example.com", "name": "Ada", "plan": "pro"}
        if content is None else content,
        "api_playground_inputs": {"header": {"X-Api-Key": "k-123"}, "query": {}},
        "extra": {"email": "ada@example.com"},
    }
    fields.update(user)
    return Session(id=secrets.token_urlsafe(24), user=User(**fields), method="jwt",
                   created_at=now, refreshed_at=now, refresh_token="rt-secret",
                   id_token=None, access_token="at-secret")


def browser(cookies: Mapping[str, str], jar: CookieJar) -> dict[str, str]:
    """The cookies a browser holds after applying a response's cookie changes."""
    held = {k: v for k, v in cookies.items() if k not in jar.deletes}
    held.update({name: value for name, (value, max_age) in jar.sets.items()
                 if max_age is None or max_age > 0})
    return held


async def save(store: SessionStore, session: Session,
               cookies: Mapping[str, str] | None = None) -> tuple[dict[str, str], CookieJar]:
    jar = CookieJar()
    await store.save(session, cookies or {}, jar)
    return browser(cookies or {}, jar), jar


def anonymous(loaded: Loaded, *stale: str) -> bool:
    return loaded.session is None and set(loaded.stale) == set(stale)


@pytest.fixture(params=["cookie", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    url = "redis://127.0.0.1:6379/0"
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    created = create_store(make_config(session={**SESSION, "store": request.param,
                                                "redis_url": url}))
    yield created
    await created.close()


@pytest.fixture
async def sibling(store: SessionStore) -> AsyncIterator[Callable[..., SessionStore]]:
    """Another store of the same kind on the same backend (a replica, or another deployment)."""
    made: list[SessionStore] = []

    def make(secrets_: list[str] | None = None, **session: Any) -> SessionStore:
        config = make_config(session={"store": store.config.session.store,
                                      "secrets": secrets_ or [A],
                                      "redis_url": store.config.session.redis_url, **session})
        made.append(type(store)(config))
        return made[-1]

    yield make
    for other in made:
        await other.close()


# ---------------------------------------------------------------------------
# Conformance: both stores


async def test_saved_session_loads_back_whole(store: SessionStore) -> None:
    session = make_session()
    cookies, _ = await save(store, session)
    loaded = await store.load(cookies)
    assert loaded == Loaded(session)


async def test_cookie_lives_until_expires_at(store: SessionStore) -> None:
    _, jar = await save(store, make_session(expires_in=3600))
    assert set(jar.sets) == {NAME}
    max_age = jar.sets[NAME][1]
    assert max_age is not None and 3500 <= max_age <= 3600


async def test_a_new_login_replaces_the_session(store: SessionStore) -> None:
    first, second = make_session(), make_session(sub="someone-else")
    assert first.id != second.id
    old_cookies, _ = await save(store, first)
    cookies, _ = await save(store, second, old_cookies)
    assert cookies[NAME] != old_cookies[NAME]
    loaded = await store.load(cookies)
    assert loaded.session is not None
    assert loaded.session.id == second.id and loaded.session.user.sub == "someone-else"


async def test_logout_makes_the_visitor_anonymous(store: SessionStore) -> None:
    cookies, _ = await save(store, make_session())
    jar = CookieJar()
    await store.delete(cookies, jar)
    assert NAME in jar.deletes and not jar.sets
    after = browser(cookies, jar)
    assert after == {}
    assert await store.load(after) == Loaded(None)


async def test_logout_without_a_session_still_clears_the_cookie(store: SessionStore) -> None:
    jar = CookieJar()
    await store.delete({"unrelated": "1"}, jar)
    assert jar.deletes == {NAME}


async def test_other_cookies_are_not_ours(store: SessionStore) -> None:
    assert await store.load({"theme": "dark", "docs_sessionx": "1"}) == Loaded(None)


@pytest.mark.parametrize("where", ["version", "key id", "nonce", "ciphertext", "tag"])
async def test_a_flipped_bit_anywhere_is_anonymous(store: SessionStore, where: str) -> None:
    cookies, _ = await save(store, make_session())
    raw = bytearray(b64url_decode(cookies[NAME]))
    index = {"version": 0, "key id": 1, "nonce": 7, "ciphertext": 20, "tag": len(raw) - 1}[where]
    raw[index] ^= 0x01
    loaded = await store.load({NAME: b64url_encode(bytes(raw)), "theme": "dark"})
    assert anonymous(loaded, NAME)


@pytest.mark.parametrize("damage", ["last char", "truncated by one", "half", "empty", "padded",
                                    "garbage"])
async def test_a_damaged_cookie_is_anonymous(store: SessionStore, damage: str) -> None:
    cookies, _ = await save(store, make_session())
    value = cookies[NAME]
    damaged = {
        "last char": value[:-1] + ("A" if value[-1] != "A" else "B"),
        "truncated by one": value[:-1],
        "half": value[: len(value) // 2],
        "empty": "",
        "padded": value + "==",
        "garbage": "not a session at all",
    }[damage]
    assert anonymous(await store.load({NAME: damaged}), NAME)


async def test_a_stray_chunk_cookie_is_anonymous(store: SessionStore) -> None:
    cookies, _ = await save(store, make_session())
    assert anonymous(await store.load({NAME + ".1": cookies[NAME]}), NAME + ".1")


async def test_a_cookie_from_another_deployment_is_anonymous(
        store: SessionStore, sibling: Callable[..., SessionStore]) -> None:
    cookies, _ = await save(sibling([FOREIGN]), make_session())
    assert anonymous(await store.load(cookies), NAME)


async def test_a_value_moved_to_another_cookie_name_is_anonymous(
        store: SessionStore, sibling: Callable[..., SessionStore]) -> None:
    # Same secrets, other cookie name: the value is bound to the name it was written under.
    other = sibling([A], cookie_name="other_session")
    cookies, _ = await save(other, make_session())
    assert anonymous(await store.load({NAME: cookies["other_session"]}), NAME)


async def test_an_expired_session_is_anonymous(store: SessionStore) -> None:
    _, jar = await save(store, make_session(expires_in=-10))
    assert jar.sets[NAME][1] == 0
    # A browser would drop it; a client that replays it anyway is still anonymous.
    assert anonymous(await store.load({NAME: jar.sets[NAME][0]}), NAME)


async def test_rotation_old_secret_still_opens_new_secret_seals(
        store: SessionStore, sibling: Callable[..., SessionStore]) -> None:
    session = make_session()
    before, _ = await save(sibling([A]), session)
    rotated = sibling([B, A])
    assert (await rotated.load(before)).session == session
    assert anonymous(await sibling([B]).load(before), NAME)
    after, _ = await save(rotated, session, before)
    assert (await sibling([B]).load(after)).session == session


async def test_owns_exactly_its_cookie_names(store: SessionStore) -> None:
    for name in (NAME, NAME + ".0", NAME + ".4", NAME + ".12"):
        assert store.owns_cookie(name)
    for name in ("session", NAME + "x", NAME + ".", NAME + ".a", NAME + ".0.1", "x" + NAME):
        assert not store.owns_cookie(name)


async def test_its_cookies_in_a_header_are_read_alike_every_time(store: SessionStore) -> None:
    header = f"a=1; {NAME}=x; {NAME}.1=y;b=2; {NAME}x=z; ={NAME}"
    for _ in range(2):  # the second reading comes from what the first kept
        assert store.cookies_in(header) == ((NAME, "x"), (NAME + ".1", "y"))
    assert store.cookies_in("a=1; b=2") == ()
    # What is kept stays bounded, whatever headers clients send.
    for number in range(HEADER_MEMO + 10):
        assert store.cookies_in(f"{NAME}={number}") == ((NAME, str(number)),)
    long = f"{NAME}=" + "v" * HEADER_MEMO_LENGTH
    assert store.cookies_in(long) == ((NAME, "v" * HEADER_MEMO_LENGTH),)
    assert len(store._found) == HEADER_MEMO and long not in store._found


async def test_https_at_the_root_uses_a_host_prefixed_cookie(store: SessionStore) -> None:
    url = store.config.session.redis_url
    secure = type(store)(make_config(server={"public_url": "https://docs.example.com"},
                                     session={"store": store.config.session.store,
                                              "secrets": [A], "redis_url": url}))
    try:
        session = make_session()
        cookies, _ = await save(secure, session)
        assert set(cookies) == {"__Host-" + NAME}
        assert (await secure.load(cookies)).session == session
        assert secure.owns_cookie("__Host-" + NAME) and not secure.owns_cookie(NAME)
    finally:
        await secure.close()


async def test_session_survives_a_real_http_round_trip(store: SessionStore,
                                                       aiohttp_client: Any) -> None:
    # A user object large enough that the cookie store splits it in two cookies, small
    # enough that the Cookie header stays under the common 8 KB limit of HTTP clients.
    session = make_session(content={"email": "ada@example.com",
                                    "notes": secrets.token_urlsafe(3000)})

    async def login(request: web.Request) -> web.StreamResponse:
        jar = CookieJar()
        await store.save(session, request.cookies, jar)
        response = web.Response(text="ok")
        store.cookies.apply(jar, response)
        return response

    async def me(request: web.Request) -> web.StreamResponse:
        loaded = await store.load(request.cookies)
        if loaded.session is None:
            return web.json_response({"error": "unauthenticated"}, status=401)
        return web.json_response({"sub": loaded.session.user.sub,
                                  "notes": loaded.session.user.content["notes"]})

    async def logout(request: web.Request) -> web.StreamResponse:
        jar = CookieJar()
        await store.delete(request.cookies, jar)
        response = web.Response(text="bye")
        store.cookies.apply(jar, response)
        return response

    app = web.Application()
    app.router.add_get("/login", login)
    app.router.add_get("/me", me)
    app.router.add_get("/logout", logout)
    client = await aiohttp_client(app)
    assert (await client.get("/me")).status == 401
    response = await client.get("/login")
    headers = response.headers.getall("Set-Cookie")
    assert len(headers) == (2 if isinstance(store, CookieStore) else 1)
    assert all("HttpOnly" in h and "Max-Age=" in h for h in headers)
    assert all(len(h) < 4096 for h in headers)
    me_response = await client.get("/me")
    assert me_response.status == 200
    assert await me_response.json() == {"sub": "user-42", "notes": session.user.content["notes"]}
    await client.get("/logout")
    assert (await client.get("/me")).status == 401


# ---------------------------------------------------------------------------
# Cookie store only


@pytest.fixture
def cookie_store() -> CookieStore:
    return CookieStore(make_config(session=SESSION))


def big_session(chunks: int) -> Session:
    """A session whose sealed form needs about ``chunks`` cookies (base64 adds a third)."""
    size = int(CHUNK_SIZE * (chunks - 0.5) * 3 / 4) - 500
    return make_session(content={"email": "ada@example.com", "blob": secrets.token_hex(size // 2)})


async def test_a_large_session_is_split_into_numbered_cookies(cookie_store: CookieStore) -> None:
    session = big_session(3)
    cookies, _ = await save(cookie_store, session)
    assert set(cookies) == {NAME + ".0", NAME + ".1", NAME + ".2"}
    assert all(len(v) <= CHUNK_SIZE for v in cookies.values())
    assert (await cookie_store.load(cookies)).session == session


async def test_the_largest_session_fits_in_five_cookies(cookie_store: CookieStore) -> None:
    session = big_session(MAX_CHUNKS)
    cookies, _ = await save(cookie_store, session)
    assert len(cookies) == MAX_CHUNKS
    assert (await cookie_store.load(cookies)).session == session


async def test_a_session_too_large_for_cookies_fails_the_login(cookie_store: CookieStore) -> None:
    jar = CookieJar()
    with pytest.raises(HandshakeFailed) as info:
        await cookie_store.save(big_session(MAX_CHUNKS + 1), {}, jar)
    assert info.value.code == "session_too_large"
    assert "session.store: redis" in info.value.message
    assert not jar


async def test_shrinking_deletes_leftover_chunks(cookie_store: CookieStore) -> None:
    big, _ = await save(cookie_store, big_session(3))
    small = make_session()
    cookies, jar = await save(cookie_store, small, big)
    assert jar.deletes == {NAME + ".0", NAME + ".1", NAME + ".2"}
    assert set(cookies) == {NAME}
    assert (await cookie_store.load(cookies)).session == small


async def test_growing_deletes_the_single_cookie(cookie_store: CookieStore) -> None:
    small, _ = await save(cookie_store, make_session())
    cookies, jar = await save(cookie_store, big_session(2), small)
    assert jar.deletes == {NAME}
    assert set(cookies) == {NAME + ".0", NAME + ".1"}


@pytest.mark.parametrize("damage", ["missing first", "missing middle", "missing last", "swapped"])
async def test_damaged_chunks_are_anonymous(cookie_store: CookieStore, damage: str) -> None:
    cookies, _ = await save(cookie_store, big_session(3))
    names = [NAME + ".0", NAME + ".1", NAME + ".2"]
    if damage == "swapped":
        cookies[names[0]], cookies[names[1]] = cookies[names[1]], cookies[names[0]]
    else:
        del cookies[names[{"missing first": 0, "missing middle": 1, "missing last": 2}[damage]]]
    assert anonymous(await cookie_store.load(cookies), *cookies)


async def test_chunks_next_to_a_single_cookie_are_anonymous_and_cleared(
        cookie_store: CookieStore) -> None:
    # Which of the two is the reader's and which was planted cannot be told: neither is used.
    session = make_session()
    cookies, _ = await save(cookie_store, session)
    loaded = await cookie_store.load({**cookies, NAME + ".0": "x", NAME + ".1": "y"})
    assert loaded.session is None
    assert set(loaded.stale) == {NAME, NAME + ".0", NAME + ".1"}


async def test_too_many_request_chunks_are_anonymous(cookie_store: CookieStore) -> None:
    cookies = {f"{NAME}.{i}": "A" * CHUNK_SIZE for i in range(8)}
    assert anonymous(await cookie_store.load(cookies), *cookies)


# ---------------------------------------------------------------------------
# Redis store only


@pytest.fixture
async def redis_store(redis_server: Any) -> AsyncIterator[RedisStore]:
    created = RedisStore(make_config(session={**SESSION, "store": "redis",
                                              "redis_url": redis_server.url}))
    yield created
    await created.close()


@pytest.fixture
async def raw_redis(redis_server: Any) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_redis_holds_only_ciphertext(redis_store: RedisStore,
                                           raw_redis: aioredis.Redis) -> None:
    session = make_session()
    cookies, _ = await save(redis_store, session)
    key = "dg:s:" + hashlib.sha256(session.id.encode()).hexdigest()
    assert redis_key(session.id) == key
    value = await raw_redis.get(key)
    assert value is not None
    for clear in (b"ada@example.com", b"user-42", b"Ada", b"rt-secret", b"k-123",
                  session.id.encode()):
        assert clear not in value
    assert session.id not in cookies[NAME]
    assert not await raw_redis.keys("*" + session.id + "*")


async def test_redis_ttl_follows_expires_at(redis_store: RedisStore,
                                            raw_redis: aioredis.Redis) -> None:
    session = make_session(expires_in=3600)
    await save(redis_store, session)
    ttl = await raw_redis.pttl(redis_key(session.id))
    assert 3_500_000 <= ttl <= 3_600_000


async def test_logout_is_seen_by_every_replica_at_once(
        redis_store: RedisStore, raw_redis: aioredis.Redis, redis_server: Any) -> None:
    replica = RedisStore(make_config(session={**SESSION, "store": "redis",
                                              "redis_url": redis_server.url}))
    try:
        session = make_session()
        cookies, _ = await save(redis_store, session)
        assert (await replica.load(cookies)).session == session
        await redis_store.delete(cookies, CookieJar())
        assert not await raw_redis.exists(redis_key(session.id))
        # The browser (or a thief) replays the old cookie on another replica.
        assert anonymous(await replica.load(cookies), NAME)
    finally:
        await replica.close()


async def test_a_new_login_ends_the_previous_redis_session(redis_store: RedisStore) -> None:
    first = make_session()
    old, _ = await save(redis_store, first)
    await save(redis_store, make_session(), old)
    assert anonymous(await redis_store.load(old), NAME)


async def test_refreshing_a_session_keeps_older_cookies_valid(redis_store: RedisStore) -> None:
    # Two tabs refreshing at once must not leave one holding a cookie Redis cannot open.
    session = make_session()
    cookies, _ = await save(redis_store, session)
    refreshed = session.with_user(make_session(sub="user-42", groups=("admin",)).user)
    new_cookies, _ = await save(redis_store, refreshed, cookies)
    assert (await redis_store.load(cookies)).session == refreshed
    assert (await redis_store.load(new_cookies)).session == refreshed


async def test_a_tampered_redis_value_is_anonymous(redis_store: RedisStore,
                                                   raw_redis: aioredis.Redis) -> None:
    session = make_session()
    cookies, _ = await save(redis_store, session)
    key = redis_key(session.id)
    stored = await raw_redis.get(key)
    assert isinstance(stored, bytes)
    value = bytearray(stored)
    value[len(value) // 2] ^= 0x01
    await raw_redis.set(key, bytes(value), px=60_000)
    assert anonymous(await redis_store.load(cookies), NAME)


async def test_redis_down_is_unavailable_and_recovers(redis_store: RedisStore,
                                                      redis_server: Any) -> None:
    cookies, _ = await save(redis_store, make_session())
    assert await redis_store.ping()
    redis_server.stop()
    try:
        with pytest.raises(Unavailable) as info:
            await redis_store.load(cookies)
        assert info.value.status == 503
        assert not await redis_store.ping()
        with pytest.raises(Unavailable):
            await redis_store.save(make_session(), {}, CookieJar())
        # A forged cookie is refused without asking Redis.
        assert anonymous(await redis_store.load({NAME: "forged.cookie"}), NAME)
        assert await redis_store.load({}) == Loaded(None)
    finally:
        redis_server.start()
    # Same store object, dead pooled connections: it must reconnect by itself.
    assert await redis_store.ping()
    # Nothing is persisted, so the old session is gone; new logins work again.
    assert anonymous(await redis_store.load(cookies), NAME)
    session = make_session()
    fresh, _ = await save(redis_store, session)
    assert (await redis_store.load(fresh)).session == session


async def test_a_hung_redis_fails_fast_and_recovers(redis_server: Any) -> None:
    store = RedisStore(make_config(session={**SESSION, "store": "redis",
                                            "redis_url": redis_server.url}), timeout=0.2)
    try:
        session = make_session()
        cookies, _ = await save(store, session)
        redis_server.pause()
        try:
            with pytest.raises(Unavailable):
                await store.load(cookies)
        finally:
            redis_server.resume()
        assert (await store.load(cookies)).session == session
    finally:
        await store.close()


async def test_repr_shows_no_secrets(redis_store: RedisStore) -> None:
    text = repr(redis_store) + repr(CookieStore(make_config(session=SESSION)))
    assert A not in text and "redis://" not in text


# ---------------------------------------------------------------------------
# Redis store: the per-worker copy kept while Redis tracks the session keys


@pytest.fixture
async def tracked(redis_server: Any) -> AsyncIterator[RedisStore]:
    """A Redis store whose copies would outlive every test: only Redis's reports (or a broken
    tracking connection) can drop them here."""
    created = RedisStore(make_config(session={**SESSION, "store": "redis",
                                              "redis_url": redis_server.url, "redis_cache": "1h"}))
    yield created
    await created.close()


async def redis_gets(raw: aioredis.Redis) -> int:
    """How many GET commands the Redis server has run so far."""
    stats = await raw.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` until it holds; a bounded wait for a message from Redis."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "Redis's report did not arrive"
        await asyncio.sleep(0.02)


async def tracking(store: RedisStore, cookies: Mapping[str, str]) -> bool:
    """Whether the store's tracking connection is up (loading a session starts it)."""
    await store.load(cookies)
    return bool(store._tracked is not None and store._tracked.live)


async def test_a_tracked_session_is_read_from_redis_once(tracked: RedisStore,
                                                         raw_redis: aioredis.Redis) -> None:
    session = make_session()
    cookies, _ = await save(tracked, session)
    await eventually(lambda: tracking(tracked, cookies))
    assert (await tracked.load(cookies)).session == session
    before = await redis_gets(raw_redis)
    for _ in range(20):
        assert (await tracked.load(cookies)).session == session
    assert await redis_gets(raw_redis) == before


async def test_without_the_cache_every_load_asks_redis(redis_server: Any,
                                                       raw_redis: aioredis.Redis) -> None:
    store = RedisStore(make_config(session={**SESSION, "store": "redis",
                                            "redis_url": redis_server.url, "redis_cache": "0s"}))
    try:
        cookies, _ = await save(store, make_session())
        before = await redis_gets(raw_redis)
        for _ in range(5):
            assert (await store.load(cookies)).session is not None
        assert await redis_gets(raw_redis) == before + 5
    finally:
        await store.close()


async def test_a_session_deleted_by_anyone_is_dropped(tracked: RedisStore,
                                                      raw_redis: aioredis.Redis) -> None:
    session = make_session()
    cookies, _ = await save(tracked, session)
    await eventually(lambda: tracking(tracked, cookies))
    assert (await tracked.load(cookies)).session == session
    # An operator revokes it straight in Redis: no gateway code runs, Redis reports it.
    await raw_redis.delete(redis_key(session.id))

    async def gone() -> bool:
        return (await tracked.load(cookies)).session is None

    await eventually(gone)
    assert anonymous(await tracked.load(cookies), NAME)


@pytest.fixture
async def replica(tracked: RedisStore) -> AsyncIterator[RedisStore]:
    """A second worker's store on the same Redis."""
    other = RedisStore(tracked.config)
    yield other
    await other.close()


async def test_a_logout_on_a_replica_reaches_every_copy(tracked: RedisStore,
                                                        replica: RedisStore) -> None:
    session = make_session()
    cookies, _ = await save(tracked, session)
    await eventually(lambda: tracking(tracked, cookies))
    await eventually(lambda: tracking(replica, cookies))
    assert (await tracked.load(cookies)).session == session
    assert (await replica.load(cookies)).session == session
    await replica.delete(cookies, CookieJar())
    assert (await replica.load(cookies)).session is None  # its own copy: at once

    async def gone() -> bool:
        return (await tracked.load(cookies)).session is None

    await eventually(gone)


async def test_a_refreshed_session_replaces_the_copy(tracked: RedisStore,
                                                     replica: RedisStore) -> None:
    session = make_session(content={"plan": "free"})
    cookies, _ = await save(tracked, session)
    await eventually(lambda: tracking(tracked, cookies))
    assert (await tracked.load(cookies)).session == session
    refreshed = dataclasses.replace(session, user=dataclasses.replace(
        session.user, content={"plan": "pro"}))
    await replica.save(refreshed, cookies, CookieJar())  # same id and key: the cookie stays

    async def updated() -> bool:
        loaded = (await tracked.load(cookies)).session
        return loaded is not None and loaded.user.content == {"plan": "pro"}

    await eventually(updated)


async def test_a_broken_tracking_connection_drops_every_copy(
        tracked: RedisStore, raw_redis: aioredis.Redis) -> None:
    session = make_session()
    cookies, _ = await save(tracked, session)
    await eventually(lambda: tracking(tracked, cookies))
    assert (await tracked.load(cookies)).session == session
    assert tracked._tracked is not None and len(tracked._tracked) == 1
    await raw_redis.client_kill_filter(_type="pubsub")

    async def dropped() -> bool:
        return tracked._tracked is not None and not tracked._tracked.live

    await eventually(dropped)
    assert len(tracked._tracked) == 0
    before = await redis_gets(raw_redis)
    assert (await tracked.load(cookies)).session == session  # from Redis again
    assert await redis_gets(raw_redis) == before + 1
    await eventually(lambda: tracking(tracked, cookies))  # and tracking comes back by itself
