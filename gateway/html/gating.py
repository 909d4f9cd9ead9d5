"""Server-side gating inside HTML: gated elements removed, user fields filled, per reader.

The rewriter reads bytes the way a browser does: a tokenizer that follows the HTML rules
for tags, attribute quoting, comments and raw text (script, style, textarea...:
``html.tokens``), and a model of the browser's stack of open elements that decides where
an element ends (``html.tree``). Where the model cannot be sure that a browser has
closed a gated element, it keeps removing: it may remove more than the element, never less.
"""

from __future__ import annotations

import html
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gateway.html.navigation import INERT, in_text, place, region_named
from gateway.html.tokens import (
    COMMENT,
    END,
    RAW_TEXT,
    UNFINISHED,
    Tag,
    attr_text,
    attr_value,
    bare_tag,
    raw_end,
    read_tag,
    script_end,
    token_at,
    words,
)
from gateway.html.tree import (
    BOUNDARY,
    BREAKOUT,
    FOREIGN_SPECIAL,
    FORMATTING,
    HEADINGS,
    HTML,
    MARKERS,
    MATH,
    SPECIAL,
    SVG,
    TABLE_PARTS,
    VOID,
    Open,
    OpenElements,
)
from gateway.user import User, user_get

MARKER = b"data-gateway-"
GROUPS = b"data-gateway-groups"
ANONYMOUS = b"data-gateway-anonymous"
AUTHENTICATED = b"data-gateway-authenticated"
FIELD = b"data-gateway-field"

_FIELD_TEXT = words("textarea title")  # raw text that is not code: a field may fill it
# Elements that may end a gated element they contain: block containers whose end tags a
# browser honours the same way whatever came before (phrasing and p are not among them).
_CLOSERS = words(
    "address article aside blockquote caption center dd details dialog dir div dl dt fieldset "
    "figcaption figure footer header hgroup li main menu nav ol pre search section summary "
    "table tbody td template tfoot th thead tr ul svg math")
# A browser may ignore these start tags (a second body, a form inside a form): never sure.
_DOUBTFUL = words("html head body form frameset frame")


def has_markers(page: bytes) -> bool:
    """Whether a page may hold gated elements or fields (attribute names ignore case)."""
    if MARKER in page:
        return True
    # The case-blind look costs a copy of the page; the same pages come back again and
    # again, so small ones are remembered.
    return _cased_marker(page) if len(page) <= 256 * 1024 else MARKER in page.lower()


@lru_cache(maxsize=512)
def _cased_marker(page: bytes) -> bool:
    return MARKER in page.lower()


def has_fields(page: bytes) -> bool:
    """Whether a page may hold fields filled from the reader's user object (attribute
    names are never character references, so looking for the name is exact)."""
    return FIELD in page or (has_markers(page) and FIELD in page.lower())


def rewrite(page: bytes, user: User | None, cut: frozenset[int] = frozenset(),
            unwrap: frozenset[int] = frozenset()) -> bytes:
    """The page as ``user`` (None: anonymous) may receive it; unchanged pages are returned as is.

    ``cut``: elements removed as gated ones are, by the start of their tags (navigation
    entries to closed pages); ``unwrap``: elements whose own tags go and whose content
    stays (links in the text to closed pages). ``page`` is in an encoding that keeps
    ASCII markup as ASCII (``html.as_utf8`` makes it so).
    """
    if not cut and not unwrap and not has_markers(page):
        return page
    return _Rewriter(page, user, cut, unwrap).run()


#: Where a field's text goes in a page kept for an audience (the number of the field and a
#: NUL follow); per process, so a page cannot spell it by chance.
SLOT = b"\x00gateway-field-" + secrets.token_hex(8).encode() + b"-"
_SLOT_LEAD = b"\x00gateway-field-"
_SLOT_AT = re.compile(re.escape(SLOT) + rb"(\d+)\x00")


class _NoTemplate(Exception):
    """The page cannot be kept with its fields as slots (fields inside fields)."""


@dataclass(frozen=True, slots=True)
class Template:
    """A page as one audience receives it, its fields left open: the text between them,
    and each field's path in the user object and the content it keeps without a value."""

    parts: tuple[bytes, ...]
    fields: tuple[tuple[str, bytes], ...]

    def fill(self, user: User | None, given: int = -1, value: bytes = b"") -> list[bytes]:
        """The page's pieces for ``user``: the text between the fields, and each field's
        text (or its own content when ``user`` has no value for it); field number ``given``
        (if any) is ``value``, as the caller already has it."""
        out = [self.parts[0]]
        for number, ((path, fallback), after) in enumerate(
                zip(self.fields, self.parts[1:], strict=True)):
            if number == given:
                out.append(value)
            else:
                text = field_text(user, path)
                out.append(fallback if text is None else text.encode())
            out.append(after)
        return out


def template(page: bytes, user: User, cut: frozenset[int] = frozenset(),
             unwrap: frozenset[int] = frozenset()) -> Template | None:
    """``rewrite`` for ``user``'s audience (their groups, logged in) with each field left
    open, to be filled for each reader of that audience; None when it cannot be made."""
    if _SLOT_LEAD in page:
        return None
    if not cut and not unwrap and not has_markers(page):
        return Template((page,), ())  # as ``rewrite`` sends it: unchanged
    slots: list[tuple[str, bytes]] = []
    try:
        body = _Rewriter(page, user, cut, unwrap, slots).run()
    except _NoTemplate:
        return None
    return from_marked(body, slots)


def marked(kept: Template) -> bytes:
    """The template as one body, each field a slot mark (to be changed as a page is)."""
    out = [kept.parts[0]]
    for number, after in enumerate(kept.parts[1:]):
        out.append(SLOT + str(number).encode() + b"\x00")
        out.append(after)
    return b"".join(out)


def from_marked(body: bytes, fields: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...],
                ) -> Template | None:
    """A body with slot marks as a template; None unless each field's mark is there once."""
    pieces = _SLOT_AT.split(body)
    order = [int(number) for number in pieces[1::2]]
    if sorted(order) != list(range(len(fields))):
        return None  # a slot dropped or doubled: not one to trust
    return Template(tuple(pieces[0::2]), tuple(fields[number] for number in order))


def allows(attrs: dict[bytes, list[bytes]], user: User | None) -> bool:
    """Whether the gating attributes of one element let ``user`` see it.

    Every gating attribute must agree, so a duplicate can only remove. An empty
    ``data-gateway-groups`` admits nobody, like ``groups: []`` in a rule.
    """
    for value in attrs.get(GROUPS, ()):
        wanted = {part.strip() for part in attr_text(value).split(",")} - {""}
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


class _Cut(Exception):
    """The page cannot be read unambiguously from here on: drop the rest."""

    def __init__(self, mark: int, at: int) -> None:  # both are page offsets
        super().__init__()
        self.mark = mark
        self.at = at


class _Rewriter(OpenElements):
    """One pass over one page for one reader."""

    def __init__(self, page: bytes, user: User | None, cut: frozenset[int],
                 unwrap: frozenset[int], slots: list[tuple[str, bytes]] | None = None) -> None:
        super().__init__()
        self.page = page
        self.user = user
        self.cut = cut
        self.unwrap = unwrap
        # Set: fields are left as slots, each recorded with its own content.
        self.slots = slots
        # The output: kept runs of the page (start, end, None) and inserted text (at, at, text),
        # in page order; the run being extended is kept apart until something breaks it.
        self.items: list[tuple[int, int, bytes | None]] = []
        self.run_start = self.run_end = 0
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

    def data(self, start: int, end: int) -> None:
        """Text of the page (character data, raw text), kept unless it is gated."""
        self.emit(start, end)

    def hides(self, attrs: dict[bytes, list[bytes]]) -> bool:
        """Whether an element with these attributes is gated for this reader."""
        return not allows(attrs, self.user)

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

    def output_since(self, at: int) -> bytes:
        """What is output from page offset ``at`` on."""
        self.flush()
        out: list[bytes] = []
        for start, end, text in reversed(self.items):
            if text is not None:
                if start < at:
                    break
                out.append(text)
                continue
            if end <= at:
                break
            out.append(self.page[max(start, at):end])
            if start <= at:
                break
        return b"".join(reversed(out))

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
                if tag is None or self.hides(tag.attrs):
                    return True
                pos = lower.find(name, pos + 1)
        return False

    def scan(self) -> None:
        page, size, pos = self.page, len(self.page), 0
        while pos < size:
            lt = page.find(b"<", pos)
            if lt < 0:
                self.data(pos, size)
                return
            self.data(pos, lt)
            pos = self.markup(lt)
            while self.noscripts and self.noscripts[0][0] < pos:
                end, mark = self.noscripts.pop(0)
                if end != lt:
                    raise _Cut(mark, lt)

    def markup(self, lt: int) -> int:
        page, size = self.page, len(self.page)
        simple = bare_tag(page, lt)
        # The common case in one match: a complete tag whose attributes do not matter (no
        # gating or field attribute; font and annotation-xml have telling ones).
        if simple is not None and self.lower.find(MARKER, lt, simple.end) < 0 \
                and simple.name not in (b"font", b"annotation-xml"):
            if page[lt + 1] == 0x2F:
                self.end_tag(simple, lt)
                return simple.end
            return self.start_tag(simple, lt)
        cdata = page.startswith(b"<![CDATA[", lt) and (self.xml or self.foreign())
        kind, end, tag = token_at(page, lt, cdata=cdata)
        if kind == COMMENT:
            return self.comment(lt, end)
        if kind == UNFINISHED:
            return size  # a browser drops a tag the page ends inside
        if tag is None:  # TEXT
            self.data(lt, end)
            return end
        if kind == END:
            self.end_tag(tag, lt)
            return tag.end
        return self.start_tag(tag, lt)

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
        breakout = self.foreign() and (name in BREAKOUT or (
            name == b"font" and bool(attrs.keys() & {b"color", b"face", b"size"})))
        if breakout:
            self.leave_foreign()
        if self.foreign() and not breakout:
            ns = SVG if name == b"svg" else MATH if name == b"math" else self.stack[-1].ns
        else:
            ns = SVG if name == b"svg" else MATH if name == b"math" else HTML
            if ns == HTML and name == b"image":
                name = b"img"
            if ns == HTML and not self.xml:
                self.implicit_closes(name, lt)
        gated = self.hides(attrs) or lt in self.cut
        if gated and name in (b"html", b"head", b"body"):
            # A browser merges a late <html> or <body> into the one it has: the whole
            # document would be gated, whatever came before the tag.
            raise _Cut(0, lt)
        void = ns == HTML and name in VOID
        if void or (tag.self_closing and (ns != HTML or self.xml) and not gated):
            # Nothing opens: a gated one goes alone, the content after it is not its own.
            if not gated:
                self.emit(lt, tag.end)
            return tag.end
        entry = self.opened(name, ns, gated, attrs, lt)
        if gated and self.skip is None:
            self.skip = len(self.stack)
        if lt in self.unwrap:
            entry.unwrapped = True
        else:
            self.emit(lt, tag.end)
        entry.mark = tag.end
        self.push(entry)
        if ns != HTML or self.xml:
            return tag.end
        if name in RAW_TEXT:
            end = script_end(page, tag.end) if name == b"script" else raw_end(
                page, name, tag.end)
            self.data(tag.end, end)
            return end
        if name == b"plaintext":
            self.data(tag.end, len(page))
            return len(page)
        if name == b"noscript":
            end = raw_end(page, name, tag.end)
            if end < len(page):
                self.noscripts.append((end, lt))
                self.noscripts.sort()
            self.unsure_until = max(self.unsure_until, end)
            entry.raw_end = end
            self.noscript_at.append(len(self.stack) - 1)
        return tag.end

    def opened(self, name: bytes, ns: int, gated: bool, attrs: dict[bytes, list[bytes]],
               lt: int) -> Open:
        """A stack entry for an element that opens here."""
        if ns == HTML:
            special, boundary, inside = name in SPECIAL, name in BOUNDARY, False
        else:
            special = boundary = inside = name in FOREIGN_SPECIAL[ns]
            if ns == MATH and name == b"annotation-xml":
                encoding = attr_text(attrs.get(b"encoding", [b""])[0]).strip().lower()
                inside = encoding in ("text/html", "application/xhtml+xml")
        sure = not (self.selects or lt < self.unsure_until
                    or (ns == HTML and name in _DOUBTFUL)
                    or (ns == HTML and name in TABLE_PARTS and not self.at.get(b"table")))
        entry = Open(name, ns, gated, sure, special, boundary, inside)
        if (not gated and not self.hiding and FIELD in attrs and ns == HTML
                and (name not in RAW_TEXT or name in _FIELD_TEXT)
                and name not in (b"noscript", b"plaintext")):
            path = attr_text(attrs[FIELD][0])
            entry.field = path if self.slots is not None else field_text(self.user, path)
        return entry

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
        first = self.closed_by(name)
        if first is None:
            return
        if self.skip is None and not self.in_noscript_text(first, lt):
            self.pop_to(first)
            return
        # Inside a gated element nothing closes early: the model keeps removing, and what
        # it keeps open is no longer known to be open in a browser.
        for entry in self.stack[first:]:
            entry.sure = False

    # -- end tags ----------------------------------------------------------------------

    def end_tag(self, tag: Tag, lt: int) -> None:
        name = tag.name
        if self.foreign():
            if name in (b"p", b"br"):
                self.leave_foreign()
            else:
                # Foreign elements close by name, down to the first HTML element.
                found = self.nearest(name, any_ns=True)
                if found is not None and self.stack[found].ns != HTML \
                        and self.last(self.htmls) < found:
                    self.close(found, tag, lt)
                    return
        if name in (b"br", b"body", b"html"):
            # </br> is read as <br>; </body> and </html> close nothing in a browser.
            self.emit(lt, tag.end)
            return
        if name in FORMATTING and self.ghost_takes(name):
            self.emit(lt, tag.end)
            return
        if name in HEADINGS:
            found = max(self.last_named(h) for h in HEADINGS)
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
            allowed = MARKERS if gated.name in FORMATTING and gated.ns == HTML else _CLOSERS
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
            if self.slots is None:
                self.insert(entry.mark, entry.field.encode())
            else:
                own = self.output_since(entry.mark)
                if SLOT in own:
                    raise _NoTemplate()
                self.insert(entry.mark, SLOT + str(len(self.slots)).encode() + b"\x00")
                self.slots.append((entry.field, own))
        self.pop_to(index, tag.name)
        if not (entry.unwrapped and entry.name == tag.name):
            self.emit(lt, tag.end)


# -- what gated elements hold, for search ---------------------------------------------

#: The kinds of a piece of gated text: character data, the text of a script or style
#: (which some search indexers keep and others leave out), and a break where a heading
#: starts or ends (where a search index may start a new entry).
PIECE_TEXT, PIECE_CODE, PIECE_BREAK = 0, 1, 2
_GATING = (GROUPS, AUTHENTICATED, ANONYMOUS)
_CODE = words("script style")


@dataclass(frozen=True, slots=True)
class GatedPart:
    """One stretch of a page that a reader who may not see its gated elements does not
    receive: the gating attributes of every gated element in it (a reader receives it
    only when each of them allows), its text as a search indexer reads it (the pieces
    between tags, character references resolved), and the ids of the elements in it."""

    markers: tuple[dict[bytes, list[bytes]], ...]
    pieces: tuple[tuple[str, int], ...]
    ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class GatedText:
    """A page read for a reader who receives none of its gated elements: the stretches
    they take (``parts``), and the ids and text pieces (scripts and styles left out) of
    everything else."""

    parts: tuple[GatedPart, ...]
    ids: frozenset[str]
    text: tuple[str, ...]


def gated_text(page: bytes) -> GatedText | None:
    """What a page holds inside and outside its gated elements, where the rewriter ends
    them (it may end one later than a browser, never earlier); None when the rewriter
    would drop the rest of the page for such a reader, so that what is gated is unknown.
    ``page`` as for ``rewrite``."""
    return _Reporter(page).report()


class _Stretch:
    """A gated stretch being read."""

    def __init__(self) -> None:
        self.markers: dict[tuple[tuple[bytes, tuple[bytes, ...]], ...],
                           dict[bytes, list[bytes]]] = {}
        self.pieces: list[tuple[str, int]] = []
        self.ids: set[str] = set()

    def gated_by(self, attrs: dict[bytes, list[bytes]]) -> None:
        mine = {name: values for name, values in attrs.items() if name in _GATING}
        self.markers.setdefault(tuple(sorted((name, tuple(values))
                                             for name, values in mine.items())), mine)


class _Reporter(_Rewriter):
    """The rewriter for a reader who receives no gated element, noting what each stretch
    it removes holds (the elements are ended exactly as for any reader)."""

    def __init__(self, page: bytes) -> None:
        super().__init__(page, None, frozenset(), frozenset())
        self.stretches: list[_Stretch] = []
        self.current: _Stretch | None = None
        self.open_ids: set[str] = set()
        self.open_text: list[str] = []

    def report(self) -> GatedText | None:
        try:
            self.scan()
        except _Cut:
            return None
        parts = tuple(GatedPart(tuple(stretch.markers.values()), tuple(stretch.pieces),
                                frozenset(stretch.ids)) for stretch in self.stretches)
        return GatedText(parts, frozenset(self.open_ids), tuple(self.open_text))

    def hides(self, attrs: dict[bytes, list[bytes]]) -> bool:
        return any(name in attrs for name in _GATING)

    def stretch(self) -> _Stretch:
        if self.current is None:
            self.current = _Stretch()
            self.stretches.append(self.current)
        return self.current

    def piece(self, start: int, end: int) -> tuple[str, bool]:
        """The text of the page from ``start`` to ``end`` as a search indexer reads it,
        and whether it is a script's or a style's."""
        top = self.stack[-1] if self.stack else None
        code = top is not None and top.ns == HTML and top.name in _CODE and top.mark == start
        text = self.page[start:end].decode("utf-8", "replace")
        if text.startswith("<![CDATA["):  # only ever text in SVG, MathML or XML
            text = text[9:-3] if text.endswith("]]>") else text[9:]
        elif text == "</>":  # dropped by a browser
            text = ""
        elif not code:
            text = html.unescape(text)
        return text, code

    def data(self, start: int, end: int) -> None:
        if end > start:
            text, code = self.piece(start, end)
            if self.hiding:
                self.stretch().pieces.append((text, PIECE_CODE if code else PIECE_TEXT))
            elif not code:
                self.open_text.append(text)
        super().data(start, end)

    def start_tag(self, tag: Tag, lt: int) -> int:
        was = self.hiding
        end = super().start_tag(tag, lt)
        attrs = tag.attrs
        if not attrs and self.lower.find(b"id", lt, tag.end) >= 0:
            full = read_tag(self.page, lt)  # the quick reading left the attributes unread
            attrs = full.attrs if full is not None else attrs
        ident = attr_value(attrs, b"id")
        gated = self.hides(attrs)
        if not (gated or self.hiding):
            if ident:
                self.open_ids.add(ident)
            return end
        if not was:
            self.current = None  # a new stretch
        stretch = self.stretch()
        if gated:
            stretch.gated_by(attrs)
        if ident:
            stretch.ids.add(ident)
        if tag.name in HEADINGS:
            stretch.pieces.append(("", PIECE_BREAK))
        return end

    def end_tag(self, tag: Tag, lt: int) -> None:
        was = self.hiding
        super().end_tag(tag, lt)
        if was and tag.name in HEADINGS:
            self.stretch().pieces.append(("", PIECE_BREAK))


# -- what leaves a page with a link, for search -----------------------------------------



@dataclass(frozen=True, slots=True)
class LinkedText:
    """What the elements that leave a page with a link (``navigation.linked_parts``) hold:
    per element, by where it starts, its text pieces (those of the elements in it too) and
    the ids in it; the text of the page's text region (``navigation.in_text``) by the
    elements of those around it; and every id and text piece of the page (scripts and
    styles left out), gated or not."""

    pieces: dict[int, tuple[tuple[str, int], ...]]
    ids: dict[int, frozenset[str]]
    text: tuple[tuple[frozenset[int], tuple[str, ...]], ...]
    every_id: frozenset[str]
    every_text: tuple[str, ...]


def linked_text(page: bytes, parts: frozenset[int]) -> LinkedText | None:
    """What the elements starting at ``parts`` hold, where the rewriter ends them when it
    removes them (never earlier than a browser); None when it would drop the rest of the
    page instead."""
    return _LinkedReporter(page, parts).report_linked()


class _LinkedReporter(_Reporter):
    """The rewriter removing the elements that leave with a link, and no gated element,
    noting what each of them holds and the text of the page's text region."""

    def __init__(self, page: bytes, parts: frozenset[int]) -> None:
        super().__init__(page)
        self.cut = parts
        # The start tag being read (where it starts, the region it opens), for ``push``.
        self.opening = -1
        self.opening_region = ""
        # By the push order of open elements: the part each starts, and the regions.
        self.part_of: dict[int, int] = {}
        self.region_of: dict[int, str] = {}
        # What is open now: the parts (outermost first), and how many of each region.
        self.open_parts: list[int] = []
        self.open_regions: list[str] = []
        self.placed = 0
        self.has_main = False
        self.pieces: dict[int, list[tuple[str, int]]] = {part: [] for part in parts}
        self.part_ids: dict[int, set[str]] = {part: set() for part in parts}
        self.cells: dict[tuple[tuple[int, ...], int], list[str]] = {}
        self.every_id: set[str] = set()
        self.every_text: list[str] = []

    def report_linked(self) -> LinkedText | None:
        if self.report() is None:
            return None
        text: dict[frozenset[int], list[str]] = {}
        for (around, where), pieces in self.cells.items():
            if in_text(where, self.has_main):
                text.setdefault(frozenset(around), []).extend(pieces)
        return LinkedText({part: tuple(pieces) for part, pieces in self.pieces.items()},
                          {part: frozenset(ids) for part, ids in self.part_ids.items()},
                          tuple((around, tuple(pieces)) for around, pieces in text.items()),
                          frozenset(self.every_id), tuple(self.every_text))

    def hides(self, attrs: dict[bytes, list[bytes]]) -> bool:
        return False  # gated elements are read as text here

    def push(self, entry: Open) -> None:
        super().push(entry)
        if self.opening in self.cut:
            self.part_of[entry.seq] = self.opening
            self.open_parts.append(self.opening)
        if self.opening >= 0 and self.opening_region:
            self.region_of[entry.seq] = self.opening_region
            self.open_regions.append(self.opening_region)
            self.placed = place(self.open_regions)
        self.opening = -1

    def pop_to(self, index: int, by: bytes | None = None) -> None:
        for entry in self.stack[index:]:
            if entry.seq in self.part_of:
                self.open_parts.pop()
            if entry.seq in self.region_of:
                self.open_regions.pop()
                self.placed = place(self.open_regions)
        super().pop_to(index, by)

    def data(self, start: int, end: int) -> None:
        if end > start:
            text, code = self.piece(start, end)
            for part in self.open_parts:
                self.pieces[part].append((text, PIECE_CODE if code else PIECE_TEXT))
            if not code:
                self.every_text.append(text)
                self.cells.setdefault((tuple(self.open_parts), self.placed), []).append(text)
        super().data(start, end)

    def start_tag(self, tag: Tag, lt: int) -> int:
        attrs = tag.attrs
        if not attrs and (self.lower.find(b"id", lt, tag.end) >= 0
                          or self.lower.find(b"role", lt, tag.end) >= 0):
            full = read_tag(self.page, lt)  # the quick reading left the attributes unread
            attrs = full.attrs if full is not None else attrs
        role = attr_text(attrs[b"role"][0]).strip().lower() if b"role" in attrs else ""
        region = region_named(tag.name, role)
        self.opening, self.opening_region = lt, region
        depth = self.pushed
        end = super().start_tag(tag, lt)
        self.opening = -1
        if self.pushed != depth and (tag.name == b"main" or role == "main") \
                and not any(entry.name in INERT for entry in self.stack[:-1]):
            self.has_main = True
        ident = attr_value(attrs, b"id")
        if ident:
            self.every_id.add(ident)
        for part in self.open_parts:
            if ident:
                self.part_ids[part].add(ident)
            if tag.name in HEADINGS:
                self.pieces[part].append(("", PIECE_BREAK))
        return end

    def end_tag(self, tag: Tag, lt: int) -> None:
        around = list(self.open_parts) if tag.name in HEADINGS else []
        super().end_tag(tag, lt)
        for part in around:
            self.pieces[part].append(("", PIECE_BREAK))
