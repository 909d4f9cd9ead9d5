"""The gateway's own endpoints: login, logout, user, jwks, client.js, auth, health."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import quote, urlsplit

from aiohttp import web

from gateway.denial import PAGE_CACHE, missing_neighbour, missing_page_for_check
from gateway.errors import BadRequest, CrossSite, GatewayError, NotFound, shown
from gateway.metrics import CONTENT_TYPE
from gateway.paths import normalize_path
from gateway.pipeline import identify, personal
from gateway.policy import Outcome
from gateway.redirects import is_same_origin, post_from_this_site, safe_return_path
from gateway.responses import error_response, is_navigation
from gateway.scope import SCOPE, Scope
from gateway.services import GATEWAY, Gateway
from gateway.sessions.base import CookieJar
from gateway.types import Handler

NO_STORE = "private, no-store"
#: The forward-auth answer's word on how the proxied page may be cached, when it depends on
#: the reader; absent, the docs' own cache headers stand.
PAGE_CACHE_HEADER = "X-Gateway-Cache-Control"
PERSONAL_CACHE = PAGE_CACHE
#: The proxies that hand a check's answer other than 2xx to the visitor as it is (Caddy's
#: forward_auth, Traefik's ForwardAuth): that answer is then the gateway's own for the page.
PASSES_ANSWER = frozenset({"caddy", "traefik"})
#: On a 403 with ``access.denied: not_found``, for a proxy that acts on the status (nginx):
#: an address beside the page that cannot exist, whose docs answer it serves instead.
MISSING_HEADER = "X-Gateway-Missing"
#: Seconds readyz waits for the session store's PING before reporting it unreachable.
STORE_PING_TIMEOUT = 1.0
log = logging.getLogger("gateway")
CLIENT_JS = resources.files("gateway").joinpath("assets/client.js").read_bytes()
#: The line of client.js that holds the settings the config gives it.
CLIENT_SETTINGS = re.compile(rb"var settings = [^\n]*; // gateway:settings")


@dataclass
class RouteTable:
    """The gateway's own routes by exact normalized path, then method."""

    routes: dict[str, dict[str, Handler]] = field(default_factory=dict)

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Register a handler; GET also answers HEAD."""
        methods = self.routes.setdefault(path, {})
        methods[method] = handler
        if method == "GET":
            methods.setdefault("HEAD", handler)


class UntrustedPeer(GatewayError):
    """A forward-auth question from an address outside ``server.trusted_proxies``."""

    status = 403
    code = "untrusted_proxy"


def _gw(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def json_response(data: object, status: int = 200, cache: str = NO_STORE) -> web.Response:
    """A JSON response with an explicit cache policy, never sniffed into anything else."""
    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status,
                        content_type="application/json",
                        headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"})


async def login(request: web.Request) -> web.StreamResponse:
    """Start a login; ``redirect`` is honoured only as a same-origin relative path."""
    gw = _gw(request)
    return_to = safe_return_path(request.query.get("redirect"),
                                 base_path=gw.config.server.base_path)
    return await gw.handshake.login(request, return_to)


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session: POST, or GET from a page of this site (CSRF-safe logout)."""
    gw = _gw(request)
    if request.method == "GET" and not same_origin_request(request, gw):
        raise BadRequest("Log out from a page of this site, or with a POST.", code="cross_site",
                         expected="Sec-Fetch-Site same-origin, or an Origin or Referer of "
                                  "this site", received=_fetch_site(request))
    if request.method == "POST" and post_from_this_site(
            request.headers.get("Sec-Fetch-Site"), request.headers.get("Origin"),
            gw.config.server.public_origin) is not True:
        # The login callback's rule; an opaque origin has no other proof here, so it fails.
        raise CrossSite("Log out from a page of this site.",
                        expected="Sec-Fetch-Site same-origin, or an Origin of this site",
                        received=_fetch_site(request))
    jar = CookieJar()
    # An unreachable store is a 503: clearing only the cookie would leave the session
    # alive for whoever else holds it.
    session = (await gw.store.load(request.cookies)).session
    await gw.store.delete(request.cookies, jar)
    for name in request.cookies:
        if gw.is_gateway_cookie(name):
            jar.delete(name)
    target = gw.handshake.logout_target(session)
    if target is None:
        form = await request.post() if request.method == "POST" else {}
        value = request.query.get("redirect") or form.get("redirect")
        target = safe_return_path(value if isinstance(value, str) else None,
                                  base_path=gw.config.server.base_path)
    if session is not None:
        gw.audit("logout", sub=session.user.sub, method=session.method)
    response = web.Response(status=303, headers={"Location": target, "Cache-Control": "no-store"})
    gw.store.cookies.apply(jar, response)
    secure = "; Secure" if gw.config.server.https else ""
    for name in jar.deletes:
        if "_state_" in name:
            # Login-state cookies may live under the route base too, not only the base path.
            response.headers.add("Set-Cookie", f"{name}=; Max-Age=0; "
                                 f"Path={gw.config.server.route_base}; HttpOnly{secure}")
    return response


def _fetch_site(request: web.Request) -> str:
    """What a request says of the page that sent it, for the log line of a refusal (the
    origin's scheme and host only, never a path or query)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return f"Sec-Fetch-Site {shown(site)}"
    for name in ("Origin", "Referer"):
        value = request.headers.get(name)
        if value is not None:
            parts = urlsplit(value)
            host = parts.netloc.rpartition("@")[2]  # never a user name or password
            return f"{name} {shown(f'{parts.scheme}://{host}')}"
    return "no Sec-Fetch-Site, Origin or Referer"


def same_origin_request(request: web.Request, gw: Gateway) -> bool:
    """Whether a request comes from a page of the docs origin (Sec-Fetch-Site, Origin, Referer)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    return origin is not None and is_same_origin(origin, gw.config.server.public_origin)


async def user(request: web.Request) -> web.StreamResponse:
    """The visitor's user object as JSON, or 401."""
    gw = _gw(request)
    visitor = await identify(gw, request, request[SCOPE], required=True)
    if visitor.user is None:
        response = json_response({"error": "unauthenticated"}, status=401)
    else:
        response = json_response(visitor.user.to_json(gw.config.identity.expose))
    if visitor.jar:
        gw.store.cookies.apply(visitor.jar, response)
    response.headers["Vary"] = "Cookie"
    return response


async def jwks(request: web.Request) -> web.StreamResponse:
    """Public keys of the assertion signer."""
    return json_response(_gw(request).signer.jwks(), cache="public, max-age=300")


@functools.cache
def client_script(playgrounds: tuple[str, ...]) -> bytes:
    """client.js with this config's settings written in (the same for every reader)."""
    settings = json.dumps({"playgrounds": list(playgrounds)}).replace("<", "\\u003c")
    script, count = CLIENT_SETTINGS.subn(
        lambda _: f"var settings = {settings}; // gateway:settings".encode(), CLIENT_JS, count=1)
    if count != 1:
        raise RuntimeError("client.js has no settings line")
    return script


async def client_js(request: web.Request) -> web.StreamResponse:
    """The client script for client-side docs."""
    body = client_script(_gw(request).config.identity.playgrounds)
    return web.Response(body=body, content_type="text/javascript", charset="utf-8",
                        headers={"Cache-Control": "public, max-age=300"})


def original_target(request: web.Request, scope: Scope, header: str) -> tuple[str, str]:
    """The path and query a forward-auth proxy asks about, from the one ``header`` it sets.

    Believed only from ``server.trusted_proxies``; absent or given twice, nothing is judged
    (never the request's own path, never another target header the client chose).
    """
    if not scope.trusted:
        raise UntrustedPeer("Forward-auth questions are answered only for the proxies in "
                            "server.trusted_proxies.", expected="a peer in "
                            "server.trusted_proxies", received=f"peer {request.remote}")
    values = request.headers.getall(header, [])
    uri = values[0].strip() if len(values) == 1 else ""
    if not uri:
        problem = "twice" if len(values) > 1 else "empty" if values else "absent"
        log.warning("forward-auth request without a usable target header",
                    extra={"header": header, "problem": problem})
        raise BadRequest(f"The forward-auth request must carry {header} exactly once, with the "
                         "page asked about.", code="bad_target", expected=f"{header} once",
                         received=problem)
    if not uri.startswith("/"):
        # An absolute URL (X-Original-URL style): only its own path counts, never a URL
        # that happens to sit in the query string.
        parts = urlsplit(uri)
        if not parts.scheme or not parts.path.startswith("/"):
            raise BadRequest(f"{header} must hold a path or an absolute URL.", code="bad_target")
        uri = parts.path + (f"?{parts.query}" if parts.query else "")
    path, _, query = uri.partition("?")
    return normalize_path(path), query


async def auth(request: web.Request) -> web.StreamResponse:
    """Forward-auth: 200 with identity headers; otherwise, for a proxy that hands the answer
    to the visitor (Caddy, Traefik), the gateway's own answer for the page; for one that
    acts on the status (nginx, a header named), 401 to log in or 403 when denied."""
    gw = _gw(request)
    scope: Scope = request[SCOPE]
    server = gw.config.server
    header = server.forward_auth_header
    if header is None:
        raise NotFound("Forward auth is off: set server.forward_auth to the proxy that asks.")
    path, query = original_target(request, scope, header)
    rel = gw.relative_path(path)
    if rel is None:
        raise NotFound("The page asked about is outside the docs' base path.")
    passes_answer = server.forward_auth in PASSES_ANSWER
    decision = gw.policy.decide(rel, None)
    visitor = await identify(gw, request, scope, required=not decision.public)
    if visitor.user is not None:
        decision = gw.policy.decide(rel, visitor.user)
        scope.sub = visitor.user.sub
        scope.user = visitor.user
    if decision.outcome is Outcome.NEEDS_LOGIN:
        # Absolute, on the docs' own origin (Traefik would resolve a relative one against
        # the gateway's address); the login route checks the return path again.
        back = safe_return_path(path + (f"?{query}" if query else ""),
                                base_path=server.base_path)
        login_url = f"{server.public_origin}{server.route_base}/login?redirect=" \
                    f"{quote(back, safe='/')}"
        if passes_answer:
            if is_navigation(request):
                return web.Response(status=302, headers={"Location": login_url,
                                                         "Cache-Control": "no-store"})
            return error_response(request, 401, "unauthenticated", "")
        response = json_response({"error": "unauthenticated", "login": login_url}, status=401)
        response.headers["Location"] = login_url
    elif decision.outcome is Outcome.DENIED:
        as_missing = gw.config.access.denied == "not_found"
        if passes_answer:
            if as_missing:
                return await missing_page_for_check(request, path)
            return error_response(request, 403, "forbidden",
                                  "Your account cannot open this page.")
        response = json_response({"error": "forbidden"}, status=403)
        if as_missing:
            # The proxy serves the site's own page for this address, which cannot exist.
            response.headers[MISSING_HEADER] = missing_neighbour(gw, path)
    else:
        response = json_response({"ok": True})
        for name, value in gw.identity_headers(visitor.user, visitor.session):
            response.headers[name] = value
    if personal(decision, visitor):
        # The proxy puts this on the page it serves: a page that depends on the reader is
        # kept out of shared caches, and the browser asks again (and so the gateway) each time.
        response.headers[PAGE_CACHE_HEADER] = PERSONAL_CACHE
    if visitor.jar:
        gw.store.cookies.apply(visitor.jar, response)
    return response


async def healthz(request: web.Request) -> web.StreamResponse:
    """Liveness: the process answers."""
    return json_response({"status": "ok"}, cache="no-store")


async def readyz(request: web.Request) -> web.StreamResponse:
    """Readiness: the upstream (or docs folder) and the signing keys.

    The session store is reported, never required: Redis is shared by every replica, so
    failing readiness on it would take all of them out of the load balancer at once, public
    pages included. While it is unreachable, each request that needs it answers 503 itself.
    """
    gw = _gw(request)
    checks = {
        "upstream": all([await site.origin.ping() for site in gw.sites]),
        "keys": bool(gw.signer.jwks().get("keys")),
    }
    ready = all(checks.values())
    try:
        # Bounded well inside a probe's timeout: a Redis that does not answer is "false".
        store = await asyncio.wait_for(gw.store.ping(), STORE_PING_TIMEOUT)
    except TimeoutError:
        store = False
    return json_response({"status": "ready" if ready else "unavailable", "checks": checks,
                          "session_store": store},
                         status=200 if ready else 503, cache="no-store")


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text exposition."""
    response = web.Response(body=_gw(request).metrics.render(),
                            headers={"Cache-Control": "no-store"})
    response.headers["Content-Type"] = CONTENT_TYPE
    return response

