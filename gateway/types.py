"""Type aliases more than one room uses, each defined once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

#: A request handler: the docs entry, a gateway route, the error boundary's inner handler.
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
