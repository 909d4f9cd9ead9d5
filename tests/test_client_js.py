"""client.js in a real headless Chromium: user, events, Mintlify compat, fields, logout."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from gateway.app import build_app
from tests.helpers import Served, bound_socket, make_config, make_user, session_cookies

PAGE = """<!doctype html><html><head><title>Guide</title>
<script>
window.seen = [];
window.addEventListener("docs:user", e => window.seen.push(["docs", e.detail]));
window.addEventListener("mintlify:user", e => window.seen.push(["mintlify", e.detail]));
</script></head><body>
<p>Hello, <span id="name" data-gateway-field="content.firstName">reader</span></p>
<button id="out" data-gateway-logout>Log out</button>
</body></html>"""

# A page that loads the script itself, claiming a reader in its own markup (the gateway's
# tag takes its place); and one that spells the script another way to claim one.
FORGED = "{&quot;sub&quot;:&quot;mallory&quot;}"
LOADS_ITSELF = PAGE.replace(
    "</head>", f'<script src="/_gateway/client.js" data-user="{FORGED}"></script></head>')
# (after the gateway's tag, so that it would run last and have the last word)
SPELLS_IT_AGAIN = PAGE.replace(
    "</body>", f'<script src="/_gateway/client.js?v=2" data-user="{FORGED}" defer></script></body>')

# A page that loads the script itself its own way, under its own policy: by nonce, and
# before an inline script of its own that uses it at once.
NONCE = "c2NyaXB0LW5vbmNl"
OWN_WAY = (f'<!doctype html><html><head><title>Own</title>'
           f'<script nonce="{NONCE}" src="/_gateway/client.js" id="mine"></script>'
           f'<script nonce="{NONCE}">window.early = typeof window.docsGateway;</script>'
           f'</head><body><p>Own way</p></body></html>')
OWN_POLICY = {"Content-Security-Policy": f"script-src 'nonce-{NONCE}'"}

Start = Callable[..., Awaitable[tuple[str, web.Application]]]


@pytest.fixture
async def start(aiohttp_server: Any) -> AsyncIterator[Start]:
    served = Served()

    async def docs(request: web.Request) -> web.Response:
        if request.path.startswith("/own"):
            return web.Response(text=OWN_WAY, content_type="text/html", headers=OWN_POLICY)
        text = LOADS_ITSELF if request.path.startswith("/itself") else \
            SPELLS_IT_AGAIN if request.path.startswith("/again") else PAGE
        return web.Response(text=text, content_type="text/html")

    async def run(**sections: Any) -> tuple[str, web.Application]:
        upstream_app = web.Application()
        upstream_app.router.add_get("/{tail:.*}", docs)
        upstream = await aiohttp_server(upstream_app)
        sock, base = bound_socket()
        server = {"listen": "127.0.0.1:0", "public_url": base, **sections.pop("server", {})}
        # fragments off: the field must be filled by the script, not by the server
        config = make_config(str(upstream.make_url("")), mode="personalize", server=server,
                             access={"fragments": False})
        app = await build_app(config)
        await served.on(sock, app)
        return base, app

    yield run
    await served.close()


async def test_anonymous_reader_is_null_with_an_event(start: Start, browser: Any) -> None:
    base, _ = await start()
    page = await browser.new_page()
    await page.goto(base + "/guide")
    assert await page.evaluate("window.docsGateway.ready") is None
    assert await page.evaluate("window.docsUser") is None
    assert await page.evaluate("window.seen") == [["docs", None]]
    assert await page.text_content("#name") == "reader"


async def test_logged_in_reader_with_mintlify_compat(start: Start, browser: Any) -> None:
    base, app = await start(server={"compat": ["mintlify"]})
    cookies = await session_cookies(app, make_user("ada", groups=("admin",),
                                                   firstName="Ada"))
    context = await browser.new_context()
    await context.add_cookies([{"name": name, "value": value, "url": base}
                               for name, value in cookies.items()])
    page = await context.new_page()
    await page.goto(base + "/guide")
    user = await page.evaluate("window.docsGateway.ready")
    assert user["sub"] == "ada" and user["groups"] == ["admin"]
    assert await page.evaluate("window.mintlify.user") == {"firstName": "Ada"}
    seen = await page.evaluate("window.seen")
    assert ["mintlify", {"firstName": "Ada"}] in seen
    assert any(kind == "docs" and detail["sub"] == "ada" for kind, detail in seen)
    assert await page.text_content("#name") == "Ada"

    async with page.expect_navigation():
        await page.click("#out")
    assert await page.evaluate("window.docsGateway.ready") is None
    remaining = {c["name"] for c in await context.cookies() if c["value"]}
    assert not any(name.startswith("docs_session") for name in remaining)


def watch(page: Any) -> tuple[list[str], list[str]]:
    """The requests a page makes to the gateway's user endpoint, and its console errors."""
    asked: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/_gateway/user" in r.url else None)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return asked, errors


async def test_the_user_comes_with_the_page_and_no_second_request(start: Start,
                                                                  browser: Any) -> None:
    base, app = await start()
    # Nobody logged in: the page says so itself, and the console stays quiet (no 401).
    page = await browser.new_page()
    asked, errors = watch(page)
    await page.goto(base + "/guide")
    assert await page.evaluate("window.docsGateway.ready") is None
    assert asked == [] and errors == []
    await page.close()
    # A reader: their user object is in the script's tag.
    cookies = await session_cookies(app, make_user("ada", groups=("admin",), firstName="Ada"))
    context = await browser.new_context()
    await context.add_cookies([{"name": name, "value": value, "url": base}
                               for name, value in cookies.items()])
    page = await context.new_page()
    asked, errors = watch(page)
    await page.goto(base + "/guide")
    user = await page.evaluate("window.docsGateway.ready")
    assert user["sub"] == "ada" and user["content"] == {"firstName": "Ada"}
    assert await page.text_content("#name") == "Ada"
    assert asked == [] and errors == []
    # A fresh copy is still one call away.
    assert (await page.evaluate("window.docsGateway.refresh()"))["sub"] == "ada"
    assert len(asked) == 1
    # A page that loads the script itself: its tag is the gateway's, its own claim gone.
    await page.goto(base + "/itself/guide")
    assert (await page.evaluate("window.docsGateway.ready"))["sub"] == "ada"
    assert len(asked) == 1
    # Two tags that carry a user: the page's markup is speaking, so the script asks.
    await page.goto(base + "/again/guide")
    assert (await page.evaluate("window.docsGateway.ready"))["sub"] == "ada"
    assert await page.evaluate("window.docsUser.sub") == "ada"
    assert len(asked) >= 2
    await context.close()


async def test_a_page_that_loads_the_script_its_own_way_keeps_that_way(
        start: Start, browser: Any) -> None:
    # Its nonce, its timing (no defer) and its other attributes stay: only the reader's
    # user object is added to its tag.
    base, app = await start()
    cookies = await session_cookies(app, make_user("ada", firstName="Ada"))
    context = await browser.new_context()
    await context.add_cookies([{"name": name, "value": value, "url": base}
                               for name, value in cookies.items()])
    page = await context.new_page()
    asked, errors = watch(page)
    await page.goto(base + "/own/guide")
    assert await page.evaluate("window.early") == "object"
    assert (await page.evaluate("window.docsGateway.ready"))["sub"] == "ada"
    assert await page.evaluate("document.querySelector('#mine').hasAttribute('data-user')")
    assert asked == [] and errors == []
    await context.close()

