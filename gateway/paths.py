"""Request-path normalization and glob matching.

The path a request is authorized on is the path forwarded upstream, so it is normalized
once here, and every spelling that two servers could read differently is refused.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Final, TypeAlias
from urllib.parse import unquote, urljoin, urlsplit

import idna

from gateway.errors import BadRequest

MAX_PATH_BYTES: Final = 8192

_HEX: Final = "0123456789abcdefABCDEF"
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters a browser would have percent-encoded in a path (WHATWG path percent-encode
# set); encoding them gives one canonical spelling that any URL library forwards as is.
_ENCODE_RAW: Final = frozenset(' "<>`{}')
# Raw characters that change how the target is split or read by some servers.
_REFUSED_RAW: Final = {
    "\\": "a backslash",
    ";": "a ';' path parameter",
    "?": "a '?' inside the path",
    "#": "a '#' inside the path",
}
_REFUSED_BYTES: Final = {
    0x2F: "an encoded slash (%2F)",
    0x5C: "an encoded backslash (%5C)",
    0x3B: "an encoded ';' (%3B)",
}
# "%25" followed by one of these is a second layer of encoding around a byte that would
# be refused or would turn into a dot segment if some later hop decoded it again.
_DOUBLE_ENCODED: Final = re.compile(r"%25(2[eEfF]|5[cC]|3[bB]|[01][0-9a-fA-F]|7[fF])")


def _bad(reason: str) -> BadRequest:
    return BadRequest(f"The request path is ambiguous: it contains {reason}.", code="bad_path")


def _is_control(byte: int) -> bool:
    return byte < 0x20 or byte == 0x7F


def _canonical_encoding(raw: str) -> str:
    """Decode unreserved escapes, uppercase the rest, encode raw characters a URI can't hold."""
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        ch = raw[i]
        if ch == "%":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise _bad(f"an invalid percent-encoding near {raw[i:i + 3]!r}")
            byte = int(pair, 16)
            if _is_control(byte):
                raise _bad(f"an encoded control character (%{pair.upper()})")
            if byte in _REFUSED_BYTES:
                raise _bad(_REFUSED_BYTES[byte])
            decoded = chr(byte)
            out.append(decoded if decoded in _UNRESERVED else "%" + pair.upper())
            i += 3
            continue
        code = ord(ch)
        if _is_control(code):
            raise _bad("a control character")
        if ch in _REFUSED_RAW:
            raise _bad(_REFUSED_RAW[ch])
        if code > 0x7F or ch in _ENCODE_RAW:
            try:
                data = ch.encode("utf-8")
            except UnicodeEncodeError:
                raise _bad("a character that is not valid UTF-8") from None
            out.append("".join(f"%{b:02X}" for b in data))
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _check_text(encoded: str) -> None:
    """Refuse bytes that are not strict UTF-8 (overlong forms included) or are controls."""
    try:
        text = unquote(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise _bad("bytes that are not valid UTF-8") from None
    # C0 and DEL were refused byte by byte; this catches C1 controls spelled as UTF-8.
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise _bad("an encoded control character")


def _remove_dot_segments(path: str) -> str:
    """Merge repeated slashes, then resolve "." and ".." (clamped at the root)."""
    stack: list[str] = []
    trailing = False
    for segment in path.split("/")[1:]:
        trailing = segment in ("", ".", "..")
        if segment == "..":
            if stack:
                stack.pop()
        elif segment not in ("", "."):
            stack.append(segment)
    if not stack:
        return "/"
    return "/" + "/".join(stack) + ("/" if trailing else "")


def _normalize_path(raw: str) -> str:
    """Return the one canonical spelling of a raw (still percent-encoded) request path.

    Raises BadRequest (code ``bad_path``) for anything two servers could read differently.
    """
    if not isinstance(raw, str) or not raw.startswith("/"):
        raise BadRequest("The request path must start with '/'.", code="bad_path")
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BadRequest(f"The request path is longer than {MAX_PATH_BYTES} bytes.",
                         code="bad_path")
    encoded = _canonical_encoding(raw)
    _check_text(encoded)
    double = _DOUBLE_ENCODED.search(encoded)
    if double is not None:
        raise _bad(f"a double percent-encoding ({double.group(0)})")
    result = _remove_dot_segments(encoded)
    # Encoding raw characters can lengthen the path; the limit holds for the result too.
    if len(result) > MAX_PATH_BYTES:
        raise BadRequest(f"The request path is longer than {MAX_PATH_BYTES} bytes.",
                         code="bad_path")
    return result


def _decoded(path: str) -> str:
    """Fully percent-decode a path returned by normalize_path, for matching only."""
    return unquote(path, encoding="utf-8", errors="strict")


def _glob_pieces(text: str) -> tuple[list[list[list[str]]], list[bool], bool]:
    """Split a glob at its ``**`` gaps; a piece is its ``*``-separated parts (regex atoms).

    Also returns, per gap, whether the next piece must follow a "/" (``/**/``), and whether
    the glob ends in ``/**``.
    """
    pieces: list[list[list[str]]] = [[[]]]
    gaps: list[bool] = []
    tail = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "*":
            pieces[-1][-1].append("[^/]" if ch == "?" else re.escape(ch))
            i += 1
            continue
        j = i
        while j < n and text[j] == "*":
            j += 1
        if j - i == 1:
            pieces[-1].append([])
        else:
            fixed = pieces[-1][-1]
            after_slash = bool(fixed) and fixed[-1] == "/"
            if after_slash and j == n:
                fixed.pop()  # a final "/**" also matches the prefix without its slash
                tail = True
            else:
                slash = after_slash and j < n and text[j] == "/"
                gaps.append(slash)
                pieces.append([[]])
                j += 1 if slash else 0
        i = j
    return pieces, gaps, tail


def _piece_regex(parts: list[list[str]], last: bool) -> str:
    # Taking the leftmost occurrence of each part after a "*" never loses a match (what
    # follows can only be more "*" or "**"), so those choices are atomic and a long path
    # cannot make the engine retry them. Only a final part must sit at the very end.
    out = ["".join(parts[0])]
    for index, atoms in enumerate(parts[1:], start=1):
        part = "".join(atoms)
        if last and index == len(parts) - 1:
            out.append(f"[^/]*{part}")
        else:
            out.append(f"(?>[^/]*?{part})")
    return "".join(out)


def _last_after_gap(parts: list[list[str]], slash: bool) -> str:
    if slash:
        return ".*(?<=/)" + _piece_regex(parts, True)
    if len(parts) > 1 and "/" not in parts[0]:
        # ".*" is "(?:.*/)?[^/]*"; within that last segment the leftmost start of the
        # piece is as good as any, so trying every start (quadratic) is not needed.
        first = "".join(parts[0])
        return f"(?:.*/)?(?>[^/]*?{first})" + _piece_regex([[], *parts[1:]], True)
    return ".*" + _piece_regex(parts, True)


def glob_regex(pattern: str) -> str:
    """Translate a path glob into a regular expression source (without anchors).

    ``*`` and ``?`` stay within one segment; ``**`` crosses segments, and ``/**`` also
    matches nothing at all, so ``/admin/**`` covers ``/admin`` itself.
    """
    # Patterns are compared with decoded paths, so a pattern copied from an address bar
    # (``/guides/caf%C3%A9``) means what it says.
    pieces, gaps, tail = _glob_pieces(unquote(pattern))
    last = len(pieces) - 1
    out = [_piece_regex(pieces[0], last == 0)]
    for index, (slash, piece) in enumerate(zip(gaps, pieces[1:], strict=True), start=1):
        if index == last:
            out.append(_last_after_gap(piece, slash))
        else:
            # For a piece between two "**", the earliest end is always a safe choice.
            after = "(?<=/)" if slash else ""
            out.append(f"(?>.*?{after}{_piece_regex(piece, False)})")
    if tail:
        out.append("(?:/.*)?")
    return "".join(out)


class Glob:
    """One compiled path glob; ``match`` is case-sensitive and takes a decoded path."""

    __slots__ = ("_regex", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._regex = re.compile(glob_regex(pattern), re.DOTALL)

    def match(self, path: str) -> bool:
        """Whether the whole decoded path matches the pattern."""
        return self._regex.fullmatch(path) is not None

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """Compile a path glob once and return its matcher."""
    return Glob(pattern).match


class GlobSet:
    """Several globs compiled into one regular expression; order is kept for ``first``."""

    __slots__ = ("_regex", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        # Each alternative has exactly one capturing group (the glob regexes only use
        # non-capturing ones), so ``lastindex`` names the first pattern that matched.
        source = "|".join(f"({glob_regex(p)})" for p in self.patterns)
        self._regex = re.compile(source, re.DOTALL) if self.patterns else None

    def match(self, path: str) -> bool:
        """Whether any pattern matches the decoded path."""
        return self._regex is not None and self._regex.fullmatch(path) is not None

    def first(self, path: str) -> int | None:
        """Index of the first pattern (in the given order) that matches, or None."""
        if self._regex is None:
            return None
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        return found.lastindex - 1 if found.lastindex is not None else None

    def __len__(self) -> int:
        return len(self.patterns)

    def __repr__(self) -> str:
        return f"GlobSet({list(self.patterns)!r})"


# The same few paths are asked for again and again; results (never refusals) are remembered.
_CACHEABLE: Final = 1024
_cached_normalize: Final = lru_cache(maxsize=4096)(_normalize_path)
_cached_decoded: Final = lru_cache(maxsize=4096)(_decoded)


def normalize_path(raw: str) -> str:
    """The one normalized form of a raw request path (see ``_normalize_path``)."""
    return _cached_normalize(raw) if len(raw) <= _CACHEABLE else _normalize_path(raw)


def decoded(path: str) -> str:
    """A normalized path fully percent-decoded, for matching (see ``_decoded``)."""
    return _cached_decoded(path) if len(path) <= _CACHEABLE else _decoded(path)


def relative_to_base(path: str, base: str) -> str | None:
    """A normalized request path, decoded and relative to the docs base path (None when it
    lies outside it)."""
    if base:
        if path != base and not path.startswith(base + "/"):
            return None
        path = path[len(base):] or "/"
    try:
        return decoded(path)
    except UnicodeDecodeError:
        return None


#: Suffixes of precompressed copies of a file (as gzip_static, brotli_static or a build
#: step write them beside it: ``page.html.gz``).
PACKINGS: Final = frozenset({"gz", "br", "zst", "zstd", "bz2", "xz", "lz4", "lzma", "z", "zz",
                      "deflate", "sz"})
#: Suffixes of files a browser is told are pages.
PAGE_SUFFIXES: Final = (".html", ".htm", ".xhtml", ".xht", ".shtml")


def packing_of(path: str) -> tuple[str, str]:
    """A path split into the file it is a precompressed copy of and the packing suffix
    (lower case); ``(path, "")`` for a path that names no such copy."""
    stem, dot, suffix = path.rpartition(".")
    if dot and "/" not in suffix and suffix.lower() in PACKINGS:
        return stem, suffix.lower()
    return path, ""


def packed_page(path: str) -> bool:
    """Whether a path names a precompressed copy of a page (``/admin/index.html.gz``)."""
    stem, packing = packing_of(path)
    return bool(packing) and stem.lower().endswith(PAGE_SUFFIXES)


def copy_of_pages(rel: str) -> list[str]:
    """The spellings of the page a file holds the source text of (none for most paths):
    a Markdown copy (``a/index.md``, ``a.md``, as mkdocs-llmstxt writes one beside each
    page, ``a.html.md`` as llmstxt.org names one), or Sphinx's copy of a page's source
    (``_sources/a/b.rst.txt``, or ``_sources/a/b.rst`` with ``html_sourcelink_suffix =
    ""``)."""
    at = rel.lower().rfind("/_sources/") if "_" in rel else -1
    if at < 0:
        stem = rel[:-3]
        if rel[-3:].lower() != ".md" or stem.endswith("/"):
            return []
        return [path for path in _page_addresses(stem) if path != rel]
    # The document's name, less ".txt" and less the source's own suffix (.rst, .md,
    # .ipynb) where it has one (older Sphinx wrote a.txt for a.rst).
    doc = rel[at + len("/_sources/"):]
    if doc[-4:].lower() == ".txt":
        doc = doc[:-4]
    stem, dot, ext = doc.rpartition(".")
    names = (doc, stem) if dot and "/" not in ext else (doc,)
    return [path for name in names if name and not name.endswith("/")
            for path in _page_addresses(rel[:at + 1] + name)]


def _page_addresses(page: str) -> list[str]:
    """Where a static host serves the page built as ``page``: ``page.html``, the folder
    ``page/`` (dirhtml, directory URLs), ``page`` (clean URLs), and for an index page the
    folder it is the index of."""
    found = [page + ".html", page + "/", page]
    if page.lower().endswith("/index"):
        found.append(page[:-len("index")])
    return found


# Full stops that IDNA reads as a dot between labels.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


#: A host longer than this (written beyond ASCII, or escaped, before it is mapped) is
#: read as none: a name has at most 253 characters, and one so long costs time to map.
MAX_HOST: Final = 300


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 address as browsers read it: decimal, 0x hex or 0-led octal."""
    if len(part) > 40:
        return None  # more than 32 bits in any base, and too long for int() to read
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


def _mapped(text: str) -> str | None:
    """A host's text as the host mapping of browsers reads it: full-width forms and IDNA
    dots folded, and (UTS 46) the characters browsers ignore dropped (a soft hyphen, a
    zero-width space, variation selectors: "local\u00adhost" is localhost); None when the
    mapping refuses it."""
    text = unicodedata.normalize("NFKC", text).translate(_DOTS)
    if text.isascii():
        return text
    try:
        return idna.uts46_remap(text, std3_rules=False, transitional=False)
    except idna.IDNAError:
        return None


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
        v4 = address.ipv4_mapped
        return str(v4) if v4 is not None else f"[{address.compressed}]"
    mapped = _mapped(host)
    if mapped is None:
        return None
    host = mapped.lower()
    if not host or any(c in host for c in " <>@[]^|%/\\?#"):
        return None
    return _ipv4(host) or _ascii_host(host.removesuffix("."))


def _ascii_host(host: str) -> str | None:
    """A mapped domain in its ASCII form, as browsers send it (a label beyond ASCII as
    ``xn--`` and its Punycode): "b\u00fccher.test" and "xn--bcher-kva.test" are one host.
    None for an ``xn--`` label that is no Punycode of a mapped label (browsers refuse it)."""
    labels: list[str] = []
    for label in host.split("."):
        if not label.isascii():
            labels.append("xn--" + label.encode("punycode").decode("ascii"))
            continue
        if label.startswith("xn--"):
            try:
                unicode = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, IndexError):
                return None
            if unicode.isascii() or _mapped(unicode) != unicode:
                return None
        labels.append(label)
    return ".".join(labels)


def browser_host(hostport: str) -> str:
    """A URL's host and port as Chromium reads them when they hold a percent escape or
    anything but ASCII: decoded and mapped (UTS 46) whole, brackets and what follows them
    included, before they are split: with a zero-width space inside the brackets, a
    full-width bracket, a word joiner after them, or escaped ("%5B::1%5D"), [::1] is
    [::1]."""
    hostport = unquote(hostport)
    return _mapped(hostport) or hostport


def host_and_port(authority: str) -> tuple[str, str | None]:
    """A URL authority's host and port (None: no port written), read as a browser reads
    them (``browser_host``)."""
    hostport = authority.rpartition("@")[2]
    if ("%" in hostport or not hostport.isascii()) and len(hostport) <= MAX_HOST:
        hostport = browser_host(hostport)
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            return hostport, None
        after = hostport[close + 1:]
        return hostport[:close + 1], after[1:] if after.startswith(":") else None
    host, colon, port = hostport.partition(":")
    return host, port if colon else None


class LinkTargets:
    """Where links on the docs' pages lead: the docs path (relative to the base path) of
    a link followed from a page's public address, or None when it leaves the docs (another
    origin, the gateway's own endpoints, outside the base path) or cannot be read as one."""

    def __init__(self, public_url: str, route_base: str, base_path: str) -> None:
        public = urlsplit(public_url)
        self.scheme, self.netloc = public.scheme, public.netloc.lower()
        self.host = public.hostname or ""
        # Read from the authority, brackets and all: "[0:0::1]" is the host "[::1]".
        self.host_key = host_key(host_and_port(public.netloc)[0]) or self.host.lower()
        self.port = public.port or DEFAULT_PORTS.get(public.scheme)
        self.origin = f"{public.scheme}://{public.netloc}"
        self.route_base = route_base
        self.base_path = base_path

    def target(self, base: str, location: str) -> str | None:
        """The docs path ``location`` leads to from the public address ``base``."""
        return self.target_from(self.origin + base, location)

    def follow(self, base: str, location: str) -> str | None:
        """The URL ``location`` names from the public address ``base`` (None: unreadable)."""
        try:
            return urljoin(self.origin + base, browser_reference(location))
        except ValueError:
            return None

    def bases(self, base: str, written: Iterable[str]) -> list[str]:
        """The URLs a page at the public address ``base`` may follow its relative links
        from under the ``<base href>`` values ``written`` (those that can be read)."""
        return [url for href in written if (url := self.follow(base, href)) is not None]

    def target_from(self, url: str, location: str) -> str | None:
        """The docs path ``location`` leads to from the URL ``url``, read as a browser reads
        it (WHATWG URL: backslashes as slashes, dot segments resolved as browsers resolve
        them, the default port spelled or not); None when it leaves the docs or cannot be
        read (a link that cannot be read stays as it is: no browser follows it)."""
        try:
            readings = url_readings(location, base_url(url))
            if not readings:
                return None
            scheme, authority, path = readings[0]
            return self._docs_path(scheme, authority, path)
        except (ValueError, BadRequest):
            return None

    def readings(self, url: str, location: str) -> tuple[str, ...] | None:
        """Every docs path ``location`` may lead to from the URL ``url``: as a browser reads
        it, and as a reader that merges repeated slashes before it resolves dot segments
        (``/admin//../``: ``/admin/`` for a browser, ``/`` for that one) or that ends the
        authority at its first "/", "?" or "#" only (``http://a\\@docs.test/admin/``)
        reads it. Empty: it leaves the docs every way it is read. None: it cannot be read
        with certainty (an address the URL libraries refuse, a host or port no browser
        reads, a path the docs server could read otherwise), and so must be taken for a
        page closed to the reader."""
        try:
            readings = url_readings(location, base_url(url))
            found: list[str] = []
            for index, (scheme, authority, path) in enumerate(readings):
                if index > 0 and authority != readings[0][1] \
                        and not self._names_origin(scheme, authority, strict=False):
                    continue  # another authority that names no docs host: not the docs
                target = self._docs_path(scheme, authority, path)
                if target is not None and target not in found:
                    found.append(target)
            return tuple(found)
        except (ValueError, BadRequest):
            return None

    def _names_origin(self, scheme: str, authority: str, *, strict: bool = True) -> bool:
        """Whether a URL's scheme and authority name the public origin (``strict``: raise
        ValueError for a host or port no browser reads; else such a one names none)."""
        if scheme != self.scheme:
            return False
        hostport = authority.rpartition("@")[2]
        host, port_text = host_and_port(authority)
        port = DEFAULT_PORTS.get(scheme)
        if port_text:
            digits = port_text.lstrip("0")  # browsers take any number of leading zeros
            if not (port_text.isascii() and port_text.isdigit()) or len(digits) > 5 \
                    or int(digits or "0") > 65535:
                if strict:
                    raise ValueError("a port no browser reads")
                return False
            port = int(digits or "0")
        if len(hostport) > MAX_HOST:
            return port == self.port  # read as none: judged as the public host's, to be safe
        key = host_key(host)
        if key is not None and key != self.host_key and self.host_key \
                and key.rstrip(".") == self.host_key:
            key = None  # the public host with more final dots: no host a browser reaches
        if key is None:
            if strict:
                raise ValueError("a host no browser reads")
            return False
        return key == self.host_key and port == self.port

    def _docs_path(self, scheme: str, authority: str, path: str) -> str | None:
        """The docs path of a URL read as (scheme, authority, path); None when it leaves the
        docs. Raises ValueError (BadRequest for its path) when it cannot be read."""
        if not self._names_origin(scheme, authority):
            return None
        public = normalize_path(path)
        route_base = self.route_base
        if public == route_base or public.startswith(route_base + "/"):
            return None  # the gateway's own endpoints (its login) are no docs page
        return relative_to_base(public, self.base_path)


#: The ports http and https URLs name when they name none.
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
#: A URL's scheme and its colon, at the start of a reference.
URL_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# What browsers drop from a URL before reading it (WHATWG URL): C0 controls and spaces at
# either end, and tabs and newlines anywhere.
_C0_AND_SPACE: Final = "".join(chr(code) for code in range(0x21))
_TAB_NEWLINE: Final = str.maketrans("", "", "\t\n\r")


def url_text(value: str) -> str:
    """A URL's text as a browser reads it: without the C0 controls and spaces around it,
    nor the tabs and newlines in it."""
    return value.strip(_C0_AND_SPACE).translate(_TAB_NEWLINE)


def browser_reference(value: str) -> str:
    """A URL reference as a browser reads it before resolving it (``url_text``), and, for
    http, https and a reference with no scheme, with backslashes before its query read as
    slashes."""
    ref = url_text(value)
    scheme = URL_SCHEME.match(ref)
    if "\\" in ref and (scheme is None or scheme.group().lower() in ("http:", "https:")):
        end = _first_of(ref, "?#")
        ref = ref[:end].replace("\\", "/") + ref[end:]
    return ref


# What a browser percent-encodes in a path segment (WHATWG path percent-encode set), beside
# controls, DEL and all beyond ASCII.
_PATH_ENCODE: Final = frozenset(' "#<>?`{}')
# The segments a browser reads as "." and ".." (a dot percent-encoded is a dot).
_SINGLE_DOT: Final = frozenset((".", "%2e"))
_DOUBLE_DOT: Final = frozenset(("..", ".%2e", "%2e.", "%2e%2e"))
_SEPARATORS: Final = re.compile(r"[/\\]")
#: One reading of an http or https URL: its scheme, authority and path.
Reading: TypeAlias = tuple[str, str, str]


def _path_segment(text: str) -> str:
    """A path segment as a browser writes it (WHATWG path percent-encode set)."""
    if text.isascii() and not any(c in _PATH_ENCODE or c < "!" or c == "\x7f" for c in text):
        return text
    out: list[str] = []
    for ch in text:
        if ch in _PATH_ENCODE or ch < "!" or ch >= "\x7f":
            # A lone surrogate raises UnicodeEncodeError (a ValueError): unreadable.
            out.append("".join(f"%{byte:02X}" for byte in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


def browser_path(text: str, segments: list[str]) -> str:
    """The path ``text`` (no query, no fragment), followed from the folder ``segments``, as
    a browser reads it (WHATWG URL path state): "/" and "\\" separate segments; ".", "..",
    and their percent-encoded spellings ("%2e", ".%2E") are dot segments, and ".." takes
    off the last segment even when it is empty ("/admin//../" is "/admin/"); "%2F" is no
    separator."""
    parts = _SEPARATORS.split(text)
    if text[:1] in ("/", "\\"):
        parts = parts[1:]
    path = list(segments)
    last = len(parts) - 1
    for index, part in enumerate(parts):
        lowered = part.lower()
        if lowered in _DOUBLE_DOT:
            if path:
                path.pop()
            if index == last:
                path.append("")
        elif lowered in _SINGLE_DOT:
            if index == last:
                path.append("")
        else:
            path.append(_path_segment(part))
    return "/" + "/".join(path)


def _before_query(text: str) -> str:
    """``text`` up to its query or fragment."""
    return text[:_first_of(text, "?#")]


def _raw_path(text: str, segments: list[str]) -> str:
    """The path ``text`` joined to the folder ``segments`` with no dot segment resolved,
    for a reader that merges slashes first (the server's reading, ``normalize_path``)."""
    text = text.replace("\\", "/")
    if text.startswith("/"):
        return text
    return "/".join(["", *segments, text])


def _first_of(text: str, marks: str) -> int:
    """Where the first of ``marks`` stands in ``text`` (its length: none)."""
    end = len(text)
    for mark in marks:
        found = text.find(mark)
        if 0 <= found < end:
            end = found
    return end


def _with_authority(scheme: str, rest: str) -> list[Reading]:
    """The readings of an http or https URL from its authority on (``rest``): a browser
    ends the authority at the first "/", "\\", "?" or "#"; a reader of RFC 3986 does not
    end it at a backslash (``http://a\\@docs.test/`` names docs.test for it)."""
    end = _first_of(rest, "/\\?#")
    text = _before_query(rest[end:])
    readings = [(scheme, rest[:end], browser_path(text, [])),
                (scheme, rest[:end], _raw_path(text, []))]
    other = _first_of(rest, "/?#")
    if other > end:
        readings.append((scheme, rest[:other], _raw_path(_before_query(rest[other:]), [])))
    return readings


def url_readings(ref: str, base: Reading | None) -> list[Reading]:
    """The readings of the URL reference ``ref`` followed from the URL ``base`` (None: it
    must be absolute): the browser's first (WHATWG URL), then the path joined with no dot
    segment resolved, then, for an authority holding a backslash, the authority as RFC
    3986 ends it. Empty for a URL of another scheme than http and https (or followed
    from one); ValueError for a relative reference with no base."""
    ref = url_text(ref)
    match = URL_SCHEME.match(ref)
    if match is not None:
        scheme = match.group()[:-1].lower()
        if scheme not in DEFAULT_PORTS:
            return []
        rest = ref[match.end():]
        if base is None or scheme != base[0]:
            return _with_authority(scheme, rest.lstrip("/\\"))
        ref = rest  # "http:x" from an http page is the relative "x"
    if base is None:
        raise ValueError("a relative URL with no base")
    scheme, authority, path = base
    slashes = len(ref) - len(ref.lstrip("/\\"))
    if slashes >= 2:
        return _with_authority(scheme, ref[slashes:])
    text = _before_query(ref)
    if slashes == 1:
        return [(scheme, authority, browser_path(text, [])),
                (scheme, authority, _raw_path(text, []))]
    if not text:
        return [(scheme, authority, path)]
    folder = path.split("/")[1:-1]
    return [(scheme, authority, browser_path(text, folder)),
            (scheme, authority, _raw_path(text, folder))]


@lru_cache(maxsize=1024)
def base_url(url: str) -> Reading | None:
    """An absolute URL's browser reading (None: not http or https), to follow links from."""
    readings = url_readings(url, None)
    return readings[0] if readings else None


@lru_cache(maxsize=8)
def link_targets(public_url: str, route_base: str, base_path: str) -> LinkTargets:
    """The ``LinkTargets`` of one configuration (made once)."""
    return LinkTargets(public_url, route_base, base_path)
