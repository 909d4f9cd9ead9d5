"""Every page and JSON error the gateway writes itself, from one template."""

from __future__ import annotations

import html
import json
from urllib.parse import quote

from aiohttp import web

from gateway.scope import SCOPE, Scope


def wants_html(request: web.Request) -> bool:
    """A browser navigation: GET/HEAD (or a form POST the browser navigates with) for HTML."""
    if "text/html" not in request.headers.get("Accept", ""):
        return False
    return request.method in ("GET", "HEAD") or \
        request.headers.get("Sec-Fetch-Mode") == "navigate"


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;
margin:4rem auto;padding:0 1rem;color:#222}}h1{{font-size:1.4rem}}code{{color:#555}}</style>
</head><body><h1>{title}</h1><p>{message}</p>{extra}<p><code>{code} &middot; {rid}</code></p>
</body></html>"""


_TITLES = {400: "Bad request", 401: "Please log in", 403: "Access denied", 404: "Page not found",
           405: "Method not allowed", 413: "Request too large", 417: "Expectation failed",
           429: "Too many requests", 500: "Something went wrong", 502: "The docs are unreachable",
           503: "Temporarily unavailable", 504: "The docs took too long to answer"}


def page(status: int, message: str, code: str, request_id: str = "", extra: str = "") -> str:
    """A small self-contained HTML page for errors and notices; message is escaped."""
    return _PAGE.format(title=_TITLES.get(status, "Error"), message=html.escape(message),
                        code=html.escape(code), rid=html.escape(request_id), extra=extra)


def error_response(request: web.Request, status: int, code: str, message: str,
                   extra_html: str = "") -> web.Response:
    """HTML for browsers, JSON otherwise; never cached."""
    scope = request.get(SCOPE)
    rid = scope.request_id if isinstance(scope, Scope) else ""
    if wants_html(request):
        response = web.Response(status=status, text=page(status, message, code, rid, extra_html),
                                content_type="text/html")
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

