"""Request scope (id, client address, normalized path) and the one error boundary."""

from __future__ import annotations

import asyncio
import html
import ipaddress
import itertools
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import HttpVersion11, web

from gateway.config import Config
from gateway.errors import (
    BadRequest,
    Denied,
    GatewayError,
    NeedsLogin,
    NotFound,
    Unavailable,
)
from gateway.limits import InFlight
from gateway.metrics import Metrics
from gateway.paths import normalize_path
from gateway.proxy import SCOPE, Scope
from gateway.sessions.base import cookie_settings

log = logging.getLogger("gateway")
audit = logging.getLogger("gateway.audit")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ScopeBuilder:
    """Decides, once per request, who the client is and which path it asked for."""

    def __init__(self, config: Config) -> None:
        self.networks = config.server.trusted_proxies
        # A random prefix per process and a counter: unique ids without a syscall each.
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        """A new request id, unique across processes and restarts."""
        return f"{self._prefix}{next(self._ids):08x}"

    def is_trusted(self, address: str) -> bool:
        """Whether an address is inside ``server.trusted_proxies``."""
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def build(self, request: web.Request) -> Scope:
        """The request's scope; BadRequest for an ambiguous or malformed target."""
        peer = request.remote or ""
        trusted = self.is_trusted(peer)
        headers = request.headers
        client_ip = peer
        forwarded_for = peer
        if trusted and "X-Forwarded-For" in headers:
            chain = [part.strip() for part in ",".join(headers.getall("X-Forwarded-For")).split(",")
                     if part.strip()]
            forwarded_for = ", ".join([*chain, peer])
            # The client is the right-most address not itself a trusted proxy.
            for hop in reversed(chain):
                client_ip = hop
                if not self.is_trusted(hop):
                    break
        scheme = request.scheme
        host = request.host
        request_id = ""
        if trusted:
            scheme = headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip() or scheme
            host = headers.get("X-Forwarded-Host", host).split(",")[0].strip() or host
            request_id = headers.get("X-Request-Id", "")
        if not request_id or not _REQUEST_ID.match(request_id):
            request_id = self.next_id()
        raw = request.raw_path
        if not raw.startswith("/"):
            raise BadRequest("the request target must be a path", code="bad_path")
        raw_path, _, query = raw.partition("?")
        raw_path = raw_path.partition("#")[0]
        return Scope(request_id=request_id, client_ip=client_ip, trusted=trusted, scheme=scheme,
                     host=host, path=normalize_path(raw_path), query=query,
                     forwarded_for=forwarded_for)


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


async def expect_continue(request: web.Request) -> None:
    """Answer ``Expect: 100-continue`` so the client sends its body; 417 for any other
    expectation. HTTP/1.0 clients get nothing: the header means nothing to them."""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text="Only 100-continue is understood.")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the response proper has not started


def error_boundary(config: Config, scopes: ScopeBuilder, metrics: Metrics,
                   handler: Handler, missing_page: Handler | None = None) -> Handler:
    """``handler`` behind the edge: the scope is built first, and every error becomes a
    response. A plain wrapper rather than aiohttp middleware: every request goes through
    it, and a direct call costs less than the middleware chain.

    ``missing_page`` answers a denial with ``access.denied: not_found`` as the site answers
    a missing page; without it (or when that page is itself refused) the plain page does.
    """
    login_path = config.server.route_base + "/login"
    cookies = cookie_settings(config)
    in_flight = InFlight(config.server.max_concurrent)
    denied_status = 404 if config.access.denied == "not_found" else 403
    as_missing = missing_page if denied_status == 404 else None

    def note_denial(request: web.Request, scope: Scope | None) -> None:
        metrics.denials.labels("groups").inc()
        audit.info("denied", extra={"event": "denied", "sub": scope and scope.sub,
                                    "path": request.path, "reason": "groups"})

    async def boundary(request: web.Request) -> web.StreamResponse:
        try:
            in_flight.enter()
        except Unavailable as exc:
            return error_response(request, exc.status, exc.code, exc.message)
        scope: Scope | None = None
        noted = False
        try:
            scope = scopes.build(request)
            request[SCOPE] = scope
            if "Expect" in request.headers:
                await expect_continue(request)
            try:
                response = await handler(request)
            except Denied:
                if as_missing is None:
                    raise
                note_denial(request, scope)
                noted = True
                try:
                    # Its errors (an upstream that is down) are the missing page's too.
                    response = await as_missing(request)
                except (Denied, NeedsLogin, NotFound):
                    # The site's missing page is gated itself, or it has none.
                    raise Denied() from None
        except NeedsLogin as exc:
            if wants_html(request):
                response = login_redirect(request, login_path, exc.return_to)
            else:
                response = error_response(request, 401, "unauthenticated", "")
        except Denied:
            if not noted:
                note_denial(request, scope)
            if denied_status == 404:
                response = error_response(request, 404, "not_found", "There is no page here.")
            else:
                response = error_response(request, 403, "forbidden",
                                          "Your account cannot open this page.")
        except GatewayError as exc:
            if exc.status >= 500:
                log.warning("request failed", extra={"status": exc.status, "reason": exc.code,
                                                     "path": request.path})
            response = error_response(request, exc.status, exc.code, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(request, exc.status, exc.reason.lower().replace(" ", "_"),
                                      exc.text or "")
        except asyncio.CancelledError:
            raise
        except ConnectionResetError:
            # The client left; nobody reads what is sent now (499: nginx's word for it).
            response = web.Response(status=499)
        except Exception:
            log.exception("unexpected error", extra={"path": request.path})
            response = error_response(request, 500, "internal", "An unexpected error occurred.")
        finally:
            in_flight.leave()
        metrics.count_request(scope.route if scope is not None else "docs", response.status)
        if scope is not None and not response.prepared:
            response.headers["X-Request-Id"] = scope.request_id
            if scope.jar:
                cookies.apply(scope.jar, response)
        return response

    return boundary
