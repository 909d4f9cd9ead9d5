"""Properties over random input: raw paths, return paths, cookies and configuration files.

The HTTP properties run against a real gateway and echo upstream served from a thread,
so each example is a real request on a socket: hypothesis drives plain blocking code.
"""

from __future__ import annotations

import asyncio
import copy
import math
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urljoin, urlsplit

import pytest
from aiohttp import web
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.app import build_app
from gateway.config.load import build_config
from gateway.config.model import Config
from gateway.denial import MISSING_NAME
from gateway.errors import BadRequest, ConfigError
from gateway.paths import decoded, normalize_path
from tests.helpers import SECRET, echo_app, make_config, make_user, runner_for, session_cookies

LOGIN_URL = "https://dash.example.com/docs-login"
FAST = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Served:
    """A gateway and its recording echo upstream, running in a background event loop."""

    port: int = 0
    reader: str = ""
    valid_cookie: str = ""
    targets: list[str] = field(default_factory=list)


def _run(served: Served, ready: threading.Event, stop: threading.Event) -> None:
    async def main() -> None:
        app = echo_app()

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            served.targets.append(request.raw_path)
            response: web.StreamResponse = await handler(request)
            return response

        app.middlewares.append(record)
        up = web.AppRunner(app)
        await up.setup()
        up_site = web.TCPSite(up, "127.0.0.1", 0)
        await up_site.start()
        url = f"http://127.0.0.1:{up.addresses[0][1]}"
        config = make_config(url, access={"public": ["/public/**"],
                                          "rules": [{"path": "/admin/**", "groups": ["admin"]}]},
                             server={"listen": "127.0.0.1:0", "public_url": "http://docs.test",
                                     "login_rate_limit": 0})
        gateway = await build_app(config)
        runner = runner_for(gateway)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        served.port = runner.addresses[0][1]
        cookies = await session_cookies(gateway, make_user("reader", groups=("reader",)))
        served.valid_cookie = cookies["docs_session"]
        served.reader = f"docs_session={served.valid_cookie}"
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.02)
        await runner.cleanup()
        await up.cleanup()

    asyncio.run(main())


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    state = Served()
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=_run, args=(state, ready, stop), daemon=True)
    thread.start()
    assert ready.wait(20), "the gateway did not start"
    yield state
    stop.set()
    thread.join(20)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]


def request(port: int, data: bytes) -> Answer:
    """Send raw bytes, read the response until the server closes (bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head = b"".join(chunks).partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(head[0].split()[1]), headers)


def raw(target: bytes, *lines: str, method: bytes = b"GET", body: bytes = b"") -> bytes:
    head = [method + b" " + target + b" HTTP/1.1", b"Host: docs.test", b"Connection: close"]
    head += [line.encode("latin-1") for line in lines]
    if body:
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


# -- random raw paths ---------------------------------------------------------------------

_PATH_TOKENS = st.sampled_from([
    "/", "//", ".", "..", "/./", "/../", "%2e", "%2E", "%2e%2e", "%25", "%252e", "%2f", "%2F",
    "%5c", "\\", ";", "%3b", "%", "%zz", "a", "B", "~", "-", "%41", "%61", "%7e", "%20", "%00",
    "%09", "%c0%ae", "%C3%A9", "%ef%bc%8f", "admin", "public", "_gateway", "%5f", "?", "#",
    "@", ":", "+", "!", "$", "'", "*", ",", "=", "&", "x.json",
])
RAW_PATHS = st.lists(_PATH_TOKENS, max_size=16).map(lambda parts: "/" + "".join(parts))


@FAST
@given(RAW_PATHS)
def test_any_raw_path_is_refused_denied_or_forwarded_exactly_as_normalized(
        served: Served, path: str) -> None:
    served.targets.clear()
    answer = request(served.port, raw(path.encode(), f"Cookie: {served.reader}"))
    assert answer.status < 500, path
    path_part = path.split("?", 1)[0].split("#", 1)[0]
    try:
        expected = normalize_path(path_part)
    except BadRequest:
        assert answer.status == 400, path
        assert served.targets == []
        return
    if expected.startswith("/_gateway/"):
        return  # one of the gateway's own routes (or a docs path under its prefix)
    plain = decoded(expected)
    if plain == "/admin" or plain.startswith("/admin/"):
        assert answer.status == 404, path
        # Only the missing address beside it (whose answer a denial shows) is asked for.
        assert all(MISSING_NAME in target.split("?", 1)[0].split("/")
                   for target in served.targets)
        return
    assert 200 <= answer.status < 300, (path, answer.status)
    assert len(served.targets) == 1
    assert served.targets[0].split("?", 1)[0] == expected, path


# -- random return paths ------------------------------------------------------------------

_REDIRECT_TOKENS = st.sampled_from([
    "/", "//", "\\", "/\\", "%2f", "%2F", "%5c", "%252f", "evil.example", "docs.test", "@",
    ":", "https:", "http://", "javascript:", "data:", "\t", "\n", "\r", " ", "%09", "%0a",
    "%0d", "%00", ".", "..", "#", "?", "&", "=", "a", "\u3002", "\uff0f", "%E3%80%82",
])
REDIRECTS = st.one_of(
    st.lists(_REDIRECT_TOKENS, max_size=12).map("".join),
    st.text(st.characters(codec="utf-8"), max_size=40),
)


def on_docs(location: str) -> bool:
    """A single-slash relative path that every reading keeps on the docs origin."""
    if not location.startswith("/") or location[1:2] in ("/", "\\") or "\\" in location:
        return False
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in location):
        return False
    joined = urlsplit(urljoin("http://docs.test/a/b", location))
    layer = location
    for _ in range(4):
        layer = unquote(layer)
        if layer.startswith("//"):
            return False
    return (joined.scheme, joined.netloc) == ("http", "docs.test")


@FAST
@given(REDIRECTS)
def test_login_and_logout_never_send_the_browser_off_the_docs(served: Served,
                                                               value: str) -> None:
    target = f"?redirect={quote(value, safe='')}".encode()
    login = request(served.port, raw(b"/_gateway/login" + target))
    assert login.status == 302
    location = login.headers["location"]
    assert location.startswith(LOGIN_URL + "?")
    [returned] = parse_qs(urlsplit(location).query)["redirect"]
    assert on_docs(returned), (value, returned)
    logout = request(served.port, raw(b"/_gateway/logout" + target, "Sec-Fetch-Site: same-origin"))
    assert logout.status == 303 and on_docs(logout.headers["location"]), value
    posted = request(served.port, raw(
        b"/_gateway/logout", "Content-Type: application/x-www-form-urlencoded",
        method=b"POST", body=urlencode({"redirect": value}).encode()))
    assert posted.status == 303 and on_docs(posted.headers["location"]), value


# -- random cookies ----------------------------------------------------------------------

_NAMES = st.one_of(
    st.sampled_from(["docs_session", "docs_session.0", "docs_session.1", "docs_session.4",
                     "docs_session.5", "__Host-docs_session", "docs_session_jwt",
                     "docs_session_state_abcdefgh", "session", "Docs_Session"]),
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz_.-0123456789"), min_size=1, max_size=12),
)
_VALUES = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                blacklist_characters=";,\\\""), max_size=300)


@st.composite
def cookie_headers(draw: st.DrawFn, valid: str) -> str:
    pairs = draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=6))
    if draw(st.booleans()):
        # A damaged copy of a real session value: flipped, cut or extended.
        value = list(valid)
        for _ in range(draw(st.integers(1, 4))):
            where = draw(st.integers(0, len(value) - 1))
            value[where] = draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789-_"))
        cut = draw(st.integers(0, len(value)))
        damaged = "".join(value[:cut]) + draw(st.text("AB-_", max_size=3))
        assume(damaged != valid)
        pairs.append((draw(st.sampled_from(["docs_session", "docs_session.0"])), damaged))
    return "; ".join(f"{name}={value}" for name, value in pairs)


@FAST
@given(st.data())
def test_no_cookie_header_but_a_real_one_logs_anyone_in(served: Served,
                                                        data: st.DataObject) -> None:
    header = data.draw(cookie_headers(served.valid_cookie))
    assume(served.valid_cookie not in header)
    user = request(served.port, raw(b"/_gateway/user", f"Cookie: {header}"))
    assert user.status in (400, 401), header
    served.targets.clear()
    page = request(served.port, raw(b"/admin/x", f"Cookie: {header}"))
    assert page.status in (400, 401), header
    assert served.targets == []


# -- random configuration files ----------------------------------------------------------

KEYS: dict[str, Any] = {
    "server": ["listen", "public_url", "workers", "trusted_proxies", "prefix", "compat",
               "admin_listen", "metrics", "login_rate_limit", "max_concurrent"],
    "upstream": ["url", "root", "timeout", "connect_timeout", "host_header", "max_connections"],
    "handshake": {"method": None,
                  "jwt": ["login_urls", "public_keys", "jwks_url", "secret", "algorithms",
                          "issuer", "audience", "require_host", "max_age", "leeway",
                          "accept_query_token"],
                  "shared_session": ["info_api_url", "cookies", "login_url", "cache_ttl",
                                     "timeout"],
                  "oauth": ["issuer", "authorization_url", "token_url", "info_api_url",
                            "client_id", "client_secret", "scopes", "extra_params",
                            "groups_from", "logout_url", "refresh", "jwks_url", "timeout",
                            "token_auth", "refresh_interval"]},
    "user": ["subject"],
    "session": ["store", "secrets", "cookie_name", "same_site", "max_age", "redis_url"],
    "identity": {"assertion": ["header", "private_key", "algorithm", "ttl", "audience",
                               "claims"],
                 "headers": None, "inject_script": None, "expose": None},
    "access": ["public", "rules", "denied", "page_meta", "fragments", "indexes"],
    "logging": ["level", "format"],
    "mode": None,
}

LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "on", "off", "yes", "no", "30s", "0s", "-1s", "1e9d", "500ms", "14d",
                     "redis", "cookie", "jwt", "oauth", "shared_session", "authenticate",
                     "personalize", "http://127.0.0.1:9", "https://docs.example.com/base",
                     "https://u:p@x.example", "127.0.0.1:8080", ":0", "/_gateway", "/",
                     "${MISSING}", "${MISSING:-30s}", "${", "EdDSA", "none", "HS256",
                     "s" * 40, "./missing.pem", "/admin/**", "**", "[", "0.0.0.0/0",
                     "not a cidr", "mintlify", "x" * 300]),
    st.text(st.characters(max_codepoint=0x3FF), max_size=12),
)
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["path", "groups", "name", "url", "source", "claim",
                                     "delimiter", "", "x"]), inner, max_size=3)),
    max_leaves=6)


def _paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if tree is None:
        return [prefix]
    if isinstance(tree, list):
        return [(*prefix, key) for key in tree] + [prefix]
    out = [prefix] if prefix else []
    for key, sub in tree.items():
        out += _paths(sub, (*prefix, key))
    return out


CONFIG_PATHS = _paths(KEYS)


def base_config() -> dict[str, Any]:
    return {"server": {"listen": "127.0.0.1:0", "public_url": "http://docs.test"},
            "upstream": {"url": "http://127.0.0.1:9"},
            "session": {"secrets": [SECRET]},
            "handshake": {"method": "jwt", "jwt": {
                "secret": "h" * 40, "algorithms": ["HS256"],
                "login_urls": [{"name": "Dashboard", "url": LOGIN_URL}]}}}


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    data = base_config()
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(CONFIG_PATHS))
        node: Any = data
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        action = draw(st.sampled_from(["set", "set", "delete", "unknown"]))
        if action == "delete":
            node.pop(path[-1], None)
        elif action == "unknown":
            node[draw(st.sampled_from(["typo", "Listen", "secret ", "url2"]))] = draw(VALUES)
        else:
            node[path[-1]] = draw(VALUES)
    return data


CONFIGS = st.one_of(mutated_configs(), VALUES,
                    st.dictionaries(st.sampled_from(list(KEYS)), VALUES, max_size=6))


@settings(max_examples=150, deadline=None)
@given(CONFIGS)
def test_any_mapping_is_a_config_or_a_config_error(data: Any) -> None:
    snapshot = copy.deepcopy(data)
    try:
        config = build_config(data, env={}, base=Path("/nonexistent-config-base"))
    except ConfigError as error:
        assert error.problems and all(isinstance(p, str) and p for p in error.problems)
        return
    assert isinstance(config, Config)
    # A result means the numbers it holds are usable.
    for value in (config.upstream.timeout, config.session.max_age, config.handshake.jwt.leeway):
        assert math.isfinite(value) and value >= 0
    assert data == snapshot or _has_nan(snapshot)  # validating never mutates the input


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False
