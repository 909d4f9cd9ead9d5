"""URLs the upstream sends back (Location, Content-Location, Refresh, Link) read as a
browser reads them, so one naming the upstream's own address is told apart from any other."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import unquote, urlsplit

import idna

from gateway.paths import DEFAULT_PORTS, URL_SCHEME, url_text

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
        if address.scope_id is not None:
            return None  # browsers take no zone in a URL
        mapped = address.ipv4_mapped
        return str(mapped) if mapped is not None else f"[{address.compressed}]"
    host = unicodedata.normalize("NFKC", host).translate(_DOTS).lower()
    if not host.isascii():
        # The mapping browsers apply to a host (UTS 46) drops characters they ignore (a soft
        # hyphen, a zero-width space, variation selectors): "local\u00adhost" is localhost.
        try:
            host = idna.uts46_remap(host, std3_rules=False, transitional=False)
        except idna.IDNAError:
            return None
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


def browser_host(hostport: str) -> str:
    """A URL's host and port as Chromium reads them when they hold a percent escape or
    anything but ASCII: decoded and mapped (UTS 46) whole, brackets and what follows them
    included, before they are split: "[::1\u200b]", "\\uff3b::1]", "[::1]\u2060:80" and
    "%5B::1%5D" all name [::1]."""
    mapped = unicodedata.normalize("NFKC", unquote(hostport)).translate(_DOTS)
    if not mapped.isascii():
        try:
            mapped = idna.uts46_remap(mapped, std3_rules=False, transitional=False)
        except idna.IDNAError:
            pass
    return mapped


def _host_and_port(authority: str) -> tuple[str, str | None]:
    hostport = authority.rpartition("@")[2]
    if "%" in hostport or not hostport.isascii():
        hostport = browser_host(hostport)
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
        self.port = upstream.port or DEFAULT_PORTS.get(upstream.scheme, 80)
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

