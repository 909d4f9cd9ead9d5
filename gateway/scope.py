"""Per-request facts decided once at the edge: the request id, the client, the path."""

from __future__ import annotations

import ipaddress
import itertools
import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gateway.config.model import Config
from gateway.errors import BadRequest
from gateway.paths import normalize_path
from gateway.sessions.base import CookieJar
from gateway.user import User

_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Request key of the Scope built once per request by the error boundary.
SCOPE: Final = "gateway.scope"
#: The id of the request being handled, set by the error boundary for the request's whole
#: way through: every line logged meanwhile carries it (``gateway.logs.RequestIdFilter``).
REQUEST_ID: Final[ContextVar[str | None]] = ContextVar("request_id", default=None)


@dataclass(init=False, slots=True)
class Scope:
    """Per-request facts decided once at the edge, and what the request learns on its way
    that the error boundary and the access log need afterwards."""

    request_id: str
    client_ip: str
    trusted: bool
    scheme: str
    host: str
    path: str
    query: str
    forwarded_for: str
    #: The route class (the metrics label): "page", "asset", "index" for the docs as the
    #: pipeline learns what was served, "gateway" for the gateway's own routes.
    route: str
    #: The reader's subject, once known (audit and access log).
    sub: str | None
    #: The reader, once known: a denial is answered as a missing page is, for them.
    user: User | None
    #: Cookies to set or clear on whatever response is sent, error pages included.
    jar: CookieJar | None
    #: The upstream is asked for an address that cannot exist, to show the site's own
    #: missing page: only a client error (4xx) may come back.
    asks_missing: bool
    #: Whether a decision that lets the request through was enforced: a docs response may
    #: start only then (the pipeline's ``start`` and the error boundary check it).
    allowed: bool
    #: Why the request was refused, and what was expected and received, for its access
    #: line (None: not refused).
    refusal: dict[str, str] | None

    # Written out (init=False): compiled, it runs natively; it is made once per request.
    def __init__(self, *, request_id: str, client_ip: str, trusted: bool, scheme: str,
                 host: str, path: str, query: str, forwarded_for: str, route: str = "page",
                 sub: str | None = None, user: User | None = None,
                 jar: CookieJar | None = None, asks_missing: bool = False) -> None:
        self.request_id = request_id
        self.client_ip = client_ip
        self.trusted = trusted
        self.scheme = scheme
        self.host = host
        self.path = path
        self.query = query
        self.forwarded_for = forwarded_for
        self.route = route
        self.sub = sub
        self.user = user
        self.jar = jar
        self.asks_missing = asks_missing
        self.allowed = False
        self.refusal = None

    def missing_at(self, path: str) -> Scope:
        """The same request's scope at ``path``, an address that cannot exist (no query),
        asked for to show the site's own missing page."""
        return Scope(request_id=self.request_id, client_ip=self.client_ip,
                     trusted=self.trusted, scheme=self.scheme, host=self.host, path=path,
                     query="", forwarded_for=self.forwarded_for, route=self.route,
                     sub=self.sub, user=self.user, jar=self.jar, asks_missing=True)


class ScopeBuilder:
    """Decides, once per request, who the client is and which path it asked for."""

    def __init__(self, config: Config) -> None:
        self.networks = config.server.trusted_proxies
        # A random prefix per process and a counter: unique ids without a syscall each.
        self._format = secrets.token_hex(4) + "%08x"
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        """A new request id, unique across processes and restarts."""
        return self._format % next(self._ids)

    def is_trusted(self, address: str) -> bool:
        """Whether an address is inside ``server.trusted_proxies``."""
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def build(self, request: web.Request) -> Scope:
        """The request's scope; BadRequest for an ambiguous or malformed target."""
        peer = request.remote or ""
        trusted = self.is_trusted(peer)
        headers = request.headers
        client_ip = peer
        forwarded_for = peer
        if trusted and "X-Forwarded-For" in headers:
            chain = [part.strip() for part in ",".join(headers.getall("X-Forwarded-For")).split(",")
                     if part.strip()]
            forwarded_for = ", ".join([*chain, peer])
            # The client is the right-most address not itself a trusted proxy.
            for hop in reversed(chain):
                client_ip = hop
                if not self.is_trusted(hop):
                    break
        scheme = request.scheme
        host = request.host
        request_id = ""
        if trusted:
            scheme = headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip() or scheme
            host = headers.get("X-Forwarded-Host", host).split(",")[0].strip() or host
            request_id = headers.get("X-Request-Id", "")
        if not request_id or not _REQUEST_ID.match(request_id):
            request_id = self.next_id()
        raw = request.raw_path
        if not raw.startswith("/"):
            raise BadRequest("the request target must be a path", code="bad_path")
        raw_path, _, query = raw.partition("?")
        raw_path = raw_path.partition("#")[0]
        return Scope(request_id=request_id, client_ip=client_ip, trusted=trusted, scheme=scheme,
                     host=host, path=normalize_path(raw_path), query=query,
                     forwarded_for=forwarded_for)
