"""The session cookie under attack: tampering, fixation, tossing, oversize, leaking upstream.

Pomerium and oauth2-proxy both strip their own cookies before the upstream sees them
(an upstream that logs or reflects cookies would otherwise hold replayable sessions);
cookie tossing from a sibling subdomain and session fixation are the classic ways to
make a victim browse as the attacker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from gateway.services import GATEWAY
from gateway.sessions.base import CookieJar, Session
from gateway.user import User
from tests.attack import (
    Client,
    Reply,
    Start,
    app_of,
    cookie_header,
    exchange,
    port_of,
    raw_request,
)
from tests.attack import start as start  # the shared fixture
from tests.helpers import HS_SECRET, GatewayFactory, make_user, session_cookies


def login_token(sub: str, groups: tuple[str, ...] = ()) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "exp": now + 30, "iat": now, "groups": list(groups)},
                      HS_SECRET, algorithm="HS256")


async def jwt_login(client: Client, sub: str, cookie: str | None = None) -> Reply:
    """Log in through the JWT callback, optionally carrying cookies from before."""
    body = f"token={login_token(sub)}&redirect=/guide".encode()
    headers = [("Content-Type", "application/x-www-form-urlencoded")]
    if cookie:
        headers.append(("Cookie", cookie))
    return await exchange(port_of(client), raw_request("/_gateway/jwt-callback", method="POST",
                                                       headers=headers, body=body))


def set_cookies(reply: Reply) -> dict[str, str]:
    """The cookies a response sets (name -> value; empty value: cleared)."""
    out = {}
    for line in reply.all("Set-Cookie"):
        pair = line.split(";", 1)[0]
        name, _, value = pair.partition("=")
        out[name.strip()] = value.strip().strip('"')
    return out


async def who(client: Client, cookie: str) -> tuple[int, Any]:
    """The status of /_gateway/user for a Cookie header, and the sub when logged in."""
    reply = await exchange(port_of(client), raw_request("/_gateway/user",
                                                        headers=[("Cookie", cookie)]))
    if reply.status != 200:
        return reply.status, None
    return 200, json.loads(reply.body)["sub"]


async def valid_value(client: Client, sub: str = "ada") -> str:
    return (await session_cookies(app_of(client), make_user(sub)))["docs_session"]


def flip(value: str, index: int) -> str:
    ch = value[index]
    return value[:index] + ("A" if ch != "A" else "B") + value[index + 1:]


TAMPERED: dict[str, Callable[[str], str]] = {
    "empty": lambda v: "",
    "one letter": lambda v: "x",
    "last character changed": lambda v: flip(v, -1),
    "first character changed": lambda v: flip(v, 0),
    "middle character changed": lambda v: flip(v, len(v) // 2),
    "truncated by one": lambda v: v[:-1],
    "one character added": lambda v: v + "A",
    "base64 padding added": lambda v: v + "==",
    "upper-cased": lambda v: v.upper(),
    "doubled": lambda v: v + v,
    "reversed": lambda v: v[::-1],
    "standard base64 alphabet": lambda v: v.replace("-", "+").replace("_", "/"),
    "a JWT instead": lambda v: login_token("admin", ("admin",)),
    "4000 letters": lambda v: "A" * 4000,
    "non-ASCII": lambda v: "é" * 10,
}


@pytest.mark.parametrize("damage", list(TAMPERED))
async def test_a_tampered_session_cookie_is_anonymous_and_cleared(start: Start,
                                                                  damage: str) -> None:
    client, upstream = await start()
    value = TAMPERED[damage](await valid_value(client))
    reply = await exchange(port_of(client), raw_request("/_gateway/user", headers=[
        ("Cookie", f"docs_session={value}")]))
    assert reply.status == 401
    if value:
        assert set_cookies(reply) == {"docs_session": ""}
    assert upstream.seen == []


async def test_a_value_sealed_for_another_cookie_name_is_anonymous(start: Start) -> None:
    # The JWT callback's CSRF cookie and the OAuth state cookie share the secrets; a value
    # of one is never a session in another's name.
    client, _ = await start()
    value = await valid_value(client)
    for name in ("docs_session_jwt", "docs_session_state_abcdefgh", "__Host-docs_session",
                 "__Secure-docs_session"):
        assert await who(client, f"{name}={value}") == (401, None)


async def test_a_session_from_another_deployment_is_anonymous(start: Start,
                                                              gateway: GatewayFactory) -> None:
    client, upstream = await start()
    other = await gateway(upstream_url=upstream.url, session={"secrets": ["o" * 40]})
    foreign = (await session_cookies(app_of(other), make_user("ada")))["docs_session"]
    assert await who(client, f"docs_session={foreign}") == (401, None)


async def test_an_expired_session_is_anonymous_and_cleared(start: Start) -> None:
    client, _ = await start()
    gw = app_of(client)[GATEWAY]
    past = time.time() - 10
    session = Session(id="old", user=User(sub="ada", expires_at=past, groups=(), content={}),
                      method="jwt", created_at=past - 60, refreshed_at=past - 60)
    jar = CookieJar()
    await gw.store.save(session, {}, jar)
    value = jar.sets["docs_session"][0]
    reply = await exchange(port_of(client), raw_request("/_gateway/user", headers=[
        ("Cookie", f"docs_session={value}")]))
    assert reply.status == 401 and set_cookies(reply) == {"docs_session": ""}


@pytest.mark.parametrize("names", [
    ["docs_session.0"],
    ["docs_session.1"],
    ["docs_session.0", "docs_session.2"],
    ["docs_session.00"],
    ["docs_session.-1"],
    [f"docs_session.{i}" for i in range(6)],
])
async def test_stray_or_too_many_chunks_are_anonymous(start: Start, names: list[str]) -> None:
    client, _ = await start()
    value = await valid_value(client)
    # Interleaved slices: no single chunk, nor any order of them, is the sealed value.
    parts = [value[i::len(names) + 1] for i in range(len(names))]
    header = "; ".join(f"{name}={part}" for name, part in zip(names, parts, strict=True))
    assert await who(client, header) == (401, None)


# -- fixation -------------------------------------------------------------------------


@pytest.mark.parametrize("planted", ["attacker session", "garbage", "chosen id"])
async def test_a_cookie_set_before_login_is_never_kept(start: Start, planted: str) -> None:
    client, _ = await start()
    attacker = await valid_value(client, "attacker")
    value = {"attacker session": attacker, "garbage": "fixed-by-attacker",
             "chosen id": "test-0-victim"}[planted]
    reply = await jwt_login(client, "victim", cookie=f"docs_session={value}")
    assert reply.status == 303
    fresh = set_cookies(reply)["docs_session"]
    assert fresh and fresh != value
    assert await who(client, f"docs_session={fresh}") == (200, "victim")
    # What the attacker holds never became the victim's session.
    assert (await who(client, f"docs_session={value}"))[1] != "victim"


async def test_with_redis_a_planted_session_ends_when_the_victim_logs_in(
        gateway: GatewayFactory, redis_server: Any) -> None:
    client = await gateway(session={"secrets": ["s" * 40], "store": "redis",
                                    "redis_url": redis_server.url})
    attacker = (await jwt_login(client, "attacker"))
    planted = set_cookies(attacker)["docs_session"]
    victim = await jwt_login(client, "victim", cookie=f"docs_session={planted}")
    fresh = set_cookies(victim)["docs_session"]
    assert fresh != planted
    assert await who(client, f"docs_session={fresh}") == (200, "victim")
    assert await who(client, f"docs_session={planted}") == (401, None)


# -- tossing: a cookie for a sibling subdomain or a longer path shadowing ours ----------


@pytest.mark.parametrize("layout", ["one header, attacker first", "one header, attacker last",
                                    "two headers, attacker first"])
async def test_two_session_cookies_in_one_request_are_anonymous(start: Start,
                                                                layout: str) -> None:
    client, _ = await start()
    attacker = await valid_value(client, "attacker")
    victim = await valid_value(client, "victim")
    first, second = (attacker, victim) if "attacker first" in layout else (victim, attacker)
    if layout.startswith("two headers"):
        headers = [("Cookie", f"docs_session={first}"), ("Cookie", f"docs_session={second}")]
    else:
        headers = [("Cookie", f"docs_session={first}; docs_session={second}")]
    reply = await exchange(port_of(client), raw_request("/_gateway/user", headers=headers))
    assert reply.status == 401


async def test_a_tossed_single_cookie_does_not_replace_a_chunked_session(start: Start) -> None:
    client, _ = await start()
    big = make_user("victim", notes="x" * 6000)
    chunks = await session_cookies(app_of(client), big)
    assert len(chunks) >= 2
    tossed = await valid_value(client, "attacker")
    assert await who(client, cookie_header(chunks)) == (200, "victim")
    assert (await who(client, cookie_header(chunks) + f"; docs_session={tossed}"))[1] \
        != "attacker"


async def test_a_tossed_chunk_never_replaces_a_single_cookie(start: Start) -> None:
    client, _ = await start()
    victim = await valid_value(client, "victim")
    attacker = (await session_cookies(app_of(client), make_user("attacker",
                                                                   notes="y" * 6000)))
    header = f"docs_session={victim}; " + cookie_header(attacker)
    assert await who(client, header) == (401, None)


HTTPS = {"listen": "127.0.0.1:0", "public_url": "https://docs.test"}


async def test_on_https_only_the_host_prefixed_cookie_counts(start: Start) -> None:
    # A sibling subdomain can set "docs_session" but never "__Host-docs_session".
    client, _ = await start(server=HTTPS)
    cookies = await session_cookies(app_of(client), make_user("victim"))
    assert list(cookies) == ["__Host-docs_session"]
    attacker = (await session_cookies(app_of(client), make_user("attacker")))
    value = cookies["__Host-docs_session"]
    assert await who(client, f"docs_session={value}") == (401, None)
    both = f"docs_session={attacker['__Host-docs_session']}; __Host-docs_session={value}"
    assert await who(client, both) == (200, "victim")


# -- oversize -------------------------------------------------------------------------


async def test_an_oversized_cookie_header_is_refused(start: Start) -> None:
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request("/public/x", headers=[
        ("Cookie", "a=" + "b" * 40000)]))
    assert reply.status in (400, 431)
    assert upstream.seen == []


@pytest.mark.parametrize("cookie", [
    "docs_session=" + "A" * 19000,
    "; ".join(f"c{i}=v" for i in range(500)) + "; docs_session=x",
    "docs_session=" + "A" * 3800 + "; " + "; ".join(f"docs_session.{i}=" + "A" * 3800
                                                    for i in range(5)),
])
async def test_large_cookie_sets_are_anonymous(start: Start, cookie: str) -> None:
    client, _ = await start()
    assert await who(client, cookie) == (401, None)


# -- the gateway's cookies never reach the upstream -------------------------------------


@pytest.mark.parametrize("name", [
    "docs_session", "docs_session.0", "docs_session.4", "__Host-docs_session",
    "__Secure-docs_session", "docs_session_state_abcdefgh", "__Secure-docs_session_state_x",
    "docs_session_jwt", "docs_session_anything_new",
])
async def test_gateway_cookies_never_reach_the_upstream(start: Start, name: str) -> None:
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request("/public/x", headers=[
        ("Cookie", f"theme=dark; {name}=secret-value; lang=en"),
        ("Cookie", f"  {name}=secret-value2")]))
    assert reply.status == 200
    cookies = upstream.seen[0].header("Cookie")
    assert cookies == ["theme=dark; lang=en"]


async def test_a_logged_in_readers_cookie_never_reaches_the_upstream(start: Start) -> None:
    client, upstream = await start()
    value = await valid_value(client, "ada")
    reply = await exchange(port_of(client), raw_request("/guide", headers=[
        ("Cookie", f"docs_session={value}; theme=dark")]))
    assert reply.status == 200
    seen = upstream.seen[0]
    assert seen.header("Cookie") == ["theme=dark"]
    assert all(value not in v for _, v in seen.headers)
