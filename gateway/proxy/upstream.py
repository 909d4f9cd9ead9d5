"""The upstream facade: requests to the docs and responses back, with header hygiene."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Final
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web
from aiohttp.streams import EmptyStreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.bounded import HEADER_MEMO, HEADER_MEMO_LENGTH, Bounded, keep_for_head
from gateway.config.model import Config
from gateway.errors import NotFound, UpstreamError, UpstreamTimeout
from gateway.proxy.http1 import Pool, Response, UpstreamClosed, UpstreamTimedOut
from gateway.proxy.location import UpstreamAddress
from gateway.proxy.origin import Answer, Origin, asked_method
from gateway.scope import Scope

HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})


FORWARDING: Final = frozenset({
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
    "x-forwarded-prefix", "x-forwarded-server", "x-forwarded-ssl", "forwarded", "x-real-ip",
    "x-original-url", "x-rewrite-url", "x-original-uri", "x-original-method",
})


# Encodings the gateway can undo when it must rewrite an HTML page.
DECODABLE: Final = ("gzip", "deflate", "identity")


CHUNK: Final = 64 * 1024


_DROP: Final = object()
_KEEP: Final = object()
_COOKIE: Final = object()
_ENCODING: Final = object()
_PARTIAL: Final = object()

#: Range and conditional headers (as servers read names, ``normalize_header_name``): left
#: out of a request whose whole body the gateway reads, so that no 206 or 304 carries or
#: skips bytes it never got to read.
PARTIAL: Final = frozenset({"range", "if-range", "if-none-match", "if-modified-since",
                            "if-match", "if-unmodified-since"})


# Response headers that carry URLs a browser follows or fetches.
_URL: Final = object()
_REFRESH: Final = object()
_LINK: Final = object()


_URL_HEADERS: Final = {"location": _URL, "content-location": _URL, "refresh": _REFRESH,
                "link": _LINK}


@lru_cache(maxsize=256)
def decodable_encodings(value: str) -> str:
    """An Accept-Encoding narrowed to what the gateway can undo when it rewrites a page."""
    return ", ".join(part for part in (p.strip() for p in value.split(","))
                     if part.split(";")[0].strip().lower() in DECODABLE) or "identity"


def normalize_header_name(name: str) -> str:
    """Lower case, with ``_`` and ``.`` read as ``-`` (how many servers read names)."""
    return name.lower().replace("_", "-").replace(".", "-")


#: Headers with which a client asks a server to act on another method than the request's:
#: the gateway decides on the method it reads, so none reaches the upstream.
METHOD_OVERRIDES: Final = frozenset({"x-http-method-override", "x-http-method",
                                     "x-method-override"})


def connection_named(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """Hop-by-hop headers plus those the ``Connection`` header names."""
    if "Connection" not in headers:
        return HOP_BY_HOP
    value = ",".join(headers.getall("Connection"))
    # Few values recur ("keep-alive", "close"); long ones (client-chosen) are not kept.
    return _cached_named_by(value) if len(value) <= 64 else _named_by(value)


def _named_by(connection: str) -> frozenset[str]:
    """Hop-by-hop headers plus those one ``Connection`` value names.

    ``HOP_BY_HOP`` itself when it names nothing more ("keep-alive", "close"): callers skip
    the per-header check for that very set.
    """
    named = HOP_BY_HOP | {normalize_header_name(token.strip()) for token in connection.split(",")}
    return HOP_BY_HOP if named == HOP_BY_HOP else named


_cached_named_by: Final = lru_cache(maxsize=256)(_named_by)


#: Response heads remembered as readers get them (the latest made).
HEAD_MEMO: Final = 128


class Upstream(Origin):
    """The docs upstream, over a pooled HTTP client."""

    def __init__(self, config: Config, is_identity_header: Callable[[str], bool],
                 is_gateway_cookie: Callable[[str], bool]) -> None:
        self.config = config
        assert config.upstream.url is not None
        self.base = URL(config.upstream.url)
        self.base_path = self.base.raw_path.rstrip("/")
        self.origin = str(self.base.origin())
        self.is_identity_header = is_identity_header
        self.is_gateway_cookie = is_gateway_cookie
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=config.upstream.connect_timeout,
            sock_read=config.upstream.timeout)
        self.session: aiohttp.ClientSession | None = None
        self.pool: Pool | None = None
        self.preserve_host = config.upstream.host_header == "preserve"
        self.address = UpstreamAddress(config.upstream.url, config.server.public_url,
                                       self.preserve_host)
        # How pages are learned: an anonymous GET as the public host would send it.
        self.public_host = urlsplit(config.server.public_url).netloc
        self.learn_host = self.public_host if self.preserve_host else self.base.raw_authority
        self._kinds: dict[str, object] = {}
        self._kinds_trusted: dict[str, object] = {}
        self._response_kinds: dict[str, object] = {}
        # Each Cookie header lately sent on, without the gateway's cookies.
        self._kept_cookies: Bounded[str, str] = Bounded(HEADER_MEMO)
        # Each response head lately sent by the upstream, as readers get it.
        self._heads: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}

    async def start(self) -> None:
        """Open the connection pool (one per process) and the client used for WebSockets."""
        https = self.base.scheme == "https"
        self.pool = Pool(
            self.base.host or "127.0.0.1", self.base.port or (443 if https else 80),
            limit=self.config.upstream.max_connections,
            connect_timeout=self.config.upstream.connect_timeout,
            read_timeout=self.config.upstream.timeout,
            ssl=ssl.create_default_context() if https else None,
            server_hostname=self.base.host)
        self.session = aiohttp.ClientSession(
            timeout=self.timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        """Close the pool."""
        if self.pool is not None:
            self.pool.close()
        if self.session is not None:
            await self.session.close()

    def target_for(self, scope: Scope) -> str:
        """The request target sent upstream: its base path plus exactly the authorized path."""
        return self.base_path + scope.path + (f"?{scope.query}" if scope.query else "")

    def url_for(self, scope: Scope) -> URL:
        """The upstream URL: the upstream's base plus exactly the authorized path."""
        return URL.build(scheme=self.base.scheme, authority=self.base.raw_authority,
                         path=self.base_path + scope.path, query_string=scope.query,
                         encoded=True)

    def request_headers(self, request: web.Request, scope: Scope,
                        extra: Iterable[tuple[str, str]],
                        whole: bool = False) -> list[tuple[str, str]]:
        """The headers sent upstream: hygiene first, then what the gateway adds; for a
        ``whole`` answer, no range or condition."""
        # Beyond the hop-by-hop names (dropped by kind), those the client's Connection names.
        named = connection_named(request.headers)
        out: list[tuple[str, str]] = []
        for name, value in request.headers.items():
            kind = self._kind_of(name, scope.trusted)
            if kind is _DROP or (whole and kind is _PARTIAL):
                continue
            if named is not HOP_BY_HOP and normalize_header_name(name) in named:
                continue
            if kind is _COOKIE:
                value = self.filter_cookies(value)
                if not value:
                    continue
            elif kind is _ENCODING:
                value = decodable_encodings(value)
            out.append((name, value))
        out.append(("Host", scope.host if self.preserve_host else self.base.raw_authority))
        out.append(("X-Forwarded-For", scope.forwarded_for))
        out.append(("X-Forwarded-Proto", scope.scheme))
        out.append(("X-Forwarded-Host", scope.host))
        out.append(("X-Request-Id", scope.request_id))
        out.extend(extra)
        return out

    def _kind_of(self, name: str, trusted: bool) -> object:
        """How a client header name is treated; remembered per distinct spelling."""
        cache = self._kinds_trusted if trusted else self._kinds
        kind = cache.get(name)
        if kind is None:
            kind = self._classify(name, trusted)
            if len(cache) < 4096:  # names are client-chosen: keep the memo bounded
                cache[name] = kind
        return kind

    def _classify(self, name: str, trusted: bool) -> object:
        lname = normalize_header_name(name)
        if lname in HOP_BY_HOP or lname in ("host", "content-length") \
                or lname in METHOD_OVERRIDES or self.is_identity_header(name):
            return _DROP  # framing is decided here, never copied from the client
        if lname in FORWARDING and not trusted:
            return _DROP
        if lname in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                     "x-request-id", "forwarded"):
            return _DROP  # set below from what the gateway believes
        if lname == "cookie":
            return _COOKIE
        if lname == "accept-encoding":
            return _ENCODING
        if lname in PARTIAL:
            return _PARTIAL
        return _KEEP

    def filter_cookies(self, header: str) -> str:
        """The Cookie header without the gateway's own cookies."""
        kept = self._kept_cookies.get(header)
        if kept is None:
            kept = "; ".join(part.strip() for part in header.split(";")
                             if (name := part.split("=", 1)[0].strip())
                             and not self.is_gateway_cookie(name))
            if len(header) <= HEADER_MEMO_LENGTH:
                self._kept_cookies.put(header, kept)
        return kept

    async def open(self, request: web.Request, scope: Scope,
                   extra: Iterable[tuple[str, str]], whole: bool = False,
                   validator: str | None = None) -> Response:
        """Send the request upstream (body streamed) and return the response head;
        ``validator``: asked with ``If-None-Match`` (a request read whole has no condition
        of the reader's)."""
        assert self.pool is not None
        headers = self.request_headers(request, scope, extra, whole)
        if validator is not None and whole:
            headers.append(("If-None-Match", validator))
        # A request without a body has aiohttp's empty stream (``body_exists``, read once).
        content = request.content
        body, length = (None, None) if type(content) is EmptyStreamReader \
            else (content.iter_any(), request.content_length)
        try:
            response = await self.pool.request(asked_method(request.method, whole),
                                               self.target_for(scope), headers, body, length)
        except UpstreamTimedOut:
            raise UpstreamTimeout("the docs server did not answer in time") from None
        except UpstreamClosed:
            raise UpstreamError("the docs server closed the connection") from None
        except OSError:
            raise UpstreamError("the docs server cannot be reached") from None
        if scope.asks_missing and not 400 <= response.status < 500:
            # Anything else (a page for every address, an error) is no missing page.
            response.release()
            raise NotFound("the docs server shows no page for a missing address")
        return response

    async def fetch(self, path: str) -> Answer | None:
        """An anonymous GET of ``path`` (below the public base path), gzip accepted."""
        if self.pool is None:
            return None
        target = self.base_path + quote(self.config.server.base_path + path,
                                        safe="/!$&'()*+,;=:@-._~")
        headers = [("Host", self.learn_host), ("Accept", "text/html,application/xhtml+xml"),
                   ("Accept-Encoding", "gzip"), ("X-Forwarded-Host", self.public_host)]
        try:
            return await self.pool.request("GET", target, headers, None, None)
        except (UpstreamTimedOut, UpstreamClosed, OSError):
            return None

    def response_pairs(self, upstream: Answer) -> tuple[tuple[str, str], ...]:
        """Upstream response headers minus hop-by-hop ones and gateway cookies, with URLs
        that name the upstream's own address (Location, Content-Location, Refresh, Link)
        pointing at the public one; remembered for the heads lately seen (the upstream
        sends the same fields for every view of a page)."""
        sent = upstream.header_pairs()
        heads = self._heads
        kept = heads.get(sent)
        if kept is None:
            kept = self._reader_pairs(upstream.headers)
            keep_for_head(heads, sent, kept, sent, HEAD_MEMO)
        return kept

    def _reader_pairs(self, headers: CIMultiDict[str]) -> tuple[tuple[str, str], ...]:
        drop = connection_named(headers)
        kinds = self._response_kinds
        out: list[tuple[str, str]] = []
        joined: dict[object, list[tuple[str, str]]] = {}
        for name, value in headers.items():
            kind = kinds.get(name)
            if kind is None:
                lname = name.lower()
                # Framing is the gateway's: Content-Length too is set by the response itself.
                kind = _DROP if lname in HOP_BY_HOP or lname == "content-length" else \
                    _COOKIE if lname == "set-cookie" else _URL_HEADERS.get(lname, _KEEP)
                if len(kinds) < 4096:  # names are the upstream's: keep the memo bounded
                    kinds[name] = kind
            if kind is _DROP or (drop is not HOP_BY_HOP and name.lower() in drop):
                continue
            if kind is _URL:
                # Readers are never sent to the upstream's own address ("/guide" answered
                # with the upstream's host and port): it is the public one they must use.
                value = self.address.rewrite(value)
            elif kind is _REFRESH or kind is _LINK:
                # Browsers join a field sent on several lines with ", ", and read the
                # join: it is checked so, below.
                joined.setdefault(kind, []).append((name, value))
                continue
            elif kind is _COOKIE:
                pair = value.split(";", 1)[0]
                cookie_name = pair.split("=", 1)[0].strip() if "=" in pair else ""
                # A nameless cookie comes back from browsers as "value", which could
                # spell one of ours ("=docs_session=x"): drop those too.
                if not cookie_name or self.is_gateway_cookie(cookie_name):
                    continue
            out.append((name, value))
        for kind, lines in joined.items():
            value = ", ".join(line for _, line in lines)
            # Read two ways, one of them leading to the upstream: not sent at all.
            checked = self.address.rewrite_refresh(value) if kind is _REFRESH \
                else self.address.rewrite_link(value)
            if checked is not None:
                out.append((lines[0][0], checked))
        return tuple(out)

    async def ping(self) -> bool:
        """Whether the upstream answers at all (any HTTP status)."""
        assert self.pool is not None
        try:
            response = await self.pool.request(
                "HEAD", self.base_path + "/", [("Host", self.base.raw_authority)], None, None)
        except (UpstreamTimedOut, UpstreamClosed, OSError):
            return False
        response.release()
        return True

