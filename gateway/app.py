"""Composition root: ``build_app(config)`` wires every part once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway import routes
from gateway.boundary import error_boundary
from gateway.brand import Brand
from gateway.config.model import Audience, Config
from gateway.denial import answer_as_missing
from gateway.handshakes import create_handshake
from gateway.handshakes.base import HandshakeDeps, Route
from gateway.html.page import Pages, RenderCache
from gateway.identity import AssertionSigner, IdentityHeaders
from gateway.limits import RateLimiter
from gateway.metrics import Metrics
from gateway.pipeline import handle_docs
from gateway.policy import Policy
from gateway.proxy.static import StaticSite
from gateway.proxy.upstream import Upstream
from gateway.responses import BRAND
from gateway.scope import ScopeBuilder
from gateway.services import GATEWAY, Gateway, Site
from gateway.sessions import create_store
from gateway.sessions.base import gateway_cookie_predicate
from gateway.shared import create_keyspace
from gateway.types import DocsHandler

#: The app's route table (for tools and tests that list what it serves).
ROUTES = web.AppKey("routes", routes.RouteTable)
#: The one handler every request on the docs port goes to (see ``docs_server``).
ENTRY: web.AppKey[DocsHandler] = web.AppKey("entry")
#: The largest body the gateway's own routes read; proxied bodies stream.
MAX_BODY = 64 * 1024


def own_routes(config: Config, table: routes.RouteTable, handshake_routes: list[Route]) -> None:
    """The fixed routes under the prefix, compat names, and the handshake's callbacks.

    Login and callback routes are rate-limited per client (``server.login_rate_limit``).
    """
    base = config.server.route_base
    limit = config.server.login_rate_limit
    guard = RateLimiter(limit).guard if limit else (lambda handler: handler)
    login = guard(routes.login)
    simple = [
        ("GET", "login", login), ("GET", "logout", routes.logout),
        ("POST", "logout", routes.logout), ("GET", "user", routes.user),
        ("GET", "jwks.json", routes.jwks), ("GET", "client.js", routes.client_js),
        ("GET", "auth", routes.auth), ("GET", "healthz", routes.healthz),
        ("GET", "readyz", routes.readyz),
    ]
    if config.server.metrics == "public":
        simple.append(("GET", "metrics", routes.metrics))
    for method, name, handler in simple:
        table.add(method, f"{base}/{name}", handler)
    mintlify = "mintlify" in config.server.compat
    if mintlify:
        root = config.server.base_path
        table.add("GET", f"{root}/login", login)
        table.add("GET", f"{root}/logout", routes.logout)
        table.add("POST", f"{root}/logout", routes.logout)
    for route in handshake_routes:
        handler = guard(route.handler)
        if route.absolute:
            if mintlify:
                table.add(route.method, config.server.base_path + route.path, handler)
        else:
            table.add(route.method, f"{base}/{route.path}", handler)


def upstream_cookie_filter(config: Config,
                           is_gateway_cookie: Callable[[str], bool]) -> Callable[[str], bool]:
    """Cookies never sent to the docs: the gateway's, and the dashboard session it checks."""
    if config.handshake.method != "shared_session":
        return is_gateway_cookie
    dashboard = frozenset(config.handshake.shared_session.cookies)
    return lambda name: name in dashboard or is_gateway_cookie(name)


async def build_sites(config: Config, policy: Policy, is_identity_header: Callable[[str], bool],
                      keeps_cookie: Callable[[str], bool]) -> tuple[Site, ...]:
    """One site per build of the docs: ``upstream.url`` or ``upstream.root``, or one per
    entry of ``upstream.audiences``. Renderings are kept in one budget for all."""
    renders = RenderCache(config.access.page_cache_mb * 1024 * 1024)

    async def site(name: str, url: str | None, root: Path | None,
                   audience: Audience | None) -> Site:
        origin: Upstream | StaticSite
        if url is not None:
            own = replace(config, upstream=replace(config.upstream, url=url, root=None,
                                                   audiences=()))
            origin = Upstream(own, is_identity_header, keeps_cookie)
            await origin.start()
        else:
            assert root is not None
            origin = StaticSite(root, config.server.base_path)
        return Site(name, origin, Pages(config, policy, renders=renders), audience)

    if not config.upstream.audiences:
        return (await site("docs", config.upstream.url, config.upstream.root, None),)
    return tuple([await site(audience.name, audience.url, audience.root, audience)
                  for audience in config.upstream.audiences])


async def build_app(config: Config) -> web.Application:
    """The aiohttp application for one config: nothing on the request path reads the YAML.

    It holds the gateway's state, its entry handler and its start-up and clean-up; its
    router stays empty. Serve it with ``gateway.server.DocsRunner``. Async because the HTTP
    client pools must be created inside the running loop.
    """
    metrics = Metrics()
    app = web.Application()
    http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    keyspace = create_keyspace(config)
    store = create_store(config, keyspace)
    is_gateway_cookie = gateway_cookie_predicate(config)
    signer = AssertionSigner(config)
    identity = IdentityHeaders(config, signer)
    policy = Policy(config)
    sites = await build_sites(config, policy, identity.is_identity_header,
                              upstream_cookie_filter(config, is_gateway_cookie))
    handshake = create_handshake(HandshakeDeps(config=config, store=store, http=http,
                                               metrics=metrics, keyspace=keyspace))
    gw = Gateway(config=config, store=store, handshake=handshake, policy=policy,
                 identity=identity, signer=signer, sites=sites, http=http, metrics=metrics,
                 is_gateway_cookie=is_gateway_cookie, keyspace=keyspace)
    app[GATEWAY] = gw
    app[BRAND] = Brand(config.brand, home=config.server.base_path + "/")
    table = routes.RouteTable()
    own_routes(config, table, handshake.routes())
    app[ROUTES] = table
    app[ENTRY] = error_boundary(config, ScopeBuilder(config), metrics, handle_docs,
                                missing_page=answer_as_missing, own=table.routes)
    app.cleanup_ctx.append(lambda app: _lifecycle(gw))
    return app


async def _lifecycle(gw: Gateway) -> AsyncIterator[None]:
    try:
        await gw.keyspace.start()
        await gw.handshake.start()
        yield
    finally:
        for site in gw.sites:
            if site.pages.index is not None:
                await site.pages.index.close()  # metadata fetches still running
        await gw.handshake.close()
        for site in gw.sites:
            await site.origin.close()
        await gw.store.close()
        await gw.keyspace.close()
        await gw.http.close()
