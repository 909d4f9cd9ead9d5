"""The gateway's own pages in the site's brand: fetched from a running gateway, drawn in a
real Chromium under their Content-Security-Policy, replaced by a template folder, and every
bad setting or template one line of ``docs-gateway check``."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from gateway.app import build_app
from gateway.cli import summary
from gateway.errors import ConfigError
from tests.helpers import (
    HS_SECRET,
    GatewayFactory,
    Served,
    app_of,
    bound_socket,
    echo_app,
    make_config,
    make_user,
    session_cookies,
)

ROOT = Path(__file__).resolve().parent.parent
HTML = {"Accept": "text/html,application/xhtml+xml"}
BRAND = {"name": "Acme <Docs> & Co", "logo": "https://cdn.example.com/acme/logo.svg",
         "colors": {"accent": "#b4236b", "text": "#1a1a1a", "background": "#fffdf8"}}
TWO_LOGINS = {"login_urls": [{"name": "Staff", "url": "https://staff.example.com/login"},
                             {"name": "Customers", "url": "https://app.example.com/docs"}]}


def readme_template() -> str:
    """The custom ``error.html`` the README shows."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your brand on the gateway's pages", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```html\n(.*?)^```", section, re.M | re.S)
    assert len(blocks) == 1, "the README shows one custom template"
    return str(blocks[0])


def readme_brand() -> dict[str, Any]:
    """The ``brand:`` example the README shows."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your brand on the gateway's pages", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```yaml\n(.*?)^```", section, re.M | re.S)
    assert len(blocks) == 1, "the README shows one brand example"
    example: dict[str, Any] = yaml.safe_load(blocks[0])["brand"]
    return example


def style_hashes(body: str) -> set[str]:
    return {"'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"
            for css in re.findall(r"<style>(.*?)</style>", body, re.S)}


def directive(csp: str, name: str) -> list[str]:
    for part in csp.split(";"):
        words = part.split()
        if words and words[0] == name:
            return words[1:]
    return []


async def test_the_login_chooser_is_drawn_in_the_brand(gateway: GatewayFactory) -> None:
    client = await gateway(brand=BRAND, handshake={"method": "jwt", "jwt": {
        "secret": HS_SECRET, "algorithms": ["HS256"], **TWO_LOGINS}})
    response = await client.get("/_gateway/login?redirect=%2Fguide%2F", headers=HTML)
    body = await response.text()
    assert response.status == 200
    assert "<title>Log in · Acme &lt;Docs&gt; &amp; Co</title>" in body
    assert "<span>Acme &lt;Docs&gt; &amp; Co</span>" in body and "<Docs>" not in body
    assert '<img src="https://cdn.example.com/acme/logo.svg" alt="">' in body
    assert '<a href="https://staff.example.com/login?redirect=%2Fguide%2F">Staff</a>' in body
    assert '<a href="https://app.example.com/docs?redirect=%2Fguide%2F">Customers</a>' in body
    assert "color:#1a1a1a;background:#fffdf8" in body and "border:2px solid #b4236b" in body
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and directive(csp, "default-src") == ["'none'"]
    assert directive(csp, "script-src") == []  # no script on this page: default-src 'none'
    assert set(directive(csp, "style-src")) == {"'self'", *style_hashes(body)}
    assert "https://cdn.example.com" in directive(csp, "img-src")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


async def test_a_name_that_changes_length_in_lower_case_keeps_the_style(
        gateway: GatewayFactory) -> None:
    # "İ" is two characters in lower case: the style element is still found where it is,
    # and the policy allows the very text the browser hashes.
    client = await gateway(brand={"name": "İzmir İletişim Docs"})
    response = await client.get("/_gateway/logout", headers=HTML)
    body = await response.text()
    assert "<span>İzmir İletişim Docs</span>" in body
    assert set(directive(response.headers["Content-Security-Policy"], "style-src")) == {
        "'self'", *style_hashes(body)}


async def test_error_pages_carry_the_brand_and_other_clients_get_json(
        gateway: GatewayFactory) -> None:
    client = await gateway(brand=readme_brand())
    # A logout from no page of this site is refused: the gateway's own 400.
    response = await client.get("/_gateway/logout", headers=HTML)
    body = await response.text()
    assert response.status == 400
    assert "<title>Bad request · Acme Docs</title>" in body
    assert '<img src="/assets/logo.svg" alt="">' in body
    assert "color:#1a1a1a;background:#fffdf8" in body and "a{color:#b4236b}" in body
    assert f"cross_site · {response.headers['X-Request-Id']}" in body
    csp = response.headers["Content-Security-Policy"]
    assert directive(csp, "img-src") == ["'self'", "data:"]
    assert set(directive(csp, "style-src")) == {"'self'", *style_hashes(body)}
    response = await client.get("/_gateway/logout", headers={"Accept": "application/json"})
    assert response.status == 400 and response.content_type == "application/json"
    assert (await response.json())["error"] == "cross_site"


async def test_a_denial_is_the_sites_own_404_or_the_branded_403(
        gateway: GatewayFactory, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "admin").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>Home</title>")
    (site / "admin" / "index.html").write_text("<!doctype html><title>Admin</title>")
    (site / "404.html").write_text("<!doctype html><title>Lost</title><p>SITE-404</p>")
    client = await gateway(upstream_url=None, upstream={"root": str(site)}, brand=BRAND,
                           access={"rules": [{"path": "/admin/**", "groups": ["admin"]}]})
    cookies = await session_cookies(app_of(client), make_user("bob"))
    answers = []
    for path in ("/admin/", "/no-such-page/"):
        response = await client.get(path, headers={**HTML, "Cookie": "; ".join(
            f"{k}={v}" for k, v in cookies.items())})
        answers.append((response.status, await response.text(),
                        response.headers.get("Content-Security-Policy")))
    assert answers[0] == answers[1]
    assert answers[0][0] == 404 and "SITE-404" in answers[0][1] and "Acme" not in answers[0][1]
    # With access.denied: forbidden, the denial is the gateway's own page, in the brand.
    client = await gateway(upstream_url=None, upstream={"root": str(site)}, brand=BRAND,
                           access={"rules": [{"path": "/admin/**", "groups": ["admin"]}],
                                   "denied": "forbidden"})
    cookies = await session_cookies(app_of(client), make_user("bob"))
    response = await client.get("/admin/", headers={**HTML, "Cookie": "; ".join(
        f"{k}={v}" for k, v in cookies.items())})
    body = await response.text()
    assert response.status == 403 and "<title>Access denied · Acme &lt;Docs&gt; &amp; Co" in body
    assert "Content-Security-Policy" in response.headers


async def test_a_template_folder_replaces_the_pages(gateway: GatewayFactory,
                                                    tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "error.html").write_text(readme_template())
    (folder / "login.html").write_text(
        '{% extends "default/login.html" %}{% block title %}Sign in to {{ site.name }}'
        "{% endblock %}")
    client = await gateway(base=tmp_path, brand={"name": "Acme Docs", "templates": "templates"},
                           handshake={"method": "jwt", "jwt": {
                               "secret": HS_SECRET, "algorithms": ["HS256"], **TWO_LOGINS}})
    response = await client.get("/_gateway/logout", headers=HTML)
    body = await response.text()
    assert response.status == 400
    assert "Stuck? Write to support@acme.example and quote " \
           f"<code>{response.headers['X-Request-Id']}</code>" in body
    assert "<span>Acme Docs</span>" in body  # the default frame it extends
    response = await client.get("/_gateway/login", headers=HTML)
    body = await response.text()
    assert "<title>Sign in to Acme Docs</title>" in body and ">Customers</a>" in body
    config = make_config(base=tmp_path, brand={"name": "Acme Docs", "templates": "templates"})
    assert f"  pages       'Acme Docs', accent #0b57d0, 2 templates from {folder}" \
        in summary(config, "gateway.yaml").splitlines()


async def test_a_template_failing_at_request_time_draws_the_default_page(
        gateway: GatewayFactory, tmp_path: Path) -> None:
    # Passes the trial at load (no sample is a 502), fails on a real one.
    (tmp_path / "error.html").write_text(
        '{% extends "layout.html" %}{% block content %}{% if status == 502 %}{{ 1 // 0 }}'
        "{% endif %}<p>{{ message }}</p>{% endblock %}")
    client = await gateway(upstream_url="http://127.0.0.1:9", base=tmp_path,
                           brand={"templates": "."})
    response = await client.get("/guide/", headers=HTML)
    body = await response.text()
    assert response.status == 502
    assert "<h1>The docs are unreachable</h1>" in body and "Traceback" not in body


def problems(tmp_path: Path, brand: dict[str, Any], files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    try:
        make_config(base=tmp_path, brand=brand)
    except ConfigError as exc:
        return exc.problems
    return []


LAYOUT = '{% extends "layout.html" %}{% block content %}'


@pytest.mark.parametrize(("brand", "files", "expected"), [
    ({"colors": {"accent": "red", "text": "#12345"}}, {},
     ["brand.colors.accent: must be a hex colour like #0b57d0, not 'red'",
      "brand.colors.text: must be a hex colour like #1f1f1f, not '#12345'"]),
    ({"logo": "javascript:alert(1)"}, {},
     ["brand.logo: must be an image URL: a path on the docs site (/assets/logo.svg) or an "
      "absolute https URL, not 'javascript:alert(1)'"]),
    ({"templates": "nowhere"}, {}, ["brand.templates: folder 'nowhere' does not exist"]),
    ({"templates": "."}, {"error.html": LAYOUT + "\n<p>{{ message }</p>{% endblock %}"},
     ["brand.templates: error.html line 2: unexpected '}'"]),
    ({"templates": "."}, {"error.html": LAYOUT + "\n\n<p>{{ messsage }}</p>{% endblock %}"},
     ["brand.templates: error.html line 3: 'messsage' is undefined"]),
    ({"templates": "."}, {"login.html": LAYOUT + "<p>Log in</p>{% endblock %}"},
     ["brand.templates: login.html must show each of {{ choices }} as a link to "
      "{{ choice.url }} (where readers log in)"]),
    ({"templates": "."}, {"callback.html": LAYOUT + "<p>One moment</p>{% endblock %}"},
     ["brand.templates: callback.html must output {{ form }} (the form that completes the "
      "login)"]),
    ({"templates": "."}, {"layout.html": "<html>{% block content %}{% endblock %}{{ x.y }}"},
     ["brand.templates: layout.html line 1: 'x' is undefined"]),
    ({"templates": "."}, {"error.html": LAYOUT + "\n{% include 'footer.html' %}{% endblock %}"},
     ["brand.templates: error.html line 2: includes 'footer.html', which is neither in the "
      "folder nor a default template"]),
    # The sandbox: nothing of the process beyond the values given.
    ({"templates": "."}, {"error.html": "{{ site.__class__.__mro__ }}"},
     ["brand.templates: error.html line 1: access to attribute '__class__' of 'dict' object "
      "is unsafe."]),
])
def test_bad_settings_and_templates_are_one_line_each(
        tmp_path: Path, brand: dict[str, Any], files: dict[str, str],
        expected: list[str]) -> None:
    assert problems(tmp_path, brand, files) == expected


def test_low_contrast_colours_are_a_warning(tmp_path: Path) -> None:
    config = make_config(brand={"colors": {"text": "#999999", "accent": "#b4236b"}})
    assert [w for w in config.warnings if w.startswith("brand.")] == [
        "brand.colors.text: #999999 on the background #ffffff has a contrast of 2.8:1; "
        "readers need 4.5:1 (WCAG AA)"]


@pytest.mark.slow  # the command line in a process of its own
def test_check_lists_a_broken_template_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "error.html").write_text("{% if %}")
    (tmp_path / "gateway.yaml").write_text(f"""
upstream: {{url: "http://127.0.0.1:3000"}}
session: {{secrets: ["{"s" * 40}"]}}
handshake: {{jwt: {{secret: "{HS_SECRET}", algorithms: [HS256],
  login_urls: [{{name: Dashboard, url: "https://dash.example.com/docs-login"}}]}}}}
brand: {{name: Acme Docs, templates: pages, colors: {{accent: blue}}}}
""")
    result = subprocess.run([sys.executable, "-m", "gateway", "check", "-c",
                             str(tmp_path / "gateway.yaml")], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "brand.colors.accent: must be a hex colour like #0b57d0, not 'blue'",
        "brand.templates: error.html line 1: Expected an expression, got 'end of statement "
        "block'"]


# -- in a real browser --------------------------------------------------------------------

Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve(aiohttp_server: Any) -> AsyncIterator[Serve]:
    """The gateway on a real port of its own (its public URL), in front of the echo app."""
    served = Served()

    async def start(**sections: Any) -> str:
        upstream = await aiohttp_server(echo_app())
        sock, base = bound_socket()
        config = make_config(str(upstream.make_url("")).rstrip("/"),
                             server={"listen": "127.0.0.1:0", "public_url": base}, **sections)
        await served.on(sock, await build_app(config))
        return base

    yield start
    await served.close()


async def test_chromium_draws_the_branded_pages_under_their_policy(
        serve: Serve, browser: Any, tmp_path: Path) -> None:
    # A custom callback page that extends the default: the login still completes.
    (tmp_path / "callback.html").write_text(
        '{% extends "default/callback.html" %}{% block title %}Welcome back{% endblock %}')
    brand = {**BRAND, "logo": "/assets/logo.svg", "templates": "."}
    base = await serve(base=tmp_path, brand=brand, handshake={
        "method": "jwt", "jwt": {"secret": HS_SECRET, "algorithms": ["HS256"],
                                 "require_host": False, **TWO_LOGINS}})
    page = await browser.new_page()
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text)
            if "Content Security Policy" in message.text else None)
    await page.goto(f"{base}/_gateway/login?redirect=%2Fguide")
    colours = await page.evaluate(
        "[getComputedStyle(document.body).backgroundColor,"
        " getComputedStyle(document.querySelector('.choices a')).borderTopColor]")
    assert colours == ["rgb(255, 253, 248)", "rgb(180, 35, 107)"]
    now = int(time.time())
    token = jwt.encode({"sub": "ada", "exp": now + 30, "iat": now}, HS_SECRET, "HS256")
    await page.goto(f"{base}/_gateway/jwt-callback?redirect=%2Fguide#{token}")
    await page.wait_for_url(f"{base}/guide")
    assert blocked == []
