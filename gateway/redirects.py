"""Same-origin redirect validation: return paths, Origin/Referer checks, absolute URLs."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote, urlsplit

from gateway.paths import DEFAULT_PORTS

MAX_RETURN_PATH = 2048

_ENCODED_CONTROL = re.compile(r"%(?:[01][0-9a-fA-F]|7[fF])")
_ENCODED_SLASH = re.compile(r"%(?:2[fF]|5[cC])")
# Everything RFC 3986 allows in a URI reference stays as written ("%" included, so an
# already encoded value is not encoded twice); the rest (space, quotes, angle brackets,
# non-ASCII) is percent-encoded so the value is safe in a Location header.
_URI_SAFE = "!#$%&'()*+,/:;=?@[]~"
# A value is decoded this many times, at most, while looking for a hidden "//", "\" or
# control character that some later hop could decode into existence.
_DECODE_LAYERS = 4


def _default(base_path: str) -> str:
    return base_path + "/"


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def _path_is_plain(path: str) -> bool:
    """Whether the path, and every decoding of it, stays a same-origin path without tricks."""
    if _ENCODED_SLASH.search(path):
        return False
    layer = path
    for _ in range(_DECODE_LAYERS):
        if layer.startswith("//") or "\\" in layer or _has_control(layer):
            return False
        # Browsers resolve dot segments before sending, so a real return path has none;
        # refusing them keeps "/docs/../admin" from leaving the base path.
        if any(segment in (".", "..") for segment in layer.split("/")):
            return False
        peeled = unquote(layer, errors="strict")
        if peeled == layer:
            return True
        layer = peeled
    return False


def safe_return_path(value: object, *, base_path: str = "") -> str:
    """Return ``value`` when it is a same-origin relative path under ``base_path``.

    Anything else (other origins, schemes, tricks, controls, oversize) gives ``base_path + "/"``.
    """
    base = base_path.rstrip("/")
    fallback = _default(base)
    if not isinstance(value, str) or not value or len(value) > MAX_RETURN_PATH:
        return fallback
    if value[0] != "/" or value[1:2] in ("/", "\\"):
        return fallback
    if "\\" in value or _has_control(value) or _ENCODED_CONTROL.search(value):
        return fallback
    try:
        parts = urlsplit(value)
        if parts.scheme or parts.netloc or not _path_is_plain(parts.path):
            return fallback
        safe = quote(value, safe=_URI_SAFE)
    except (ValueError, UnicodeError):
        return fallback
    if base and not (parts.path == base or parts.path.startswith(base + "/")):
        return fallback
    return safe


def _origin_parts(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` with defaults filled in, or None for anything unusual."""
    if not url or url != url.strip() or "\\" in url or _has_control(url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    # An origin never carries user info; a URL that does is not trusted as one.
    if "@" in parts.netloc:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[scheme]


def is_same_origin(url_or_origin: str, public_origin: str) -> bool:
    """Whether an Origin or Referer value has the docs' scheme, host and port."""
    mine = _origin_parts(public_origin)
    theirs = _origin_parts(url_or_origin)
    return mine is not None and theirs is not None and mine == theirs


def post_from_this_site(sec_fetch_site: str | None, origin: str | None,
                        public_origin: str) -> bool | None:
    """Whether a POST comes from a page of the docs origin (the login and logout CSRF rule).

    ``Sec-Fetch-Site`` decides when the browser sends it (only ``same-origin`` passes), then
    ``Origin``. True when neither is sent (not a browser, or one too old to say); None for
    ``Origin: null`` (an opaque origin), which only other proof can settle.
    """
    if sec_fetch_site is not None:
        return sec_fetch_site == "same-origin"
    if origin is None:
        return True
    if origin == "null":
        return None
    return is_same_origin(origin, public_origin)


def absolute_url(public_url: str, path: str) -> str:
    """Join the docs' origin with a validated path (which already holds any base path)."""
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError("absolute_url needs a path that starts with a single '/'")
    parts = urlsplit(public_url)
    return f"{parts.scheme}://{parts.netloc}{path}"
