"""Server-side gating inside HTML: gated elements removed, user fields filled, per reader.

The rewriter reads bytes the way a browser does: a tokenizer that follows the HTML rules
for tags, attribute quoting, comments and raw text (script, style, textarea...), and a
model of the browser's stack of open elements that decides where an element ends. Where
the model cannot be sure that a browser has closed a gated element, it keeps removing:
it may remove more than the element, never less.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from gateway.user import User, user_get

MARKER = b"data-gateway-"
GROUPS = b"data-gateway-groups"
ANONYMOUS = b"data-gateway-anonymous"
AUTHENTICATED = b"data-gateway-authenticated"
FIELD = b"data-gateway-field"

_HTML, _SVG, _MATH = 0, 1, 2

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


def _words(text: str) -> frozenset[bytes]:
    return frozenset(text.encode().split())


_VOID = _words("area base br col embed hr img input link meta source track wbr basefont "
               "bgsound frame keygen param")
_RAW_TEXT = _words("script style xmp iframe noembed noframes textarea title")
_FIELD_TEXT = _words("textarea title")  # raw text that is not code: a field may fill it
_SPECIAL = _words(
    "address applet area article aside base basefont bgsound blockquote body br button "
    "caption center col colgroup dd details dir div dl dt embed fieldset figcaption figure "
    "footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html iframe img input "
    "keygen li link listing main marquee menu meta nav noembed noframes noscript object ol p "
    "param plaintext pre script search section select source style summary table tbody td "
    "template textarea tfoot th thead title tr track ul wbr xmp")
_BOUNDARY = _words("applet caption html table td th marquee object template")
_FOREIGN_SPECIAL = {_SVG: _words("foreignobject desc title"),
                    _MATH: _words("mi mo mn ms mtext annotation-xml")}
# Elements that may end a gated element they contain: block containers whose end tags a
# browser honours the same way whatever came before (phrasing and p are not among them).
_CLOSERS = _words(
    "address article aside blockquote caption center dd details dialog dir div dl dt fieldset "
    "figcaption figure footer header hgroup li main menu nav ol pre search section summary "
    "table tbody td template tfoot th thead tr ul svg math")
_CLOSES_P = _words(
    "address article aside blockquote center details dialog dir div dl fieldset figcaption "
    "figure footer header hgroup main menu nav ol p search section summary ul h1 h2 h3 h4 h5 "
    "h6 pre listing form plaintext table hr xmp li dd dt")
_HEADINGS = _words("h1 h2 h3 h4 h5 h6")
# End tags a browser honours when the element is in scope; any other end tag only closes
# through elements that are not special.
_SCOPED_END = _words(
    "address article aside blockquote button center details dialog dir div dl fieldset "
    "figcaption figure footer header hgroup listing main menu nav ol pre search section "
    "summary ul p li dd dt h1 h2 h3 h4 h5 h6 applet marquee object")
# A browser re-opens these (with their attributes) after an unexpected close, so a gated
# one keeps its grip on what follows until its own end tag or the end of a marker below.
_FORMATTING = _words("a b big code em font i nobr s small strike strong tt u")
_MARKERS = _words("applet caption marquee object td template th")
_MAX_GHOSTS = 64  # closed formatting elements remembered (gated ones are never forgotten)
_TABLE_PARTS = _words("caption colgroup tbody thead tfoot tr td th")
_TABLE_SCOPE = _words("html table template")
_BREAKOUT = _words(
    "b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img "
    "li listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul var")
# A browser may ignore these start tags (a second body, a form inside a form): never sure.
_DOUBTFUL = _words("html head body form frameset frame")


def has_markers(page: bytes) -> bool:
    """Whether a page may hold gated elements or fields (attribute names ignore case)."""
    return MARKER in page.lower()


def rewrite(page: bytes, user: User | None) -> bytes:
    """The page as ``user`` (None: anonymous) may receive it; unchanged pages are returned as is."""
    codec = _utf16_codec(page)
    if codec is not None:
        text = page.decode(codec, errors="replace")
        out = rewrite(text.encode("utf-8"), user)
        return page if out == text.encode("utf-8") else out.decode("utf-8").encode(codec)
    if not has_markers(page):
        return page
    return _Rewriter(page, user).run()


def _utf16_codec(page: bytes) -> str | None:
    """The UTF-16 flavour of a page that is one (by BOM, or ASCII markup with NUL halves)."""
    if page.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    head = page[:64]
    if len(head) >= 16 and len(head) % 2 == 0 and head.count(0) == len(head) // 2:
        if not any(head[1::2]):
            return "utf-16-le"
        if not any(head[0::2]):
            return "utf-16-be"
    return None


def _text(raw: bytes) -> str:
    return html.unescape(raw.decode("utf-8", errors="replace"))


def allows(attrs: dict[bytes, list[bytes]], user: User | None) -> bool:
    """Whether the gating attributes of one element let ``user`` see it.

    Every gating attribute must agree, so a duplicate can only remove. An empty
    ``data-gateway-groups`` admits nobody, like ``groups: []`` in a rule.
    """
    for value in attrs.get(GROUPS, ()):
        wanted = {part.strip() for part in _text(value).split(",")} - {""}
        if user is None or not wanted.intersection(user.groups):
            return False
    if AUTHENTICATED in attrs and user is None:
        return False
    return not (ANONYMOUS in attrs and user is not None)


def field_text(user: User | None, path: str) -> str | None:
    """The escaped text a field element gets, or None to keep its fallback content."""
    if user is None:
        return None
    value: Any = user_get(user, path.strip())
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | str):
        text = str(value)
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    else:
        return None
    return html.escape(text, quote=True)


@dataclass(frozen=True, slots=True)
class Tag:
    """One start or end tag: where it ends, its lower-case name and its attributes."""

    end: int
    name: bytes
    attrs: dict[bytes, list[bytes]]
    self_closing: bool


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


def _comment_end(page: bytes, start: int) -> int:
    """End of the comment opened at ``start`` (``<!--``), with the HTML shortcuts."""
    body = start + 4
    if page.startswith(b">", body):
        return body + 1
    if page.startswith(b"->", body):
        return body + 2
    found = _COMMENT_END.search(page, body)
    return found.end() if found else len(page)


_RAW_END = {name: re.compile(rb"</" + name + rb"[\t\n\f\r />]", re.IGNORECASE)
            for name in (*_RAW_TEXT, b"noscript")}


def _raw_end(page: bytes, name: bytes, start: int) -> int:
    """Where raw text that began at ``start`` ends: at its element's end tag, or the end."""
    found = _RAW_END[name].search(page, start)
    return found.start() if found else len(page)


_SCRIPT_DATA = re.compile(rb"<(?:/(?i:script)[\t\n\f\r />]|!--)")
_SCRIPT_ESCAPED = re.compile(rb"-->|<(/?)(?i:script)[\t\n\f\r />]")
_SCRIPT_DOUBLE = re.compile(rb"-->|</(?i:script)[\t\n\f\r />]")


def _script_end(page: bytes, start: int) -> int:
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


@dataclass(slots=True)
class _Open:
    """One element on the model's stack of open elements."""

    name: bytes
    ns: int
    gated: bool
    sure: bool
    special: bool
    boundary: bool
    html_inside: bool = False  # an integration point: its children follow the HTML rules
    field: str | None = None
    mark: int = 0  # where the element's content starts, for a field's text
    raw_end: int = -1  # a noscript's end for a browser with scripting on (its text)
    seq: int = 0  # push order


class _Cut(Exception):
    """The page cannot be read unambiguously from here on: drop the rest."""

    def __init__(self, mark: int, at: int) -> None:  # both are page offsets
        super().__init__()
        self.mark = mark
        self.at = at


class _Rewriter:
    """One pass over one page for one reader."""

    def __init__(self, page: bytes, user: User | None) -> None:
        self.page = page
        self.user = user
        # The output: kept runs of the page (start, end, None) and inserted text (at, at, text),
        # in page order; the run being extended is kept apart until something breaks it.
        self.items: list[tuple[int, int, bytes | None]] = []
        self.run_start = self.run_end = 0
        self.stack: list[_Open] = []
        self.at: dict[bytes, list[int]] = {}
        self.specials: list[int] = []
        self.bounds: list[int] = []
        self.stoppers: list[int] = []  # special, but not address/div/p: stops an <li> search
        self.htmls: list[int] = []
        self.selects = 0
        self.skip: int | None = None  # stack index of the outermost gated element open
        self.markers: list[int] = []
        self.noscript_at: list[int] = []
        # Formatting elements closed by something else than their end tag stay in a
        # browser's list of active formatting elements: an end tag of their name goes to
        # the latest of them, and it re-opens them (attributes and all) around what
        # follows. (name, marker index they live under or -1, gated, push order).
        self.ghosts: list[tuple[bytes, int, bool, int]] = []
        self.haunted = 0  # how many ghosts are gated: they keep hiding what follows
        self.pushed = 0
        # Where a browser with scripting on ends each <noscript> text, and where the noscript
        # starts: the two readings of a noscript must meet again at that very point.
        self.noscripts: list[tuple[int, int]] = []
        self.unsure_until = 0
        self.xml = page.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<?xml")
        self.lower = page.lower()

    def run(self) -> bytes:
        try:
            self.scan()
        except _Cut as cut:
            self.truncate(0 if cut.mark and self.gated_root_after(cut.at) else cut.mark)
        self.flush()
        page = self.page
        if len(self.items) == 1 and self.items[0] == (0, len(page), None):
            return page
        result = b"".join(page[start:end] if text is None else text
                          for start, end, text in self.items)
        return self.page if result == self.page else result

    # -- tokens ------------------------------------------------------------------------

    @property
    def hiding(self) -> bool:
        """Whether the current position is inside something gated."""
        return self.skip is not None or self.haunted > 0

    def emit(self, start: int, end: int) -> None:
        if end <= start or self.skip is not None or self.haunted:
            return
        if start != self.run_end:
            self.flush()
            self.run_start = start
        self.run_end = end

    def flush(self) -> None:
        if self.run_end > self.run_start:
            self.items.append((self.run_start, self.run_end, None))
        self.run_start = self.run_end = -1

    def truncate(self, at: int) -> None:
        """Drop the output from page offset ``at`` on."""
        self.flush()
        items = self.items
        while items and items[-1][0] >= at:
            items.pop()
        if items and items[-1][2] is None and items[-1][1] > at:
            items[-1] = (items[-1][0], at, None)

    def insert(self, at: int, text: bytes) -> None:
        """Replace everything already output from page offset ``at`` with ``text``."""
        self.truncate(at)
        self.items.append((at, at, text))

    def gated_root_after(self, start: int) -> bool:
        """Whether a gated <html>, <head> or <body> tag may follow ``start`` (read loosely)."""
        lower = self.lower
        for name in (b"<html", b"<head", b"<body"):
            pos = lower.find(name, start)
            while pos >= 0:
                tag = read_tag(self.page, pos)
                if tag is None or not allows(tag.attrs, self.user):
                    return True
                pos = lower.find(name, pos + 1)
        return False

    def scan(self) -> None:
        page, size, pos = self.page, len(self.page), 0
        while pos < size:
            lt = page.find(b"<", pos)
            if lt < 0:
                self.emit(pos, size)
                return
            self.emit(pos, lt)
            pos = self.markup(lt)
            while self.noscripts and self.noscripts[0][0] < pos:
                end, mark = self.noscripts.pop(0)
                if end != lt:
                    raise _Cut(mark, lt)

    def markup(self, lt: int) -> int:
        page, size = self.page, len(self.page)
        whole = _WHOLE_TAG.match(page, lt)
        if whole is not None:
            # The common case in one match: a complete tag whose attributes do not matter
            # (no gating or field attribute; font and annotation-xml have telling ones).
            end = whole.end()
            name = whole.group(1).lower()
            if self.lower.find(MARKER, lt, end) < 0 and name not in (b"font", b"annotation-xml"):
                simple = Tag(end, name, _NO_ATTRS, whole.group(2).endswith(b"/"))
                if page[lt + 1] == 0x2F:
                    self.end_tag(simple, lt)
                    return end
                return self.start_tag(simple, lt)
        after = page[lt + 1:lt + 2]
        if page.startswith(b"<!--", lt):
            return self.comment(lt, _comment_end(page, lt))
        if page.startswith(b"<![CDATA[", lt) and (self.xml or self.foreign()):
            # Text up to "]]>" in SVG, MathML and XML; a bogus comment up to ">" in HTML.
            close = page.find(b"]]>", lt + 9)
            end = size if close < 0 else close + 3
            self.emit(lt, end)
            return end
        if after in (b"!", b"?") or (after == b"/" and not page[lt + 2:lt + 3].isalpha()
                                     and page[lt + 2:lt + 3] not in (b">", b"")):
            close = page.find(b">", lt + 2)
            return self.comment(lt, size if close < 0 else close + 1)
        if after == b"/" and page[lt + 2:lt + 3].isalpha():
            tag = read_tag(page, lt)
            if tag is None:
                return size  # a browser drops a tag the page ends inside
            self.end_tag(tag, lt)
            return tag.end
        if after.isalpha():
            tag = read_tag(page, lt)
            return size if tag is None else self.start_tag(tag, lt)
        end = lt + 3 if page.startswith(b"</>", lt) else lt + 1
        self.emit(lt, end)
        return end

    def comment(self, start: int, end: int) -> int:
        # A comment that mentions a gating attribute may hide a commented-out gated block,
        # and comments show nothing: drop it for everyone.
        if self.lower.find(MARKER, start, end) < 0:
            self.emit(start, end)
        return end

    # -- start tags --------------------------------------------------------------------

    def start_tag(self, tag: Tag, lt: int) -> int:
        page = self.page
        name, attrs = tag.name, tag.attrs
        breakout = self.foreign() and (name in _BREAKOUT or (
            name == b"font" and bool(attrs.keys() & {b"color", b"face", b"size"})))
        if breakout:
            self.leave_foreign()
        if self.foreign() and not breakout:
            ns = _SVG if name == b"svg" else _MATH if name == b"math" else self.stack[-1].ns
        else:
            ns = _SVG if name == b"svg" else _MATH if name == b"math" else _HTML
            if ns == _HTML and name == b"image":
                name = b"img"
            if ns == _HTML and not self.xml:
                self.implicit_closes(name, lt)
        gated = not allows(attrs, self.user)
        if gated and name in (b"html", b"head", b"body"):
            # A browser merges a late <html> or <body> into the one it has: the whole
            # document would be gated, whatever came before the tag.
            raise _Cut(0, lt)
        void = ns == _HTML and name in _VOID
        if void or (tag.self_closing and (ns != _HTML or self.xml) and not gated):
            # Nothing opens: a gated one goes alone, the content after it is not its own.
            if not gated:
                self.emit(lt, tag.end)
            return tag.end
        entry = self.opened(name, ns, gated, attrs, lt)
        if gated and self.skip is None:
            self.skip = len(self.stack)
        self.emit(lt, tag.end)
        entry.mark = tag.end
        self.push(entry)
        if ns != _HTML or self.xml:
            return tag.end
        if name in _RAW_TEXT:
            end = _script_end(page, tag.end) if name == b"script" else _raw_end(
                page, name, tag.end)
            self.emit(tag.end, end)
            return end
        if name == b"plaintext":
            self.emit(tag.end, len(page))
            return len(page)
        if name == b"noscript":
            end = _raw_end(page, name, tag.end)
            if end < len(page):
                self.noscripts.append((end, lt))
                self.noscripts.sort()
            self.unsure_until = max(self.unsure_until, end)
            entry.raw_end = end
            self.noscript_at.append(len(self.stack) - 1)
        return tag.end

    def opened(self, name: bytes, ns: int, gated: bool, attrs: dict[bytes, list[bytes]],
               lt: int) -> _Open:
        """A stack entry for an element that opens here."""
        if ns == _HTML:
            special, boundary, inside = name in _SPECIAL, name in _BOUNDARY, False
        else:
            special = boundary = inside = name in _FOREIGN_SPECIAL[ns]
            if ns == _MATH and name == b"annotation-xml":
                encoding = _text(attrs.get(b"encoding", [b""])[0]).strip().lower()
                inside = encoding in ("text/html", "application/xhtml+xml")
        sure = not (self.selects or lt < self.unsure_until
                    or (ns == _HTML and name in _DOUBTFUL)
                    or (ns == _HTML and name in _TABLE_PARTS and not self.at.get(b"table")))
        entry = _Open(name, ns, gated, sure, special, boundary, inside)
        if (not gated and not self.hiding and FIELD in attrs and ns == _HTML
                and (name not in _RAW_TEXT or name in _FIELD_TEXT)
                and name not in (b"noscript", b"plaintext")):
            entry.field = field_text(self.user, _text(attrs[FIELD][0]))
        return entry

    def in_noscript_text(self, index: int, lt: int) -> bool:
        """Whether popping down to ``index`` at ``lt`` would close a noscript from inside
        the text a browser with scripting on sees there (where nothing can close it)."""
        return any(at >= index and lt < self.stack[at].raw_end for at in self.noscript_at)

    def foreign(self) -> bool:
        """Whether the next tag is read in SVG or MathML content."""
        if not self.stack:
            return False
        top = self.stack[-1]
        return top.ns != _HTML and not top.html_inside

    def leave_foreign(self) -> None:
        # A gated element is never popped here (where it ends is only ever pushed later);
        # what follows it is read as HTML, as a browser that has closed it does.
        while self.foreign():
            if self.stack[-1].gated:
                self.stack[-1].html_inside = True
                return
            self.pop_to(len(self.stack) - 1)

    def implicit_closes(self, name: bytes, lt: int) -> None:
        """Elements a browser closes because this start tag opens (HTML content only)."""
        targets: list[int] = []
        stack = self.stack
        if name in _CLOSES_P:
            p = self.nearest(b"p")
            if p is not None and self.last(self.bounds) < p and self.last_named(b"button") < p:
                targets.append(p)
        if name in _HEADINGS and stack and stack[-1].ns == _HTML and stack[-1].name in _HEADINGS:
            targets.append(len(stack) - 1)
        if name in (b"li", b"dd", b"dt"):
            kin = (b"li",) if name == b"li" else (b"dd", b"dt")
            found = max(self.last_named(k) for k in kin)
            if found >= 0 and self.last(self.stoppers) <= found:
                targets.append(found)
        if name == b"button":
            button = self.last_named(b"button")
            if button >= 0 and self.last(self.bounds) < button:
                targets.append(button)
        if stack and stack[-1].ns == _HTML and stack[-1].name == b"option" and name in (
                b"option", b"optgroup"):
            targets.append(len(stack) - 1)
        if self.selects and name in (b"select", b"input", b"keygen", b"textarea"):
            targets.append(self.last_named(b"select"))
        target = self.table_target(name)
        if target is not None:
            targets.append(target)
        if not targets:
            return
        first = min(targets)
        if self.skip is None and not self.in_noscript_text(first, lt):
            self.pop_to(first)
            return
        # Inside a gated element nothing closes early: the model keeps removing, and what
        # it keeps open is no longer known to be open in a browser.
        for entry in stack[first:]:
            entry.sure = False

    def table_target(self, name: bytes) -> int | None:
        """The first stack index a table start tag closes, or None."""
        inclusive: tuple[bytes, ...]
        exclusive: tuple[bytes, ...]
        if name in (b"td", b"th"):
            inclusive = (b"td", b"th", b"caption")
            exclusive = (b"tr", b"tbody", b"thead", b"tfoot", b"table")
        elif name == b"tr":
            inclusive, exclusive = (b"tr", b"caption"), (b"tbody", b"thead", b"tfoot", b"table")
        elif name in (b"tbody", b"thead", b"tfoot"):
            inclusive, exclusive = (b"tbody", b"thead", b"tfoot", b"caption"), (b"table",)
        elif name in (b"caption", b"colgroup"):
            inclusive, exclusive = (b"caption",), (b"table",)
        elif name == b"table":
            top = self.stack[-1] if self.stack else None
            if top is None or top.ns != _HTML or top.name not in (
                    b"table", b"tbody", b"thead", b"tfoot", b"tr"):
                return None
            return self.nearest(b"table")
        else:
            return None
        best, inclusive_hit = -1, False
        for kind in (*inclusive, *exclusive, b"template"):
            found = self.nearest(kind)
            if found is not None and found > best:
                best, inclusive_hit = found, kind in inclusive
        if best < 0 or self.stack[best].name == b"template":
            return None
        return best if inclusive_hit else best + 1

    # -- end tags ----------------------------------------------------------------------

    def end_tag(self, tag: Tag, lt: int) -> None:
        name = tag.name
        if self.foreign():
            if name in (b"p", b"br"):
                self.leave_foreign()
            else:
                # Foreign elements close by name, down to the first HTML element.
                found = self.nearest(name, any_ns=True)
                if found is not None and self.stack[found].ns != _HTML \
                        and self.last(self.htmls) < found:
                    self.close(found, tag, lt)
                    return
        if name in (b"br", b"body", b"html"):
            # </br> is read as <br>; </body> and </html> close nothing in a browser.
            self.emit(lt, tag.end)
            return
        if name in _FORMATTING and self.ghost_takes(name):
            self.emit(lt, tag.end)
            return
        if name in _HEADINGS:
            found = max(self.last_named(h) for h in _HEADINGS)
            found_at: int | None = found if found >= 0 else None
        else:
            found_at = self.nearest(name)
        if found_at is None:
            self.emit(lt, tag.end)
            return
        if not self.honoured(name, found_at) or self.in_noscript_text(found_at, lt):
            for entry in self.stack[found_at:]:
                entry.sure = False
            self.emit(lt, tag.end)
            return
        self.close(found_at, tag, lt)

    def ghost_takes(self, name: bytes) -> bool:
        """Whether an end tag goes to a closed formatting element (which it then forgets)."""
        marker = self.last_marker()
        on_stack = self.nearest(name)
        newest = -1 if on_stack is None else self.stack[on_stack].seq
        for index in range(len(self.ghosts) - 1, -1, -1):
            ghost, under, gated, seq = self.ghosts[index]
            if seq < newest:
                return False
            if ghost == name and under == marker:
                del self.ghosts[index]
                self.haunted -= gated
                return True
        return False

    def honoured(self, name: bytes, index: int) -> bool:
        """Whether a browser surely pops the element at ``index`` for this end tag."""
        if index == len(self.stack) - 1 or name == b"template":
            return True
        if self.selects and name != b"select" and index < self.last_named(b"select"):
            return False  # inside a select, a browser ignores end tags of what holds it
        if name == b"form":
            return False  # a form leaves the stack alone; what it holds stays open
        if name == b"table" or name in _TABLE_PARTS:
            return max(self.last_named(n) for n in _TABLE_SCOPE) < index
        if name == b"select":
            above = self.stack[index + 1:index + 33]
            return len(above) == len(self.stack) - index - 1 and all(
                e.ns == _HTML and e.name in (b"option", b"optgroup") for e in above)
        if name in _SCOPED_END:
            if self.last(self.bounds) > index:
                return False
            if name == b"p" and self.last_named(b"button") > index:
                return False
            return not (name == b"li" and max(self.last_named(b"ol"),
                                               self.last_named(b"ul")) > index)
        return self.last(self.specials) < index

    def close(self, index: int, tag: Tag, lt: int) -> None:
        """Pop the element at ``index`` (and all above it) for an end tag."""
        skip = self.skip
        entry = self.stack[index]
        top = index == len(self.stack) - 1
        if skip is not None and not (top or entry.sure):
            # Inside a gated element only pops a browser surely makes are followed: an
            # element it may never have opened must not close what it holds.
            return
        if skip is not None and index < skip:
            gated = self.stack[skip]
            allowed = _MARKERS if gated.name in _FORMATTING and gated.ns == _HTML else _CLOSERS
            if entry.name not in allowed:
                entry.sure = False
                return
            self.pop_to(index, tag.name)
            self.emit(lt, tag.end)
            return
        if skip is not None:
            self.pop_to(index, tag.name)
            return
        if entry.field is not None and top and entry.name == tag.name and not self.hiding:
            self.insert(entry.mark, entry.field.encode())
        self.pop_to(index, tag.name)
        self.emit(lt, tag.end)

    # -- the stack ---------------------------------------------------------------------

    def push(self, entry: _Open) -> None:
        index = len(self.stack)
        self.pushed += 1
        entry.seq = self.pushed
        self.stack.append(entry)
        self.at.setdefault(entry.name, []).append(index)
        if entry.ns == _HTML and entry.name in _MARKERS:
            self.markers.append(index)
        if entry.special:
            self.specials.append(index)
            if entry.ns != _HTML or entry.name not in (b"address", b"div", b"p"):
                self.stoppers.append(index)
        if entry.boundary:
            self.bounds.append(index)
        if entry.ns == _HTML:
            self.htmls.append(index)
            if entry.name == b"select":
                self.selects += 1

    def pop_to(self, index: int, by: bytes | None = None) -> None:
        """Pop every entry from the top down to ``index`` included (``by``: the end tag)."""
        while len(self.stack) > index:
            top = len(self.stack) - 1
            entry = self.stack.pop()
            self.at[entry.name].pop()
            for indices in (self.specials, self.stoppers, self.bounds, self.htmls, self.markers,
                            self.noscript_at):
                if indices and indices[-1] == top:
                    indices.pop()
            if self.ghosts and entry.ns == _HTML and entry.name in _MARKERS and entry.sure:
                self.ghosts = [ghost for ghost in self.ghosts if ghost[1] < top]
                self.haunted = sum(ghost[2] for ghost in self.ghosts)
            if entry.ns == _HTML and entry.name in _FORMATTING and not (
                    top == index and by == entry.name):
                self.ghosts.append((entry.name, self.last_marker(), entry.gated, entry.seq))
                self.haunted += entry.gated
                if len(self.ghosts) > _MAX_GHOSTS and not self.ghosts[0][2]:
                    del self.ghosts[0]
            if entry.ns == _HTML and entry.name == b"select":
                self.selects -= 1
            if self.skip == top:
                self.skip = None

    def nearest(self, name: bytes, *, any_ns: bool = False) -> int | None:
        """Stack index of the innermost open element named ``name`` (HTML unless any_ns)."""
        for index in reversed(self.at.get(name, ())):
            if any_ns or self.stack[index].ns == _HTML:
                return index
        return None

    def last_named(self, name: bytes) -> int:
        """Like ``nearest``, with -1 for none."""
        found = self.nearest(name)
        return -1 if found is None else found

    def last_marker(self) -> int:
        """Index of the innermost open marker a browser surely has (td, template...)."""
        for index in reversed(self.markers):
            if self.stack[index].sure:
                return index
        return -1

    @staticmethod
    def last(indices: list[int]) -> int:
        return indices[-1] if indices else -1

