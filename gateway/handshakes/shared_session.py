"""The shared-session handshake: the dashboard's cookie, checked server-side by its Info API.

The reader's dashboard session cookie (same registrable domain) reaches the gateway; the
gateway forwards only the configured cookies to the Info API and reads the user object it
answers. The browser never calls the API, so no CORS is needed, and the gateway keeps no
session of its own: the dashboard's session is the session.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web

from gateway.config.model import Config
from gateway.errors import NotFound, Unavailable
from gateway.handshakes.base import Handshake, HandshakeDeps, read_limited
from gateway.handshakes.infocache import (
    ANONYMOUS,
    Answer,
    CacheKeys,
    Kind,
    SingleFlight,
    create_cache,
)
from gateway.redirects import absolute_url
from gateway.sessions.base import CookieJar, Session, gateway_cookie_predicate
from gateway.user import InvalidUser, User, parse_user

log = logging.getLogger(__name__)

#: Anonymous answers are kept at most this long, so a fresh dashboard login shows soon.
NEGATIVE_TTL = 5.0
#: A failing Info API is asked again per cookie set after this long, not on every request.
UNAVAILABLE_TTL = 1.5
#: The largest Info API body read; a user object is a few kilobytes.
MAX_BODY = 1024 * 1024
#: Seconds between two warnings about a failing Info API (the rest are debug lines).
WARNING_INTERVAL = 5.0
#: Second-level labels under which names are registered (``example.co.uk``).
_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "ac", "gov", "edu"})


#: RFC 6265's cookie-value: cookie-octets (no space, quote, comma, semicolon or backslash),
#: optionally inside one pair of double quotes.
_COOKIE_VALUE = re.compile(r'[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+'
                           r'|"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*"')


def forwarded_cookies(cookie_headers: Iterable[str],
                      names: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """The ``(name, value)`` pairs of the named cookies whose value is a valid cookie value.

    Anything else is left out: a value holding a space, comma or quote would be read as
    more than one cookie by some Info APIs (``session=a admin=1``), so it never passes.
    """
    pairs: list[tuple[str, str]] = []
    for header in cookie_headers:
        for part in header.split(";"):
            name, sep, value = part.partition("=")
            # Only the optional whitespace around each pair (RFC 6265 5.4), nothing inside.
            name, value = name.strip(" \t"), value.strip(" \t")
            # An empty value is a cookie being cleared: nothing to ask the Info API about.
            if sep and name in names and _COOKIE_VALUE.fullmatch(value) and value != '""':
                pairs.append((name, value))
    return tuple(pairs)


class SharedSessionHandshake(Handshake):
    """Identifies readers by forwarding their dashboard cookies to the Info API."""

    method = "shared_session"
    sets_session = False

    def __init__(self, deps: HandshakeDeps) -> None:
        super().__init__(deps)
        settings = self.config.handshake.shared_session
        if settings.info_api_url is None:
            raise ValueError("handshake.shared_session.info_api_url is required")
        self.info_api_url = settings.info_api_url
        self.login_url = settings.login_url
        is_ours = gateway_cookie_predicate(self.config)
        # The gateway's own cookies never go to the Info API, whatever the config names.
        self.cookie_names = frozenset(name for name in settings.cookies if not is_ours(name))
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._ttl = {Kind.USER: settings.cache_ttl,
                     Kind.ANONYMOUS: min(settings.cache_ttl, NEGATIVE_TTL),
                     Kind.UNAVAILABLE: min(settings.cache_ttl, UNAVAILABLE_TTL)}
        self._keys = CacheKeys(self.config.session.secrets[0])
        self._cache = create_cache(deps.keyspace, self.parse)
        self._flight: SingleFlight[Answer] = SingleFlight()
        counter = deps.metrics.info_cache
        self._hit, self._miss = counter.labels("hit"), counter.labels("miss")
        self._negative = counter.labels("negative")
        self._quiet_until = 0.0

    def parse(self, data: Any) -> User:
        """Validate an Info API user object (InvalidUser when it is not one)."""
        return parse_user(data, subject_paths=self.config.user.subject,
                          max_age=self.config.session.max_age)

    async def close(self) -> None:
        """Stop Info API calls under way and close the cache."""
        await self._flight.close()
        await self._cache.close()

    async def identify(self, request: web.Request, session: Session | None,
                       jar: CookieJar) -> User | None:
        """The user the Info API names for the dashboard cookies; None when anonymous.

        Raises Unavailable when the Info API cannot answer (down, slow, malformed).
        """
        answer = await self.lookup(request.headers.getall("Cookie", ()))
        if answer.kind is Kind.UNAVAILABLE:
            raise Unavailable("The sign-in service (the dashboard's Info API) did not give a "
                              "usable answer; try again in a moment.",
                              code="info_api_unavailable")
        return answer.user

    async def lookup(self, cookie_headers: Iterable[str]) -> Answer:
        """The answer for a request's cookies: cached, joined to a call under way, or new."""
        cookies = forwarded_cookies(cookie_headers, self.cookie_names)
        if not cookies:
            return ANONYMOUS
        key = self._keys.key_for(cookies)
        answer = await self._cache.get(key)
        if answer is not None:
            (self._hit if answer.kind is Kind.USER else self._negative).inc()
            return answer
        self._miss.inc()

        async def refresh() -> Answer:
            fresh = await self.fetch(cookies)
            ttl = self._ttl[fresh.kind]
            if fresh.user is not None:
                ttl = min(ttl, fresh.user.expires_at - time.time())
            await self._cache.put(key, fresh, ttl)
            return fresh

        return await self._flight.run(key.id, refresh)

    async def fetch(self, cookies: tuple[tuple[str, str], ...]) -> Answer:
        """Ask the Info API once: GET with only the given cookies, no redirects followed."""
        headers = {"Accept": "application/json",
                   "Cookie": "; ".join(f"{name}={value}" for name, value in cookies)}
        try:
            async with self.deps.http.get(self.info_api_url, headers=headers,
                                          allow_redirects=False,
                                          timeout=self._timeout) as response:
                if response.status in (401, 403):
                    self.outcome("ok", "anonymous")
                    return ANONYMOUS
                if not 200 <= response.status < 300:
                    return self._unavailable(f"answered {response.status}")
                body = await read_limited(response, MAX_BODY + 1)
                content_type = response.content_type
        except TimeoutError:
            return self._unavailable("timeout")
        except aiohttp.ClientError as exc:
            # The class names the failure (refused, reset) without repeating the request.
            return self._unavailable(exc.__class__.__name__)
        if len(body) > MAX_BODY:
            return self._unavailable("the answer is too large")
        if "html" in content_type:
            return self._unavailable("answered an HTML page, not JSON")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return self._unavailable("the answer is not JSON")
        try:
            user = self.parse(data)
        except InvalidUser as exc:
            return self._unavailable(f"not a valid user object: {exc.message}")
        self.outcome("ok", "identified")
        return Answer(Kind.USER, user=user, data=data)

    def _unavailable(self, reason: str) -> Answer:
        self.outcome("failed", "info_api_unavailable")
        # In an outage every reader's cookie fails: one warning per interval is enough.
        now = time.monotonic()
        level = logging.WARNING if now >= self._quiet_until else logging.DEBUG
        if level == logging.WARNING:
            self._quiet_until = now + WARNING_INTERVAL
        log.log(level, "Info API unavailable: %s", reason,
                extra={"event": "info_api_unavailable", "reason": reason})
        return Answer(Kind.UNAVAILABLE, reason=reason)

    async def login(self, request: web.Request, return_to: str) -> web.StreamResponse:
        """Send the browser to the dashboard's login with the absolute docs URL to return to.

        A reader the Info API already knows goes straight back instead.
        """
        known = await self.lookup(request.headers.getall("Cookie", ()))
        if known.user is not None:
            return _redirect(return_to)
        if self.login_url is None:
            raise NotFound("Log in on the dashboard, then come back to the docs.",
                           code="no_login_url")
        target = absolute_url(self.config.server.public_url, return_to)
        joiner = "&" if "?" in self.login_url else "?"
        return _redirect(f"{self.login_url}{joiner}{urlencode({'redirect': target})}")

    def logout_target(self, session: Session | None) -> str | None:
        """The dashboard's logout, when configured: the dashboard session is the session."""
        return self.config.handshake.shared_session.logout_url


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def registrable_domain(host: str) -> str:
    """The name cookies can be shared under: ``docs.example.com`` -> ``example.com``.

    A simple rule: the last two labels, or three under a common second level of a
    two-letter country (``example.co.uk``). IPs, ``localhost`` and single labels are kept.
    """
    host = host.lower().rstrip(".")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host
    except ValueError:
        pass
    labels = host.split(".")
    if host == "localhost" or len(labels) <= 2:
        return host
    if len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def domain_warning(config: Config) -> str | None:
    """A warning when the docs and the Info API are not on the same registrable domain."""
    if config.handshake.method != "shared_session":
        return None
    api_url = config.handshake.shared_session.info_api_url
    docs_host = urlsplit(config.server.public_url).hostname
    api_host = urlsplit(api_url).hostname if api_url else None
    if not docs_host or not api_host:
        return None
    docs, api = registrable_domain(docs_host), registrable_domain(api_host)
    if docs == api:
        return None
    return (f"handshake.shared_session.info_api_url: the Info API is on {api} but the docs "
            f"are on {docs}; the dashboard's session cookie reaches the docs only when both "
            f"share a registrable domain (serve the docs on a subdomain of {api})")
