"""URLs the upstream sends back (Location, Content-Location, Refresh, Link) read as a
browser reads them, so one naming the upstream's own address is told apart from any other."""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

from gateway.paths import DEFAULT_PORTS, MAX_HOST, URL_SCHEME, host_and_port, host_key, url_text

# A Link value's URLs, each up to the first ">" after its "<" (no backtracking: a value of
# many "<" and no ">" must not take quadratic time).
_LINK_TARGET = re.compile(r"<([^>]*+)>")
#: A Link value with more "<" than this is not sent on: no page needs so many.
LINK_TARGETS: Final = 64


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
    ref = url_text(value)
    scheme = ""
    match = URL_SCHEME.match(ref)
    if match is not None:
        scheme = match.group()[:-1].lower()
        if scheme not in DEFAULT_PORTS:
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
        self.port = upstream.port or DEFAULT_PORTS.get(upstream.scheme, 80)
        key = host_key(host_and_port(upstream.netloc)[0])
        self.hosts = {key} if key is not None else set()
        if preserve_host and public.hostname:
            public_key = host_key(public.hostname)
            if public_key is not None:
                self.hosts.add(public_key)
        self.loopback = key is not None and is_loopback_key(key)

    def names_upstream(self, scheme: str, authority: str) -> bool:
        """Whether a URL's scheme ("" when it has none) and authority reach the upstream."""
        host, port = host_and_port(authority)
        key = host_key(host) if len(host) <= MAX_HOST else None
        if key is None:
            # A host read in no way a browser would: but for one escaped or written
            # beyond ASCII, where browsers read more than is modelled here, it goes to
            # the public address rather than perhaps to the upstream's.
            hostport = authority.rpartition("@")[2]
            return "%" in hostport or not hostport.isascii()
        if not (key in self.hosts or (self.loopback and is_loopback_key(key))):
            return False
        if not port:
            defaults = (DEFAULT_PORTS[scheme],) if scheme else (80, 443)
            return self.port in defaults
        # A port a browser cannot read is refused by it; rewriting costs nothing then.
        digits = port.lstrip("0") or "0"
        return not (port.isascii() and port.isdigit()) or len(digits) > 5 \
            or int(digits) == self.port

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

    def rewrite_refresh(self, value: str) -> str | None:
        """A Refresh value (``5; url=...``), its URL rewritten as ``rewrite`` does; None
        (not sent) when a browser may read its URL otherwise, and so read it leads to the
        upstream (Chromium ends a quoted URL at the last quote, HTML at the first)."""
        span = refresh_url_span(value)
        if span is None:
            return value
        start, end = span
        url = value[start:end]
        rewritten = self.rewrite(url)
        if rewritten != url:
            value = value[:start] + rewritten + value[end:]
        other = refresh_url_span(value, last_quote=True)
        if other is not None and other != refresh_url_span(value):
            url = value[other[0]:other[1]]
            if self.rewrite(url) != url:
                return None
        return value

    def rewrite_link(self, value: str) -> str | None:
        """A Link value: each ``<url>`` rewritten as ``rewrite`` does; None (not sent) when
        it holds too many, or a URL that a browser may read from another ``<`` (one in a
        quoted parameter, say) still leads to the upstream."""
        if "<" not in value:
            return value
        if value.count("<") > LINK_TARGETS:
            return None
        value = _LINK_TARGET.sub(lambda match: f"<{self.rewrite(match.group(1))}>", value)
        start = value.find("<")
        while start >= 0:
            end = value.find(">", start)
            if end < 0:
                break
            url = value[start + 1:end]
            if self.rewrite(url) != url:
                return None
            start = value.find("<", start + 1)
        return value


def _skip_whitespace(value: str, position: int) -> int:
    while position < len(value) and value[position] in " \t\n\r\f":
        position += 1
    return position


def refresh_url_span(value: str, last_quote: bool = False) -> tuple[int, int] | None:
    """Where the URL of a Refresh value lies, read as HTML's declarative refresh reads it
    (with ``last_quote``, a quoted URL ends at the last quote, as Chromium reads it); None
    when it names no URL (or is not a refresh a browser follows)."""
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
    end = (value.rfind(quote) if last_quote else value.find(quote, position)) if quote else -1
    return position, end if end >= position else len(value)

