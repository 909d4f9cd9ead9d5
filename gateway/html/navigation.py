"""Navigation per reader: where a page links to other pages, and what goes when one of
them is closed to the reader.

``find_links`` reads a page once (per page version; the result is remembered with the
page's scan) and tells, for every link (``<a href>``, ``<area href>``, ``<link href>``),
what must leave the page if its target is closed:

- an entry of a listing (an ``<li>`` of the navigation, tabs, breadcrumbs, a table of
  contents, or a list item in the text that is nothing but the link) goes whole, its
  title with it; an entry whose every link is closed (a section whose pages all are)
  goes too;
- a link in the navigation outside a list (previous/next, a logo) goes whole;
- a link in the title of a card (the first heading of an ``<article>`` or
  ``role="article"`` without an ``<h1>``: a post's excerpt in a blog's index; a heading
  of a list entry; the ``<h1>`` of articles that hold nothing but links, where a page
  has several such), one wrapping that heading, or a link with nothing in it after an
  article card's title (Hugo PaperMod's entry link), takes the card with it;
- a table row in the text whose first data cell with letters holds only its links'
  words, and which holds no heading, list or table (a table of pages: Sphinx's
  autosummary, a module index, not a page laid out in a table), goes whole with them;
- a list entry in the text with no link or block of its own that holds another list
  goes when its every link does (a term of Sphinx's general index over its entries);
- any other link in the text of the page (inside ``main``, ``article`` or
  ``role="main"``) keeps its text and loses the link;
- a ``<link>`` in the head (``rel="next"``, a title in its attributes) goes.

The removal itself is done by ``html.gating``'s rewriter, which follows the browser's
model of open elements; ``leftovers`` reads its output again, so a link that reading did
not place in the entry removed is taken out by itself.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from gateway.html.tokens import (
    COMMENT,
    END,
    RAW_TEXT,
    START,
    UNFINISHED,
    Tag,
    attr_text,
    raw_end,
    script_end,
    token_at,
    words,
)

LINKING = words("a area link")
# Elements tracked while reading: lists, the regions that tell navigation from text, links.
_TRACKED = words("li ul ol menu nav main article aside header footer a div section details "
                 "table tr td th dl h1 h2 h3 h4 h5 h6 template noscript")
_CELLS = words("td th")
# Elements counted while open (most text stands in none of them), by their counter.
_COUNTED = {b"a": b"a", b"td": b"cell", b"th": b"cell", b"h1": b"h1"}
# What text beside its links may stand in: a list entry, a table cell.
_HOLDERS = words("li td th")
_HEADINGS = words("h1 h2 h3 h4 h5 h6")
#: Content a browser does not show as the page's own (an <h1> there titles nothing).
INERT = words("template noscript")
_NAV_REGIONS = words("nav aside header footer")
_LISTS = words("ul ol menu")
#: What makes a list entry more than a term over its own list: a link or a block of its own.
_OWN_PARTS = words("p div table pre blockquote h1 h2 h3 h4 h5 h6 dl section article figure "
                   "details form")


@dataclass(frozen=True, slots=True)
class Link:
    """One link on a page, and what leaves the page when its target is closed."""

    #: The target as written (attribute text, character references resolved).
    href: str
    #: Where the link's own tag starts.
    at: int
    #: The start of the element removed when the target is closed (the link's own tag,
    #: or the list entry holding it); -1: the link is unwrapped instead (its text stays).
    cut: int
    #: The list entries (outermost first) of the navigation this link is in: an entry
    #: whose every link is closed goes whole.
    entries: tuple[int, ...]
    #: The target's bytes as they stand in the page.
    raw: bytes = b""
    #: Whether it stands in the page's text (a search index holds what leaves with it):
    #: in ``main``, ``article`` or ``role="main"`` (navigation inside them included), or
    #: outside navigation in a page without a ``main`` or ``role="main"``.
    text: bool = False


@dataclass(slots=True)
class _Open:
    name: bytes
    at: int
    #: "nav", "text" or "" (decided by an outer element).
    region: str
    #: Whether text or other markup stands in this list entry beside its links.
    other: bool = False
    links: list[int] | None = None
    #: Whether it is an article (``<article>``, ``role="article"``), and for one, whether
    #: an ``<h1>`` opened in it: the page's own article, not a card or an excerpt.
    article: bool = False
    titled: bool = False
    #: An article: whether a heading has opened in it (its first one is its title).
    headed: bool = False
    #: A heading: whether it is the first of its card (the card's title).
    title: bool = False
    #: A table cell in the page's text: its row (None: not such a cell), and whether a
    #: cell before it in the row holds something.
    row: _Open | None = None
    after: bool = False
    #: A table row: how many of its cells hold something, and whether a heading, list or
    #: table stands in it (a table laid out as the page, not a table of pages).
    filled_cells: int = 0
    block: bool = False
    #: A link: whether anything (text, an element) stands in it.
    filled: bool = False
    #: An <h1> that titles an article: the article, and the links in it that took the
    #: article as a card (undone when words stand in the <h1> beside its links: the
    #: article is then the page's own).
    owner: _Open | None = None
    took: list[int] | None = None
    #: A list entry: whether a link or a block stands in it outside its own lists.
    own_part: bool = False


def _shown(text: bytes) -> str:
    """Text as a browser shows it (character references read)."""
    return html.unescape(text.decode("utf-8", "replace"))


def _role(tag: Tag) -> str:
    return attr_text(tag.attrs[b"role"][0]).strip().lower() if b"role" in tag.attrs else ""


def region_named(name: bytes, role: str) -> str:
    """The region an element opens: "content" (an ``article``, or another element than
    ``main`` with ``role="main"``: what a generator writes from the page's source), "text"
    (``main``, which may hold a theme's sidebars too), "nav" (``nav``,
    ``role="navigation"``, ``footer``: previous/next), "chrome" (``aside``, ``header``; see
    ``place``), or none."""
    if name == b"article" or (role == "main" and name != b"main"):
        return "content"
    if name == b"main":
        return "text"
    if name in (b"nav", b"footer") or role == "navigation":
        return "nav"
    if name in _NAV_REGIONS:
        return "chrome"
    return ""


def _region_of(name: bytes, tag: Tag) -> str:
    return region_named(name, _role(tag))


#: Where a piece of a page stands: in its main text, in navigation outside it.
IN_MAIN, IN_NAV = 1, 2


def place(regions: list[str]) -> int:
    """Where a position inside ``regions`` (outermost first, as ``region_named`` names
    them) stands: ``IN_MAIN`` anywhere in the page's content (navigation written in it
    included), else by the innermost ``main`` or navigation (a sidebar inside ``<main>``
    is navigation); an ``aside`` or ``header`` is navigation only outside the text (a
    docutils sidebar is text)."""
    if "content" in regions:
        return IN_MAIN
    chrome = False
    for region in reversed(regions):
        if region == "text":
            return IN_MAIN
        if region == "nav":
            return IN_NAV
        chrome = True
    return IN_NAV if chrome else 0


def in_text(place: int, has_main: bool) -> bool:
    """Whether what stands at ``place`` is the page's text, which a search index holds:
    in its main text, or, in a page without a main region, anywhere but navigation."""
    return place == IN_MAIN or (not has_main and place != IN_NAV)


def find_links(page: bytes) -> list[Link]:
    """Every link on ``page`` (in an encoding that keeps ASCII markup ASCII) and what
    leaves with it when its target is closed."""
    stack: list[_Open] = []
    # Links waiting for their list entry to end, to learn whether it holds anything else.
    pending: list[tuple[str, int, int, tuple[int, ...], str, bytes]] = []
    found: list[Link] = []
    size, pos = len(page), 0

    # The regions open now, outermost first (kept as elements open and close).
    regions: list[str] = []

    def region() -> str:
        """The innermost open region, read as "nav" or "text"."""
        if not regions:
            return "nav"  # page chrome outside any text region
        innermost = regions[-1]
        return "nav" if innermost == "chrome" else \
            "text" if innermost == "content" else innermost

    def placed() -> int:
        """Where the current position stands (``place``)."""
        return place(regions)

    # Whether the page has a main region (a ``main`` element or ``role="main"``).
    has_main = False

    def entry_of() -> _Open | None:
        """The list entry the current position belongs to directly (not a nested list)."""
        for entry in reversed(stack):
            if entry.name == b"li":
                return entry
            if entry.name in _LISTS:
                return None
        return None

    def text_holder() -> _Open | None:
        """The list entry or table cell text here stands in beside its links (None inside
        a link)."""
        for entry in reversed(stack):
            if entry.name == b"a":
                return None
            if entry.name in _HOLDERS:
                return entry
            if entry.name in _LISTS or entry.name == b"table":
                return None
        return None

    def cell_of() -> _Open | None:
        """The table cell of a row in the page's text the current position belongs to
        directly (not a list or table inside it)."""
        for entry in reversed(stack):
            if entry.name in _CELLS:
                return entry if entry.row is not None else None
            if entry.name in _LISTS or entry.name in (b"li", b"table"):
                return None
        return None

    # Links (by where they start) that take a card with them (by where it starts), and
    # those that stand in the page's text.
    carded: dict[int, int] = {}
    places: dict[int, int] = {}
    # List entries that hold another (a term of Sphinx's general index over its entries),
    # and the links outside the navigation: such an entry, with no link or block of its
    # own (a bare term, not a step in prose), goes when its every link does.
    holding: dict[int, _Open] = {}
    in_text_lists: set[int] = set()

    def card(below: int) -> _Open | None:
        """The card holding ``stack[:below]``'s top: the innermost article without an
        ``<h1>`` (a post's excerpt, a listing's entry) or list entry."""
        for index in range(below - 1, -1, -1):
            if stack[index].article:
                return None if stack[index].titled else stack[index]
            if stack[index].name == b"li":
                return stack[index]
        return None

    def headed_card() -> tuple[_Open, _Open] | None:
        """The heading that titles a card the current position is in, and the card."""
        for index in range(len(stack) - 1, -1, -1):
            if stack[index].name in _HEADINGS:
                around = card(index) if stack[index].title else None
                return None if around is None else (stack[index], around)
        return None

    def h1_words() -> None:
        """Words stand in the innermost open <h1> beside its links."""
        if depth[b"h1"]:
            for entry in reversed(stack):
                if entry.name == b"a":
                    return
                if entry.name == b"h1":
                    entry.other = True
                    return

    def close(index: int) -> None:
        while len(stack) > index:
            entry = stack.pop()
            if entry.region:
                regions.pop()
            if entry.name in _COUNTED:
                depth[_COUNTED[entry.name]] -= 1
            if entry.owner is not None:
                if entry.other:
                    # Words beside the links of an article's <h1>: the page's own article.
                    entry.owner.titled = True
                    for at in entry.took or ():
                        carded.pop(at, None)
                else:
                    h1_cards.append(entry)
            if entry.name in _HOLDERS or entry.name == b"tr":
                settle(entry)
            if entry.name in _CELLS and entry.filled and entry.row is not None:
                entry.row.filled_cells += 1
            elif entry.name == b"a" and not entry.filled:
                # A link with nothing in it over an article's card (a blog's list whose
                # entry is one overlay link): the card is that page's excerpt, when the
                # article has a title and turns out not to be the page's own.
                around = card(len(stack))
                if around is not None and around.article and around.headed:
                    overlays.append((entry.at, around))

    # Empty links over an article's card (after its title), decided when the page is read;
    # the <h1>s of articles that hold nothing but links: cards when there are several (a
    # list of them), the page's own article's title when there is one.
    overlays: list[tuple[int, _Open]] = []
    h1_cards: list[_Open] = []

    # How many links and table cells are open (most text stands in neither).
    depth = {b"a": 0, b"cell": 0, b"h1": 0}

    def fill() -> None:
        """Something stands in the innermost open link."""
        if depth[b"a"]:
            for entry in reversed(stack):
                if entry.name == b"a":
                    entry.filled = True
                    return

    def fill_cell() -> None:
        """Words or a link stand in the innermost open table cell."""
        if depth[b"cell"]:
            for entry in reversed(stack):
                if entry.name in _CELLS:
                    entry.filled = True
                    return
                if entry.name in (b"tr", b"table"):
                    return

    def opened_in_row(entry: _Open) -> None:
        """A heading, list or table opens: the innermost row is laid out, no row of links."""
        for outer in reversed(stack):
            if outer.name == b"tr":
                outer.block = True
                return

    def settle(entry: _Open) -> None:
        kept = []
        for href, at, cut_li, entries, where, raw in pending:
            if cut_li != entry.at:
                kept.append((href, at, cut_li, entries, where, raw))
                continue
            whole = where == "nav" or not entry.other
            if entry.row is not None and whole and not entry.after:
                # A row's first cell that is nothing but links: the row waits for its end
                # to tell a table of pages (autosummary, a module index) from a layout.
                kept.append((href, at, entry.row.at, entries, "row", raw))
                continue
            cut = entry.at if entry.name == b"tr" and not entry.block else \
                -1 if entry.name in _CELLS or entry.name == b"tr" else entry.at
            found.append(Link(href, at, cut if whole else -1, entries, raw))
        pending[:] = kept

    while pos < size:
        lt = page.find(b"<", pos)
        if lt < 0:
            text = page[pos:]
            pos = size
        else:
            text = page[pos:lt]
        if text.strip():
            fill()
            shown = _shown(text)
            wordy = any(char.isalnum() for char in shown)
            if wordy:
                h1_words()
                if any(char.isalpha() for char in shown):  # (not a column of numbers)
                    fill_cell()
            holder = text_holder()
            # A cell is a row's entry when nothing but its links has words (autosummary's
            # "name()", a module index's indent).
            if holder is not None and (holder.name == b"li" or wordy):
                holder.other = True
        if lt < 0:
            break
        kind, end, tag = token_at(page, lt)
        if kind == UNFINISHED:
            break
        if tag is None or kind == COMMENT:
            pos = end
            continue
        name = tag.name
        if kind == END:
            for index in range(len(stack) - 1, -1, -1):
                if stack[index].name == name:
                    close(index)
                    break
                if name == b"li" and stack[index].name in _LISTS:
                    break
            pos = end
            continue
        if name == b"li":
            for index in range(len(stack) - 1, -1, -1):
                if stack[index].name == b"li":
                    close(index)
                    break
                if stack[index].name in _LISTS:
                    break
            holding.update((e.at, e) for e in stack if e.name == b"li")
        elif name == b"a":
            for index in range(len(stack) - 1, -1, -1):  # an <a> closes an open one
                if stack[index].name == b"a":
                    close(index)
                    break
        if name in _OWN_PARTS or (name in LINKING and name != b"link"):
            for entry in reversed(stack):  # the innermost entry holds a part of its own
                if entry.name == b"li":
                    entry.own_part = True
                    break
        if name in LINKING and b"href" in tag.attrs:
            if name != b"link":
                fill_cell()
            raw = tag.attrs[b"href"][0]
            href = attr_text(raw).strip()
            where = region()
            if name != b"link":  # a <link> in the head holds no text
                places[lt] = placed()
            entries = tuple(e.at for e in stack if e.name == b"li")
            if where != "nav":
                in_text_lists.add(lt)  # (its entries count where they hold a list: below)
            holder = entry_of() if name != b"link" else None
            if holder is None and name != b"link" and where == "text":
                holder = cell_of()
            titled = headed_card() if name != b"link" else None
            if titled is not None:
                # A link in a card's heading: the card is that page's excerpt (a blog's
                # index, a listing), which goes whole with it.
                carded[lt] = titled[1].at
                if titled[0].took is not None:
                    titled[0].took.append(lt)
            if name == b"link":
                found.append(Link(href, lt, lt, (), raw))
            elif holder is not None:
                pending.append((href, lt, holder.at, entries, where, raw))
            else:
                found.append(Link(href, lt, lt if where == "nav" else -1, entries, raw))
        if name in _CELLS or name == b"tr":
            for index in range(len(stack) - 1, -1, -1):  # a cell or row ends the open one
                if stack[index].name in _CELLS or (stack[index].name == b"tr" and name == b"tr"):
                    close(index)
                    break
                if stack[index].name in (b"tr", b"table") or stack[index].name in _LISTS:
                    break
        fill()
        if name in _TRACKED and (not tag.self_closing or name in (b"li", b"a")):
            opened = _Open(name, lt, _region_of(name, tag))
            if (name == b"main" or _role(tag) == "main") \
                    and not any(entry.name in INERT for entry in stack):
                has_main = True
            if name == b"td" and stack and stack[-1].name == b"tr" and region() == "text":
                # (A header cell titles a column or a row: no row of pages is read there.)
                opened.row = stack[-1]
                opened.after = stack[-1].filled_cells > 0
            if name in _HEADINGS or name in _LISTS or name == b"table":
                opened_in_row(opened)
            if name in _COUNTED:
                depth[_COUNTED[name]] += 1
            opened.article = name == b"article" or _role(tag) == "article"
            if name in _HEADINGS and not any(entry.name in INERT for entry in stack):
                around = card(len(stack))
                if name == b"h1" and (around is None or not around.article):
                    for entry in reversed(stack):
                        if entry.article:
                            entry.titled = True
                            break
                elif name == b"h1" and around is not None:
                    # An article's <h1>: its title if it holds nothing but links (a card
                    # of a list, Hugo Ananke's), else the page's own article's (at its end).
                    opened.title = not around.headed
                    around.headed = True
                    opened.owner, opened.took = around, []
                elif around is not None:
                    # A list entry's every heading is its title; an article's first one.
                    opened.title = around.name == b"li" or not around.headed
                    around.headed = True
                    if opened.title:
                        # A heading inside a link (<a href><h2>..</h2></a>): the card's.
                        for index in range(len(stack) - 1, -1, -1):
                            if stack[index].name == b"a":
                                if card(index) is around:
                                    carded[stack[index].at] = around.at
                                break
            stack.append(opened)
            if opened.region:
                regions.append(opened.region)
        pos = end
        if name in RAW_TEXT:
            pos = script_end(page, end) if name == b"script" else raw_end(page, name, end)
        elif name == b"plaintext":
            break
    close(0)
    for href, at, _li, entries, where, raw in pending:
        found.append(Link(href, at, -1 if where == "row" else at, entries, raw))
    if len(h1_cards) < 2:
        for heading in h1_cards:
            if heading.owner is not None:
                heading.owner.titled = True
            for at in heading.took or ():
                carded.pop(at, None)
    for at, around in overlays:
        if not around.titled:
            carded.setdefault(at, around.at)
    terms = {at for at, entry in holding.items() if not entry.own_part}
    texts = {at for at, place in places.items() if in_text(place, has_main)}
    found = [Link(link.href, link.at, carded.get(link.at, link.cut),
                  tuple(e for e in link.entries if e in terms)
                  if link.at in in_text_lists else link.entries, link.raw, link.at in texts)
             if link.at in carded or link.at in texts or link.at in in_text_lists else link
             for link in found]
    found.sort(key=lambda link: link.at)
    return found


_BASE_TAG = re.compile(rb"<base[\t\n\f\r />]", re.IGNORECASE)


def document_bases(page: bytes) -> tuple[str, ...]:
    """The ``href`` of every ``<base href>`` tag on the page, in order (none: empty). A
    browser follows the page's relative links from the first that is the document's
    own; which one that is depends on how it builds its tree (a template's content, SVG
    and MathML, noscript with scripts off), so every tag outside comments and raw text is
    a candidate."""
    if _BASE_TAG.search(page) is None:
        return ()
    found: list[str] = []
    size, pos = len(page), 0
    while pos < size:
        lt = page.find(b"<", pos)
        if lt < 0:
            break
        kind, end, tag = token_at(page, lt)
        if kind == UNFINISHED:
            break
        pos = end
        if tag is None or kind != START:
            continue
        name = tag.name
        if name == b"base" and b"href" in tag.attrs:
            found.append(attr_text(tag.attrs[b"href"][0]).strip())
        elif name in RAW_TEXT:
            pos = script_end(page, end) if name == b"script" else raw_end(page, name, end)
        elif name == b"plaintext":
            break
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Cuts:
    """What leaves one page for one reader."""

    #: Elements removed whole, by the start of their tags.
    cut: frozenset[int]
    #: Links whose own tags go and whose words stay.
    unwrap: frozenset[int]
    #: The hrefs that lead to closed pages: none may be left in the page sent.
    closed: frozenset[str]
    #: Those targets' bytes as they stand in the page.
    raw: frozenset[bytes] = frozenset()


def leftovers(page: bytes, cuts: Cuts) -> frozenset[int]:
    """Links still on a rewritten ``page`` that lead to closed pages (by where their tags
    start): each is then taken out by itself. A page in which none of the closed targets'
    bytes stand any more has none (the rewriter copies what it keeps byte for byte)."""
    if not any(raw in page for raw in cuts.raw):
        return frozenset()
    return frozenset(link.at for link in find_links(page) if link.href in cuts.closed)


def removals(links: list[Link], closed: set[str], target: dict[str, str | None]) -> Cuts:
    """What leaves the page for links whose targets are closed (``target`` maps an href
    to its docs path, None when it leaves the docs)."""
    cut: set[int] = set()
    unwrap: set[int] = set()
    totals: dict[int, int] = {}
    shut: dict[int, int] = {}
    for link in links:
        path = target.get(link.href)
        is_closed = path is not None and path in closed
        for entry in link.entries:
            totals[entry] = totals.get(entry, 0) + 1
            if is_closed:
                shut[entry] = shut.get(entry, 0) + 1
        if not is_closed:
            continue
        if link.cut >= 0:
            cut.add(link.cut)
        else:
            unwrap.add(link.at)
    cut.update(entry for entry, count in shut.items() if count == totals[entry])
    hrefs = frozenset(href for href, path in target.items() if path is not None and path in closed)
    raw = frozenset(link.raw for link in links if link.href in hrefs)
    return Cuts(frozenset(cut), frozenset(unwrap), hrefs, raw)


def term_parts(links: list[Link]) -> dict[int, tuple[str, ...]]:
    """The list entries of a page's text that leave it only when every link under them
    does (a bare term over its own list), by where they start, with those links' hrefs."""
    parts: dict[int, list[str]] = {}
    for link in links:
        if link.text:
            for entry in link.entries:
                parts.setdefault(entry, []).append(link.href)
    return {at: tuple(dict.fromkeys(hrefs)) for at, hrefs in parts.items()}


def linked_parts(links: list[Link]) -> dict[int, tuple[str, ...]]:
    """The elements of a page's text that leave it whole with a link (a list entry that is
    nothing but links, a card, a link whose entry never ends), by where they start, with
    the hrefs of the links that take them: a search index holds their words."""
    parts: dict[int, list[str]] = {}
    for link in links:
        if link.text and link.cut >= 0:
            parts.setdefault(link.cut, []).append(link.href)
    return {at: tuple(dict.fromkeys(hrefs)) for at, hrefs in parts.items()}
