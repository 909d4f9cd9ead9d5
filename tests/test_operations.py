"""What a support team reads: log lines that carry their request's id and say why a request
was refused, Redis reachability changes, the metrics (off the public port by default, the
request duration by route class), and ``check``'s warnings and ``--online`` probes.

Real servers throughout: the echo upstream or a built folder, redis-server, the test OAuth
server (tests/authserver.py) and the shared-session dashboard (tests/dashboard.py).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from gateway import cli
from gateway.app import build_app
from gateway.config.model import LoggingConfig
from gateway.logs import AccessLogger, setup_logging
from gateway.server import Serving
from tests.authserver import TestIdP
from tests.conftest import RedisServer
from tests.dashboard import INFO_API_PATH, Dashboard
from tests.helpers import HS_SECRET, make_config, make_user, session_cookies
from tests.ports import free_port

#: The served way, as ``docs-gateway run`` writes its access lines.
ACCESS = {"access_log_class": AccessLogger, "access_log": logging.getLogger("gateway.access")}


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The gateway's JSON log (``setup_logging``, as ``run`` sets it up) in a buffer."""
    root = logging.getLogger("gateway")
    saved = (list(root.handlers), root.level, root.propagate)
    setup_logging(LoggingConfig(level="info", format="json"))
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    yield buffer
    root.handlers[:], root.level, root.propagate = saved


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def token(**claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "ada", "exp": now + 30, "iat": now, **claims}, HS_SECRET,
                      algorithm="HS256")


async def served_gateway(aiohttp_server: Any, aiohttp_client: Any, config: Any) -> Any:
    server = await aiohttp_server(await build_app(config), **ACCESS)
    return await aiohttp_client(server)


# -- every line of a request carries its id; a refusal says why ----------------------------


async def test_a_refused_login_says_the_audience_expected_and_received(
        aiohttp_server: Any, aiohttp_client: Any, upstream_url: str,
        log_lines: io.StringIO) -> None:
    config = make_config(upstream_url, handshake={"method": "jwt", "jwt": {
        "secret": HS_SECRET, "algorithms": ["HS256"], "require_host": False,
        "audience": "docs.example.com",
        "login_urls": [{"name": "Dashboard", "url": "https://dash.example.com/login"}]}})
    client = await served_gateway(aiohttp_server, aiohttp_client, config)
    sent = token(aud="billing.example.com")
    async with client.post("/_gateway/jwt-callback", data={"token": sent},
                           allow_redirects=False) as response:
        assert response.status == 400
        request_id = response.headers["X-Request-Id"]
    found = lines(log_lines)
    refused = [line for line in found if line["msg"] == "jwt login refused"]
    assert refused == [{**refused[0], "request_id": request_id, "reason": "wrong_audience",
                        "expected": "'docs.example.com'", "received": "'billing.example.com'"}]
    access = [line for line in found if line["logger"] == "gateway.access"]
    assert [line["request_id"] for line in access] == [request_id]
    for part in sent.split("."):
        assert part not in log_lines.getvalue()


async def test_a_denied_page_logs_the_groups_wanted_and_held_under_its_request_id(
        aiohttp_server: Any, aiohttp_client: Any, upstream_url: str,
        log_lines: io.StringIO) -> None:
    config = make_config(upstream_url, access={"rules": [
        {"path": "/admin/**", "groups": ["admin", "ops"]}]})
    app = await build_app(config)
    client = await aiohttp_client(await aiohttp_server(app, **ACCESS))
    cookies = await session_cookies(app, make_user("grace", groups=("reader",)))
    log_lines.seek(0)
    log_lines.truncate()  # what start-up said; from here on, only the request's lines
    async with client.get("/admin/keys", cookies=cookies,
                          headers={"X-Request-Id": "forged-by-client"}) as response:
        assert response.status == 404
        request_id = response.headers["X-Request-Id"]
    assert request_id != "forged-by-client"  # believed only from a trusted proxy
    found = lines(log_lines)
    assert found, "nothing was logged"
    assert {line.get("request_id") for line in found} == {request_id}
    denied = [line for line in found if line["msg"] == "denied"]
    assert denied == [{**denied[0], "sub": "grace", "path": "/admin/keys", "reason": "groups",
                       "expected": "any of groups admin, ops", "received": "groups reader"}]
    access = [line for line in found if line["logger"] == "gateway.access"]
    assert access == [{**access[0], "status": 404, "reason": "groups",
                       "expected": "any of groups admin, ops", "received": "groups reader"}]
    assert "docs_session" not in log_lines.getvalue()
    for value in cookies.values():
        assert value not in log_lines.getvalue()


async def test_an_upstream_failure_is_logged_under_the_request_id(
        aiohttp_server: Any, aiohttp_client: Any, log_lines: io.StringIO) -> None:
    config = make_config(f"http://127.0.0.1:{free_port()}", access={"public": ["/**"]})
    client = await served_gateway(aiohttp_server, aiohttp_client, config)
    async with client.get("/guide/", headers={"Accept": "application/json"}) as response:
        assert response.status == 502
        request_id = response.headers["X-Request-Id"]
    found = lines(log_lines)
    failed = [line for line in found if line["msg"] == "request failed"]
    access = [line for line in found if line["logger"] == "gateway.access"]
    assert [line["request_id"] for line in failed + access] == [request_id] * 2
    assert access[0]["reason"] == failed[0]["reason"] == "bad_gateway"


# -- Redis reachability --------------------------------------------------------------------


async def test_redis_reachability_is_logged_at_start_and_on_each_change(
        aiohttp_server: Any, aiohttp_client: Any, upstream_url: str,
        redis_server: RedisServer, log_lines: io.StringIO) -> None:
    config = make_config(upstream_url, session={
        "store": "redis", "redis_url": redis_server.url, "secrets": ["r" * 40]})
    app = await build_app(config)
    client = await aiohttp_client(await aiohttp_server(app, **ACCESS))
    cookies = await session_cookies(app, make_user("ada"))

    def redis_lines() -> list[dict[str, Any]]:
        return [line for line in lines(log_lines) if line["msg"].startswith("Redis ")]

    where = f"127.0.0.1:{redis_server.port}/0"
    assert redis_lines() == [{**redis_lines()[0], "level": "info", "msg": "Redis reachable",
                              "redis": where}]
    async with client.get("/guide", cookies=cookies) as response:
        assert response.status == 200
    redis_server.stop()
    try:
        statuses = []
        for _ in range(3):
            async with client.get("/guide", cookies=cookies) as response:
                statuses.append(response.status)
        assert statuses == [503] * 3
        down = redis_lines()[1:]
        assert [(line["msg"], line["was"]) for line in down] == [
            ("Redis unreachable", "reachable")]
        assert down[0]["level"] == "warning" and "error" in down[0]
    finally:
        redis_server.start()
    # The tracking connection, trying again each second, notices without any request.
    deadline = time.monotonic() + 10
    while len(redis_lines()) < 3:
        assert time.monotonic() < deadline, redis_lines()
        await asyncio.sleep(0.05)
    # Noticed by no request, so it names none (not the request that started the tracking).
    assert "request_id" not in redis_lines()[2]
    async with client.get("/guide", cookies=cookies) as response:
        assert response.status == 401  # Redis answers; the session died with it
    async with client.get("/_gateway/readyz") as response:
        assert response.status == 200
    assert [(line["msg"], line.get("was")) for line in redis_lines()] == [
        ("Redis reachable", None), ("Redis unreachable", "reachable"),
        ("Redis reachable", "unreachable")]
    assert "password" not in log_lines.getvalue()


# -- metrics -------------------------------------------------------------------------------


def built_site(root: Path) -> Path:
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>Home</title><p>Home</p>")
    (root / "admin").mkdir()
    (root / "admin" / "index.html").write_text("<!doctype html><title>A</title><p>Keys</p>")
    (root / "style.css").write_text("p { color: red }")
    (root / "sitemap.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?><urlset xmlns='
        '"http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>http://docs.test/</loc></url>'
        "<url><loc>http://docs.test/admin/</loc></url></urlset>")
    return root


async def test_request_duration_by_route_class(aiohttp_client: Any, tmp_path: Path) -> None:
    config = make_config(None, upstream={"url": None, "root": str(built_site(tmp_path / "s"))},
                         server={"metrics": "public"},
                         access={"public": ["/", "/style.css", "/sitemap.xml"],
                                 "rules": [{"path": "/admin/**", "groups": ["admin"]}]})
    client = await aiohttp_client(await build_app(config))
    for path, status in [("/", 200), ("/style.css", 200), ("/sitemap.xml", 200),
                         ("/admin/", 302), ("/_gateway/healthz", 200), ("/%00", 400)]:
        async with client.get(path, headers={"Accept": "text/html"},
                              allow_redirects=False) as response:
            assert response.status == status, path
            if path == "/sitemap.xml":
                assert "/admin/" not in await response.text()  # read and filtered
    async with client.get("/_gateway/metrics") as response:
        text = await response.text()
    for route in ("page", "asset", "index", "gateway", "denied", "error"):
        assert f'gateway_request_seconds_count{{route="{route}"}} 1.0' in text, route
        assert f'gateway_request_seconds_bucket{{le="+Inf",route="{route}"}} 1.0' in text
    assert 'gateway_requests_total{route="docs",status="200"} 3.0' in text


async def test_metrics_are_on_the_admin_port_only_unless_asked(upstream_url: str) -> None:
    async def metrics(http: aiohttp.ClientSession, url: str) -> bool:
        async with http.get(url, headers={"Accept": "application/json"}) as response:
            return response.status == 200 and "gateway_request_seconds" in await response.text()

    async def where(config: Any) -> tuple[bool, bool | None]:
        """Whether the docs port, and the admin port, serve the metrics."""
        serving = await Serving.start(config)
        try:
            async with aiohttp.ClientSession() as http:
                public = await metrics(
                    http, f"http://127.0.0.1:{config.server.port}/_gateway/metrics")
                admin = config.server.admin_port
                return public, None if admin is None else \
                    await metrics(http, f"http://127.0.0.1:{admin}/metrics")
        finally:
            await serving.stop()

    def config(**server: Any) -> Any:
        return make_config(upstream_url, server={
            "listen": f"127.0.0.1:{free_port()}", "public_url": "http://docs.test", **server})

    assert await where(config()) == (False, None)
    assert await where(config(admin_listen=f"127.0.0.1:{free_port()}")) == (False, True)
    assert await where(config(admin_listen=f"127.0.0.1:{free_port()}",
                              metrics="public")) == (True, True)
    assert await where(config(admin_listen=f"127.0.0.1:{free_port()}",
                              metrics="off")) == (False, False)
    assert await where(config(metrics="public")) == (True, None)


# -- check: warnings and --online ----------------------------------------------------------


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


BASE = """\
server: {{listen: "127.0.0.1:8080", public_url: "http://127.0.0.1:8080"{server}}}
upstream: {{url: "{upstream}"}}
session: {{secrets: ["{secret}"]{session}}}
identity: {{assertion: {{header: null}}}}
"""


def config_text(upstream: str, handshake: str, *, server: str = "", session: str = "",
                access: str = "") -> str:
    return BASE.format(upstream=upstream, secret="s" * 40, server=server,
                       session=session) + handshake + access


JWT = f"""handshake:
  method: jwt
  jwt: {{secret: "{HS_SECRET}", algorithms: [HS256], login_urls: [{{name: D, url: "https://d.test/"}}]}}
"""


def test_check_warns_of_workers_on_the_cookie_store_and_of_one_star_globs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = config_text("http://127.0.0.1:3000", JWT, server=", workers: 4",
                       access='access: {public: ["/blog/*", "/assets/**"], '
                              'rules: [{path: "/admin/*", groups: [admin]}]}\n')
    assert cli.main(["check", "-c", str(write_config(tmp_path / "g.yaml", text))]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines()
                if line.startswith("warning: ")]
    assert warnings == [
        "warning: session.store: cookie with 4 workers (and the same holds for several "
        "replicas): each process keeps its own record of used login tokens, OAuth states and "
        "Info API answers, so a token replayed to another process logs in again, and a logout "
        "cannot revoke a copied cookie; use store: redis",
        "warning: access.public[0]: '/blog/*' opens one level only (/blog/a, not /blog/a/b or "
        "/blog itself); /blog/** covers the whole folder",
        "warning: access.rules[0].path: '/admin/*' guards one level only (/admin/a, not "
        "/admin/a/b or /admin itself); /admin/** covers the whole folder"]
    # Redis, one worker and two stars: nothing to say.
    quiet = config_text("http://127.0.0.1:3000", JWT, server=", workers: 4",
                        session=', store: redis, redis_url: "redis://127.0.0.1:6379/0"',
                        access='access: {rules: [{path: "/admin/**", groups: [admin]}]}\n')
    assert cli.main(["check", "-c", str(write_config(tmp_path / "q.yaml", quiet))]) == 0
    assert "warning" not in capsys.readouterr().out


async def check_online(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """``docs-gateway check --online`` (in a thread: it runs its own event loop, while the
    servers it asks run in this one)."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, ["check", "-c", str(path), "--online"])
    out = capsys.readouterr().out.splitlines()
    return code, out[out.index("online:") + 1:]


async def test_check_online_asks_each_dependency(
        aiohttp_server: Any, upstream_url: str, redis_server: RedisServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    idp = TestIdP()
    idp_server = await aiohttp_server(idp.app())
    idp.issuer = str(idp_server.make_url("")).rstrip("/")
    dashboard = Dashboard()
    runner = await dashboard.serve()
    try:
        redis = f', store: redis, redis_url: "{redis_server.url}"'
        oauth = config_text(upstream_url, f"""handshake:
  method: oauth
  oauth: {{issuer: "{idp.issuer}", client_id: docs, jwks_url: "{idp.issuer}/jwks"}}
""", session=redis)
        code, found = await check_online(write_config(tmp_path / "o.yaml", oauth), capsys)
        assert code == 0, found
        assert [line.split()[:2] for line in found] == [
            ["ok", "upstream"], ["ok", "Redis"], ["ok", "discovery"], ["ok", "key"]]
        assert f"redis 127.0.0.1:{redis_server.port}/0: answers PING" in found[1]
        shared = config_text(upstream_url, f"""handshake:
  method: shared_session
  shared_session: {{info_api_url: "{dashboard.url}{INFO_API_PATH}", cookies: [session],
                    login_url: "{dashboard.url}/login"}}
""")
        code, found = await check_online(write_config(tmp_path / "s.yaml", shared), capsys)
        assert code == 0, found
        assert [line.split()[:3] for line in found] == [
            ["ok", "upstream", f"{upstream_url}/:"], ["ok", "Info", "API"]]
    finally:
        await runner.cleanup()


async def test_check_online_fails_for_what_does_not_answer(
        aiohttp_server: Any, upstream_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"

    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", not_json)
    other = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    down = config_text(closed, f"""handshake:
  method: oauth
  oauth: {{issuer: "{other}", client_id: docs, jwks_url: "{closed}/jwks"}}
""", session=f', store: redis, redis_url: "redis://:pw@127.0.0.1:{free_port()}/0"')
    code, found = await check_online(write_config(tmp_path / "d.yaml", down), capsys)
    assert code == 1
    assert [line.split()[:2] for line in found] == [
        ["FAILED", "upstream"], ["FAILED", "Redis"], ["FAILED", "discovery"],
        ["FAILED", "key"]]
    assert found[0].endswith("cannot connect (Connection refused)")
    assert "cannot be reached (ConnectionError)" in found[1] and "pw" not in found[1]
    assert found[2].endswith(f"HTTP 200: not a discovery document for {other}")
    # One failure is enough for a non-zero exit; the others still answer.
    partly = config_text(upstream_url, f"""handshake:
  method: shared_session
  shared_session: {{info_api_url: "{closed}/api/user", cookies: [session],
                    login_url: "{closed}/login"}}
""")
    code, found = await check_online(write_config(tmp_path / "p.yaml", partly), capsys)
    assert code == 1
    assert [line.split()[0] for line in found] == ["ok", "FAILED"]
