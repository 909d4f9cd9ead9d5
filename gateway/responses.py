"""Every page and JSON error the gateway writes itself (the pages drawn by ``brand``)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from urllib.parse import quote

from aiohttp import web

from gateway.brand import Brand, link_list
from gateway.config.model import BrandConfig
from gateway.scope import SCOPE, Scope


def wants_html(request: web.Request) -> bool:
    """A browser navigation: GET/HEAD (or a form POST the browser navigates with) for HTML."""
    if "text/html" not in request.headers.get("Accept", ""):
        return False
    return request.method in ("GET", "HEAD") or \
        request.headers.get("Sec-Fetch-Mode") == "navigate"


def is_navigation(request: web.Request) -> bool:
    """A browser opening a page (sent to log in), not a script or an API client asking
    for one (which gets a 401): HTML wanted, and a ``Sec-Fetch-Mode`` of ``navigate``,
    or none (a browser too old to send it)."""
    return wants_html(request) and \
        request.headers.get("Sec-Fetch-Mode", "navigate") == "navigate"


_TITLES = {400: "Bad request", 401: "Please log in", 403: "Access denied", 404: "Page not found",
           405: "Method not allowed", 413: "Request too large", 417: "Expectation failed",
           429: "Too many requests", 500: "Something went wrong", 502: "The docs are unreachable",
           503: "Temporarily unavailable", 504: "The docs took too long to answer"}

#: The app's page drawer (``brand:``); an app without one draws the default pages.
BRAND = web.AppKey("brand", Brand)
_DEFAULT_BRAND: list[Brand] = []


def brand_of(request: web.Request) -> Brand:
    """The brand the request's app draws its pages in."""
    brand = request.app.get(BRAND)
    if brand is None:
        if not _DEFAULT_BRAND:
            _DEFAULT_BRAND.append(Brand(BrandConfig()))
        brand = _DEFAULT_BRAND[0]
    return brand


def own_page(request: web.Request, template: str, status: int, values: dict[str, object], *,
             form: str = "", script: str = "") -> web.Response:
    """One of the gateway's own pages, under its strict policy: only its own ``<style>``
    elements (by hash) and ``script`` (by a fresh nonce) run; never cached or framed."""
    nonce = secrets.token_urlsafe(16) if script else ""
    text, csp = brand_of(request).render(template, values, form=form, script=script,
                                         nonce=nonce)
    return web.Response(status=status, text=text, content_type="text/html", headers={
        "Content-Security-Policy": csp, "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY"})


def error_page(request: web.Request, status: int, code: str, message: str,
               links: Sequence[tuple[str, str]] = ()) -> web.Response:
    """The error page for browsers: its title by status, the message (escaped), links
    (``(url, text)``) and the code and request id a reader can quote."""
    scope = request.get(SCOPE)
    rid = scope.request_id if isinstance(scope, Scope) else ""
    return own_page(request, "error.html", status, {
        "title": _TITLES.get(status, "Error"), "status": status, "message": message,
        "code": code, "request_id": rid, "links": link_list(links)})


def error_response(request: web.Request, status: int, code: str, message: str,
                   links: Sequence[tuple[str, str]] = ()) -> web.Response:
    """HTML for browsers, JSON otherwise; never cached."""
    if wants_html(request):
        response = error_page(request, status, code, message, links)
    else:
        body = {"error": code, "message": message} if message else {"error": code}
        response = web.Response(status=status, text=json.dumps(body),
                                content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def login_redirect(request: web.Request, login_path: str, return_to: str) -> web.Response:
    """302 to the login route carrying the original location."""
    response = web.Response(status=302, headers={
        "Location": f"{login_path}?redirect={quote(return_to, safe='/')}",
        "Cache-Control": "no-store"})
    return response

