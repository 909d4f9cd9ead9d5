"""The docs request, one direction: session, handshake, policy, identity, proxy, response."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import NotFound, Unavailable, UpstreamError
from gateway.html import decode_body, is_html
from gateway.indexes import INDEX_LIMIT, IndexFile, filter_index
from gateway.pages import (
    enforce,
    read_index,
    static_meta_fetcher,
    upstream_meta_fetcher,
    without_validators,
)
from gateway.policy import Decision, Outcome
from gateway.proxy import SCOPE, Scope, stream_body
from gateway.sessions.base import CookieJar, Loaded, Session
from gateway.state import GATEWAY, Gateway
from gateway.static import StaticSite
from gateway.upstream import Response, UpstreamClosed, UpstreamTimedOut
from gateway.user import User
from gateway.websocket import pipe_websocket

# An HTML page that must be read (metadata, script, gating) may be at most this large;
# a larger one is refused with 502 rather than passed unchecked.
HTML_BUFFER_LIMIT = 8 * 1024 * 1024


# init=False here and below: a compiled build runs the class's own __init__ natively, where
# the one dataclasses would write is interpreted (these are made once per request).
@dataclass(init=False)
class Visitor:
    """Who is asking, decided before the upstream is called."""

    session: Session | None
    user: User | None
    jar: CookieJar

    def __init__(self, session: Session | None, user: User | None, jar: CookieJar) -> None:
        self.session = session
        self.user = user
        self.jar = jar


async def identify(gw: Gateway, request: web.Request, scope: Scope, required: bool) -> Visitor:
    """Load the session and ask the handshake who the visitor is.

    A store that cannot be reached makes protected paths 503, and public ones anonymous.
    """
    jar = CookieJar()
    # The error boundary applies what is left in the jar to whatever response is sent.
    scope.jar = jar
    try:
        cookies = session_cookies(gw, request)
        loaded = await gw.store.load(cookies) if cookies else Loaded(None)
    except Unavailable:
        gw.metrics.store_errors.inc()
        if required:
            raise
        loaded = Loaded(None)
    for name in loaded.stale:
        jar.delete(name)
    try:
        user = await gw.handshake.identify(request, loaded.session, jar)
    except Unavailable:
        if required:
            raise
        user = None
    return Visitor(session=loaded.session, user=user, jar=jar)


def session_cookies(gw: Gateway, request: web.Request) -> dict[str, str] | None:
    """The store's own cookies, read straight from the Cookie headers (the rest are never
    parsed); None when one of them is given twice: cookie tossing (a sibling subdomain or a
    longer path planted its own), so which one is the reader's cannot be told."""
    stem = gw.config.session.cookie_name
    found: dict[str, str] = {}
    for header in request.headers.getall("Cookie", ()):
        if stem not in header:
            continue
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            if gw.store.owns_cookie(name):
                if name in found:
                    return None
                found[name] = value
    return found


def personal(decision: Decision, visitor: Visitor) -> bool:
    """Whether the response depends on who the visitor is."""
    return visitor.user is not None or not decision.public


# Cache-Control directives that would let a shared cache keep a personal response.
_SHARED = ("public", "s-maxage", "private")


# Header name (as spelled) -> whether a CDN reads it as its own Cache-Control.
_CDN_CONTROL: dict[str, bool] = {}


def is_cdn_control(name: str) -> bool:
    """Surrogate-Control and the ``*CDN-Cache-Control`` family; remembered per spelling."""
    known = _CDN_CONTROL.get(name)
    if known is None:
        lname = name.lower()
        known = lname == "surrogate-control" or lname.endswith("cdn-cache-control")
        if len(_CDN_CONTROL) < 4096:  # names are the upstream's: keep the memo bounded
            _CDN_CONTROL[name] = known
    return known


def mark_private(headers: CIMultiDict[str]) -> None:
    """Keep shared caches from serving a visitor's response to anyone else."""
    control = headers.get("Cache-Control")
    if control is None:
        headers["Cache-Control"] = "private"
    else:
        directives = [d.strip() for d in control.split(",") if d.strip()]
        kept = [d for d in directives if d.split("=")[0].strip().lower() not in _SHARED]
        headers["Cache-Control"] = ", ".join(["private", *kept])
    # CDNs obey these over Cache-Control, so a personal page must not carry them.
    names = [name for name in headers if is_cdn_control(name)]
    for name in names:
        headers.popall(name, None)
    vary = headers.get("Vary", "")
    if "cookie" not in vary.lower() and vary.strip() != "*":
        headers["Vary"] = f"{vary}, Cookie" if vary else "Cookie"


async def handle_docs(request: web.Request) -> web.StreamResponse:
    """Serve a docs path: everything that is not one of the gateway's own routes."""
    gw = request.app[GATEWAY]
    scope: Scope = request[SCOPE]
    intercepted = await gw.handshake.intercept(request)
    if intercepted is not None:
        return intercepted
    rel = gw.relative_path(scope.path)
    if rel is None:
        raise NotFound("There is no page here.")
    decision = gw.policy.decide(rel, None)
    visitor = await identify(gw, request, scope, required=not decision.public)
    if visitor.user is not None:
        scope.sub = visitor.user.sub
        decision = gw.policy.decide(rel, visitor.user)
    if not decision.meta_applies or request.method not in ("GET", "HEAD"):
        # Page metadata is read from a GET's page; any other method is judged on config.
        enforce(decision, scope)
    extra = gw.identity_headers(visitor.user, visitor.session) \
        if decision.outcome is Outcome.ALLOW else []
    if gw.static is not None:
        response = await serve_static(gw, request, rel, decision, visitor)
    elif request.headers.get("Upgrade", "").lower() == "websocket":
        enforce(decision, scope)
        assert gw.upstream is not None and gw.upstream.session is not None
        headers = CIMultiDict(gw.upstream.request_headers(request, scope, extra))
        return await pipe_websocket(request, gw.upstream.session, gw.upstream.url_for(scope),
                                    headers)
    else:
        response = await serve_upstream(gw, request, scope, rel, decision, visitor, extra)
    return response


async def serve_upstream(gw: Gateway, request: web.Request, scope: Scope, rel: str,
                         decision: Decision, visitor: Visitor,
                         extra: list[tuple[str, str]]) -> web.StreamResponse:
    """Forward to the upstream; touch the body only for HTML that needs it."""
    assert gw.upstream is not None
    index_file = gw.pages.index_file(rel) if request.method == "GET" else None
    # A body the gateway filters must arrive whole: no ranges, and no 304 that would let a
    # copy filtered for an earlier reader stand.
    sent = without_validators(request) if index_file is not None else request
    started = time.monotonic()
    upstream = await gw.upstream.open(sent, scope, extra)
    gw.observe_upstream(time.monotonic() - started)
    try:
        if upstream.status in (206, 304) and sent is request and request.method == "GET" \
                and is_html(upstream.headers.get("Content-Type", "")) \
                and gw.pages.wants(decision):
            # A page that must be read came back partial or unchanged: ask again for all
            # of it (assets keep their ranges and 304s; only HTML pages pay this trip).
            upstream.release()
            upstream = await gw.upstream.open(without_validators(request), scope, extra)
        return await respond(gw, request, scope, rel, decision, visitor, upstream, index_file)
    except BaseException:
        # Whatever went wrong (the client left, a decision refused the page), the pooled
        # connection goes back or is dropped; release() is a no-op when already done.
        upstream.release()
        raise


async def respond(gw: Gateway, request: web.Request, scope: Scope, rel: str,
                  decision: Decision, visitor: Visitor, upstream: Response,
                  index_file: IndexFile | None) -> web.StreamResponse:
    """Turn an upstream response into the reader's: streamed, or read and rewritten."""
    assert gw.upstream is not None
    headers = gw.upstream.response_headers(upstream)
    if index_file is not None and upstream.status == 200:
        return await serve_index_upstream(gw, index_file, upstream, headers, decision, visitor,
                                          scope)
    content_type = upstream.headers.get("Content-Type", "")
    html_page = (request.method == "GET" and is_html(content_type)
                 and upstream.status == 200 and gw.pages.wants(decision))
    if not html_page:
        # Not a page that can declare its own access: the config decision stands.
        enforce(decision, scope)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=headers)
        if upstream.content_length is not None and "Transfer-Encoding" not in upstream.headers:
            response.content_length = upstream.content_length
        finish_headers(gw, decision, visitor, response)
        response.headers["X-Request-Id"] = scope.request_id  # started here, not at the edge
        await response.prepare(request)
        if request.method == "HEAD" or upstream.status in (204, 304):
            upstream.release()
            await response.write_eof()
            return response
        await stream_body(request, upstream, response)
        return response
    try:
        body = await read_limited(upstream, HTML_BUFFER_LIMIT)
    finally:
        upstream.release()
    encoding = upstream.headers.get("Content-Encoding")
    decoded = decode_body(body, encoding)
    if decoded is None:
        if decision.meta_applies:
            # Its own metadata could not be read, so it cannot be judged: fail closed.
            raise UpstreamError("the docs server sent a page in an encoding the gateway "
                                "cannot read")
        enforce(decision, scope)
        response = web.Response(status=upstream.status, body=body, headers=headers)
    else:
        decision, page = gw.pages.process(decoded, decision, visitor.user, scope, rel)
        # The rewritten page is this reader's: no validators that would let a later
        # conditional request revalidate it against the upstream's copy.
        for name in ("Content-Encoding", "ETag", "Last-Modified"):
            headers.popall(name, None)
        response = web.Response(status=upstream.status, body=page, headers=headers)
    finish_headers(gw, decision, visitor, response)
    return response


async def serve_index_upstream(gw: Gateway, index_file: IndexFile, upstream: Response,
                               headers: CIMultiDict[str], decision: Decision, visitor: Visitor,
                               scope: Scope) -> web.StreamResponse:
    """A sitemap or search index from the upstream, filtered to the reader's pages."""
    assert gw.upstream is not None and gw.pages.index is not None
    try:
        enforce(decision, scope)
        body = await read_limited(upstream, INDEX_LIMIT)
    finally:
        upstream.release()
    raw = decode_body(body, upstream.headers.get("Content-Encoding"), limit=INDEX_LIMIT)
    if raw is None:
        raise UpstreamError("the docs server sent an index the gateway cannot read")
    filtered = await filter_index(index_file.kind, raw, visitor.user, gw.policy, gw.pages.index,
                                  upstream_meta_fetcher(gw.upstream, gw.config),
                                  base=index_file.base)
    for name in ("Content-Encoding", "ETag", "Last-Modified", "Content-MD5", "Digest"):
        headers.popall(name, None)
    response = web.Response(status=200, body=filtered, headers=headers)
    finish_headers(gw, decision, visitor, response)
    mark_private(response.headers)  # the list depends on the reader, anonymous ones too
    return response


async def read_limited(upstream: Response, limit: int) -> bytes:
    """Read an upstream body of at most ``limit`` bytes (the rest is refused)."""
    try:
        return await upstream.read_all(limit)
    except ValueError:
        raise UpstreamError("the docs page is too large to check") from None
    except (UpstreamClosed, UpstreamTimedOut):
        raise UpstreamError("the docs server broke off the response") from None


def finish_headers(gw: Gateway, decision: Decision, visitor: Visitor,
                   response: web.StreamResponse) -> None:
    """Cookies and cache headers, decided before the response starts (the error boundary
    adds the request id to every response not already started)."""
    if visitor.jar:
        gw.store.cookies.apply(visitor.jar, response)
        visitor.jar.clear()
    if personal(decision, visitor):
        mark_private(response.headers)


async def serve_static(gw: Gateway, request: web.Request, rel: str, decision: Decision,
                       visitor: Visitor) -> web.StreamResponse:
    """Serve from ``upstream.root``; HTML pages go through the same page processing."""
    assert gw.static is not None
    scope: Scope = request[SCOPE]
    base = gw.config.server.base_path
    if base and scope.path == base:
        # Relative links in the index page only resolve under the trailing slash.
        raise web.HTTPMovedPermanently(base + "/" + (f"?{scope.query}" if scope.query else ""))
    index_file = gw.pages.index_file(rel) if request.method == "GET" else None
    raw = await asyncio.to_thread(read_index, gw.static, rel) if index_file else None
    if index_file is not None and raw is not None:
        enforce(decision, scope)
        assert gw.pages.index is not None
        filtered = await filter_index(
            index_file.kind, raw, visitor.user, gw.policy, gw.pages.index,
            static_meta_fetcher(gw.static, whole=gw.config.access.fragments),
            base=index_file.base)
        listing = web.Response(body=filtered, headers={"Content-Type": index_file.content_type})
        finish_headers(gw, decision, visitor, listing)
        mark_private(listing.headers)  # the list depends on the reader, anonymous ones too
        return listing
    page = None
    if request.method == "GET" and gw.pages.wants(decision):
        page = await asyncio.to_thread(read_html, gw.static, rel)
    response: web.StreamResponse
    if page is not None:
        decision, body = gw.pages.process(page, decision, visitor.user, scope, rel)
        response = web.Response(body=body, content_type="text/html", charset="utf-8")
    else:
        enforce(decision, scope)
        response = await gw.static.serve(request, rel)
    finish_headers(gw, decision, visitor, response)
    return response


def read_html(site: StaticSite, rel: str) -> bytes | None:
    """The bytes of the HTML file a path names, or None for anything else."""
    file = site.file_for(rel)
    if file is None or file.suffix not in (".html", ".htm"):
        return None
    try:
        return file.read_bytes()
    except OSError:
        return None
