"""The browser's stack of open elements, as far as a model reading bytes can be sure of it.

``gateway.fragments`` reads a page tag by tag and asks this model where an element ends:
which elements a start tag closes, which one an end tag pops, and which of them a browser
surely has open. The element kinds are those of the HTML tree-construction rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.html.tokens import words

HTML, SVG, MATH = 0, 1, 2

VOID = words("area base br col embed hr img input link meta source track wbr basefont "
             "bgsound frame keygen param")
SPECIAL = words(
    "address applet area article aside base basefont bgsound blockquote body br button "
    "caption center col colgroup dd details dir div dl dt embed fieldset figcaption figure "
    "footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html iframe img input "
    "keygen li link listing main marquee menu meta nav noembed noframes noscript object ol p "
    "param plaintext pre script search section select source style summary table tbody td "
    "template textarea tfoot th thead title tr track ul wbr xmp")
BOUNDARY = words("applet caption html table td th marquee object template")
FOREIGN_SPECIAL = {SVG: words("foreignobject desc title"),
                   MATH: words("mi mo mn ms mtext annotation-xml")}
CLOSES_P = words(
    "address article aside blockquote center details dialog dir div dl fieldset figcaption "
    "figure footer header hgroup main menu nav ol p search section summary ul h1 h2 h3 h4 h5 "
    "h6 pre listing form plaintext table hr xmp li dd dt")
HEADINGS = words("h1 h2 h3 h4 h5 h6")
# End tags a browser honours when the element is in scope; any other end tag only closes
# through elements that are not special.
SCOPED_END = words(
    "address article aside blockquote button center details dialog dir div dl fieldset "
    "figcaption figure footer header hgroup listing main menu nav ol pre search section "
    "summary ul p li dd dt h1 h2 h3 h4 h5 h6 applet marquee object")
# A browser re-opens these (with their attributes) after an unexpected close, so a gated
# one keeps its grip on what follows until its own end tag or the end of a marker below.
FORMATTING = words("a b big code em font i nobr s small strike strong tt u")
MARKERS = words("applet caption marquee object td template th")
_MAX_GHOSTS = 64  # closed formatting elements remembered (gated ones are never forgotten)
TABLE_PARTS = words("caption colgroup tbody thead tfoot tr td th")
TABLE_SCOPE = words("html table template")
BREAKOUT = words(
    "b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img "
    "li listing menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul var")


@dataclass(slots=True)
class Open:
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
    unwrapped: bool = False  # its own tags are left out, its content kept


class OpenElements:
    """The stack of open elements with indexes by name and kind, and closed formatting
    elements a browser still remembers."""

    def __init__(self) -> None:
        self.stack: list[Open] = []
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

    def push(self, entry: Open) -> None:
        """Open ``entry`` on top of the stack."""
        index = len(self.stack)
        self.pushed += 1
        entry.seq = self.pushed
        self.stack.append(entry)
        self.at.setdefault(entry.name, []).append(index)
        if entry.ns == HTML and entry.name in MARKERS:
            self.markers.append(index)
        if entry.special:
            self.specials.append(index)
            if entry.ns != HTML or entry.name not in (b"address", b"div", b"p"):
                self.stoppers.append(index)
        if entry.boundary:
            self.bounds.append(index)
        if entry.ns == HTML:
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
            if self.ghosts and entry.ns == HTML and entry.name in MARKERS and entry.sure:
                self.ghosts = [ghost for ghost in self.ghosts if ghost[1] < top]
                self.haunted = sum(ghost[2] for ghost in self.ghosts)
            if entry.ns == HTML and entry.name in FORMATTING and not (
                    top == index and by == entry.name):
                self.ghosts.append((entry.name, self.last_marker(), entry.gated, entry.seq))
                self.haunted += entry.gated
                if len(self.ghosts) > _MAX_GHOSTS and not self.ghosts[0][2]:
                    del self.ghosts[0]
            if entry.ns == HTML and entry.name == b"select":
                self.selects -= 1
            if self.skip == top:
                self.skip = None

    def nearest(self, name: bytes, *, any_ns: bool = False) -> int | None:
        """Stack index of the innermost open element named ``name`` (HTML unless any_ns)."""
        for index in reversed(self.at.get(name, ())):
            if any_ns or self.stack[index].ns == HTML:
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
        """The last of ``indices`` (the innermost), -1 for none."""
        return indices[-1] if indices else -1

    def foreign(self) -> bool:
        """Whether the next tag is read in SVG or MathML content."""
        if not self.stack:
            return False
        top = self.stack[-1]
        return top.ns != HTML and not top.html_inside

    def in_noscript_text(self, index: int, lt: int) -> bool:
        """Whether popping down to ``index`` at ``lt`` would close a noscript from inside
        the text a browser with scripting on sees there (where nothing can close it)."""
        return any(at >= index and lt < self.stack[at].raw_end for at in self.noscript_at)

    def closed_by(self, name: bytes) -> int | None:
        """The lowest stack index a browser closes because this start tag opens (HTML
        content only), or None."""
        targets: list[int] = []
        stack = self.stack
        if name in CLOSES_P:
            p = self.nearest(b"p")
            if p is not None and self.last(self.bounds) < p and self.last_named(b"button") < p:
                targets.append(p)
        if name in HEADINGS and stack and stack[-1].ns == HTML and stack[-1].name in HEADINGS:
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
        if stack and stack[-1].ns == HTML and stack[-1].name == b"option" and name in (
                b"option", b"optgroup"):
            targets.append(len(stack) - 1)
        if self.selects and name in (b"select", b"input", b"keygen", b"textarea"):
            targets.append(self.last_named(b"select"))
        target = self.table_target(name)
        if target is not None:
            targets.append(target)
        return min(targets) if targets else None

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
            if top is None or top.ns != HTML or top.name not in (
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

    def honoured(self, name: bytes, index: int) -> bool:
        """Whether a browser surely pops the element at ``index`` for this end tag."""
        if index == len(self.stack) - 1 or name == b"template":
            return True
        if self.selects and name != b"select" and index < self.last_named(b"select"):
            return False  # inside a select, a browser ignores end tags of what holds it
        if name == b"form":
            return False  # a form leaves the stack alone; what it holds stays open
        if name == b"table" or name in TABLE_PARTS:
            return max(self.last_named(n) for n in TABLE_SCOPE) < index
        if name == b"select":
            above = self.stack[index + 1:index + 33]
            return len(above) == len(self.stack) - index - 1 and all(
                e.ns == HTML and e.name in (b"option", b"optgroup") for e in above)
        if name in SCOPED_END:
            if self.last(self.bounds) > index:
                return False
            if name == b"p" and self.last_named(b"button") > index:
                return False
            return not (name == b"li" and max(self.last_named(b"ol"),
                                               self.last_named(b"ul")) > index)
        return self.last(self.specials) < index

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
