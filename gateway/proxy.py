"""Stream a request to the upstream and the response back, with header hygiene."""

from __future__ import annotations

import ipaddress
import re
import ssl
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.config import Config
from gateway.errors import NotFound, UpstreamError, UpstreamTimeout
from gateway.sessions.base import CookieJar
from gateway.upstream import Pool, Response, UpstreamClosed, UpstreamTimedOut
from gateway.user import User

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
FORWARDING = frozenset({
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
    "x-forwarded-prefix", "x-forwarded-server", "x-forwarded-ssl", "forwarded", "x-real-ip",
    "x-original-url", "x-rewrite-url", "x-original-uri", "x-original-method",
})
# Encodings the gateway can undo when it must rewrite an HTML page.
DECODABLE = ("gzip", "deflate", "identity")
CHUNK = 64 * 1024


_DROP, _KEEP, _COOKIE, _ENCODING = object(), object(), object(), object()
# Response headers that carry URLs a browser follows or fetches.
_URL, _REFRESH, _LINK = object(), object(), object()
_URL_HEADERS = {"location": _URL, "content-location": _URL, "refresh": _REFRESH,
                "link": _LINK}


@lru_cache(maxsize=256)
def decodable_encodings(value: str) -> str:
    """An Accept-Encoding narrowed to what the gateway can undo when it rewrites a page."""
    return ", ".join(part for part in (p.strip() for p in value.split(","))
                     if part.split(";")[0].strip().lower() in DECODABLE) or "identity"


def normalize_header_name(name: str) -> str:
    """Lower case, with ``_`` read as ``-`` (how many servers read names)."""
    return name.lower().replace("_", "-")


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


_cached_named_by = lru_cache(maxsize=256)(_named_by)


# What browsers drop from a URL before reading it (WHATWG URL): C0 controls and spaces at
# either end, and tabs and newlines anywhere.
_C0_AND_SPACE = "".join(chr(code) for code in range(0x21))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Full stops that IDNA reads as a dot between labels.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_LINK_TARGET = re.compile(r"<([^>]*)>")


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 address as browsers read it: decimal, 0x hex or 0-led octal."""
    if part[:2].lower() == "0x":
        digits, base, allowed = part[2:], 16, "0123456789abcdefABCDEF"
    elif len(part) > 1 and part[0] == "0":
        digits, base, allowed = part[1:], 8, "01234567"
    else:
        digits, base, allowed = part, 10, "0123456789"
    if not all(c in allowed for c in digits):
        return None
    return int(digits, base) if digits else 0


def _ipv4(host: str) -> str | None:
    """``host`` as a dotted IPv4 address when a browser reads it as one (``127.1``,
    ``0x7f.0.0.1``, ``2130706433``), else None."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not parts or len(parts) > 4 or not parts[-1] \
            or not (parts[-1].isdigit() or parts[-1][:2].lower() == "0x"):
        return None
    numbers: list[int] = []
    for part in parts:
        number = _ipv4_number(part) if part else None
        if number is None:
            return None
        numbers.append(number)
    last = numbers.pop()
    if any(number > 255 for number in numbers) or last >= 256 ** (4 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(numbers):
        value += number << (8 * (3 - index))
    return str(ipaddress.IPv4Address(value))


def host_key(host: str) -> str | None:
    """A host as browsers resolve it, for comparing spellings: percent escapes decoded,
    full-width forms and IDNA dots folded, case and a final dot ignored, IPv4 written the
    usual way, IPv6 compressed (a mapped IPv4 address as the IPv4 one). None: no host a
    browser would accept."""
    host = unquote(host)
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        mapped = address.ipv4_mapped
        return str(mapped) if mapped is not None else f"[{address.compressed}]"
    host = unicodedata.normalize("NFKC", host).translate(_DOTS).lower()
    if not host or any(c in host for c in " <>@[]^|%/\\?#"):
        return None
    return _ipv4(host) or host.removesuffix(".")


def is_loopback_key(key: str) -> bool:
    """Whether a ``host_key`` names this machine (where a loopback upstream listens)."""
    if key in ("[::1]", "[::]", "0.0.0.0", "localhost") or key.endswith(".localhost"):
        return True
    try:
        return ipaddress.IPv4Address(key).is_loopback
    except ValueError:
        return False


def split_reference(value: str) -> tuple[str, str | None, str, bool]:
    """A URL reference as a browser reads it: ``(scheme, authority, rest, path_absolute)``.

    ``authority`` is None when it names none; ``rest`` is the path, query and fragment.
    For http and https any run of slashes or backslashes after the scheme, or none (as when
    the page's scheme differs), leads to the authority, and so do two or more at the start
    of a reference without a scheme.
    """
    ref = value.strip(_C0_AND_SPACE).translate(_TAB_NEWLINE)
    if not ref.isascii():
        # Header bytes arrive as latin-1; browsers read a Location's bytes as UTF-8.
        try:
            ref = ref.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    scheme = ""
    match = _SCHEME.match(ref)
    if match is not None:
        scheme = match.group()[:-1].lower()
        if scheme not in _DEFAULT_PORTS:
            return scheme, None, ref, False
        ref = ref[match.end():].lstrip("/\\")
    else:
        slashes = len(ref) - len(ref.lstrip("/\\"))
        if slashes < 2:
            return "", None, ref, slashes == 1
        ref = ref[slashes:]
    end = len(ref)
    for mark in "/\\?#":
        found = ref.find(mark)
        if 0 <= found < end:
            end = found
    return scheme, ref[:end], ref[end:], False


def _host_and_port(authority: str) -> tuple[str, str | None]:
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            return hostport, None
        after = hostport[close + 1:]
        return hostport[:close + 1], after[1:] if after.startswith(":") else None
    host, colon, port = hostport.partition(":")
    return host, port if colon else None


class UpstreamAddress:
    """The upstream's own address in the URLs it sends back, mapped to the public one.

    A URL names the upstream when its host is one of the upstream's spellings (any
    loopback spelling for a loopback upstream; with ``host_header: preserve`` also the
    public host) and its port is the upstream's. Such a URL becomes the public origin and
    the path below the upstream's base path; every other URL is left as the docs wrote it.
    """

    def __init__(self, upstream_url: str, public_url: str, preserve_host: bool) -> None:
        upstream = urlsplit(upstream_url)
        public = urlsplit(public_url)
        self.public_origin = f"{public.scheme}://{public.netloc}"
        self.base_path = upstream.path.rstrip("/")
        self.port = upstream.port or _DEFAULT_PORTS.get(upstream.scheme, 80)
        key = host_key(_host_and_port(upstream.netloc)[0])
        self.hosts = {key} if key is not None else set()
        if preserve_host and public.hostname:
            public_key = host_key(public.hostname)
            if public_key is not None:
                self.hosts.add(public_key)
        self.loopback = key is not None and is_loopback_key(key)

    def names_upstream(self, scheme: str, authority: str) -> bool:
        """Whether a URL's scheme ("" when it has none) and authority reach the upstream."""
        host, port = _host_and_port(authority)
        key = host_key(host)
        if key is None or not (key in self.hosts or (self.loopback and is_loopback_key(key))):
            return False
        if not port:
            defaults = (_DEFAULT_PORTS[scheme],) if scheme else (80, 443)
            return self.port in defaults
        # A port a browser cannot read is refused by it; rewriting costs nothing then.
        return not port.isdigit() or int(port) == self.port

    def public_path(self, rest: str) -> str:
        """The public path (with query and fragment) for the upstream's ``rest``."""
        end = len(rest)
        for mark in "?#":
            found = rest.find(mark)
            if 0 <= found < end:
                end = found
        path, tail = rest[:end].replace("\\", "/"), rest[end:]
        base = self.base_path
        if base and (path == base or path.startswith(base + "/")):
            path = path[len(base):]
        return ("/" + path.lstrip("/") if not path.startswith("/") else path) + tail

    def rewrite(self, value: str) -> str:
        """A Location or Content-Location value, with the upstream's address made public."""
        scheme, authority, rest, path_absolute = split_reference(value)
        if authority is not None:
            if self.names_upstream(scheme, authority):
                return self.public_origin + self.public_path(rest)
            return value
        base = self.base_path
        if path_absolute and base:
            path = rest.replace("\\", "/")
            if path == base or path.startswith((base + "/", base + "?", base + "#")):
                # Always absolute: a path like "/base//host" must not become "//host".
                return self.public_origin + self.public_path(rest)
        return value

    def rewrite_refresh(self, value: str) -> str:
        """A Refresh value (``5; url=...``), its URL rewritten as ``rewrite`` does."""
        span = refresh_url_span(value)
        if span is None:
            return value
        start, end = span
        url = value[start:end]
        rewritten = self.rewrite(url)
        return value if rewritten == url else value[:start] + rewritten + value[end:]

    def rewrite_link(self, value: str) -> str:
        """A Link value: each ``<url>`` rewritten as ``rewrite`` does."""
        if "<" not in value:
            return value
        return _LINK_TARGET.sub(lambda match: f"<{self.rewrite(match.group(1))}>", value)


def _skip_whitespace(value: str, position: int) -> int:
    while position < len(value) and value[position] in " \t\n\r\f":
        position += 1
    return position


def refresh_url_span(value: str) -> tuple[int, int] | None:
    """Where the URL of a Refresh value lies, read as HTML's declarative refresh reads it;
    None when it names no URL (or is not a refresh a browser follows)."""
    position = _skip_whitespace(value, 0)
    start = position
    while position < len(value) and value[position].isdigit():
        position += 1
    if position == start and not value.startswith(".", position):
        return None
    while position < len(value) and (value[position].isdigit() or value[position] == "."):
        position += 1
    if position >= len(value):
        return None
    if value[position] not in ";, \t\n\r\f":
        return None
    position = _skip_whitespace(value, position)
    if position < len(value) and value[position] in ";,":
        position += 1
    position = _skip_whitespace(value, position)
    if position >= len(value):
        return None
    if value[position] in "Uu":
        position += 1
        if position < len(value) and value[position] in "Rr":
            position += 1
            if position < len(value) and value[position] in "Ll":
                position += 1
                after = _skip_whitespace(value, position)
                if after < len(value) and value[after] == "=":
                    position = _skip_whitespace(value, after + 1)
    quote = ""
    if position < len(value) and value[position] in "'\"":
        quote = value[position]
        position += 1
    end = value.find(quote, position) if quote else -1
    return position, end if end >= 0 else len(value)


# Request key of the Scope built once per request by the error boundary.
SCOPE = "gateway.scope"


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
    #: "gateway" for the gateway's own routes (the metrics label).
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

    # Written out (init=False): compiled, it runs natively; it is made once per request.
    def __init__(self, *, request_id: str, client_ip: str, trusted: bool, scheme: str,
                 host: str, path: str, query: str, forwarded_for: str, route: str = "docs",
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

    def missing_at(self, path: str) -> Scope:
        """The same request's scope at ``path``, an address that cannot exist (no query),
        asked for to show the site's own missing page."""
        return Scope(request_id=self.request_id, client_ip=self.client_ip,
                     trusted=self.trusted, scheme=self.scheme, host=self.host, path=path,
                     query="", forwarded_for=self.forwarded_for, route=self.route,
                     sub=self.sub, user=self.user, jar=self.jar, asks_missing=True)


class Upstream:
    """The pooled HTTP client to the docs upstream."""

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
        self._kinds: dict[str, object] = {}
        self._kinds_trusted: dict[str, object] = {}
        self._response_kinds: dict[str, object] = {}

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
                        extra: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The headers sent upstream: hygiene first, then what the gateway adds."""
        # Beyond the hop-by-hop names (dropped by kind), those the client's Connection names.
        named = connection_named(request.headers)
        out: list[tuple[str, str]] = []
        for name, value in request.headers.items():
            kind = self._kind_of(name, scope.trusted)
            if kind is _DROP:
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
                or self.is_identity_header(name):
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
        return _KEEP

    def filter_cookies(self, header: str) -> str:
        """The Cookie header without the gateway's own cookies."""
        kept = []
        for part in header.split(";"):
            name = part.split("=", 1)[0].strip()
            if name and not self.is_gateway_cookie(name):
                kept.append(part.strip())
        return "; ".join(kept)

    async def open(self, request: web.Request, scope: Scope,
                   extra: Iterable[tuple[str, str]]) -> Response:
        """Send the request upstream (body streamed) and return the response head."""
        assert self.pool is not None
        headers = self.request_headers(request, scope, extra)
        body = request.content.iter_any() if request.body_exists else None
        try:
            response = await self.pool.request(request.method, self.target_for(scope),
                                               headers, body, request.content_length)
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

    def response_headers(self, upstream: Response) -> CIMultiDict[str]:
        """Upstream response headers minus hop-by-hop ones and gateway cookies, with URLs
        that name the upstream's own address (Location, Content-Location, Refresh, Link)
        pointing at the public one."""
        drop = connection_named(upstream.headers)
        kinds = self._response_kinds
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in upstream.headers.items():
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
            elif kind is _REFRESH:
                value = self.address.rewrite_refresh(value)
            elif kind is _LINK:
                value = self.address.rewrite_link(value)
            elif kind is _COOKIE:
                pair = value.split(";", 1)[0]
                cookie_name = pair.split("=", 1)[0].strip() if "=" in pair else ""
                # A nameless cookie comes back from browsers as "value", which could
                # spell one of ours ("=docs_session=x"): drop those too.
                if not cookie_name or self.is_gateway_cookie(cookie_name):
                    continue
            out.add(name, value)
        return out

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


async def stream_body(request: web.Request, upstream: Response,
                      response: web.StreamResponse) -> None:
    """Copy the upstream body to the client chunk by chunk; ``write`` awaits the drain."""
    try:
        while chunk := await upstream.read():
            await response.write(chunk)
        await response.write_eof()
    except (UpstreamClosed, UpstreamTimedOut):
        # Headers are already sent: the only honest signal left is a cut connection,
        # so the client sees a truncated body rather than a complete-looking one.
        if request.transport is not None:
            request.transport.abort()
    except ConnectionResetError:
        pass  # the client went away; the unread upstream connection is dropped below
    finally:
        upstream.release()
