"""The shared-session handshake against a real dashboard, Info API and upstream on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp
import jwt
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from gateway.app import build_app
from gateway.config.model import Config
from gateway.handshakes.infocache import ANONYMOUS, CacheKey, MemoryCache
from gateway.handshakes.shared_session import domain_warning, registrable_domain
from gateway.services import GATEWAY
from tests.dashboard import INFO_API_PATH, Account, Dashboard, Recorder
from tests.helpers import Client, GatewayFactory, header_map, make_config

HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
async def dashboard(aiohttp_server: Any) -> Dashboard:
    dash = Dashboard()
    server = await aiohttp_server(dash.app)
    dash.url = f"http://127.0.0.1:{server.port}"
    return dash


def shared_sections(dash: Dashboard, *, mode: str = "authenticate", store: str = "cookie",
                    redis_url: str | None = None, **settings: Any) -> dict[str, Any]:
    """The config sections of a gateway whose shared-session handshake asks ``dash``."""
    base = dash.url
    shared = {"info_api_url": base + INFO_API_PATH, "cookies": ["session"],
              "login_url": base + "/login", "cache_ttl": "30s", "timeout": "2s", **settings}
    session: dict[str, Any] = {"store": store}
    if redis_url is not None:
        session["redis_url"] = redis_url
    return {"mode": mode, "handshake": {"method": "shared_session", "shared_session": shared},
            "access": {"public": ["/public/**"]}, "session": session}


@pytest.fixture
def gateway(gateway: GatewayFactory, dashboard: Dashboard) -> GatewayFactory:
    """The gateway in front of the echo upstream, asking ``dashboard``: ``gateway(**options)``
    takes ``shared_sections``'s options."""

    async def start(**options: Any) -> Client:
        return await gateway(**shared_sections(dashboard, **options))

    return start


async def dashboard_login(dash: Dashboard, username: str = "ada") -> str:
    """Log in through the dashboard's form, as a browser would; the session cookie value."""
    async with aiohttp.ClientSession() as http, http.post(
            dash.url + "/login",
            data={"username": username, "password": f"{username}-password",
                  "redirect": "/"}, allow_redirects=False) as response:
        assert response.status == 303
        return response.cookies["session"].value


def bounded(awaitable: Awaitable[Any], timeout: float = 7.0) -> Awaitable[Any]:
    """No request may hang: each one is bounded well past the Info API timeout."""
    return asyncio.wait_for(awaitable, timeout)


async def verified_sub(client: Client, upstream: TestServer, token: str) -> str:
    async with client.get("/_gateway/jwks.json") as response:
        keys = jwt.PyJWKSet.from_dict(await response.json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims = jwt.decode(token, key=key.key, algorithms=["EdDSA"],
                        audience=f"http://127.0.0.1:{upstream.port}")
    assert claims["method"] == "shared_session"
    return str(claims["sub"])


def cache_count(client: Client, result: str) -> float:
    assert client.app is not None
    metrics = client.app[GATEWAY].metrics
    value = metrics.registry.get_sample_value("gateway_info_api_cache_total", {"result": result})
    return value or 0.0


async def test_dashboard_login_identifies_reader_on_docs(gateway: GatewayFactory,
                                                         dashboard: Dashboard,
                                                         upstream: TestServer) -> None:
    client = await gateway()
    cookie = await dashboard_login(dashboard)
    async with client.get("/guide/intro", headers={"Cookie": f"session={cookie}"}) as response:
        assert response.status == 200
        assert "Set-Cookie" not in response.headers
        assert "private" in response.headers["Cache-Control"]
        echoed = header_map(await response.json())
    assert await verified_sub(client, upstream, echoed["x-gateway-assertion"][0]) == "ada"
    async with client.get("/_gateway/user", headers={"Cookie": f"session={cookie}"}) as response:
        assert response.status == 200
        assert "Set-Cookie" not in response.headers
        body = await response.json()
    assert body["sub"] == "ada"
    assert body["groups"] == ["admin"]
    assert body["content"]["firstName"] == "Ada"
    assert body["apiPlaygroundInputs"] == {"header": {"Authorization": "Bearer demo-key-ada"}}
    assert dashboard.info_calls == 1
    assert cache_count(client, "hit") == 1
    assert 'gateway_info_api_cache_total{result="hit"} 1.0' in \
        client.app[GATEWAY].metrics.render().decode()


async def test_dashboard_logout_makes_reader_anonymous_within_cache_ttl(
        gateway: GatewayFactory, dashboard: Dashboard) -> None:
    client = await gateway(cache_ttl="1s")
    cookie = await dashboard_login(dashboard)
    headers = {"Cookie": f"session={cookie}"}
    async with client.get("/_gateway/user", headers=headers) as response:
        assert response.status == 200
    async with aiohttp.ClientSession() as http, http.post(
            dashboard.url + "/logout", headers=headers,
            allow_redirects=False) as response:
        assert response.status == 303
    deadline = time.monotonic() + 10
    while True:
        async with client.get("/guide", headers=headers) as response:
            if response.status == 401:
                break
            assert response.status == 200
        assert time.monotonic() < deadline, "still identified long after the cache ttl"
        await asyncio.sleep(0.05)
    async with client.get("/_gateway/user", headers=headers) as response:
        assert response.status == 401


async def test_concurrent_requests_with_one_new_cookie_make_one_info_api_call(
        gateway: GatewayFactory, dashboard: Dashboard, upstream: TestServer) -> None:
    client = await gateway(timeout="60s")
    cookie = dashboard.start_session("bob")
    dashboard.gate = asyncio.Event()
    url = client.make_url("/_gateway/user")
    count = 1000
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        async def one() -> tuple[int, str]:
            async with http.get(url, headers={"Cookie": f"session={cookie}"}) as response:
                return response.status, (await response.json()).get("sub", "")

        tasks = [asyncio.ensure_future(one()) for _ in range(count)]
        # Every request reaches the gateway and waits on the one held Info API call.
        deadline = time.monotonic() + 60
        while cache_count(client, "miss") < count:
            assert time.monotonic() < deadline, f"{cache_count(client, 'miss')} arrived"
            assert not any(task.done() for task in tasks)
            await asyncio.sleep(0.02)
        dashboard.gate.set()
        results = await bounded(asyncio.gather(*tasks), 60)
    assert results == [(200, "bob")] * count
    assert dashboard.info_calls == 1


@pytest.mark.parametrize("fault", ["down", "refused", "slow", "500", "redirect", "html",
                                   "garbage", "wrong_shape"])
async def test_unavailable_info_api_is_503_on_protected_and_anonymous_elsewhere(
        gateway: GatewayFactory, aiohttp_server: Any, dashboard: Dashboard, fault: str) -> None:
    recorder = Recorder()
    elsewhere = await aiohttp_server(recorder.app)
    dashboard.redirect_to = f"http://127.0.0.1:{elsewhere.port}/user-info"
    cookie = await dashboard_login(dashboard)
    settings: dict[str, Any] = {"timeout": "500ms"}
    if fault == "refused":
        await elsewhere.close()  # nothing listens on this port any more
        settings["info_api_url"] = f"http://127.0.0.1:{elsewhere.port}{INFO_API_PATH}"
    else:
        dashboard.mode = fault
    headers = {"Cookie": f"session={cookie}"}
    client = await gateway(**settings)
    async with await bounded(client.get("/guide", headers=headers)) as response:
        assert response.status == 503
        body = await response.json()
        assert body["error"] == "info_api_unavailable"
        assert "try again" in body["message"]
    calls = dashboard.info_calls
    async with await bounded(client.get("/guide", headers={**headers, **HTML})) as response:
        assert response.status == 503
        assert "text/html" in response.headers["Content-Type"]
        assert "Info API" in await response.text()
    async with await bounded(client.get("/public/page", headers=headers)) as response:
        assert response.status == 200
        assert "x-gateway-assertion" not in header_map(await response.json())
    # The failure is remembered for a moment: a down Info API is not asked on every request.
    assert dashboard.info_calls == calls
    personalize = await gateway(mode="personalize", **settings)
    async with await bounded(personalize.get("/guide", headers=headers)) as response:
        assert response.status == 200
        assert "x-gateway-assertion" not in header_map(await response.json())
    assert recorder.requests == []


async def test_only_configured_cookies_reach_the_info_api(gateway: GatewayFactory,
                                                          dashboard: Dashboard) -> None:
    client = await gateway()
    cookie = await dashboard_login(dashboard)
    jar = (f"analytics=tracker-id; session={cookie}; docs_session=gateway-cookie; "
           "csrftoken=secret-csrf; __Host-docs_session=x")
    async with client.get("/_gateway/user", headers={"Cookie": jar}) as response:
        assert response.status == 200
    assert dashboard.info_cookies == [{"session": cookie}]


async def test_visitor_without_dashboard_cookie_is_anonymous_without_an_info_api_call(
        gateway: GatewayFactory, dashboard: Dashboard) -> None:
    client = await gateway()
    async with client.get("/guide/intro?tab=2", headers={**HTML, "Cookie": "other=1"},
                          allow_redirects=False) as response:
        assert response.status == 302
        login = response.headers["Location"]
        assert login == "/_gateway/login?redirect=/guide/intro%3Ftab%3D2"
    async with client.get(login, allow_redirects=False) as response:
        assert response.status == 302
        assert "Set-Cookie" not in response.headers
        assert response.headers["Location"] == (
            dashboard.url + "/login?redirect="
            "http%3A%2F%2Fdocs.test%2Fguide%2Fintro%3Ftab%3D2")
    async with client.get("/guide") as response:
        assert response.status == 401
    assert dashboard.info_calls == 0


@pytest.mark.parametrize("answer", ["401", "403"])
async def test_signed_out_dashboard_cookie_is_anonymous_and_cached_briefly(
        gateway: GatewayFactory, dashboard: Dashboard, answer: str) -> None:
    client = await gateway()
    if answer == "403":
        dashboard.mode = "forbidden"
        headers = {"Cookie": f"session={dashboard.start_session('bob')}"}
    else:
        headers = {"Cookie": "session=expired-or-forged"}
    async with client.get("/guide", headers={**headers, **HTML},
                          allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/_gateway/login?redirect=/guide"
    async with client.get("/_gateway/user", headers=headers) as response:
        assert response.status == 401
    async with client.get("/public/x", headers=headers) as response:
        assert response.status == 200
    assert dashboard.info_calls == 1
    assert cache_count(client, "negative") == 2


async def test_login_route_sends_a_known_reader_straight_back(gateway: GatewayFactory,
                                                              dashboard: Dashboard) -> None:
    client = await gateway()
    cookie = await dashboard_login(dashboard)
    async with client.get("/_gateway/login?redirect=/guide", allow_redirects=False,
                          headers={"Cookie": f"session={cookie}"}) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/guide"


async def test_dashboard_login_form_round_trip_lands_on_the_docs(
        aiohttp_server: Any, aiohttp_client: Any, upstream_url: str) -> None:
    # The dashboard accepts the absolute docs URL the gateway hands it, and only that.
    dash = Dashboard(return_origins=("http://docs.test",), cookie_domain="docs.test")
    server = await aiohttp_server(dash.app)
    dash.url = f"http://127.0.0.1:{server.port}"
    client = await aiohttp_client(await build_app(make_config(upstream_url,
                                                              **shared_sections(dash))))
    async with client.get("/_gateway/login?redirect=/guide", allow_redirects=False) as response:
        login_url = response.headers["Location"]
    async with aiohttp.ClientSession() as http:
        async with http.get(login_url) as response:
            assert 'value="http://docs.test/guide"' in await response.text()
        async with http.post(dash.url + "/login", data={
                "username": "bob", "password": "bob-password",
                "redirect": "http://docs.test/guide"}, allow_redirects=False) as response:
            assert response.headers["Location"] == "http://docs.test/guide"
            assert response.cookies["session"]["domain"] == "docs.test"
            cookie = response.cookies["session"].value
    async with client.get("/guide", headers={"Cookie": f"session={cookie}"}) as response:
        assert response.status == 200


async def test_redis_cache_is_shared_between_gateways(gateway: GatewayFactory,
                                                      dashboard: Dashboard,
                                                      redis_server: Any) -> None:
    first = await gateway(store="redis", redis_url=redis_server.url)
    second = await gateway(store="redis", redis_url=redis_server.url)
    cookie = await dashboard_login(dashboard)
    headers = {"Cookie": f"session={cookie}"}
    async with first.get("/_gateway/user", headers=headers) as response:
        assert (await response.json())["sub"] == "ada"
    async with second.get("/_gateway/user", headers=headers) as response:
        assert (await response.json())["sub"] == "ada"
    assert dashboard.info_calls == 1
    assert cache_count(second, "hit") == 1
    # What Redis holds names no cookie and shows no user data.
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = [key async for key in client.scan_iter(match="dg:info:*")]
        assert keys
        for key in keys:
            value = await client.get(key)
            assert isinstance(key, bytes) and isinstance(value, bytes)
            assert cookie.encode() not in key and cookie.encode() not in value
            assert b"ada" not in value
            assert 0 < await client.pttl(key) <= 30_000
    finally:
        await client.aclose()


async def test_info_api_is_asked_again_once_the_cache_expires(gateway: GatewayFactory,
                                                              dashboard: Dashboard) -> None:
    client = await gateway(cache_ttl="200ms")
    headers = {"Cookie": f"session={dashboard.start_session('ada')}"}
    async with client.get("/guide", headers=headers) as response:
        assert response.status == 200
    deadline = time.monotonic() + 10
    while dashboard.info_calls < 2:
        assert time.monotonic() < deadline
        async with client.get("/guide", headers=headers) as response:
            assert response.status == 200
        await asyncio.sleep(0.05)


def test_domain_warning_names_both_domains() -> None:
    def config(public_url: str, api: str) -> Config:
        return make_config(server={"listen": "127.0.0.1:0", "public_url": public_url},
                           handshake={"method": "shared_session", "shared_session": {
                               "info_api_url": api, "login_url": "https://x.example.com/"}})

    assert domain_warning(config("https://docs.example.com",
                                 "https://dash.example.com/api/docs/user-info")) is None
    assert domain_warning(config("https://docs.example.co.uk",
                                 "https://app.example.co.uk/info")) is None
    assert domain_warning(config("http://127.0.0.1:8080", "http://127.0.0.1:9000/i")) is None
    warning = domain_warning(config("https://docs.example.com", "https://dash.other.io/info"))
    assert warning is not None
    assert "other.io" in warning and "example.com" in warning
    assert domain_warning(config("https://docs.example.co.uk",
                                 "https://app.other.co.uk/info")) is not None
    assert domain_warning(make_config()) is None


def test_registrable_domain_rule() -> None:
    assert registrable_domain("Docs.Example.COM.") == "example.com"
    assert registrable_domain("a.b.example.com.au") == "example.com.au"
    assert registrable_domain("docs.example.io") == "example.io"
    assert registrable_domain("localhost") == "localhost"
    assert registrable_domain("10.0.0.1") == "10.0.0.1"
    assert registrable_domain("::1") == "::1"


async def test_memory_cache_is_bounded_and_evicts_the_oldest() -> None:
    cache = MemoryCache(max_entries=3)
    keys = [CacheKey(id=str(index), seal_key=b"") for index in range(5)]
    for key in keys:
        await cache.put(key, ANONYMOUS, 60)
    assert len(cache) == 3
    assert await cache.get(keys[0]) is None and await cache.get(keys[1]) is None
    assert await cache.get(keys[4]) is ANONYMOUS


async def test_large_user_object_is_read_whole_and_an_oversized_one_refused(
        gateway: GatewayFactory, dashboard: Dashboard) -> None:
    client = await gateway()
    dashboard.accounts["large"] = Account("pw", {"sub": "large",
                                                 "content": {"notes": "n" * 300_000}})
    dashboard.accounts["huge"] = Account("pw", {"sub": "huge",
                                                "content": {"notes": "n" * 2_000_000}})
    large = {"Cookie": f"session={dashboard.start_session('large')}"}
    async with client.get("/_gateway/user", headers=large) as response:
        assert response.status == 200
        assert len((await response.json())["content"]["notes"]) == 300_000
    huge = {"Cookie": f"session={dashboard.start_session('huge')}"}
    async with client.get("/_gateway/user", headers=huge) as response:
        assert response.status == 503


async def test_dashboard_session_cookie_never_reaches_the_docs(gateway: GatewayFactory,
                                                                dashboard: Dashboard) -> None:
    client = await gateway()
    cookie = await dashboard_login(dashboard)
    async with client.get("/guide", headers={"Cookie": f"theme=dark; session={cookie}"}) as r:
        assert r.status == 200
        echoed = header_map(await r.json())
    assert echoed["cookie"] == ["theme=dark"]


async def test_logout_goes_to_the_dashboard_logout_when_configured(gateway: GatewayFactory) -> None:
    client = await gateway(logout_url="https://dash.example.com/logout")
    async with client.post("/_gateway/logout", allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "https://dash.example.com/logout"
