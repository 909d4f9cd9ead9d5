"""A denial answered as a missing page (``access.denied: not_found``).

A reader who lacks a group gets exactly what the site answers, through the gateway, for an
address that does not exist: the site's own 404 page (its ``404.html`` on a static host),
with the same headers, for GET and HEAD, browsers and other clients alike. Only then can a
gated address not be told from a missing one.

Behind a proxy that asks the forward-auth check and hands its answer to the reader (Caddy,
Traefik), the check's answer to a denial is the docs' own answer for such an address, as
that proxy would serve it (``missing_page_for_check``).
"""

from __future__ import annotations

import re
import secrets

from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import NotFound
from gateway.paths import packing_of
from gateway.pipeline import Exchange, Visitor, serve
from gateway.policy import Decision, Outcome
from gateway.proxy.origin import stream_body
from gateway.proxy.upstream import Upstream
from gateway.responses import error_response
from gateway.scope import SCOPE, Scope
from gateway.services import GATEWAY, Gateway
from gateway.sessions.base import CookieJar
from gateway.types import DocsAnswer

# The last segment of the address asked for instead of a denied one: unguessable, so no
# page can be there, and fixed per process, so the upstream sees an ordinary missing page.
MISSING_NAME = "gateway-missing-" + secrets.token_hex(12)
#: How the forward-auth examples mark the docs pages they serve a logged-in reader.
PAGE_CACHE = "private, no-cache"


def missing_neighbour(gw: Gateway, path: str) -> str:
    """An address that cannot exist beside ``path``: its last segment (an index's folder
    too) under a folder that cannot exist, in the same folder. The same name (its suffix,
    an index's name, a folder's trailing slash) gets the handling a missing one of that
    shape gets, and a site's per-folder 404 page (another language or version) applies."""
    parts = path.split("/")
    # MkDocs' index is named by its folder too (search/search_index.json): keep both.
    keep = 2 if len(parts) > 2 and parts[-2].lower() == "search" \
        and packing_of(parts[-1])[0].lower() == "search_index.json" else 1
    tail = "/".join(parts[-keep:])
    neighbour = "/".join([*parts[:-keep], MISSING_NAME, tail])
    if gw.relative_path(neighbour) is None:
        neighbour = f"{gw.config.server.base_path}/{MISSING_NAME}/{tail}"
    return neighbour


async def answer_as_missing(request: web.Request) -> DocsAnswer:
    """Answer the request as the site answers a missing page, for this reader.

    The missing neighbour's answer goes through the same steps as any missing page (the
    same request headers, no identity sent, the same response hygiene, cache headers and
    page handling); errors propagate as they would for that page.
    """
    gw = request.app[GATEWAY]
    scope: Scope = request[SCOPE]
    path = missing_neighbour(gw, scope.path)
    rel = gw.relative_path(path)
    assert rel is not None
    # How a reader's page is decided where no rule speaks (it is not public).
    decision = Decision(Outcome.ALLOW, meta_applies=gw.policy.page_meta)
    visitor = Visitor(session=None, user=scope.user,
                      jar=scope.jar if scope.jar is not None else CookieJar())
    exchange = Exchange(request, scope.missing_at(path), rel, decision, visitor, [],
                        gw.site_for(scope.user))
    # A WebSocket to a missing address fails as the upstream refuses it: so does this.
    return await serve(gw, exchange)


#: A forward-auth check's own headers: the proxy's words to the gateway about the page
#: asked about, never sent on to the docs.
CHECK_HEADERS = frozenset({"x-forwarded-uri", "x-forwarded-method", "x-original-uri",
                           "x-original-url", "x-original-method"})
#: The header in which Caddy and Traefik name the method the reader used (the check itself
#: is always a GET).
METHOD_HEADER = "X-Forwarded-Method"
_METHOD = re.compile(r"[A-Z]{1,20}")


def checked_method(request: web.Request) -> str:
    """The method to ask the docs with for the reader's request: theirs (an OPTIONS or a
    POST to a missing page gets the docs' own answer, a 405 where they refuse it), GET for
    a HEAD (the proxy sends the head of the check's answer, as of a GET) or for anything
    unreadable."""
    method = request.headers.get(METHOD_HEADER, "GET").strip().upper()
    return method if _METHOD.fullmatch(method) and method != "HEAD" else "GET"


async def missing_page_for_check(request: web.Request, path: str) -> web.StreamResponse:
    """The forward-auth check's answer to a reader denied ``path``, for a proxy that hands
    that answer to the reader (Caddy, Traefik): what the proxy itself serves that reader
    for an address that does not exist, so a denied page cannot be told from a missing one.

    The docs are asked, as the proxy asks them, for the missing neighbour of ``path``
    (with the reader's own method and request headers, ``Accept-Encoding`` as sent); their
    answer goes back untouched (no page handling: the proxy serves docs pages as they
    come), with ``Cache-Control: private, no-cache``, as the proxy marks a reader's pages.
    It is sent here, so it carries no request id and no cookie, as the proxy's own copy of a
    docs page carries none. A site with no missing page (one for every address) gets the
    gateway's plain 404 page.
    """
    gw = request.app[GATEWAY]
    scope: Scope = request[SCOPE]
    header = gw.config.server.forward_auth_header
    checked = {name.lower() for name in (header,) if name} | CHECK_HEADERS
    origin = gw.site_for(scope.user).origin
    sent: CIMultiDict[str] = CIMultiDict()
    extra: list[tuple[str, str]] = []
    for name, value in request.headers.items():
        if name.lower() in checked:
            continue
        if name.lower() == "accept-encoding" and isinstance(origin, Upstream):
            # The upstream facade narrows it to what the gateway can undo; this body is
            # never undone, and goes out as the docs encode it for this reader.
            extra.append((name, value))
            continue
        sent.add(name, value)
    try:
        answer = await origin.open(request.clone(method=checked_method(request), headers=sent),
                                   scope.missing_at(missing_neighbour(gw, path)), extra)
    except NotFound:
        return error_response(request, 404, "not_found", "There is no page here.")
    try:
        headers = origin.response_headers(answer)
        headers["Cache-Control"] = PAGE_CACHE
        for date in answer.dates():  # the docs' own, as the proxy passes a missing page's
            headers.add("Date", date)
        response = web.StreamResponse(status=answer.status, reason=answer.reason,
                                      headers=headers)
        if answer.content_length is not None and "Transfer-Encoding" not in answer.headers:
            response.content_length = answer.content_length
        await response.prepare(request)
        await stream_body(request, answer, response)
        return response
    finally:
        answer.release()
