"""Reading HTML bytes the way a browser's tokenizer does: tags, attributes, comments, raw text.

Pure functions over a page and an offset. Tag and attribute syntax follow the HTML rules
(quotes count only after ``=``, ``/`` and the ASCII whitespace separate attributes), so
what these functions call a tag is what a browser calls one. Nothing here knows about
elements nesting: that is ``gateway.fragments``' stack model.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

_ATTR = re.compile(rb"""[\t\n\f\r /]*+(?:(>)|([^\t\n\f\r />][^\t\n\f\r />=]*+)
    (?:[\t\n\f\r ]*+(=)[\t\n\f\r ]*+(?:"([^"]*+)"|'([^']*+)'|([^\t\n\f\r >"'][^\t\n\f\r >]*+))?)?)
    """, re.X)
_TAG_NAME = re.compile(rb"[^\t\n\f\r />]*+")
# A whole tag in one match, by the same rules as _ATTR (quotes count only after "="); group 1
# is the lower-case-able name, group 2 the gap before ">" (a "/" there closes the tag).
_WHOLE_TAG = re.compile(rb"""</?([A-Za-z][^\t\n\f\r />]*+)
    (?:[\t\n\f\r /]*+[^\t\n\f\r />][^\t\n\f\r />=]*+
       (?:[\t\n\f\r ]*+=[\t\n\f\r ]*+
          (?:"[^"]*+"|'[^']*+'|[^\t\n\f\r >"'][^\t\n\f\r >]*+|(?=>))
        |(?![\t\n\f\r ]*+=)))*+
    ([\t\n\f\r /]*+)>""", re.X)
_NO_ATTRS: dict[bytes, list[bytes]] = {}
_COMMENT_END = re.compile(rb"--!?>")


def words(text: str) -> frozenset[bytes]:
    """A set of tag names from a space-separated list."""
    return frozenset(text.encode().split())


#: Elements whose content is text up to their own end tag (no markup inside).
RAW_TEXT = words("script style xmp iframe noembed noframes textarea title")


def attr_text(raw: bytes) -> str:
    """An attribute value as text: UTF-8 (lenient) with character references resolved."""
    return html.unescape(raw.decode("utf-8", errors="replace"))


def attr_value(attrs: dict[bytes, list[bytes]], name: bytes) -> str:
    """An attribute's first value as stripped text ("" when absent)."""
    values = attrs.get(name)
    return attr_text(values[0]).strip() if values else ""


@dataclass(frozen=True, slots=True)
class Tag:
    """One start or end tag: where it ends, its lower-case name and its attributes."""

    end: int
    name: bytes
    attrs: dict[bytes, list[bytes]]
    self_closing: bool


def bare_tag(page: bytes, start: int) -> Tag | None:
    """The complete tag at ``start`` read in one match, its attributes left unread
    (``attrs`` is empty); None when it is not one simple match (then use ``read_tag``)."""
    whole = _WHOLE_TAG.match(page, start)
    if whole is None:
        return None
    return Tag(whole.end(), whole.group(1).lower(), _NO_ATTRS, whole.group(2).endswith(b"/"))


def read_tag(page: bytes, start: int) -> Tag | None:
    """The tag at ``start`` (``<name`` or ``</name``), or None when the page ends inside it."""
    at = start + (2 if page.startswith(b"</", start) else 1)
    name_end = _TAG_NAME.match(page, at)
    assert name_end is not None
    name = page[at:name_end.end()].lower()
    attrs: dict[bytes, list[bytes]] = {}
    pos = name_end.end()
    while True:
        step = _ATTR.match(page, pos)
        if step is None:
            return None
        if step.group(1):
            gt = step.start(1)
            closing = gt > step.start() and page[gt - 1] == 0x2F
            return Tag(step.end(), name, attrs, closing)
        pos = step.end()
        if step.group(3) and step.lastindex == 3 and (pos >= len(page) or page[pos] in b"\"'"):
            return None  # a quoted value that never closes: the rest is inside the tag
        value = step.group(4) or step.group(5) or step.group(6) or b""
        attrs.setdefault(step.group(2).lower(), []).append(value)


#: What ``token_at`` found at a ``<``: a start tag, an end tag, a comment (bogus ones too),
#: text (a ``<`` that opens nothing), or a tag the page ends inside (a browser drops it).
START, END, COMMENT, TEXT, UNFINISHED = range(5)


def token_at(page: bytes, lt: int, *, cdata: bool = False) -> tuple[int, int, Tag | None]:
    """The markup at ``lt`` (a ``<``) as a browser's tokenizer reads it: its kind, where it
    ends, and for START and END the tag. ``cdata``: ``<![CDATA[`` opens a CDATA section
    (SVG, MathML and XML), which is TEXT up to ``]]>``; elsewhere it is a bogus comment."""
    size = len(page)
    after = page[lt + 1:lt + 2]
    if page.startswith(b"<!--", lt):
        return COMMENT, comment_end(page, lt), None
    if cdata and page.startswith(b"<![CDATA[", lt):
        close = page.find(b"]]>", lt + 9)
        return TEXT, size if close < 0 else close + 3, None
    second = page[lt + 2:lt + 3]
    if after in (b"!", b"?") or (after == b"/" and not second.isalpha()
                                 and second not in (b">", b"")):
        close = page.find(b">", lt + 2)
        return COMMENT, size if close < 0 else close + 1, None
    if after.isalpha() or (after == b"/" and second.isalpha()):
        tag = read_tag(page, lt)
        if tag is None:
            return UNFINISHED, size, None
        return (END if after == b"/" else START), tag.end, tag
    # "</>" is dropped whole; any other "<" is text.
    return TEXT, lt + 3 if page.startswith(b"</>", lt) else lt + 1, None


def comment_end(page: bytes, start: int) -> int:
    """End of the comment opened at ``start`` (``<!--``), with the HTML shortcuts."""
    body = start + 4
    if page.startswith(b">", body):
        return body + 1
    if page.startswith(b"->", body):
        return body + 2
    found = _COMMENT_END.search(page, body)
    return found.end() if found else len(page)


_RAW_END = {name: re.compile(rb"</" + name + rb"[\t\n\f\r />]", re.IGNORECASE)
            for name in (*RAW_TEXT, b"noscript")}


def raw_end(page: bytes, name: bytes, start: int) -> int:
    """Where raw text that began at ``start`` ends: at its element's end tag, or the end.

    ``name`` is one of RAW_TEXT, or ``noscript`` (raw text for a browser with scripting on).
    """
    found = _RAW_END[name].search(page, start)
    return found.start() if found else len(page)


_SCRIPT_DATA = re.compile(rb"<(?:/(?i:script)[\t\n\f\r />]|!--)")
_SCRIPT_ESCAPED = re.compile(rb"-->|<(/?)(?i:script)[\t\n\f\r />]")
_SCRIPT_DOUBLE = re.compile(rb"-->|</(?i:script)[\t\n\f\r />]")


def script_end(page: bytes, start: int) -> int:
    """Where a script's text ends, with the escape rules (``<!--`` then ``<script>``).

    Inside ``<!-- <script>`` a ``</script>`` does not end the element, so a simpler
    reading would end it early and take script text for markup.
    """
    pos, state = start, "data"
    while True:
        if state == "data":
            found = _SCRIPT_DATA.search(page, pos)
            if found is None:
                return len(page)
            if found.group().startswith(b"</"):
                return found.start()
            # The dashes of "<!--" count: "<!-->" and "<!--->" leave the escape at once.
            pos, state = found.end() - 2, "escaped"
        elif state == "escaped":
            found = _SCRIPT_ESCAPED.search(page, pos)
            if found is None:
                return len(page)
            if found.group() == b"-->":
                pos, state = found.end(), "data"
            elif found.group(1):
                return found.start()
            else:
                pos, state = found.end(), "double"
        else:
            found = _SCRIPT_DOUBLE.search(page, pos)
            if found is None:
                return len(page)
            pos, state = found.end(), "data" if found.group() == b"-->" else "escaped"
