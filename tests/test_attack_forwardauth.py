"""The forward-auth check under attack, asked with raw requests so no client tidies them up.

The proxy in front sets one header to the page it asks about and passes the client's other
headers through: Caddy's ``forward_auth`` and Traefik's ``forwardAuth`` set only
``X-Forwarded-Uri``, nginx only what its config names. The gateway believes exactly the one
header ``server.forward_auth`` names, once, from a trusted peer; anything else is refused,
never judged as some other path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.config.load import build_config
from gateway.denial import MISSING_NAME
from gateway.errors import ConfigError
from gateway.redirects import safe_return_path
from tests.attack import (
    ADMIN_RULES,
    Reply,
    Start,
    exchange,
    port_of,
    raw_request,
    reader_cookie,
)
from tests.attack import start as start  # the shared fixture

ROOT = Path(__file__).resolve().parent.parent
TARGET_HEADERS = ("X-Original-URI", "X-Forwarded-Uri", "X-Original-URL", "X-Auth-Request-Uri")
# Each setting, and the header it believes.
BELIEVED = {"nginx": "X-Original-URI", "caddy": "X-Forwarded-Uri", "traefik": "X-Forwarded-Uri",
            "X-Auth-Request-Uri": "X-Auth-Request-Uri"}
CACHE = "X-Gateway-Cache-Control"


def behind(setting: str, **server: Any) -> dict[str, Any]:
    """The server section of a gateway asked by a proxy on 127.0.0.1."""
    return {"listen": "127.0.0.1:0", "public_url": "http://docs.test",
            "trusted_proxies": ["127.0.0.1/32"], "forward_auth": setting, **server}


async def ask(port: int, headers: list[tuple[str, str]], base: str = "") -> Reply:
    """The forward-auth question, as the proxy on 127.0.0.1 asks it."""
    return await exchange(port, raw_request(base + "/_gateway/auth", headers=headers))


@pytest.mark.parametrize("setting", list(BELIEVED))
async def test_only_the_named_header_says_which_page_is_asked_about(start: Start,
                                                                    setting: str) -> None:
    client, upstream = await start(server=behind(setting))
    port = port_of(client)
    believed = BELIEVED[setting]
    others = [name for name in TARGET_HEADERS if name.lower() != believed.lower()]
    assert (await ask(port, [(believed, "/public/x")])).status == 200
    assert (await ask(port, [(believed, "/admin/x")])).status == 401
    for other in others:
        # The client's copy beside the proxy's: the proxy's decides, either way round.
        closed = [(other, "/public/x"), (believed, "/admin/x")]
        assert (await ask(port, closed)).status == 401, other
        assert (await ask(port, closed[::-1])).status == 401, other
        opened = [(other, "/admin/x"), (believed, "/public/x")]
        assert (await ask(port, opened)).status == 200, other
        # Alone, another header is no answer at all: never the request's own path.
        alone = await ask(port, [(other, "/public/x")])
        assert alone.status == 400, other
        assert alone.header("X-Gateway-Assertion") is None
    assert upstream.seen == []


@pytest.mark.parametrize("setting", list(BELIEVED))
@pytest.mark.parametrize("values", [
    ("/public/x", "/public/x"), ("/public/x", "/admin/x"), ("/admin/x", "/public/x")])
async def test_the_believed_header_given_twice_is_refused(start: Start, setting: str,
                                                          values: tuple[str, str]) -> None:
    client, _ = await start(server=behind(setting))
    believed = BELIEVED[setting]
    cookie = await reader_cookie(client, "admin")
    for second in (believed, believed.lower(), believed.upper()):
        reply = await ask(port_of(client), [(believed, values[0]), (second, values[1]),
                                            ("Cookie", cookie)])
        assert reply.status == 400, second
        assert reply.header("X-Gateway-Assertion") is None


@pytest.mark.parametrize("value", ["", " ", "docs.test/admin", "admin/x", "mailto:x"])
async def test_an_empty_or_pathless_target_is_refused(start: Start, value: str) -> None:
    client, _ = await start(server=behind("caddy"), access={"public": ["/**"]})
    reply = await ask(port_of(client), [("X-Forwarded-Uri", value)])
    assert reply.status == 400


async def test_a_target_outside_the_base_path_is_not_judged_as_the_root(start: Start) -> None:
    client, _ = await start(server=behind("nginx", public_url="http://docs.test/docs"),
                            access={"public": ["/", "/public/**"]})
    port = port_of(client)
    assert (await ask(port, [("X-Original-URI", "/docs/")], "/docs")).status == 200
    assert (await ask(port, [("X-Original-URI", "/docs/public/x")], "/docs")).status == 200
    for outside in ("/", "/elsewhere", "/docsx/public/x", "/public/x"):
        reply = await ask(port, [("X-Original-URI", outside)], "/docs")
        assert reply.status == 404, outside


@pytest.mark.parametrize("setting", list(BELIEVED))
async def test_a_question_from_an_untrusted_peer_is_refused(start: Start, setting: str) -> None:
    client, _ = await start(server=behind(setting, trusted_proxies=["10.0.0.0/8"]))
    cookie = await reader_cookie(client, "admin")
    for name in TARGET_HEADERS:
        for path in ("/public/x", "/admin/x", "/guide"):
            reply = await ask(port_of(client), [(name, path), ("Cookie", cookie)])
            assert reply.status == 403, (name, path)
            assert reply.header("X-Gateway-Assertion") is None


async def test_forward_auth_is_off_unless_a_proxy_is_named(start: Start) -> None:
    for server in ({}, {"trusted_proxies": ["127.0.0.1/32"]}):
        client, _ = await start(server=server)
        cookie = await reader_cookie(client, "admin")
        for name in TARGET_HEADERS:
            reply = await ask(port_of(client), [(name, "/public/x"), ("Cookie", cookie)])
            assert reply.status == 404, (server, name)
            assert reply.header("X-Gateway-Assertion") is None


@pytest.mark.parametrize("method", ["X-Forwarded-Method", "X-Original-Method"])
async def test_the_method_a_proxy_names_never_changes_the_answer(start: Start,
                                                                 method: str) -> None:
    client, _ = await start(server=behind("traefik"))
    port = port_of(client)
    cookie = await reader_cookie(client)
    # Traefik hands the answer to the visitor: a denial is the site's missing page (the echo
    # upstream has none, so the gateway's plain 404).
    for path, anonymous, reader in (("/public/x", 200, 200), ("/guide", 401, 200),
                                    ("/admin/x", 401, 404)):
        for verb in ("GET", "POST", "DELETE", "OPTIONS", "get"):
            target = [("X-Forwarded-Uri", path), (method, verb)]
            assert (await ask(port, target)).status == anonymous, (path, verb)
            answer = await ask(port, [*target, ("Cookie", cookie)])
            assert answer.status == reader, (path, verb)


async def test_the_answer_says_how_a_personal_page_may_be_cached(start: Start) -> None:
    # nginx serves every page itself, refusals included, and marks it as the answer says.
    client, _ = await start(server=behind("nginx"))
    port = port_of(client)
    reader = await reader_cookie(client)
    personal = [([("X-Original-URI", "/guide")], 401),
                ([("X-Original-URI", "/guide"), ("Cookie", reader)], 200),
                ([("X-Original-URI", "/public/x"), ("Cookie", reader)], 200),
                ([("X-Original-URI", "/admin/x"), ("Cookie", reader)], 403)]
    for headers, status in personal:
        reply = await ask(port, headers)
        assert reply.status == status
        assert reply.all(CACHE) == ["private, no-cache"], headers
    anonymous = await ask(port, [("X-Original-URI", "/public/x"), (CACHE, "public")])
    assert anonymous.status == 200
    assert anonymous.all(CACHE) == []


async def test_an_answer_handed_to_the_visitor_carries_its_own_cache_policy(
        start: Start) -> None:
    client, _ = await start(server=behind("caddy"))
    port = port_of(client)
    reader = await reader_cookie(client)
    for headers, status, cache in (
            ([("X-Forwarded-Uri", "/guide")], 401, "no-store"),
            ([("X-Forwarded-Uri", "/guide"), ("Accept", "text/html")], 302, "no-store"),
            ([("X-Forwarded-Uri", "/admin/x"), ("Cookie", reader)], 404, "no-store")):
        reply = await ask(port, headers)
        assert reply.status == status, headers
        assert reply.all("Cache-Control") == [cache], headers
        assert reply.all(CACHE) == [], headers


# -- answers handed to the visitor (Caddy, Traefik) and to nginx ---------------------------

NAVIGATE = [("Accept", "text/html,application/xhtml+xml"), ("Sec-Fetch-Mode", "navigate")]
# Pages a client may ask for so that its way back after login leads elsewhere.
ELSEWHERE = ["//evil.example/x", "/\\evil.example/x", "/%2F%2Fevil.example/x",
             "/%5Cevil.example", "/x/../../evil", "/guide?r=//evil.example",
             "http://evil.example/guide", "/guide#//evil.example"]


@pytest.mark.parametrize("setting", ["caddy", "traefik"])
async def test_the_way_back_after_login_stays_on_the_docs(start: Start, setting: str) -> None:
    client, _ = await start(server=behind(setting))
    redirected: list[str] = []
    for target in ELSEWHERE:
        reply = await ask(port_of(client), [("X-Forwarded-Uri", target), *NAVIGATE])
        if reply.status != 302:
            assert reply.status in (400, 404), (target, reply.status)
            continue
        redirected.append(target)
        location = urlsplit(reply.header("Location") or "")
        assert (location.scheme, location.netloc, location.path) == (
            "http", "docs.test", "/_gateway/login"), target
        back = parse_qs(location.query)["redirect"]
        assert len(back) == 1 and safe_return_path(back[0]) == back[0], (target, back)
        assert urlsplit(back[0]).netloc == "" and not back[0].startswith("//"), target
    # The way back is checked on real redirects, not only on refusals.
    assert "/guide?r=//evil.example" in redirected and "//evil.example/x" in redirected


@pytest.mark.parametrize("setting", ["caddy", "traefik"])
async def test_only_a_navigation_is_sent_to_log_in(start: Start, setting: str) -> None:
    client, _ = await start(server=behind(setting))
    port = port_of(client)
    target = [("X-Forwarded-Uri", "/guide")]
    assert (await ask(port, [*target, *NAVIGATE])).status == 302
    assert (await ask(port, [*target, ("Accept", "text/html")])).status == 302
    for headers in ([("Accept", "text/html"), ("Sec-Fetch-Mode", "cors")],
                    [("Accept", "text/html"), ("Sec-Fetch-Mode", "no-cors")],
                    [("Accept", "application/json"), ("Sec-Fetch-Mode", "navigate")], []):
        reply = await ask(port, [*target, *headers])
        assert reply.status == 401, headers
        assert reply.header("Location") is None


@pytest.mark.parametrize("setting", ["caddy", "traefik"])
async def test_a_denial_handed_to_the_visitor_asks_the_docs_only_for_a_missing_page(
        start: Start, setting: str) -> None:
    client, upstream = await start(server=behind(setting))
    cookie = await reader_cookie(client)
    for target in ("/admin/x", "/admin/", "/admin/a/b.json?q=1", "/admin/%2e%2e/admin/x"):
        reply = await ask(port_of(client), [
            ("X-Forwarded-Uri", target), ("Cookie", cookie),
            ("X-Gateway-Missing", "/admin/x"), ("X-Original-URI", "/admin/x")])
        assert reply.status == 404, target
        assert reply.header("X-Gateway-Assertion") is None
        assert b"admin/x" not in reply.body, target
    assert upstream.seen and upstream.asked_only_missing(), upstream.targets()
    for seen in upstream.seen:
        # The proxy's words to the gateway are not passed on to the docs.
        assert not seen.header("X-Forwarded-Uri") and not seen.header("X-Original-URI")
        assert seen.method == "GET"


async def test_nginx_is_told_which_missing_page_to_serve(start: Start) -> None:
    client, upstream = await start(server=behind("nginx"))
    cookie = await reader_cookie(client)
    for target, folder in (("/admin/x", "/admin/"), ("/admin/a/b.html?q=1", "/admin/a/"),
                           ("/admin/", "/admin/"), ("/admin/%2e%2e/admin/x", "/admin/")):
        reply = await ask(port_of(client), [("X-Original-URI", target), ("Cookie", cookie),
                                            ("X-Gateway-Missing", "/admin/x")])
        assert reply.status == 403, target
        missing = reply.all("X-Gateway-Missing")
        assert len(missing) == 1 and missing[0].startswith(folder), (target, missing)
        assert MISSING_NAME in missing[0].split("/"), missing
        assert "?" not in missing[0] and ".." not in missing[0]
    # Allowed, or another denial setting: no address is named.
    assert (await ask(port_of(client), [("X-Original-URI", "/guide"), ("Cookie", cookie)])
            ).all("X-Gateway-Missing") == []
    forbidden, _ = await start(server=behind("nginx"), access={**ADMIN_RULES,
                                                               "denied": "forbidden"})
    reply = await ask(port_of(forbidden), [("X-Original-URI", "/admin/x"),
                                           ("Cookie", await reader_cookie(forbidden))])
    assert reply.status == 403 and reply.all("X-Gateway-Missing") == []
    assert upstream.seen == []


# -- the setting itself -------------------------------------------------------------------


def problems(**server: Any) -> list[str]:
    data = {"server": {"listen": "127.0.0.1:0", "public_url": "http://docs.test", **server},
            "upstream": {"url": "http://127.0.0.1:9"}, "session": {"secrets": ["s" * 40]},
            "handshake": {"jwt": {"secret": "h" * 40, "login_urls": [
                {"name": "Dashboard", "url": "https://dash.example.com/docs-login"}]}}}
    try:
        build_config(data, env={})
    except ConfigError as exc:
        return exc.problems
    return []


def test_the_setting_names_a_proxy_or_a_header() -> None:
    trusted = ["127.0.0.1/32"]
    for value in ("nginx", "caddy", "traefik", "X-Auth-Request-Uri", "x-original-url"):
        assert problems(forward_auth=value, trusted_proxies=trusted) == [], value
    assert problems(forward_auth="ngnix", trusted_proxies=trusted) == [
        "server.forward_auth: must be nginx, caddy, traefik or the name of the header your "
        "proxy sets to the page asked about (like X-Original-URI), not 'ngnix'; did you mean "
        "'nginx'?"]
    for bad in ("Traefik", "apache", "X Original", "X-Original-URI:", ""):
        found = problems(forward_auth=bad, trusted_proxies=trusted)
        assert len(found) == 1 and found[0].startswith("server.forward_auth: must be"), bad
    assert problems(forward_auth=True, trusted_proxies=trusted) == [
        "server.forward_auth: must be a string, not the boolean true (YAML reads on/off/yes/no "
        "as booleans; quote it)"]
    assert problems(forward_auth="caddy") == [
        "server.forward_auth: needs server.trusted_proxies: the page asked about is believed "
        "only from the proxy's address"]


def test_check_reports_a_bad_setting_in_one_line_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        'server: {public_url: "http://127.0.0.1:8080", forward_auth: ngnix,\n'
        '         trusted_proxies: ["127.0.0.1/32"]}\n'
        'upstream: {url: "http://127.0.0.1:9"}\n'
        'session: {secrets: ["' + "s" * 40 + '"]}\n'
        'handshake: {jwt: {secret: "' + "h" * 40 + '", login_urls: '
        '[{name: D, url: "https://dash.example.com/login"}]}}\n')
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(config)],
                            capture_output=True, text=True, timeout=60, env=environ)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "server.forward_auth: must be nginx, caddy, traefik or the name of the header your "
        "proxy sets to the page asked about (like X-Original-URI), not 'ngnix'; did you mean "
        "'nginx'?"]
