"""client.js in a real headless Chromium: user, events, Mintlify compat, fields, logout."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from gateway.app import build_app
from tests.helpers import make_config, make_user, runner_for, session_cookies

PAGE = """<!doctype html><html><head><title>Guide</title>
<script>
window.seen = [];
window.addEventListener("docs:user", e => window.seen.push(["docs", e.detail]));
window.addEventListener("mintlify:user", e => window.seen.push(["mintlify", e.detail]));
</script></head><body>
<p>Hello, <span id="name" data-gateway-field="content.firstName">reader</span></p>
<button id="out" data-gateway-logout>Log out</button>
</body></html>"""

Start = Callable[..., Awaitable[tuple[str, web.Application]]]


@pytest.fixture
async def start(aiohttp_server: Any) -> AsyncIterator[Start]:
    runners: list[web.BaseRunner] = []

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def run(**sections: Any) -> tuple[str, web.Application]:
        upstream_app = web.Application()
        upstream_app.router.add_get("/{tail:.*}", docs)
        upstream = await aiohttp_server(upstream_app)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = {"listen": "127.0.0.1:0", "public_url": base, **sections.pop("server", {})}
        # fragments off: the field must be filled by the script, not by the server
        config = make_config(str(upstream.make_url("")), mode="personalize", server=server,
                             access={"fragments": False})
        app = await build_app(config)
        runner = runner_for(app)
        await runner.setup()
        runners.append(runner)
        await web.SockSite(runner, sock).start()
        return base, app

    yield run
    for runner in runners:
        await runner.cleanup()


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
