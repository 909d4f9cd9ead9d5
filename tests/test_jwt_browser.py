"""The JWT fragment flows in a real headless Chromium against the gateway on a real port."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jwt
import pytest
from aiohttp import web

from gateway.app import build_app
from tests.helpers import HS_SECRET, Served, bound_socket, make_config

PAGE = ("<!doctype html><html><head><title>Guide</title></head><body><h1>Guide</h1>"
        '<div style="height:4000px"></div><h2 id="intro">Intro</h2>'
        '<div style="height:4000px"></div></body></html>')


def login_token(sub: str = "ada", **changes: Any) -> str:
    now = int(time.time())
    claims = {"sub": sub, "exp": now + 30, "iat": now, "groups": ["staff"],
              "content": {"firstName": "Ada"}, **changes}
    return jwt.encode(claims, HS_SECRET, algorithm="HS256")


Serve = Callable[[str], Awaitable[str]]


@pytest.fixture
async def serve(aiohttp_server: Any) -> AsyncIterator[Serve]:
    """Start an HTML docs upstream and the gateway on a real port; yield its base URL."""
    served = Served()

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def start(mode: str) -> str:
        upstream_app = web.Application()
        upstream_app.router.add_get("/{tail:.*}", docs)
        upstream = await aiohttp_server(upstream_app)
        sock, base = bound_socket()
        config = make_config(str(upstream.make_url("")), mode=mode,
                             server={"listen": "127.0.0.1:0", "public_url": base})
        await served.on(sock, await build_app(config))
        return base

    yield start
    await served.close()


async def who(page: Any) -> Any:
    """What the page's client script and the user endpoint say about the reader."""
    script_user = await page.evaluate("window.docsGateway.ready")
    endpoint = await page.evaluate(
        "fetch('/_gateway/user', {headers: {Accept: 'application/json'}})"
        ".then(r => r.status === 200 ? r.json() : null)")
    return script_user, endpoint


async def test_fragment_callback_logs_in_and_forgets_the_token(serve: Serve,
                                                              browser: Any) -> None:
    base = await serve("authenticate")
    token = login_token()
    page = await browser.new_page()
    await page.goto(f"{base}/_gateway/jwt-callback?redirect=%2Fguide#{token}")
    await page.wait_for_url(f"{base}/guide")
    assert page.url == f"{base}/guide"
    script_user, endpoint = await who(page)
    assert script_user["sub"] == endpoint["sub"] == "ada"
    assert await page.evaluate("window.docsUser.content.firstName") == "Ada"
    await page.go_back()
    assert token not in page.url and "#" not in page.url
    await page.close()


async def test_legacy_fragment_on_a_docs_page_lands_on_the_anchor(serve: Serve,
                                                                  browser: Any) -> None:
    base = await serve("personalize")
    page = await browser.new_page()
    await page.goto(f"{base}/start")
    assert (await who(page)) == (None, None)
    await page.goto(f"{base}/guide#jwt={login_token('grace')}&anchor=intro")
    await page.wait_for_url(f"{base}/guide#intro")
    script_user, endpoint = await who(page)
    assert script_user["sub"] == endpoint["sub"] == "grace"
    assert await page.evaluate("document.getElementById('intro').getBoundingClientRect().top"
                               " < window.innerHeight")
    await page.close()


async def test_a_bad_token_in_the_fragment_shows_why_and_starts_no_session(
        serve: Serve, browser: Any) -> None:
    base = await serve("authenticate")
    page = await browser.new_page()
    expired = login_token(exp=int(time.time()) - 120, iat=int(time.time()) - 150)
    response_codes: list[int] = []
    page.on("response", lambda r: response_codes.append(r.status))
    await page.goto(f"{base}/_gateway/jwt-callback?redirect=%2Fguide#{expired}")
    await page.wait_for_load_state()
    await page.wait_for_function("document.body && document.body.innerText.includes('expired')")
    assert 400 in response_codes
    assert expired not in page.url
    status = await page.evaluate("fetch('/_gateway/user').then(r => r.status)")
    assert status == 401
    await page.close()


async def test_callback_without_a_fragment_offers_to_log_in(serve: Serve, browser: Any) -> None:
    base = await serve("authenticate")
    page = await browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(f"{base}/_gateway/jwt-callback?redirect=%2Fguide")
    link = page.get_by_role("link", name="Log in")
    await link.wait_for()
    assert await link.get_attribute("href") == "/_gateway/login?redirect=%2Fguide"
    assert not [e for e in errors if "Content Security Policy" in e]
    await page.close()
