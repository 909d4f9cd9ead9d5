"""Type aliases more than one room uses, each defined once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.docsport import WholeAnswer

#: A request handler: a gateway route.
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: What the docs port's entry answers: aiohttp's response, or a whole answer the docs port
#: writes itself (a rendered page).
DocsAnswer = web.StreamResponse | WholeAnswer
#: The docs port's entry: the error boundary, and what it wraps.
DocsHandler = Callable[[web.Request], Awaitable[DocsAnswer]]
