"""Sessions, policy and identity through the whole app, against a real echo upstream."""

from __future__ import annotations

import functools
import time
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import build_app
from tests.helpers import (
    Client,
    GatewayFactory,
    app_of,
    header_map,
    make_config,
    make_user,
    session_cookies,
)

HTML = {"Accept": "text/html,application/xhtml+xml"}
ACCESS = {"public": ["/pub/**"], "rules": [{"path": "/admin/**", "groups": ["admin"]},
                                          {"path": "/closed/**", "groups": []}]}


@pytest.fixture
def gateway(gateway: GatewayFactory) -> GatewayFactory:
    """The gateway in front of the echo upstream, with ``ACCESS`` unless a test gives its own."""
    return functools.partial(gateway, access=ACCESS)


async def login(client: Client, *groups: str, sub: str = "ada") -> dict[str, str]:
    return await session_cookies(app_of(client), make_user(sub, groups=groups,
                                                           email=f"{sub}@example.com"))


async def test_anonymous_browser_is_sent_to_login_with_its_path(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.get("/guide/intro?tab=2", headers=HTML, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/_gateway/login?redirect=/guide/intro%3Ftab%3D2"
    async with client.get("/_gateway/login?redirect=/guide/intro", allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == \
            "https://dash.example.com/docs-login?redirect=%2Fguide%2Fintro"


async def test_anonymous_api_request_gets_401_json(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.get("/guide/intro") as response:
        assert response.status == 401
        assert await response.json() == {"error": "unauthenticated"}


async def test_public_glob_served_anonymously(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.get("/pub/a.css") as response:
        assert response.status == 200
        assert "x-gateway-assertion" not in header_map(await response.json())


async def test_logged_in_reader_gets_a_verifiable_assertion(gateway: GatewayFactory,
                                                            upstream: TestServer) -> None:
    client = await gateway(identity={"assertion": {"claims": ["groups", "content"]}})
    cookies = await login(client, "beta")
    async with client.get("/guide", cookies=cookies) as response:
        assert response.status == 200
        echoed = header_map(await response.json())
    token = echoed["x-gateway-assertion"][0]
    async with client.get("/_gateway/jwks.json") as response:
        keys = jwt.PyJWKSet.from_dict(await response.json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims = jwt.decode(token, key=key.key, algorithms=["EdDSA"],
                        audience=f"http://127.0.0.1:{upstream.port}")
    assert claims["sub"] == "ada"
    assert claims["iss"] == "http://docs.test"
    assert claims["groups"] == ["beta"]
    assert claims["content"]["email"] == "ada@example.com"
    assert claims["method"] == "jwt"
    assert claims["exp"] > time.time()


async def test_jwks_has_public_material_only(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.get("/_gateway/jwks.json") as response:
        body = await response.json()
    for key in body["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


@pytest.mark.parametrize("path", ["/pub/x", "/guide"])
@pytest.mark.parametrize("name", ["X-Gateway-Assertion", "x_gateway_assertion",
                                  "X-GATEWAY-USER", "X-Email", "x_email"])
async def test_spoofed_identity_headers_never_pass(gateway: GatewayFactory, path: str,
                                                   name: str) -> None:
    client = await gateway(identity={"headers": {"X-Email": "content.email"}})
    cookies = await login(client, sub="real")
    for jar in ({}, cookies):
        async with client.get(path, headers={name: "forged"}, cookies=jar) as response:
            if response.status != 200:
                assert not jar and response.status == 401
                continue
            echoed = header_map(await response.json())
        for values in echoed.values():
            assert "forged" not in values


async def test_plain_headers_carry_the_mapped_fields(gateway: GatewayFactory) -> None:
    client = await gateway(identity={"headers": {"X-Email": "content.email",
                                                 "X-Groups": "groups", "X-User": "sub"}})
    cookies = await login(client, "a", "b")
    async with client.get("/guide", cookies=cookies) as response:
        echoed = header_map(await response.json())
    assert echoed["x-email"] == ["ada@example.com"]
    assert echoed["x-groups"] == ["a,b"]
    assert echoed["x-user"] == ["ada"]


async def test_group_rules(gateway: GatewayFactory) -> None:
    client = await gateway()
    reader = await login(client, "beta", sub="reader")
    admin = await login(client, "admin", sub="boss")
    async with client.get("/admin/page", cookies=reader) as response:
        assert response.status == 404
    async with client.get("/admin/page", cookies=admin) as response:
        assert response.status == 200
    async with client.get("/closed/x", cookies=admin) as response:
        assert response.status == 404
    async with client.get("/administrator", cookies=reader) as response:
        assert response.status == 200


async def test_denied_forbidden_is_403(gateway: GatewayFactory) -> None:
    client = await gateway(access={"rules": [{"path": "/admin/**", "groups": ["admin"]}],
                                   "denied": "forbidden"})
    reader = await login(client, "beta")
    async with client.get("/admin/", cookies=reader) as response:
        assert response.status == 403


async def test_personalize_mode_blocks_nothing(gateway: GatewayFactory) -> None:
    client = await gateway(mode="personalize")
    async with client.get("/admin/secret") as response:
        assert response.status == 200
        assert "x-gateway-assertion" not in header_map(await response.json())
    cookies = await login(client)
    async with client.get("/admin/secret", cookies=cookies) as response:
        assert "x-gateway-assertion" in header_map(await response.json())
        assert "private" in response.headers["Cache-Control"]


@pytest.mark.parametrize("mutate", [
    lambda v: v[:-4],
    lambda v: v[:10] + ("A" if v[10] != "A" else "B") + v[11:],
    lambda v: v + "x",
    lambda v: "",
    lambda v: "garbage",
])
async def test_tampered_cookie_is_anonymous_and_cleared(gateway: GatewayFactory,
                                                        mutate: Any) -> None:
    client = await gateway()
    cookies = await login(client)
    bad = {name: mutate(value) for name, value in cookies.items()}
    async with client.get("/guide", cookies=bad) as response:
        assert response.status == 401
        cleared = response.headers.getall("Set-Cookie", [])
    if any(bad.values()):
        assert any((c.startswith(next(iter(bad))) and "Max-Age=0" in c) or "expires" in c.lower()
                   for c in cleared)


async def test_cookie_from_another_deployment_is_anonymous(aiohttp_client: Any,
                                                           upstream_url: str) -> None:
    url = upstream_url
    other = await aiohttp_client(await build_app(make_config(url, session={
        "secrets": ["o" * 40]})))
    cookies = await login(other)
    ours = await aiohttp_client(await build_app(make_config(url)))
    async with ours.get("/guide", cookies=cookies) as response:
        assert response.status == 401


async def test_secret_rotation_keeps_sessions(aiohttp_client: Any, upstream_url: str) -> None:
    url = upstream_url
    old = await aiohttp_client(await build_app(make_config(url, session={"secrets": ["a" * 40]})))
    cookies = await login(old)
    rotated = await aiohttp_client(await build_app(make_config(
        url, session={"secrets": ["b" * 40, "a" * 40]})))
    async with rotated.get("/guide", cookies=cookies) as response:
        assert response.status == 200
    dropped = await aiohttp_client(await build_app(make_config(
        url, session={"secrets": ["b" * 40]})))
    async with dropped.get("/guide", cookies=cookies) as response:
        assert response.status == 401


async def test_page_meta_public_and_groups(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.get("/html?meta=public=true") as response:
        assert response.status == 200
        assert "secret page" in await response.text()
    async with client.get("/html", headers=HTML, allow_redirects=False) as response:
        assert response.status == 302
        assert "secret page" not in await response.text()
    reader = await login(client, "beta")
    admin = await login(client, "admin", sub="boss")
    async with client.get("/html?meta=groups=admin,ops", cookies=reader) as response:
        assert response.status == 404
        assert "secret page" not in await response.text()
    async with client.get("/html?meta=groups=admin,ops", cookies=admin) as response:
        assert response.status == 200
    async with client.get("/html?meta=groups=admin") as response:
        assert response.status == 401


async def test_config_rules_win_over_page_meta(gateway: GatewayFactory) -> None:
    client = await gateway(access={"rules": [{"path": "/html", "groups": ["admin"]}]})
    async with client.get("/html?meta=public=true") as response:
        assert response.status == 401


async def test_user_endpoint(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.get("/_gateway/user") as response:
        assert response.status == 401
        assert await response.json() == {"error": "unauthenticated"}
    cookies = await login(client, "beta")
    async with client.get("/_gateway/user", cookies=cookies) as response:
        assert response.status == 200
        body = await response.json()
        assert response.headers["Cache-Control"] == "private, no-store"
    assert body["sub"] == "ada"
    assert body["groups"] == ["beta"]
    assert body["content"]["email"] == "ada@example.com"
    assert set(body) <= {"sub", "expiresAt", "groups", "content", "apiPlaygroundInputs"}


async def test_auth_route_for_forward_auth_proxies(gateway: GatewayFactory) -> None:
    client = await gateway(server={"trusted_proxies": ["127.0.0.1/32"], "forward_auth": "nginx"})
    async with client.get("/_gateway/auth", headers={"X-Original-URI": "/pub/x"}) as response:
        assert response.status == 200
    async with client.get("/_gateway/auth", headers={"X-Original-URI": "/guide"}) as response:
        assert response.status == 401
    reader = await login(client, "beta")
    async with client.get("/_gateway/auth", headers={"X-Original-URI": "/admin/x"},
                          cookies=reader) as response:
        assert response.status == 403
    async with client.get("/_gateway/auth", headers={"X-Original-URI": "/guide"},
                          cookies=reader) as response:
        assert response.status == 200
        assert response.headers["X-Gateway-Assertion"].count(".") == 2


async def test_auth_route_ignores_original_uri_from_untrusted_peers(
        gateway: GatewayFactory) -> None:
    client = await gateway(server={"trusted_proxies": ["10.0.0.0/8"], "forward_auth": "nginx"})
    reader = await login(client, "beta")
    async with client.get("/_gateway/auth", headers={"X-Original-URI": "/pub/x"},
                          cookies=reader) as response:
        assert response.status == 403  # not judged at all: only a trusted proxy may ask


async def test_logout_post_clears_session(gateway: GatewayFactory) -> None:
    client = await gateway()
    cookies = await login(client)
    async with client.post("/_gateway/logout", cookies=cookies, allow_redirects=False) as r:
        assert r.status == 303
        assert r.headers["Location"] == "/"
        cleared = [c for c in r.headers.getall("Set-Cookie") if c.startswith("docs_session")]
        assert cleared


async def test_logout_get_needs_same_origin(gateway: GatewayFactory) -> None:
    client = await gateway()
    cookies = await login(client)
    async with client.get("/_gateway/logout", cookies=cookies, allow_redirects=False) as r:
        assert r.status == 400
    async with client.get("/_gateway/logout", cookies=cookies, allow_redirects=False,
                          headers={"Sec-Fetch-Site": "cross-site"}) as r:
        assert r.status == 400
    async with client.get("/_gateway/logout?redirect=//evil.test", cookies=cookies,
                          allow_redirects=False, headers={"Sec-Fetch-Site": "same-origin"}) as r:
        assert r.status == 303
        assert r.headers["Location"] == "/"


async def test_login_redirect_param_stays_on_site(gateway: GatewayFactory) -> None:
    client = await gateway()
    for bad in ("https://evil.test/", "//evil.test", "/\\evil.test", "javascript:alert(1)"):
        async with client.get("/_gateway/login", params={"redirect": bad},
                              allow_redirects=False) as response:
            assert response.headers["Location"].endswith("redirect=%2F")


async def test_redis_store_down_protected_503_public_200(gateway: GatewayFactory,
                                                         redis_server: Any) -> None:
    client = await gateway(session={"store": "redis", "redis_url": redis_server.url,
                                    "secrets": ["r" * 40]},
                           access={"public": ["/pub/**"]})
    cookies = await login(client)
    async with client.get("/guide", cookies=cookies) as response:
        assert response.status == 200
    redis_server.stop()
    try:
        async with client.get("/guide", cookies=cookies) as response:
            assert response.status == 503
        async with client.get("/pub/x", cookies=cookies) as response:
            assert response.status == 200
    finally:
        redis_server.start()
    async with client.get("/guide", cookies=cookies) as response:
        assert response.status in (200, 401)  # recovered: the store answers again
    new_cookies = await login(client)
    async with client.get("/guide", cookies=new_cookies) as response:
        assert response.status == 200


async def test_client_js_and_healthz(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.get("/_gateway/client.js") as response:
        assert response.status == 200
        assert "javascript" in response.headers["Content-Type"]
        assert "docs:user" in await response.text()
    async with client.get("/_gateway/healthz") as response:
        assert response.status == 200
    async with client.get("/_gateway/readyz") as response:
        assert response.status == 200
        assert (await response.json())["checks"]["upstream"] is True


async def test_another_method_on_an_own_route_is_405_naming_the_methods_it_takes(
        gateway: GatewayFactory) -> None:
    client = await gateway()
    for method, path, allowed in (("DELETE", "/_gateway/logout", {"GET", "HEAD", "POST"}),
                                  ("PUT", "/_gateway/healthz", {"GET", "HEAD"})):
        async with client.request(method, path) as response:
            assert response.status == 405, (method, path)
            assert {name.strip() for name in response.headers["Allow"].split(",")} == allowed
            assert (await response.json())["error"] == "method_not_allowed"


async def test_metrics_count_requests(gateway: GatewayFactory) -> None:
    client = await gateway(server={"metrics": "public"})
    for _ in range(3):
        async with client.get("/pub/x") as response:
            assert response.status == 200
    async with client.get("/_gateway/metrics") as response:
        text = await response.text()
    assert 'gateway_requests_total{route="docs",status="200"} 3.0' in text
    assert "gateway_upstream_seconds_count 3.0" in text
    assert 'gateway_upstream_seconds_bucket{le="+Inf"} 3.0' in text
    # Buckets are cumulative and the sum is the upstream's time, not a count.
    buckets = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("gateway_upstream_seconds_bucket")]
    assert buckets == sorted(buckets) and len(buckets) == 14
    total = next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith("gateway_upstream_seconds_sum"))
    assert 0 < total < 3


async def test_login_route_is_rate_limited_per_client(gateway: GatewayFactory) -> None:
    client = await gateway(server={"login_rate_limit": 5})
    statuses = []
    for _ in range(8):
        async with client.get("/_gateway/login", allow_redirects=False) as response:
            statuses.append(response.status)
    assert statuses[:5] == [302] * 5
    assert statuses[5:] == [429] * 3
    async with client.get("/pub/x") as response:
        assert response.status == 200  # docs pages are not rate-limited


async def test_own_routes_refuse_large_bodies(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.post("/_gateway/logout", data=b"x" * 200_000,
                           headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
        assert r.status == 413


async def test_oversized_headers_are_refused(gateway: GatewayFactory) -> None:
    client = await gateway()
    async with client.get("/pub/x", headers={"X-Big": "a" * 40_000}) as response:
        assert response.status in (400, 431)


async def test_metrics_and_audit_of_a_denial(gateway: GatewayFactory,
                                             caplog: pytest.LogCaptureFixture) -> None:
    client = await gateway(server={"metrics": "public"})
    reader = await login(client, "beta", sub="reader-7")
    with caplog.at_level("INFO", logger="gateway.audit"):
        async with client.get("/admin/page", cookies=reader) as response:
            assert response.status == 404
    denied = [r for r in caplog.records if r.name == "gateway.audit" and r.msg == "denied"]
    assert denied and denied[0].sub == "reader-7"  # type: ignore[attr-defined]
    async with client.get("/_gateway/metrics") as response:
        text = await response.text()
    assert 'gateway_denials_total{reason="groups"} 1.0' in text
    assert 'gateway_requests_total{route="docs",status="404"} 1.0' in text
