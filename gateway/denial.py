"""A denial answered as a missing page (``access.denied: not_found``).

A reader who lacks a group gets exactly what the site answers, through the gateway, for an
address that does not exist: the site's own 404 page (its ``404.html`` on a static host),
with the same headers, for GET and HEAD, browsers and other clients alike. Only then can a
gated address not be told from a missing one.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from gateway.pipeline import Exchange, Visitor, serve_static, serve_upstream
from gateway.policy import Decision, Outcome
from gateway.proxy.static import StaticSite
from gateway.scope import SCOPE, Scope
from gateway.services import GATEWAY, Gateway
from gateway.sessions.base import CookieJar

# The last segment of the address asked for instead of a denied one: unguessable, so no
# page can be there, and fixed per process, so the upstream sees an ordinary missing page.
MISSING_NAME = "gateway-missing-" + secrets.token_hex(12)


def missing_neighbour(gw: Gateway, path: str) -> str:
    """An address that cannot exist beside ``path`` (in its folder, below the base path),
    where a site's per-folder 404 page (another language or version) applies as well."""
    neighbour = path[:path.rfind("/") + 1] + MISSING_NAME
    if gw.relative_path(neighbour) is None:
        neighbour = gw.config.server.base_path + "/" + MISSING_NAME
    return neighbour


async def answer_as_missing(request: web.Request) -> web.StreamResponse:
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
    exchange = Exchange(request, scope.missing_at(path), rel, decision, visitor, [])
    if isinstance(gw.origin, StaticSite):
        return await serve_static(gw, gw.origin, exchange)
    return await serve_upstream(gw, gw.origin, exchange)
