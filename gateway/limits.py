"""Per-client rate limits for the login routes, and a cap on requests in flight."""

from __future__ import annotations

import time

from aiohttp import web

from gateway.bounded import Bounded
from gateway.errors import TooManyRequests, Unavailable
from gateway.scope import SCOPE, Scope
from gateway.types import Handler

# Clients remembered at once; the least recently seen are forgotten first.
MAX_CLIENTS = 100_000


class RateLimiter:
    """A token bucket per client address: ``per_minute`` requests, refilled evenly."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0
        self.buckets: Bounded[str, tuple[float, float]] = Bounded(MAX_CLIENTS)

    def allow(self, client: str, now: float | None = None) -> bool:
        """Take one token for ``client``; False when its bucket is empty."""
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.refill)
        allowed = tokens >= 1.0
        self.buckets.put(client, (tokens - 1.0 if allowed else tokens, now))
        return allowed

    def guard(self, handler: Handler) -> Handler:
        """Wrap a route so each client gets at most its rate (429 beyond)."""

        async def limited(request: web.Request) -> web.StreamResponse:
            scope: Scope = request[SCOPE]
            if not self.allow(scope.client_ip):
                raise TooManyRequests("Too many login attempts from this address; "
                                      "wait a minute and try again.")
            return await handler(request)

        return limited


class InFlight:
    """At most ``limit`` requests handled at once per worker; more get a quick 503."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0

    def enter(self) -> None:
        """Count a request in, or refuse it."""
        if self.current >= self.limit:
            raise Unavailable("The gateway is at capacity; try again shortly.", code="busy")
        self.current += 1

    def leave(self) -> None:
        """Count a request out."""
        self.current -= 1
