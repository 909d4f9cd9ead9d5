"""Redirects and other URLs from the docs server never send a reader to its own address.

nginx answers a folder asked without its trailing slash with ``301 Location:
http://<its host>:<its port>/guide/``; behind the gateway that address is internal (a
sidecar's loopback) or a way around the gate. Every URL the upstream sends back that names
its own address, in any spelling a browser accepts, reaches the reader as the public one;
a URL naming any other origin is the docs' choice and is left alone.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from tests.helpers import Client, GatewayFactory, app_of, make_user, session_cookies
from tests.nginx import nginx_serving
from tests.ports import free_port

PUBLIC = "http://docs.test"
Answer = tuple[int, CIMultiDictProxy[str], bytes]
Start = Callable[..., Awaitable[Client]]


def build_site(root: Path) -> Path:
    """A built docs folder: pages in folders, at the root and under a /docs base path."""
    for folder in ("guide", "docs/guide", "named/guide", "café", "admin", "guide/admin"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "index.html").write_text(f"<!doctype html><title>{folder}</title>")
    (root / "index.html").write_text("<!doctype html><title>Home</title>")
    (root / "404.html").write_text("<!doctype html><title>Not here</title>")
    return root


def server_block(site: Path, host: str, port: int) -> str:
    """nginx with its defaults spelled out (absolute_redirect and port_in_redirect on), the
    site again under /site/ (an upstream with a base path), a location that answers with
    its server name, and fixed answers naming its own address in other ways."""
    here = f"{host}:{port}"
    return f"""
        server_name localhost;
        root {site};
        absolute_redirect on;
        port_in_redirect on;
        location /site/ {{ alias {site}/; }}
        location /named/ {{ server_name_in_redirect on; }}
        location = /r/scheme-relative {{ absolute_redirect off; return 302 "//{here}/guide/"; }}
        location = /r/upper {{ return 302 "HTTP://LOCALHOST:{port}/guide/?q=1#top"; }}
        location = /r/loopback {{ return 302 "http://localhost:{port}/guide/"; }}
        location = /r/numeric {{ return 302 "http://{host}:{port}/guide/"; }}
        location = /r/see-other {{ return 303 "http://{here}/guide/"; }}
        location = /r/temporary {{ return 307 "http://{here}/guide/"; }}
        location = /site/r/permanent {{ return 308 "http://{here}/site/guide/"; }}
        location = /r/created {{
            add_header Location "http://{here}/guide/" always;
            add_header Content-Location "http://localhost:{port}/guide/index.html" always;
            return 201 "created";
        }}
        location = /r/refresh {{
            add_header Refresh "0; url=http://{here}/guide/" always;
            add_header Link "<http://{here}/guide/>; rel=preload, <//{here}/a.css>; rel=x";
            return 200 "moved";
        }}
        location = /r/read-two-ways {{
            add_header Refresh "0; url='http://evil.example'@{here}/guide/'";
            add_header Link '<a.css>; rel="x<", <http://{here}/guide/x.css>; rel=preload';
            return 200 "moved";
        }}
        location = /r/split-lines {{
            add_header Refresh "0;url=http://a";
            add_header Refresh "b@{here}/guide/";
            add_header Link "<http://{here}/guide/a.css?c=4#";
            add_header Link ">; rel=preload; as=style";
            return 200 "moved";
        }}
        location = /r/elsewhere {{ return 302 "https://elsewhere.example/guide/"; }}
        location = /r/other-port {{ return 302 "http://{host}:1/guide/"; }}
        location = /r/relative {{ absolute_redirect off; return 302 "guide/"; }}
        location = /r/utf8 {{ return 302 "http://{here}/café/"; }}
        location = /r/utf8-path {{ absolute_redirect off; return 302 "/café/"; }}
        location = /r/fullwidth-host {{ return 302 "http://\uff44\uff4f\uff43\uff53.test/café/"; }}
        location = /r/ideographic-dot {{ return 302 "http://docs。test/café/"; }}
        location = /r/escaped-host {{ return 302 "http://docs%2Etest/caf%C3%A9/"; }}
        location = /r/final-dot {{ return 302 "http://DOCS.test./café/"; }}
        location = /r/bracket-userinfo {{ return 302 "http://a[b@docs.test/admin/"; }}
        location = /r/fullwidth-at-userinfo {{ return 302 "http://a\uff20b@docs.test/admin/"; }}
        location = /r/fullwidth-slash-userinfo {{
            return 302 "http://a\uff0fb@docs.test/admin/";
        }}
        location = /r/dots-after-double-slash {{ return 302 "http://docs.test/admin//../"; }}
        location = /r/escaped-dots-after-double-slash {{
            absolute_redirect off;
            return 302 "/admin//%2e%2E/";
        }}
        location = /r/relative-dots-after-double-slash {{
            absolute_redirect off;
            return 302 "../admin//../";
        }}
        location = /r/slashes-merged-first {{
            absolute_redirect off;
            return 302 "/guide//../admin/";
        }}
        location = /r/escaped-slash-dots {{
            absolute_redirect off;
            return 302 "/admin/%2e%2e%2f";
        }}
        location = /r/unreadable-port {{ return 302 "http://docs.test:8o/admin/"; }}
        location = /r/unreadable-host {{ return 302 "http://docs test/admin/"; }}
        location = /r/elsewhere-admin {{ return 302 "https://elsewhere.example/admin/"; }}
        location = /r/punycode {{ return 302 "http://xn--bcher-kva.test/admin/"; }}
        location = /r/ipv6 {{ return 302 "http://[::1]/admin/"; }}
        location = /download {{
            add_header Content-Disposition 'attachment; filename="naïve résumé.pdf"';
            return 200 "file";
        }}
    """


@pytest.fixture
async def nginx(tmp_path: Path) -> AsyncIterator[str]:
    """A real nginx serving the site on 127.0.0.1; yields its origin."""
    site = build_site(tmp_path / "site")
    port = free_port()
    async with nginx_serving(tmp_path, server_block(site, "127.0.0.1", port),
                             port=port) as origin:
        yield origin


@pytest.fixture
def start(gateway: GatewayFactory) -> Start:
    """The shared gateway in front of the upstream URL given, at ``public_url``, every page
    public unless sections say."""

    async def go(upstream_url: str, public_url: str = PUBLIC, **sections: Any) -> Client:
        sections.setdefault("access", {"public": ["/**"]})
        return await gateway(upstream_url=upstream_url, server={"public_url": public_url},
                             **sections)

    return go


async def ask(client: Client, path: str, method: str = "GET",
              headers: dict[str, str] | None = None) -> Answer:
    async with client.request(method, path, headers=headers or {},
                              allow_redirects=False) as response:
        return response.status, response.headers, await response.read()


def never_upstream(headers: CIMultiDictProxy[str], upstream: str) -> None:
    """No header value names the upstream's port (every spelling here carries it)."""
    port = upstream.rsplit(":", 1)[1]
    for name, value in headers.items():
        assert f":{port}" not in value, (name, value)


# -- nginx's own redirects --------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
@pytest.mark.parametrize(("path", "location"), [
    ("/guide", f"{PUBLIC}/guide/"),
    ("/guide?tab=2&q=a+b", f"{PUBLIC}/guide/?tab=2&q=a+b"),
])
async def test_a_folder_without_its_slash_is_sent_to_the_public_address(
        nginx: str, start: Start, method: str, path: str, location: str) -> None:
    client = await start(nginx)
    status, headers, _body = await ask(client, path, method)
    assert status == 301
    assert headers["Location"] == location
    never_upstream(headers, nginx)


async def test_a_logged_in_reader_is_sent_to_the_public_address_too(
        nginx: str, start: Start) -> None:
    client = await start(nginx, access={"public": []})
    cookies = await session_cookies(client.app, make_user("ada"))
    async with client.get("/guide", cookies=cookies, allow_redirects=False) as response:
        assert response.status == 301
        assert response.headers["Location"] == f"{PUBLIC}/guide/"


@pytest.mark.parametrize(("upstream_path", "public_url", "path", "location"), [
    # upstream.url with a path: its base is taken off the path the reader is sent to.
    ("/site", PUBLIC, "/guide", f"{PUBLIC}/guide/"),
    ("/site/", PUBLIC, "/guide", f"{PUBLIC}/guide/"),
    # public_url with a base path: the upstream is built for it and answers with it.
    ("", f"{PUBLIC}/docs", "/docs/guide", f"{PUBLIC}/docs/guide/"),
    ("/site", "https://docs.test/docs", "/docs/guide", "https://docs.test/docs/guide/"),
])
async def test_base_paths_on_either_side(nginx: str, start: Start, upstream_path: str,
                                         public_url: str, path: str, location: str) -> None:
    client = await start(nginx + upstream_path, public_url)
    status, headers, _body = await ask(client, path)
    assert status == 301
    assert headers["Location"] == location


@pytest.mark.parametrize(("upstream_host", "path", "location"), [
    # nginx names itself "localhost" (server_name_in_redirect) while the upstream is
    # configured by its address, and the other way round.
    ("127.0.0.1", "/named/guide", f"{PUBLIC}/named/guide/"),
    ("127.0.0.1", "/r/loopback", f"{PUBLIC}/guide/"),
    ("127.0.0.1", "/r/upper", f"{PUBLIC}/guide/?q=1#top"),
    ("localhost", "/r/numeric", f"{PUBLIC}/guide/"),
    ("localhost", "/guide", f"{PUBLIC}/guide/"),
])
async def test_other_spellings_of_a_loopback_upstream(nginx: str, start: Start,
                                                      upstream_host: str, path: str,
                                                      location: str) -> None:
    client = await start(nginx.replace("127.0.0.1", upstream_host))
    status, headers, _body = await ask(client, path)
    assert status in (301, 302)
    assert headers["Location"] == location
    never_upstream(headers, nginx)


@pytest.mark.parametrize(("method", "path", "upstream_path", "status"), [
    ("GET", "/r/scheme-relative", "", 302),
    ("GET", "/r/see-other", "", 303),
    ("POST", "/r/temporary", "", 307),
    ("PUT", "/r/permanent", "/site", 308),
])
async def test_every_redirect_status_and_form(nginx: str, start: Start, method: str,
                                              path: str, upstream_path: str,
                                              status: int) -> None:
    client = await start(nginx + upstream_path)
    answered, headers, _body = await ask(client, path, method)
    assert answered == status
    assert headers["Location"] == f"{PUBLIC}/guide/"


async def test_created_and_content_location(nginx: str, start: Start) -> None:
    client = await start(nginx)
    status, headers, body = await ask(client, "/r/created", "POST")
    assert status == 201 and body == b"created"
    assert headers["Location"] == f"{PUBLIC}/guide/"
    assert headers["Content-Location"] == f"{PUBLIC}/guide/index.html"


async def test_refresh_and_link(nginx: str, start: Start) -> None:
    client = await start(nginx)
    status, headers, _body = await ask(client, "/r/refresh")
    assert status == 200
    assert headers["Refresh"] == f"0; url={PUBLIC}/guide/"
    assert headers["Link"] == f"<{PUBLIC}/guide/>; rel=preload, <{PUBLIC}/a.css>; rel=x"
    never_upstream(headers, nginx)


@pytest.mark.parametrize(("path", "location"), [
    ("/r/elsewhere", "https://elsewhere.example/guide/"),
    ("/r/other-port", "http://127.0.0.1:1/guide/"),
    ("/r/relative", "guide/"),
])
async def test_other_origins_and_relative_urls_are_the_docs_choice(
        nginx: str, start: Start, path: str, location: str) -> None:
    client = await start(nginx)
    status, headers, _body = await ask(client, path)
    assert status == 302
    assert headers["Location"] == location
    status, headers, _body = await ask(client, "/guide")
    assert headers["Location"] == f"{PUBLIC}/guide/"


async def test_a_url_a_browser_may_read_another_way_to_the_upstream_is_not_sent(
        nginx: str, start: Start) -> None:
    # Chromium ends a quoted Refresh URL at its last quote (evil.example' is then a user
    # name), and reads a Link URL from the "<" after a quoted one.
    client = await start(nginx)
    status, headers, _body = await ask(client, "/r/read-two-ways")
    assert status == 200
    assert "Refresh" not in headers and "Link" not in headers
    never_upstream(headers, nginx)


async def test_a_url_split_over_two_lines_is_read_joined_as_browsers_join_them(
        nginx: str, start: Start) -> None:
    # "Refresh: 0;url=http://a" then "Refresh: b@host:port/guide/" is, joined with ", ",
    # a URL whose user name is "a, b" on the docs server's own address.
    client = await start(nginx)
    status, headers, _body = await ask(client, "/r/split-lines")
    assert status == 200
    never_upstream(headers, nginx)
    assert headers.getall("Refresh") == [f"0;url={PUBLIC}/guide/"]
    assert headers.getall("Link") == [f"<{PUBLIC}/guide/a.css?c=4#,>; rel=preload; as=style"]


async def test_with_the_readers_host_preserved(nginx: str, start: Start) -> None:
    # nginx then names the public host with its own port: still the upstream's address.
    client = await start(nginx, upstream={"host_header": "preserve"})
    status, headers, _body = await ask(client, "/guide", headers={"Host": "docs.test"})
    assert status == 301
    assert headers["Location"] == f"{PUBLIC}/guide/"
    never_upstream(headers, nginx)


async def test_a_header_in_utf8_reaches_the_reader_as_sent(nginx: str, start: Start) -> None:
    # The docs server's bytes, as a browser reads them (UTF-8), not re-encoded.
    client = await start(nginx)
    async with client.get("/download") as response:
        assert response.status == 200
        sent = dict(response.raw_headers)[b"Content-Disposition"]
    assert sent == 'attachment; filename="naïve résumé.pdf"'.encode()


async def test_a_redirect_to_a_page_named_in_utf8_is_judged_as_that_page(
        nginx: str, start: Start) -> None:
    # Read as latin-1, "/café/" was "/cafÃ©/", a page the docs server does not have: the
    # redirect went to nobody, the readers who may open the page included.
    client = await start(nginx, access={"rules": [{"path": "/café/**", "groups": ["staff"]}]})
    app = app_of(client)
    for groups, expected in (((), 404), (("staff",), 302)):
        cookies = await session_cookies(app, make_user(groups=groups))
        cookie = {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}
        missing, _headers, _body = await ask(client, "/r/none", headers=cookie)
        assert missing == 404
        for path, location in (("/r/utf8", f"{PUBLIC}/café/"), ("/r/utf8-path", "/café/")):
            async with client.get(path, headers=cookie, allow_redirects=False) as response:
                assert response.status == expected, (groups, path)
                sent = dict(response.raw_headers).get(b"Location")
            assert sent == (location.encode() if expected == 302 else None), (groups, path)
        # Other spellings of the public host, as a browser reads them, are judged alike.
        for path in ("/r/fullwidth-host", "/r/ideographic-dot", "/r/escaped-host",
                     "/r/final-dot"):
            status, headers, _body = await ask(client, path, headers=cookie)
            assert status == expected, (groups, path, headers.get("Location"))


async def reader(client: Client, *groups: str) -> dict[str, str]:
    """A logged-in reader's Cookie header, with ``groups``."""
    cookies = await session_cookies(app_of(client), make_user(groups=groups))
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


async def as_missing(client: Client, path: str, headers: dict[str, str]) -> None:
    """``path`` is answered exactly as a missing page is, with no Location."""
    missing, _headers, missing_body = await ask(client, "/r/none", headers=headers)
    status, answered, body = await ask(client, path, headers=headers)
    assert (status, body) == (missing, missing_body), (path, answered.get("Location"))
    assert status == 404 and "Location" not in answered, path


# Spellings a browser reads as a redirect to /admin/ on the docs origin.
TO_ADMIN = ["/r/bracket-userinfo", "/r/fullwidth-at-userinfo", "/r/fullwidth-slash-userinfo",
            "/r/dots-after-double-slash", "/r/escaped-dots-after-double-slash",
            "/r/relative-dots-after-double-slash"]
# Spellings that cannot be read with certainty: closed to every reader.
UNSURE = ["/r/escaped-slash-dots", "/r/unreadable-port", "/r/unreadable-host"]


@pytest.mark.parametrize("path", [*TO_ADMIN, *UNSURE, "/r/slashes-merged-first"])
async def test_a_redirect_a_browser_reads_to_a_closed_page_is_a_missing_page(
        nginx: str, start: Start, path: str) -> None:
    # The Python URL library refused these (an "[" or a full-width "@" or "/" in the user
    # info) or read them elsewhere (".." after "//" taken off with it; "/guide//../admin/"
    # read as /guide/admin/ only, where the docs server merges its slashes first): the
    # redirect went out unjudged, or judged as another page.
    client = await start(nginx, access={"rules": [{"path": "/admin/**", "groups": ["staff"]}]})
    await as_missing(client, path, await reader(client))
    if path in TO_ADMIN:
        # A reader who may open the page is sent there.
        status, headers, _body = await ask(client, path, headers=await reader(client, "staff"))
        assert status == 302 and headers["Location"], path
    # A redirect that plainly names another origin still goes out.
    status, headers, _body = await ask(client, "/r/elsewhere-admin",
                                       headers=await reader(client))
    assert status == 302 and headers["Location"] == "https://elsewhere.example/admin/"


@pytest.mark.parametrize("path", UNSURE)
async def test_a_redirect_that_cannot_be_read_for_sure_goes_to_nobody(
        nginx: str, start: Start, path: str) -> None:
    client = await start(nginx, access={"rules": [{"path": "/admin/**", "groups": ["staff"]}]})
    await as_missing(client, path, await reader(client, "staff"))
    # An anonymous reader is asked to log in, as for a redirect to a page that needs a
    # group (nginx's own, /admin to /admin/).
    for accept in ("text/html", "application/json"):
        closed, _headers, _body = await ask(client, "/admin", headers={"Accept": accept})
        status, _headers, _body = await ask(client, path, headers={"Accept": accept})
        assert status == closed and status in (302, 401), (path, accept)


@pytest.mark.parametrize(("public_url", "path"), [
    # The public host beyond ASCII, named in Punycode; an IPv6 one in another spelling.
    ("http://b\u00fccher.test", "/r/punycode"),
    ("http://[0:0::1]", "/r/ipv6"),
])
async def test_a_redirect_to_the_public_host_in_another_spelling_is_judged(
        nginx: str, start: Start, public_url: str, path: str) -> None:
    client = await start(nginx, public_url,
                         access={"rules": [{"path": "/admin/**", "groups": ["staff"]}]})
    await as_missing(client, path, await reader(client))
    status, _headers, _body = await ask(client, path, headers=await reader(client, "staff"))
    assert status == 302


def port_80_address() -> str | None:
    """A loopback address whose port 80 is free for nginx (binding it needs root)."""
    for last in range(2, 12):
        host = f"127.0.0.{last}"
        with socket.socket() as sock:
            # As nginx does: connections closed by earlier runs must not keep the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, 80))
            except PermissionError:
                return None
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                return None
        return host
    return None


@pytest.mark.parametrize("spelled", [True, False])
async def test_the_default_port_spelled_or_not(tmp_path: Path, start: Start,
                                               spelled: bool) -> None:
    host = port_80_address()
    if host is None:
        pytest.skip("no loopback address with a free port 80 (or not root)")
    site = build_site(tmp_path / "site")
    async with nginx_serving(tmp_path, server_block(site, host, 80), host=host, port=80):
        client = await start(f"http://{host}:80" if spelled else f"http://{host}")
        status, headers, _body = await ask(client, "/guide")
        assert status == 301
        # nginx leaves a default port out of its own address.
        assert headers["Location"] == f"{PUBLIC}/guide/"
        status, headers, _body = await ask(client, "/r/scheme-relative")
        assert headers["Location"] == f"{PUBLIC}/guide/"


# -- spellings a browser reads as the upstream's address ----------------------------------

# Each names the upstream (127.0.0.1:PORT) in a way some browser follows to it.
DISGUISED = [
    "http://127.0.0.1:PORT/guide/",
    "HTTP://127.0.0.1:PORT/guide/",
    "https://127.0.0.1:PORT/guide/",
    "//127.0.0.1:PORT/guide/",
    "///127.0.0.1:PORT/guide/",
    "\\\\127.0.0.1:PORT/guide/",
    "/\\127.0.0.1:PORT/guide/",
    "http:\\\\127.0.0.1:PORT\\guide/",
    "http:127.0.0.1:PORT/guide/",
    "http:/127.0.0.1:PORT/guide/",
    " http://127.0.0.1:PORT/guide/",
    "http://user:pass@127.0.0.1:PORT/guide/",
    "http://evil.example@127.0.0.1:PORT/guide/",
    "http://127.0.0.1.:PORT/guide/",
    "http://127.1:PORT/guide/",
    "http://2130706433:PORT/guide/",
    "http://0x7f.0.0.1:PORT/guide/",
    "http://0177.0.0.1:PORT/guide/",
    "http://127.0.0.2:PORT/guide/",
    "http://%31%32%37.0.0.1:PORT/guide/",
    "http://LocalHost:PORT/guide/",
    "http://localhost.:PORT/guide/",
    "http://docs.localhost:PORT/guide/",
    "http://[::1]:PORT/guide/",
    "http://[0:0:0:0:0:0:0:1]:PORT/guide/",
    "http://[::ffff:127.0.0.1]:PORT/guide/",
    "http://0.0.0.0:PORT/guide/",
    "http://127.0.0.1:0PORT/guide/",
    "http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11:PORT/guide/",
    "ht\ttp://127.0.0.1:PORT/guide/",
    # Characters the host mapping browsers apply (UTS 46) drops: a soft hyphen, a zero-width
    # space, a variation selector.
    "http://local%C2%ADhost:PORT/guide/",
    "http://127.0.0.1%E2%80%8B:PORT/guide/",
    "http://local%EF%B8%8Fhost:PORT/guide/",
    # Chromium maps a bracketed host whole, and what follows the bracket, before it reads
    # the address in it.
    "http://[::1\u200b]:PORT/guide/",
    "http://[::\uff11]:PORT/guide/",
    "http://[\uff1a\uff1a1]:PORT/guide/",
    "http://\uff3b::1]:PORT/guide/",
    "http://[::1]\u2060:PORT/guide/",
    "http://[::1\u00ad]:PORT/guide/",
    "http://[::1%E2%80%8B]:PORT/guide/",
    "http://%5B::1%5D:PORT/guide/",
    # Hosts no reading here makes sense of, escaped or beyond ASCII: the public address.
    "http://[::1%ZZ]:PORT/guide/",
    "http://\u00e9[::1]:PORT/guide/",
]
# These name somewhere else: left as the docs wrote them.
ELSEWHERE = [
    "https://elsewhere.example/guide/",
    "http://127.0.0.1:1/guide/",
    "http://127.example.com:PORT/guide/",
    "http://localhost.example.com:PORT/guide/",
    "/guide/",
    "guide/",
    "?q=1",
    "mailto:docs@example.com",
]


def fixed_answers(values: list[str]) -> web.Application:
    """A docs server answering ``/n`` with a 302 to ``values[n]``, and ``/refresh/n`` with
    that URL in a Refresh header."""
    app = web.Application()

    async def redirect(request: web.Request) -> web.Response:
        index = int(request.match_info["n"])
        return web.Response(status=302, headers={"Location": values[index]})

    async def refresh(request: web.Request) -> web.Response:
        index = int(request.match_info["n"])
        return web.Response(text="moved", headers={"Refresh": f"5; URL='{values[index]}'"})

    for base in ("", "/site"):  # also below an upstream base path
        app.router.add_get(base + "/{n:\\d+}", redirect)
        app.router.add_get(base + "/refresh/{n:\\d+}", refresh)
    return app


@pytest.fixture
async def answering(aiohttp_server: Any) -> Callable[[list[str]], Awaitable[TestServer]]:
    async def go(values: list[str]) -> TestServer:
        placeholder: list[str] = []
        server: TestServer = await aiohttp_server(fixed_answers(placeholder))
        placeholder.extend(value.replace("PORT", str(server.port)) for value in values)
        return server

    return go


async def test_only_the_upstreams_own_address_is_rewritten(
        answering: Callable[[list[str]], Awaitable[TestServer]], start: Start) -> None:
    server = await answering(DISGUISED + ELSEWHERE)
    client = await start(f"http://127.0.0.1:{server.port}")
    for index, value in enumerate(DISGUISED + ELSEWHERE):
        expected = f"{PUBLIC}/guide/" if index < len(DISGUISED) \
            else value.replace("PORT", str(server.port))
        status, headers, _body = await ask(client, f"/{index}")
        assert status == 302
        assert headers["Location"] == expected, value
        status, headers, _body = await ask(client, f"/refresh/{index}")
        assert headers["Refresh"] == f"5; URL='{expected}'", value


async def test_an_upstream_base_path_in_a_relative_location_is_taken_off(
        answering: Callable[[list[str]], Awaitable[TestServer]], start: Start) -> None:
    values = ["/site/guide/", "/site", "/site?x=1", "\\site/guide/",
              "/site//elsewhere.example/x", "/sitemap.xml", "/other/"]
    expected = [f"{PUBLIC}/guide/", f"{PUBLIC}/", f"{PUBLIC}/?x=1", f"{PUBLIC}/guide/",
                # never "//elsewhere.example/x", which a browser reads as another host
                f"{PUBLIC}//elsewhere.example/x", "/sitemap.xml", "/other/"]
    server = await answering(values)
    client = await start(f"http://127.0.0.1:{server.port}/site")
    for index, value in enumerate(values):
        status, headers, _body = await ask(client, f"/{index}")
        assert status == 302
        assert headers["Location"] == expected[index], value
