"""Page metadata and script injection for HTML responses: pure functions over bytes.

The head scanner is a small tokenizer rather than a DOM: it skips comments and the
contents of raw-text elements (script, style, title, textarea), so text that merely looks
like a tag there neither declares metadata nor ends the head.
"""

from __future__ import annotations

import codecs
import html
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.htmltokens import attr_text, comment_end

#: Largest decoded body ``decode_body`` returns; anything bigger is treated as a bomb.
MAX_DECODED = 20 * 1024 * 1024

# Possessive quantifiers: a tag that never closes fails in one pass instead of backtracking.
_TAG = re.compile(rb"""<(/?)([A-Za-z][^\s/>]*+)((?:[^>"']++|"[^"]*+"|'[^']*+')*+)>""")
_ATTR = re.compile(rb"""([^\s/>"'=]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]*))?""")
_RAW_TEXT = {name: re.compile(rb"</" + name, re.IGNORECASE)
             for name in (b"script", b"style", b"title", b"textarea")}


@dataclass(frozen=True)
class PageMeta:
    """What a page declares about itself: public, or the groups that may read it."""

    public: bool = False
    groups: tuple[str, ...] | None = None

    @property
    def declared(self) -> bool:
        """Whether the page said anything at all."""
        return self.public or self.groups is not None


@dataclass(frozen=True)
class _Tag:
    start: int
    closing: bool
    name: bytes  # lower case
    attrs: bytes  # the raw text between the name and ">"


@dataclass(frozen=True)
class _Head:
    metas: tuple[dict[bytes, bytes], ...]
    end: int | None  # offset of </head> or <body>; None while the head is still open
    closed_by_head: bool  # True for an explicit </head>, False for <body>


def _attributes(raw: bytes) -> dict[bytes, bytes]:
    """Attribute names (lower case) to unquoted raw values; the first of a name wins."""
    attrs: dict[bytes, bytes] = {}
    for match in _ATTR.finditer(raw):
        name = match.group(1).lower()
        value = match.group(2) or b""
        if value[:1] in (b'"', b"'"):
            value = value[1:-1]
        attrs.setdefault(name, value)
    return attrs


def _tags(buffer: bytes) -> Iterator[_Tag]:
    """Tags in document order; stops where the buffer ends inside a tag or construct."""
    pos = 0
    while True:
        lt = buffer.find(b"<", pos)
        if lt < 0:
            return
        if buffer.startswith(b"<!--", lt):
            # Where a browser ends it: "<!-->" and "<!--->" are whole comments, and "--!>"
            # closes one too, so a tag after them is real (and gated metadata is read).
            comment = comment_end(buffer, lt)
            if comment >= len(buffer) and not buffer.endswith(b">"):
                return
            pos = comment
            continue
        if buffer.startswith((b"<!", b"<?"), lt):
            close = buffer.find(b">", lt + 2)
            if close < 0:
                return
            pos = close + 1
            continue
        match = _TAG.match(buffer, lt)
        if match is None:
            after = buffer[lt + 1:lt + 2]
            if after.isalpha() or (after == b"/" and buffer[lt + 2:lt + 3].isalpha()):
                # A tag that started but never ends: the rest has not arrived (or is broken),
                # and stopping here keeps a scan of hostile input linear.
                return
            pos = lt + 1
            continue
        tag = _Tag(lt, bool(match.group(1)), match.group(2).lower(), match.group(3))
        yield tag
        pos = match.end()
        if not tag.closing and tag.name in _RAW_TEXT:
            end = _RAW_TEXT[tag.name].search(buffer, pos)
            if end is None:
                return
            pos = end.start()


def _scan_head(buffer: bytes) -> _Head:
    metas: list[dict[bytes, bytes]] = []
    for tag in _tags(buffer):
        if tag.closing and tag.name == b"head":
            return _Head(tuple(metas), tag.start, True)
        if not tag.closing and tag.name == b"body":
            return _Head(tuple(metas), tag.start, False)
        if not tag.closing and tag.name == b"meta":
            # A self-closing slash belongs to no value (content=true/> means "true").
            metas.append(_attributes(tag.attrs.removesuffix(b"/")))
    return _Head(tuple(metas), None, False)


def _text(value: bytes) -> str:
    return attr_text(value).strip()


def read_page_meta(head: bytes) -> PageMeta:
    """The ``gateway:public`` / ``gateway:groups`` metas of a page's head (first of each wins).

    An empty ``gateway:groups`` content admits nobody, like ``groups: []`` in a rule.
    """
    public = False
    groups: tuple[str, ...] | None = None
    seen_public = False
    for attrs in _scan_head(head).metas:
        name = _text(attrs.get(b"name", b"")).lower()
        if name == "gateway:public" and not seen_public:
            seen_public = True
            public = _text(attrs.get(b"content", b"")).lower() == "true"
        elif name == "gateway:groups" and groups is None:
            parts = (part.strip() for part in _text(attrs.get(b"content", b"")).split(","))
            groups = tuple(dict.fromkeys(part for part in parts if part))
    return PageMeta(public=public, groups=groups)


def head_complete(buffer: bytes) -> bool:
    """Whether ``buffer`` already holds the end of the head (``</head>`` or ``<body>``)."""
    return _scan_head(buffer).end is not None


def _script_srcs(page: bytes) -> set[str]:
    return {_text(_attributes(tag.attrs).get(b"src", b"")) for tag in _tags(page)
            if tag.name == b"script" and not tag.closing}


def script_offset(page: bytes, tag: bytes) -> int | None:
    """Where ``tag`` goes in ``page``: before ``</head>``, else before ``</body>``, else at
    the end; None when the page already loads a script with the same ``src``."""
    src = next((_text(_attributes(t.attrs).get(b"src", b"")) for t in _tags(tag)), "")
    # Most pages never mention the script, so the full scan is only for those that might.
    if src and (src.encode() in page or html.escape(src).encode() in page) \
            and src in _script_srcs(page):
        return None
    head = _scan_head(page)
    if head.end is not None and head.closed_by_head:
        return head.end
    found = page.lower().rfind(b"</body")
    return found if found >= 0 else len(page)


def insert_at(page: bytes, tag: bytes, at: int | None) -> bytes:
    """``page`` with ``tag`` inserted at ``at`` (as ``script_offset`` tells; None: as is)."""
    return page if at is None else page[:at] + tag + page[at:]


def inject_script(page: bytes, tag: bytes) -> bytes:
    """Insert ``tag`` before ``</head>``, else before ``</body>``, else at the end.

    A page that already loads a script with the same ``src`` is returned unchanged.
    """
    return insert_at(page, tag, script_offset(page, tag))


def script_tag(src: str, *, compat: str | None = None) -> bytes:
    """``<script src="..." defer></script>``; ``compat`` adds ``data-compat`` for the client."""
    extra = f' data-compat="{html.escape(compat, quote=True)}"' if compat else ""
    return f'<script src="{html.escape(src, quote=True)}"{extra} defer></script>'.encode()


def _inflate(data: bytes, wbits: int, limit: int) -> bytes | None:
    out = bytearray()
    while True:
        engine = zlib.decompressobj(wbits)
        out += engine.decompress(data, limit + 1 - len(out))
        if len(out) > limit:
            return None
        if not engine.eof:
            # Within the limit yet unfinished: the input was cut short.
            return None
        data = engine.unused_data
        # gzip allows several members back to back; zlib and raw deflate do not.
        if not data or wbits != zlib.MAX_WBITS | 16:
            return bytes(out)


def decode_body(body: bytes, content_encoding: str | None, *,
                limit: int = MAX_DECODED) -> bytes | None:
    """The body with its Content-Encoding undone, or None when it cannot be (unknown
    encoding such as br or zstd, corrupt or truncated data, or more than ``limit`` bytes)."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    data = body
    try:
        # Codings are listed in the order they were applied, so undo them from the last.
        for coding in reversed(codings):
            decoded: bytes | None
            if coding == "identity":
                decoded = data
            elif coding in ("gzip", "x-gzip"):
                decoded = _inflate(data, zlib.MAX_WBITS | 16, limit)
            elif coding == "deflate":
                # Servers disagree on "deflate": RFC 9110 says zlib-wrapped, some send raw.
                try:
                    decoded = _inflate(data, zlib.MAX_WBITS, limit)
                except zlib.error:
                    decoded = _inflate(data, -zlib.MAX_WBITS, limit)
            else:
                return None
            if decoded is None:
                return None
            data = decoded
    except zlib.error:
        return None
    return data if len(data) <= limit else None


def charset_of(content_type: str | None) -> str:
    """The charset a Content-Type names, lower case; ``utf-8`` when absent or unknown."""
    for param in (content_type or "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            label = value.strip().strip("\"'").lower()
            try:
                codecs.lookup(label)
            except LookupError:
                return "utf-8"
            return label
    return "utf-8"


def is_html(content_type: str | None) -> bool:
    """Whether a Content-Type is an HTML page (``text/html`` or XHTML)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime in ("text/html", "application/xhtml+xml")
