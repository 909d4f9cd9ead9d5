"""Path bypass: every spelling of a gated page a reader could send, as raw bytes on a socket.

The advisories behind these cases: Oathkeeper matched rules on the raw path
(``/public/../admin``), oauth2-proxy matched skip-auth rules against the query string,
and several gateways disagreed with their upstream about ``%2F``, ``;`` and ``\\``.
Each case sends bytes no client library normalizes, and checks what the reader gets
and what the (recording) upstream received.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.attack import (
    Client,
    Start,
    exchange,
    port_of,
    raw_request,
    reader_cookie,
)
from tests.attack import start as start  # fixture
from tests.helpers import GatewayFactory

# -- a reader never opens /admin, whatever the spelling --------------------------------

DENIED: dict[str, int] = {
    # The plain page and dot segments that resolve to it (404: denied, looks absent).
    "/admin": 404,
    "/admin/": 404,
    "/admin/secret": 404,
    "/admin/secret/": 404,
    "//admin/secret": 404,
    "///admin//secret": 404,
    "/./admin/secret": 404,
    "/admin/./secret": 404,
    "/admin/secret/.": 404,
    "/../admin/secret": 404,
    "/public/../admin/secret": 404,
    "/public/../../admin/secret": 404,
    "/public/x/../../admin/secret": 404,
    "/assets/.././admin/secret": 404,
    "/admin/x/../secret": 404,
    # Encoded dots and letters are decoded once (they are unreserved), then judged.
    "/public/%2e%2e/admin/secret": 404,
    "/public/%2E%2E/admin/secret": 404,
    "/public/.%2e/admin/secret": 404,
    "/public/%2e./admin/secret": 404,
    "/%2e/admin/secret": 404,
    "/%61dmin/secret": 404,
    "/adm%69n/secret": 404,
    "/%61%64%6d%69%6e/secret": 404,
    "/%61%64%6D%69%6E": 404,
    # The gateway's own prefix is no way around the rules.
    "/_gateway/../admin/secret": 404,
    "/_gateway/%2e%2e/admin/secret": 404,
    "/_gateway/./../admin": 404,
    # Query and fragment never change the path that is judged.
    "/admin?/../public/x": 404,
    "/admin/secret?redirect=/public": 404,
    "/admin#/../public/x": 404,
    "/admin/secret#": 404,
    # Spellings two servers could read differently are refused outright.
    "/public/..%2fadmin/secret": 400,
    "/public/..%2Fadmin": 400,
    "/public%2f..%2fadmin": 400,
    "/admin%2fsecret": 400,
    "/admin%2F": 400,
    "/public/..%5cadmin": 400,
    "/public/..%5Cadmin": 400,
    "/public/..\\admin": 400,
    "/public\\..\\admin": 400,
    "/admin\\secret": 400,
    "/public/%252e%252e/admin": 400,
    "/%252e%252e/admin": 400,
    "/public/%252fadmin": 400,
    "/admin;/secret": 400,
    "/admin;jsessionid=x": 400,
    "/public/..;/admin": 400,
    "/public;/../admin": 400,
    "/admin%3bx": 400,
    "/admin%00": 400,
    "/admin%00.html": 400,
    "/public/%00/../admin": 400,
    "/admin%09": 400,
    "/admin%0d%0aX-Injected:%201": 400,
    "/admin%7f": 400,
    "/%c0%ae%c0%ae/admin": 400,
    "/public/%c0%ae%c0%ae/admin": 400,
    "/public/%e0%80%ae%e0%80%ae/admin": 400,
    "/public/%c0%af../admin": 400,
    "/public/%c2%85/../admin": 400,
    "/admin%zz": 400,
    "/admin%": 400,
    "/_gateway%2f../admin": 400,
    "/_gateway/..%2fadmin": 400,
    "http://docs.test/admin": 400,
    "HTTP://docs.test/admin/secret": 400,
    "http://evil.example/public/../admin": 400,
}


@pytest.mark.parametrize(("target", "status"), list(DENIED.items()))
async def test_a_reader_never_gets_an_admin_page(start: Start, target: str, status: int) -> None:
    client, upstream = await start()
    cookie = await reader_cookie(client)
    reply = await exchange(port_of(client), raw_request(target, headers=[("Cookie", cookie)]))
    assert reply.status == status, reply.body
    assert b"Traceback" not in reply.body
    assert upstream.asked_only_missing(), upstream.targets()


# Anything that does not resolve to /admin reaches the upstream exactly as it was judged:
# the gateway never changes case, never decodes reserved bytes, never trims.
FORWARDED: dict[str, str] = {
    "/administrator": "/administrator",
    "/admin.json": "/admin.json",
    "/admin-old/x": "/admin-old/x",
    "/ADMIN/secret": "/ADMIN/secret",
    "/%41dmin/secret": "/Admin/secret",
    "/admin%20": "/admin%20",
    "/admin%2e": "/admin.",
    "/public/%25252e%25252e/admin": "/public/%25252e%25252e/admin",
    "/public/%ef%bc%8f../admin": "/public/%EF%BC%8F../admin",
    "/public/x?x=/../admin": "/public/x?x=/../admin",
    "/public/#/../../admin": "/public/",
    "/_GATEWAY/user": "/_GATEWAY/user",
}


@pytest.mark.parametrize(("target", "forwarded"), list(FORWARDED.items()))
async def test_other_spellings_reach_the_upstream_exactly_as_judged(
        start: Start, target: str, forwarded: str) -> None:
    client, upstream = await start()
    cookie = await reader_cookie(client)
    reply = await exchange(port_of(client), raw_request(target, headers=[("Cookie", cookie)]))
    assert reply.status == 200, reply.body
    assert upstream.targets() == [forwarded]


ANONYMOUS = ["/admin", "/admin/secret", "/public/../admin/secret", "/assets/%2e%2e/admin",
             "/public/%2e%2e/%61dmin/x", "/_gateway/../admin", "//admin//secret",
             "/admin?public=1", "/admin#public"]


@pytest.mark.parametrize("target", ANONYMOUS)
async def test_a_public_prefix_does_not_open_admin_anonymously(start: Start, target: str) -> None:
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request(target))
    assert reply.status == 401
    assert reply.header("Set-Cookie") is None
    assert upstream.seen == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
                                    "PROPFIND", "TRACE"])
async def test_no_method_opens_admin(start: Start, method: str) -> None:
    # Some gateways let OPTIONS (CORS preflight) or HEAD through unchecked.
    client, upstream = await start()
    cookie = await reader_cookie(client)
    reply = await exchange(port_of(client), raw_request(
        "/admin/secret", method=method, headers=[("Cookie", cookie)],
        body=b"x=1" if method in ("POST", "PUT", "PATCH") else b""))
    assert reply.status == 404
    assert upstream.asked_only_missing(), upstream.targets()


async def test_a_websocket_upgrade_does_not_open_admin(start: Start) -> None:
    client, upstream = await start()
    cookie = await reader_cookie(client)
    upgrade = [("Cookie", cookie), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    reply = await exchange(port_of(client), raw_request("/admin/ws", headers=upgrade))
    assert upstream.asked_only_missing(), upstream.targets()
    # It fails as an upgrade to a missing address fails (this upstream answers neither).
    missing = await exchange(port_of(client), raw_request("/nothing/ws", headers=upgrade))
    assert (reply.status, reply.body) == (missing.status, missing.body)
    assert reply.status != 101


async def test_an_admin_reaches_every_admin_spelling_as_one_path(start: Start) -> None:
    # The same spellings that were refused above are one page for someone allowed in.
    client, upstream = await start()
    cookie = await reader_cookie(client, "admin")
    for target in ("/admin/secret", "/public/../admin/secret", "/%61dmin//secret",
                   "/_gateway/../admin/secret"):
        reply = await exchange(port_of(client), raw_request(target, headers=[("Cookie", cookie)]))
        assert reply.status == 200
    assert upstream.targets() == ["/admin/secret"] * 4


BASE_PATH = {"listen": "127.0.0.1:0", "public_url": "http://docs.test/docs"}


@pytest.mark.parametrize(("target", "status"), [
    ("/docs/../admin/secret", 404),
    ("/docs/%2e%2e/admin", 404),
    ("/docs/../docs/admin/x", 404),
    ("/docs/..%2fadmin", 400),
    ("/docsadmin", 404),
    ("/DOCS/guide", 404),
])
async def test_nothing_outside_the_base_path_is_served(start: Start, target: str,
                                                       status: int) -> None:
    client, upstream = await start(server=BASE_PATH, access={
        "public": ["/public/**"], "rules": [{"path": "/admin/**", "groups": ["admin"]}]})
    cookie = await reader_cookie(client)
    reply = await exchange(port_of(client), raw_request(target, headers=[("Cookie", cookie)]))
    assert reply.status == status
    assert upstream.asked_only_missing(), upstream.targets()


@pytest.mark.parametrize(("target", "status"), [
    ("/_gateway%2fuser", 400),
    ("/_gateway%2Fjwks.json", 400),
    ("/_gateway/user;x", 400),
    ("/_gateway\\user", 400),
])
async def test_spellings_of_the_gateway_prefix_are_refused(start: Start, target: str,
                                                          status: int) -> None:
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request(target))
    assert reply.status == status
    assert upstream.seen == []


@pytest.mark.parametrize("target", ["//_gateway//user", "/_gateway/./user", "/x/../_gateway/user",
                                    "/_gateway/%75ser"])
async def test_the_gateway_routes_answer_their_normalized_spellings_only(
        start: Start, target: str) -> None:
    # One normalized path decides the route, so these are the user endpoint (401 JSON).
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request(target))
    assert reply.status == 401
    assert reply.body == b'{"error":"unauthenticated"}'
    assert upstream.seen == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_an_anonymous_write_never_reaches_the_upstream(start: Start, method: str) -> None:
    # Page metadata can only be read from a GET of an HTML page, so any other method on a
    # protected path must be refused before the upstream sees it.
    client, upstream = await start()
    reply = await exchange(port_of(client), raw_request("/guide/comments", method=method,
                                                        body=b"text=spam"))
    assert reply.status == 401
    assert upstream.seen == []


# -- a built docs folder served directly (upstream.root) ---------------------------------


@pytest.fixture
def site(tmp_path: Any) -> Any:
    """A docs folder with pretty (admin/index.html) and ugly (team.html) URLs."""
    root = tmp_path / "site"
    for name, text in {"index.html": "home", "guide.html": "guide", "team.html": "team secret",
                       "staff/index.html": "staff secret", "admin/index.html": "admin secret",
                       "admin/keys.html": "admin keys"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"<!doctype html><title>{text}</title><p>{text}</p>")
    return root


async def static_gateway(gateway: GatewayFactory, root: Any,
                         rules: list[dict[str, Any]]) -> Client:
    """The shared gateway serving the folder ``root``, nothing public, with ``rules``."""
    return await gateway(upstream_url=None, upstream={"root": str(root)},
                         access={"public": [], "rules": rules})


@pytest.mark.parametrize("target", ["/admin", "/admin/", "/admin/index.html", "/admin/keys",
                                    "/admin/keys.html", "/%61dmin/keys", "/guide/../admin/",
                                    "/admin/./keys.html", "/admin//keys"])
async def test_a_served_folder_never_gives_a_reader_an_admin_file(
        gateway: GatewayFactory, site: Any, target: str) -> None:
    client = await static_gateway(gateway, site,
                                  [{"path": "/admin/**", "groups": ["admin"]}])
    cookie = await reader_cookie(client)
    reply = await exchange(port_of(client), raw_request(target, headers=[("Cookie", cookie)]))
    assert reply.status == 404
    assert b"admin" not in reply.body



@pytest.mark.parametrize("target", [
    "/team", "/team.html", "/staff", "/staff/", "/staff/index.html", "/staff/index",
    "/staff/INDEX", "/staff//index", "/staff/index.html.gz",
])
async def test_a_rule_covers_every_path_that_serves_its_file(gateway: GatewayFactory, site: Any,
                                                             target: str) -> None:
    client = await static_gateway(gateway, site, [
        {"path": "/team", "groups": ["staff"]}, {"path": "/staff", "groups": ["staff"]}])
    cookie = await reader_cookie(client)
    reply = await exchange(port_of(client), raw_request(target, headers=[("Cookie", cookie)]))
    assert reply.status == 404
    assert b"secret" not in reply.body


async def test_an_exact_rule_covers_the_trailing_slash_spelling(start: Start) -> None:
    client, upstream = await start(access={"public": [], "rules": [
        {"path": "/team", "groups": ["staff"]}]})
    cookie = await reader_cookie(client)
    for target in ("/team", "/team/", "//team//"):
        reply = await exchange(port_of(client), raw_request(target, headers=[("Cookie", cookie)]))
        assert reply.status == 404, target
    assert upstream.asked_only_missing(), upstream.targets()
