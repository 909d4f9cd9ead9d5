"""Header spoofing and request smuggling, sent as raw bytes so no client tidies them up.

From the advisories: identity headers a client could send itself (oauth2-proxy's
``X-Forwarded-Email`` with underscores), ``X-Forwarded-Uri`` believed from anyone
(oauth2-proxy CVE-2026-40575), ``X-Forwarded-Proto`` believed without a trusted proxy
(Oathkeeper GHSA-vhr5-ggp3-qq85), hop-by-hop tricks that make a proxy drop its own
headers, and framing two parsers read differently (CL.TE, TE.TE, obs-fold, bare LF).
"""

from __future__ import annotations

import jwt
import pytest

from gateway.services import GATEWAY
from tests.attack import (
    Client,
    Recorder,
    Seen,
    Start,
    app_of,
    cookie_header,
    exchange,
    port_of,
    raw_request,
    reader_cookie,
)
from tests.attack import start as start  # the shared fixture
from tests.helpers import make_user, session_cookies

PLAIN = {"headers": {"X-Gateway-User": "sub", "Remote-User": "sub", "X-Email": "content.email"}}
FORGED = "mallory"


def verified_sub(client: Client, token: str) -> str:
    """The sub of an assertion, verified with the gateway's published keys."""
    jwks = app_of(client)[GATEWAY].signer.jwks()
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))
    claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name],
                        options={"verify_aud": False})
    return str(claims["sub"])


def only(upstream: Recorder) -> Seen:
    assert len(upstream.seen) == 1, upstream.targets()
    return upstream.seen[0]


def no_forged_value(seen: Seen) -> None:
    for name, value in seen.headers:
        assert FORGED not in value, (name, value)


SPOOFED_NAMES = [
    "X-Gateway-Assertion", "x-gateway-assertion", "X-GATEWAY-ASSERTION", "X_Gateway_Assertion",
    "x_gateway_assertion", "X-Gateway_Assertion", "X-Gateway-User", "x_gateway_user",
    "X-Gateway-Groups", "X-Gateway-Anything-New", "Remote-User", "remote_user", "REMOTE-USER",
    "Remote_User", "X-Email", "x_email", "X.Gateway.Assertion", "Remote.User", "x.email",
]


@pytest.mark.parametrize("name", SPOOFED_NAMES)
async def test_an_anonymous_identity_header_never_reaches_the_upstream(start: Start,
                                                                       name: str) -> None:
    client, upstream = await start(identity=PLAIN)
    reply = await exchange(port_of(client), raw_request("/public/x", headers=[(name, FORGED)]))
    assert reply.status == 200
    seen = only(upstream)
    no_forged_value(seen)
    assert not seen.header("X-Gateway-Assertion") and not seen.header("Remote-User")


@pytest.mark.parametrize("name", SPOOFED_NAMES)
async def test_a_logged_in_reader_cannot_add_to_the_gateways_identity(start: Start,
                                                                      name: str) -> None:
    client, upstream = await start(identity=PLAIN)
    cookie = await reader_cookie(client)
    reply = await exchange(port_of(client), raw_request(
        "/guide", headers=[(name, FORGED), ("Cookie", cookie), (name, FORGED + "2")]))
    assert reply.status == 200
    seen = only(upstream)
    no_forged_value(seen)
    assertions = seen.header("X-Gateway-Assertion")
    assert len(assertions) == 1 and verified_sub(client, assertions[0]) == "reader"
    assert seen.header("Remote-User") == ["reader"]
    assert seen.header("X-Gateway-User") == ["reader"]


@pytest.mark.parametrize("line", [
    b"X-Gateway-Assertion : forged",       # space before the colon
    b"X-Gateway-Assertion\t: forged",      # tab before the colon
    b" X-Gateway-Assertion: forged",       # a continuation line right after the request line
    b"X-Gateway-Assertion: forged\r\n x",  # obs-fold
    b"X-Gateway\x00-Assertion: forged",    # NUL in the name
    b"X-Gateway-Assertion: for\x00ged",    # NUL in the value
    b"X-Gateway-Assertion: a\rX-B: forged",  # bare CR
])
async def test_malformed_identity_header_lines_are_refused(start: Start, line: bytes) -> None:
    client, upstream = await start()
    request = (b"GET /public/x HTTP/1.1\r\n" + (line + b"\r\nHost: docs.test\r\n"
               if line.startswith(b" ") else b"Host: docs.test\r\n" + line + b"\r\n")
               + b"Connection: close\r\n\r\n")
    reply = await exchange(port_of(client), request)
    assert reply.status == 400
    assert upstream.seen == []


@pytest.mark.parametrize("named", [
    "X-Gateway-Assertion", "X-Gateway-User, Remote-User", "Cookie", "X-Forwarded-For",
    "X-Forwarded-Host, X-Forwarded-Proto", "X-Request-Id", "Host",
])
async def test_connection_cannot_make_the_gateway_drop_its_own_headers(start: Start,
                                                                       named: str) -> None:
    # A header named in Connection is hop-by-hop; a proxy that applies that after adding
    # its own headers strips identity or forwarding information (the "Connection: X-..."
    # trick). Here the client's copies go, the gateway's stay.
    client, upstream = await start(identity=PLAIN)
    cookie = await reader_cookie(client)
    reply = await exchange(port_of(client), raw_request("/guide", headers=[
        ("Cookie", cookie), ("Connection", f"close, {named}"), ("X-Forwarded-For", "6.6.6.6")]))
    assert reply.status == 200
    seen = only(upstream)
    assert verified_sub(client, seen.header("X-Gateway-Assertion")[0]) == "reader"
    assert seen.header("Remote-User") == ["reader"]
    assert seen.header("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.header("X-Forwarded-Host") == ["docs.test"]
    assert seen.header("X-Forwarded-Proto") == ["http"]
    assert len(seen.header("X-Request-Id")) == 1
    assert not seen.header("Connection")
    assert not any("docs_session" in value for value in seen.header("Cookie"))


UNTRUSTED: dict[str, tuple[str, str, list[str]]] = {
    # name: (value sent, header checked upstream, what it must hold there)
    "X-Forwarded-For": ("1.2.3.4", "X-Forwarded-For", ["127.0.0.1"]),
    "X-Forwarded-Host": ("evil.example", "X-Forwarded-Host", ["docs.test"]),
    "X-Forwarded-Proto": ("https", "X-Forwarded-Proto", ["http"]),
    "Forwarded": ("for=1.2.3.4;host=evil.example;proto=https", "Forwarded", []),
    "X-Original-URL": ("/admin/secret", "X-Original-URL", []),
    "X-Rewrite-URL": ("/admin/secret", "X-Rewrite-URL", []),
    "X-Original-URI": ("/admin/secret", "X-Original-URI", []),
    "X-Original-Method": ("DELETE", "X-Original-Method", []),
    "X-Real-IP": ("1.2.3.4", "X-Real-IP", []),
    "X-Forwarded-Prefix": ("/admin", "X-Forwarded-Prefix", []),
    "X-Forwarded-Port": ("443", "X-Forwarded-Port", []),
    "X-Forwarded-Server": ("evil.example", "X-Forwarded-Server", []),
    "x_forwarded_for": ("1.2.3.4", "x_forwarded_for", []),
}


@pytest.mark.parametrize("name", list(UNTRUSTED))
async def test_forwarding_headers_from_an_untrusted_peer_are_not_believed(start: Start,
                                                                          name: str) -> None:
    value, checked, expected = UNTRUSTED[name]
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request("/public/x", headers=[(name, value)]))
    assert reply.status == 200
    seen = only(upstream)
    assert seen.target == "/public/x"
    assert seen.header(checked) == expected


@pytest.mark.parametrize("value", ["https", "https, http"])
async def test_spoofed_forwarding_headers_never_change_the_login_redirect(
        start: Start, value: str) -> None:
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request("/admin/x", headers=[
        ("X-Forwarded-Proto", value), ("X-Forwarded-Host", "evil.example"),
        ("Accept", "text/html")]))
    assert reply.status == 302
    assert reply.header("Location") == "/_gateway/login?redirect=/admin/x"
    assert upstream.seen == []


async def test_a_client_request_id_is_replaced_unless_a_trusted_proxy_sent_it(
        start: Start) -> None:
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request(
        "/public/x", headers=[("X-Request-Id", "attacker-chosen")]))
    assert reply.header("X-Request-Id") != "attacker-chosen"
    assert only(upstream).header("X-Request-Id") == [reply.header("X-Request-Id")]


@pytest.mark.parametrize(("header", "value", "status"), [
    ("X-Forwarded-Uri", "/public/x", 403),       # untrusted: not judged at all
    ("X-Original-URI", "/public/x", 403),
    ("X-Original-URL", "/public/x", 403),
])
async def test_forward_auth_ignores_spoofed_targets_from_untrusted_peers(
        start: Start, header: str, value: str, status: int) -> None:
    client, _ = await start(server={"trusted_proxies": ["10.0.0.0/8"], "forward_auth": "caddy"})
    reply = await exchange(port_of(client), raw_request("/_gateway/auth",
                                                        headers=[(header, value)]))
    assert reply.status == status


TRUSTED = {"listen": "127.0.0.1:0", "public_url": "http://docs.test",
           "trusted_proxies": ["127.0.0.1/32"], "forward_auth": "caddy"}


@pytest.mark.parametrize(("uri", "status"), [
    ("/public/x", 200),
    ("/public/../admin/secret", 401),
    ("/public/%2e%2e/admin", 401),
    ("/admin?/public/x", 401),               # the query never decides (oauth2-proxy GHSA-7rh7)
    ("/admin#/public/x", 400),
    ("https://docs.test/admin/x", 401),
    ("/public/..%2fadmin", 400),
    ("/public/..;/admin", 400),
])
async def test_forward_auth_judges_the_normalized_original_path(start: Start, uri: str,
                                                                status: int) -> None:
    client, _ = await start(server=TRUSTED)
    reply = await exchange(port_of(client), raw_request("/_gateway/auth",
                                                        headers=[("X-Forwarded-Uri", uri)]))
    assert reply.status == status


async def test_a_foreign_host_header_never_reaches_the_upstream_or_a_redirect(
        start: Start) -> None:
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request("/public/x", host="evil.example"))
    assert only(upstream).header("Host") == [upstream.url.split("//")[1]]
    login = await exchange(port_of(client), raw_request(
        "/guide", host="evil.example", headers=[("Accept", "text/html")]))
    assert reply.status == 200 and login.status == 302
    assert login.header("Location") == "/_gateway/login?redirect=/guide"


SMUGGLING = {
    "two Host headers": b"GET /public/x HTTP/1.1\r\nHost: docs.test\r\nHost: evil.example\r\n",
    "no Host": b"GET /public/x HTTP/1.1\r\n",
    "two different Content-Length": (b"POST /public/x HTTP/1.1\r\nHost: d\r\n"
                                     b"Content-Length: 1\r\nContent-Length: 2\r\n"),
    "Content-Length list": b"POST /public/x HTTP/1.1\r\nHost: d\r\nContent-Length: 3, 3\r\n",
    "negative Content-Length": b"POST /public/x HTTP/1.1\r\nHost: d\r\nContent-Length: -1\r\n",
    "signed Content-Length": b"POST /public/x HTTP/1.1\r\nHost: d\r\nContent-Length: +3\r\n",
    "hex Content-Length": b"POST /public/x HTTP/1.1\r\nHost: d\r\nContent-Length: 0x3\r\n",
    "CL.TE": (b"POST /public/x HTTP/1.1\r\nHost: d\r\nContent-Length: 4\r\n"
              b"Transfer-Encoding: chunked\r\n"),
    "TE.CL": (b"POST /public/x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n"
              b"Content-Length: 4\r\n"),
    "TE.TE duplicated": (b"POST /public/x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n"
                         b"Transfer-Encoding: chunked\r\n"),
    "TE chunked, identity": (b"POST /public/x HTTP/1.1\r\nHost: d\r\n"
                             b"Transfer-Encoding: chunked, identity\r\n"),
    "TE xchunked": b"POST /public/x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: xchunked\r\n",
    "TE with space before colon": (b"POST /public/x HTTP/1.1\r\nHost: d\r\n"
                                   b"Transfer-Encoding : chunked\r\n"),
    "obs-fold": b"GET /public/x HTTP/1.1\r\nHost: d\r\nX-A: a\r\n b\r\n",
    "bare LF": b"GET /public/x HTTP/1.1\nHost: d\n",
    "bare CR in a value": b"GET /public/x HTTP/1.1\r\nHost: d\r\nX-A: a\rb\r\n",
    "junk after the version": b"GET /public/x HTTP/1.1 x\r\nHost: d\r\n",
    "unknown version": b"GET /public/x HTTP/9.9\r\nHost: d\r\n",
    "lower-case method": b"get /public/x HTTP/1.1\r\nHost: d\r\n",
    "bad header token": b"GET /public/x HTTP/1.1\r\nHost: d\r\nX-A(b): c\r\n",
    "bad chunk size": (b"POST /public/x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n"
                       b"Connection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
}


@pytest.mark.parametrize("case", list(SMUGGLING))
async def test_ambiguous_framing_is_refused_before_the_upstream(start: Start, case: str) -> None:
    client, upstream = await start()
    data = SMUGGLING[case]
    if b"\r\n\r\n" not in data:
        data += b"Connection: close\r\n\r\n0\r\n\r\n"
    reply = await exchange(port_of(client), data)
    assert reply.status == 400
    assert upstream.seen == []


async def test_a_request_hidden_in_a_body_stays_a_body(start: Start) -> None:
    client, upstream = await start()
    hidden = b"GET /admin/secret HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
    reply = await exchange(port_of(client), raw_request("/public/x", body=hidden))
    assert reply.status == 200
    assert upstream.targets() == ["/public/x"]
    assert only(upstream).header("Content-Length") == [str(len(hidden))]


async def test_a_pipelined_request_is_judged_on_its_own(start: Start) -> None:
    client, upstream = await start()
    data = (b"GET /public/x HTTP/1.1\r\nHost: docs.test\r\n\r\n"
            + raw_request("/admin/secret"))
    reply = await exchange(port_of(client), data)
    assert reply.status == 200
    assert b"HTTP/1.1 401" in reply.body
    assert upstream.targets() == ["/public/x"]


async def test_an_h2c_upgrade_is_not_passed_on(start: Start) -> None:
    # h2c smuggling: a proxy that forwards "Upgrade: h2c" lets the client speak HTTP/2
    # straight to the upstream, past every later check.
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request("/public/x", headers=[
        ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ("Connection", "Upgrade, HTTP2-Settings")]))
    assert reply.status == 200
    seen = only(upstream)
    assert not seen.header("Upgrade") and not seen.header("HTTP2-Settings")


@pytest.mark.parametrize(("uri", "status"), [
    ("/admin/x?next=https://docs.test/public/y", 401),
    ("/admin/x?u=a://b/public/y", 401),
    ("/admin/x#https://e/public/y", 400),
])
async def test_a_url_in_the_query_never_replaces_the_original_path(start: Start, uri: str,
                                                                   status: int) -> None:
    # nginx passes $request_uri as is: an anonymous visitor chooses everything after "?".
    client, _ = await start(server={**TRUSTED, "forward_auth": "nginx"})
    reply = await exchange(port_of(client), raw_request("/_gateway/auth",
                                                        headers=[("X-Original-URI", uri)]))
    assert reply.status == status


@pytest.mark.parametrize("raw", [b"\xe2\x82\xac", b"caf\xc3\xa9", b"caf\xe9", b"\xf0\x9f\x94\x91"])
async def test_a_header_value_outside_latin1_reaches_the_upstream_as_sent(start: Start,
                                                                          raw: bytes) -> None:
    # aiohttp reads header values as UTF-8; the way to the upstream must not fail on what
    # latin-1 cannot hold (a 500), nor change the bytes of what it can.
    client, upstream = await start()
    sent = raw.decode("latin-1")
    reply = await exchange(port_of(client), raw_request(
        "/public/x", headers=[("X-Note", sent), ("Referer", "http://docs.test/" + sent)]))
    assert reply.status == 200
    seen = only(upstream)
    assert seen.header("X-Note") == [raw.decode("utf-8", "surrogateescape")]


async def test_a_readers_name_outside_latin1_goes_in_a_plain_header_as_utf8(
        start: Start) -> None:
    client, upstream = await start(identity=PLAIN)
    user = make_user("reader", groups=("reader",), email="李@例子.测试")
    cookie = cookie_header(await session_cookies(app_of(client), user))
    reply = await exchange(port_of(client), raw_request("/guide", headers=[("Cookie", cookie)]))
    assert reply.status == 200
    assert only(upstream).header("X-Email") == ["李@例子.测试"]


@pytest.mark.parametrize("name", ["X-HTTP-Method-Override", "X-HTTP-Method",
                                  "X-Method-Override", "x_http_method_override"])
async def test_a_method_override_never_reaches_the_upstream(start: Start, name: str) -> None:
    # The gateway decides on GET; an upstream that honours an override would act on DELETE.
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request("/public/x", headers=[(name, "DELETE")]))
    assert reply.status == 200
    seen = only(upstream)
    assert not [header for header in seen.headers if "DELETE" in header[1]], seen.headers
