"""The one error boundary: in-flight cap, ``Expect: 100-continue``, errors to responses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextvars import Token
from time import perf_counter

from aiohttp import HttpVersion11, web

from gateway.config.model import Config
from gateway.docsport import WholeAnswer
from gateway.errors import (
    Denied,
    GatewayError,
    NeedsLogin,
    NotFound,
    Unavailable,
)
from gateway.limits import InFlight
from gateway.metrics import Metrics
from gateway.responses import error_response, is_navigation, login_redirect
from gateway.scope import REQUEST_ID, SCOPE, Scope, ScopeBuilder
from gateway.sessions.base import cookie_settings
from gateway.types import DocsAnswer, DocsHandler, Handler

log = logging.getLogger("gateway")


audit = logging.getLogger("gateway.audit")


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


def client_left(request: web.Request) -> bool:
    """Whether the reader's connection is gone (a write waiting for it fails with a bare
    ``ConnectionError`` when it goes)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def unexpected(request: web.Request) -> web.Response:
    """The answer to a failure no part of the gateway expected: logged with its traceback,
    and a 500 that tells nothing of it."""
    log.exception("unexpected error", extra={"path": request.path})
    return error_response(request, 500, "internal", "An unexpected error occurred.")


def error_boundary(config: Config, scopes: ScopeBuilder, metrics: Metrics,
                   handler: DocsHandler, missing_page: DocsHandler | None = None,
                   own: Mapping[str, Mapping[str, Handler]] | None = None) -> DocsHandler:
    """``handler`` (the docs) behind the edge, and the gateway's ``own`` routes (by
    normalized path, then method): the scope is built first, and every error becomes a
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

    def note_denial(request: web.Request, scope: Scope | None, exc: Denied) -> None:
        fields = exc.log_fields()
        if scope is not None:
            scope.refusal = fields
        metrics.denials.labels(exc.code).inc()
        audit.info("denied", extra={"event": "denied", "sub": scope and scope.sub,
                                    "path": request.path, **fields})

    async def boundary(request: web.Request) -> DocsAnswer:
        started = perf_counter()
        try:
            in_flight.enter()
        except Unavailable as exc:
            return error_response(request, exc.status, exc.code, exc.message)
        scope: Scope | None = None
        noted = False
        # The route class when the request did not end as its route (refused, failed).
        ended: str | None = None
        refused: dict[str, str] | None = None
        id_token: Token[str | None] | None = None
        try:
            scope = scopes.build(request)
            request[SCOPE] = scope
            id_token = REQUEST_ID.set(scope.request_id)
            if "Expect" in request.headers:
                await expect_continue(request)
            try:
                methods = own.get(scope.path) if own is not None else None
                if methods is None:
                    response = await handler(request)
                else:
                    own_route = methods.get(request.method)
                    if own_route is None:
                        raise web.HTTPMethodNotAllowed(request.method, sorted(methods))
                    scope.route = "gateway"
                    response = await own_route(request)
                if scope.route != "gateway" and not scope.allowed:
                    # A docs answer whose decision was never enforced: fail closed.
                    raise Denied(code="not_enforced")
            except Denied as exc:
                if as_missing is None:
                    raise
                note_denial(request, scope, exc)
                noted = True
                ended = "denied"
                try:
                    # Its errors (an upstream that is down) are the missing page's too.
                    response = await as_missing(request)
                except (Denied, NeedsLogin, NotFound):
                    # The site's missing page is gated itself, or it has none.
                    raise Denied(code=exc.code, expected=exc.expected,
                                 received=exc.received) from None
        except NeedsLogin as exc:
            ended = "denied"
            refused = exc.log_fields()
            if is_navigation(request):
                response = login_redirect(request, login_path, exc.return_to)
            else:
                response = error_response(request, 401, "unauthenticated", "")
        except Denied as exc:
            ended = "denied"
            if not noted:
                note_denial(request, scope, exc)
            if denied_status == 404:
                response = error_response(request, 404, "not_found", "There is no page here.")
            else:
                response = error_response(request, 403, "forbidden",
                                          "Your account cannot open this page.")
        except GatewayError as exc:
            ended = "error"
            refused = exc.log_fields()
            if exc.status >= 500:
                log.warning("request failed", extra={"status": exc.status, "path": request.path,
                                                     **refused})
            response = error_response(request, exc.status, exc.code, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            ended = "error"
            code = exc.reason.lower().replace(" ", "_")
            refused = {"reason": code}
            response = error_response(request, exc.status, code, exc.text or "")
            if "Allow" in exc.headers:  # a 405 names the methods the address takes
                response.headers["Allow"] = exc.headers["Allow"]
        except asyncio.CancelledError:
            raise
        except ConnectionError as exc:
            ended = "error"
            if isinstance(exc, ConnectionResetError) or client_left(request):
                # The client left; nobody reads what is sent now (499: nginx's word for it).
                response = web.Response(status=499)
            else:
                response = unexpected(request)
        except Exception:
            ended = "error"
            response = unexpected(request)
        finally:
            in_flight.leave()
            if id_token is not None:
                REQUEST_ID.reset(id_token)
        if scope is None:
            metrics.finish_request("docs", ended or "error", response.status,
                                   perf_counter() - started)
            return response
        route = scope.route
        if ended is not None and route != "gateway":
            route = ended
        metrics.finish_request("gateway" if scope.route == "gateway" else "docs", route,
                               response.status, perf_counter() - started)
        if refused is not None:
            scope.refusal = refused
        if isinstance(response, WholeAnswer):
            if not scope.jar:
                response.request_id = scope.request_id
                return response
            response = response.response()  # cookies go on aiohttp's response
        if not response.prepared:
            response.headers["X-Request-Id"] = scope.request_id
            if scope.jar:
                cookies.apply(scope.jar, response)
        return response

    return boundary

