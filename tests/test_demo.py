"""``docs-gateway demo``: the sample site, the demo logins and the gateway, end to end."""

from __future__ import annotations

import html
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import pytest

from gateway.demo import Demo, start_demo
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
HTML = {"Accept": "text/html,application/xhtml+xml"}
REDIRECTS = (301, 302, 303, 307, 308)


@pytest.fixture(params=["jwt", "shared_session", "oauth"])
async def demo(request: pytest.FixtureRequest) -> AsyncIterator[Demo]:
    """The demo for one login method, on free ports."""
    running = await start_demo(0, request.param)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A cookie-keeping client that follows no redirect by itself (cookies work on IPs)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def fetch(client: aiohttp.ClientSession, url: str, *, method: str = "GET",
                data: dict[str, str] | None = None) -> tuple[int, str, str]:
    """One request as a browser navigation: status, Location (or ""), body."""
    async with client.request(method, url, data=data, headers=HTML,
                              allow_redirects=False) as response:
        return response.status, response.headers.get("Location", ""), await response.text()


async def browse(client: aiohttp.ClientSession, url: str, *, method: str = "GET",
                 data: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Follow redirects across the demo's servers, doing the JWT callback page's part.

    Returns the final status, URL and body.
    """
    for _ in range(10):
        status, location, body = await fetch(client, url, method=method, data=data)
        if status not in REDIRECTS:
            return status, url, body
        target = urljoin(url, location)
        method, data = "GET", None
        if "#" in target:
            # The callback page reads the token from the fragment and POSTs it back.
            page, _, token = target.partition("#")
            status, _, _ = await fetch(client, page)
            assert status == 200
            redirect = dict(parse_qsl(urlsplit(page).query))["redirect"]
            url, method, data = page, "POST", {"token": token, "redirect": redirect}
            continue
        url = target
    raise AssertionError("too many redirects")


def picker_form(page_url: str, body: str) -> tuple[str, dict[str, str]]:
    """The reader picker's form: where it posts and its hidden fields."""
    action = re.search(r'<form method="post" action="([^"]*)"', body)
    assert action is not None, "no login form on the page"
    fields = {html.unescape(name): html.unescape(value) for name, value in
              re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', body)}
    return urljoin(page_url, html.unescape(action.group(1))), fields


async def log_in(client: aiohttp.ClientSession, demo: Demo, username: str,
                 path: str = "/guide/") -> tuple[int, str, str]:
    """Open a protected page, log in on the demo's login page, land back on it."""
    status, url, body = await browse(client, demo.url + path)
    assert status == 200 and url.startswith(demo.login_url), (status, url)
    assert f"Log in as {username}" in body
    action, fields = picker_form(url, body)
    return await browse(client, action, method="POST", data={**fields, "username": username})


async def user_json(client: aiohttp.ClientSession, demo: Demo) -> tuple[int, Any]:
    """What ``/_gateway/user`` says about the reader."""
    async with client.get(demo.url + "/_gateway/user") as response:
        return response.status, await response.json()


async def test_demo_logins_gate_the_sample_docs(demo: Demo,
                                                client: aiohttp.ClientSession) -> None:
    status, _, body = await fetch(client, demo.url + "/")
    assert status == 200 and "Acme Cloud documentation" in body
    status, location, _ = await fetch(client, demo.url + "/guide/")
    assert status == 302 and location == "/_gateway/login?redirect=/guide/"

    status, url, body = await log_in(client, demo, "grace")
    assert (status, url) == (200, demo.url + "/guide/")
    assert "Getting started" in body
    status, me = await user_json(client, demo)
    assert status == 200 and me["groups"] == ["reader"]
    assert me["content"]["firstName"] == "Grace"
    assert me["apiPlaygroundInputs"] == {"header": {"Authorization": "Bearer demo-key-grace"},
                                         "server": {"url": demo.login_url + "/api/v1"}}
    # The demo API the API page's playground tries: the key's owner, and only the docs may
    # call it from a browser.
    projects = demo.login_url + "/api/v1/projects"
    async with client.get(projects, headers={"Authorization": "Bearer demo-key-grace",
                                             "Origin": demo.url}) as answer:
        assert answer.status == 200 and (await answer.json())["owner"] == "grace"
        assert answer.headers["Access-Control-Allow-Origin"] == demo.url
    async with client.get(projects, headers={"Authorization": "Bearer demo-key-nobody",
                                             "Origin": "http://elsewhere.test"}) as answer:
        assert answer.status == 401 and "Access-Control-Allow-Origin" not in answer.headers
    status, _, _ = await fetch(client, demo.url + "/admin/")
    assert status == 404
    status, _, body = await fetch(client, demo.url + "/api/")
    assert status == 200 and 'id="swagger-ui"' in body

    status, url, body = await browse(client, demo.url + "/_gateway/logout", method="POST")
    assert (status, url) == (200, demo.url + "/")
    assert (await user_json(client, demo))[0] == 401
    status, location, _ = await fetch(client, demo.url + "/guide/")
    assert status == 302, "still logged in after logout"

    status, url, body = await log_in(client, demo, "ada", "/admin/")
    assert (status, url) == (200, demo.url + "/admin/")
    assert "Admin handbook" in body
    status, me = await user_json(client, demo)
    assert me["groups"] == ["admin"] and me["content"]["firstName"] == "Ada"


async def test_guide_is_filled_in_on_the_server(client: aiohttp.ClientSession) -> None:
    running = await start_demo(0, "jwt")
    try:
        status, _, body = await log_in(client, running, "grace")
    finally:
        await running.stop()
    assert status == 200
    assert re.search(r'id="reader-name"[^>]*>Grace</span>', body), "first name not filled in"


async def test_the_gateways_own_pages_wear_the_sample_sites_brand(
        client: aiohttp.ClientSession) -> None:
    running = await start_demo(0, "jwt")
    try:
        html = {"Accept": "text/html"}
        async with client.get(running.url + "/_gateway/jwt-callback", headers=html) as response:
            callback = await response.text()
        async with client.get(running.url + "/_gateway/logout", headers=html) as response:
            refused = response.status, await response.text()
        async with client.get(running.url + "/assets/favicon.svg") as response:
            logo = response.status, response.content_type
    finally:
        await running.stop()
    for page in (callback, refused[1]):
        assert '<a class="site" href="/"><img src="/assets/favicon.svg" alt="">' \
               "<span>Acme Cloud docs</span></a>" in page
        assert "color:#1d2330;background:#f7f8fb" in page
    assert refused[0] == 400 and "<title>Bad request · Acme Cloud docs</title>" in refused[1]
    assert logo == (200, "image/svg+xml")


async def test_demo_provider_requires_pkce(client: aiohttp.ClientSession) -> None:
    running = await start_demo(0, "oauth")
    try:
        _, location, _ = await fetch(client, running.url + "/_gateway/login")
        without_pkce = re.sub(r"&code_challenge(_method)?=[^&]*", "", location)
        status, back, _ = await fetch(client, without_pkce)
    finally:
        await running.stop()
    assert "code_challenge=" in location and "code_challenge_method=S256" in location
    assert status == 302 and "error=invalid_request" in back
    assert back.startswith(running.url + "/_gateway/callback")


def _demo_process(port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_demo_command_serves_until_sigterm() -> None:
    port = free_port()
    process = _demo_process(port)
    try:
        deadline = time.monotonic() + 30
        while not _answers(port):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in out and "grace" in out
    assert "Traceback" not in err


def test_demo_on_a_taken_port_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = _demo_process(taken.getsockname()[1])
        _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert len(err.strip().splitlines()) == 1 and "cannot listen on" in err


async def test_jwt_demo_in_a_browser(browser: Any) -> None:
    running = await start_demo(0, "jwt")
    try:
        page = await browser.new_page()
        await page.goto(running.url + "/")
        await page.click("[data-gateway-login]")
        await page.click("text=Log in as grace")
        await page.wait_for_url(running.url + "/guide/")
        hello = page.locator("#hello")
        await hello.filter(has_text="Hello, Grace").wait_for()
        assert await hello.text_content() == "Hello, Grace"
    finally:
        await running.stop()
