"""The index formats the gateway filters, each reduced to the entries a reader may see.

``sitemap*.xml`` (and ``.xml.gz``), MkDocs' ``search/search_index.json`` (also Material
for MkDocs), and Sphinx's ``searchindex.js``; and the other listings: ``llms.txt`` and
``llms-full.txt``, RSS 2.0, Atom and JSON feeds, and the local search index of
@easyops-cn/docusaurus-search-local, whose lunr indexes are rebuilt as lunr builds them
(Pagefind's indexes are binary fragments and are not read). Each filter reads its format,
asks a ``Judge`` about the pages the entries name, and writes the entries it may keep.
The sitemap, MkDocs and Sphinx filters read what they cannot parse as empty; the other
listings raise ``Unreadable`` for it: refused, never passed.

A page with gated elements is listed whole only for a reader who may see all of them.
For anyone else MkDocs' entries lose the text of the elements that reader may not see
(``Scrub``); the other listings keep such a page's title and address only (BARE).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import html
import json
import math
import re
from array import array
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urljoin, urlsplit
from xml.parsers import expat

from gateway.errors import GatewayError, UpstreamError
from gateway.html.gating import PIECE_BREAK, PIECE_CODE, PIECE_TEXT
from gateway.paths import copy_of_pages, decoded, normalize_path, packing_of

HIDDEN, SHOWN, BARE = 0, 1, 2  # BARE: shown, without the words the index holds for it

_COMMENT = re.compile(rb"<!--.*?(?:-->|\Z)", re.DOTALL)
_URLSET = re.compile(rb"<([\w.-]+:)?urlset\b[^>]*>")
_URL_BLOCK = re.compile(rb"<(?P<p>(?:[\w.-]+:)?)url\b[^>]*>(?P<body>.*?)</(?P=p)url\s*>",
                        re.DOTALL)
_HREF = re.compile(rb"""<[\w.-]+:link\b[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_SPHINX_CALL = "Search.setIndex("
_EMPTY_URLSET = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
                 b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n</urlset>\n')


class Judge(Protocol):
    """Decides, for one reader, which of an index's pages they may open."""

    async def verdicts(self, entries: Sequence[Sequence[str | None]], *,
                       words: bool = True, objects: bool = False) -> list[int]:
        """Per entry (its candidate paths; None: a location outside the site): HIDDEN,
        SHOWN or BARE: shown without the words the format holds for it, which may come
        from gated elements the reader may not see (``words`` False: the format holds no
        words, never BARE). With ``objects``, for a format's objects and labels (which
        no list entry or card of a page's text defines), only gated elements count."""
        ...

    async def scrubs(self, entries: Sequence[Sequence[str | None]]) -> list[int | Scrub]:
        """As ``verdicts``, but for a page whose gated elements are known, what this
        reader may not see of it (a ``Scrub``) where ``verdicts`` says BARE; SHOWN when
        the reader may see every one."""
        ...


def site_path(location: str, base: str, *, base_path: str = "") -> str | None:
    """The decoded page path a location names, relative to the docs base path.

    Relative locations start from ``base``; absolute URLs keep their path, less the
    public base path. None for anything that is not one unambiguous path of this site.
    """
    target = urlsplit(urljoin("http://site.invalid" + base, location.strip()))
    path = target.path or "/"
    if base_path and (path == base_path or path.startswith(base_path + "/")):
        path = path[len(base_path):] or "/"
    try:
        return decoded(normalize_path(path))
    except (GatewayError, UnicodeDecodeError, ValueError):
        return None


# -- sitemaps ---------------------------------------------------------------------------


async def filter_sitemap(body: bytes, judge: Judge, base_path: str, base: str) -> bytes:
    """The sitemap with only the ``<url>`` entries the judge shows."""
    # Comments show nothing and could hide entries from the reading below: they go.
    text = _COMMENT.sub(b"", body)
    opening = _URLSET.search(text)
    if opening is None:
        return text if b"sitemapindex" in text else _EMPTY_URLSET
    prefix = opening.group(1) or b""
    closing = text.rfind(b"</" + prefix + b"urlset", opening.end())
    content = text[opening.end():closing if closing >= 0 else len(text)]
    blocks = [block for block in _URL_BLOCK.finditer(content) if block.group("p") == prefix]
    entries = [_sitemap_paths(block.group("body"), prefix, base_path, base) for block in blocks]
    shown = await judge.verdicts(entries, words=False)
    kept = [block.group(0) for block, verdict in zip(blocks, shown, strict=True)
            if verdict != HIDDEN]
    tail = text[closing:] if closing >= 0 else b"</" + prefix + b"urlset>\n"
    return text[:opening.end()] + b"".join(b"\n" + block for block in kept) + b"\n" + tail


def _sitemap_paths(block: bytes, prefix: bytes, base_path: str, base: str) -> list[str | None]:
    loc = re.compile(b"<" + re.escape(prefix) + rb"loc\b[^>]*>(.*?)</" + re.escape(prefix)
                     + rb"loc\s*>", re.DOTALL)
    urls = [found.group(1) for found in loc.finditer(block)]
    urls += [found.group(1) or found.group(2) for found in _HREF.finditer(block)]
    paths: list[str | None] = []
    for url in urls:
        text = url.strip()
        if text.startswith(b"<![CDATA[") and text.endswith(b"]]>"):
            text = text[9:-3]
        paths.append(site_path(html.unescape(text.decode("utf-8", errors="replace")), base,
                               base_path=base_path))
    return paths or [None]


# -- gated text in search entries -------------------------------------------------------

_WORD = re.compile(r"\w+")
#: Material for MkDocs keeps these tags in a search entry's text and escapes &, < and >.
_KEPT_TAG = r"</?(?:p|code|pre|li|ol|ul|sub|sup)>"
_PLAIN_RUNS = re.compile(r"(?P<space>\s+)|\S+")
_MARKUP_RUNS = re.compile(rf"(?P<space>(?:\s|{_KEPT_TAG})+)|(?P<escape>&(?:lt|gt|amp);)"
                          r"|[^\s<&]+|[<&]")
_UNESCAPE = {"&lt;": "<", "&gt;": ">", "&amp;": "&"}
_EMPTY_KEPT = re.compile(r"<(p|code|pre|li|ol|ul|sub|sup)>\s*</\1>[ \t\r\n]?")
_OPTIONAL, _REQUIRED = 1, 2  # the space between two words of a needle


def word_keys(texts: Iterable[str]) -> set[int]:
    """The words of some text pieces (runs of letters, digits and underscores, compared
    without case) as ``Words`` keeps them: each piece read alone and all of them joined,
    since a search index may join a page's pieces with or without a space."""
    pieces = list(texts)
    return {hash(word.casefold()) for text in (*pieces, "".join(pieces))
            for word in _WORD.findall(text)}


class Words:
    """A set of words, kept as their sorted hashes (eight bytes a word: the words of a
    page are kept as long as the page is known)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[int]) -> None:
        self._keys = array("q", sorted(set(keys)))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int):
            return False
        at = bisect.bisect_left(self._keys, key)
        return at < len(self._keys) and self._keys[at] == key

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Words) and self._keys == other._keys

    @staticmethod
    def union(sets: Iterable[Words]) -> Words:
        """The words of all of ``sets``."""
        return Words(key for words in sets for key in words._keys)

    def __hash__(self) -> int:
        return hash(self._keys.tobytes())


def _pattern(pieces: Sequence[tuple[str, int]]) -> re.Pattern[str] | None:
    """A pattern that finds the text of ``pieces`` in an entry's view (words and single
    spaces): the words in order, a space where the page has one, at most one where a
    tag stood, scripts and styles where an index kept them (a stretch of nothing else
    must be there); None for no words."""
    out: list[str] = []
    gap = 0
    words_seen = False
    last_word = ""
    for text, kind in pieces:
        if kind == PIECE_BREAK:
            gap = max(gap, _OPTIONAL)
            continue
        words = text.split()
        if not words:
            if text:  # white space only
                gap = _REQUIRED
            continue
        gap = max(gap, _REQUIRED if text[0].isspace() else _OPTIONAL)
        space = "" if not out else " " if gap == _REQUIRED else " ?"
        body = " ".join(re.escape(word) for word in words)
        if kind == PIECE_CODE:
            out.append(f"(?:{space}{body})?+")  # some indexes leave scripts out
        else:
            if not out and _WORD.match(words[0]):
                out.append(r"(?<!\w)")
            out.append(space + body)
            words_seen = True
            last_word = words[-1]
        gap = _REQUIRED if text[-1].isspace() else _OPTIONAL
    if not words_seen:
        code = [(text, PIECE_TEXT if kind == PIECE_CODE else kind) for text, kind in pieces]
        return _pattern(code) if any(kind == PIECE_CODE for _, kind in pieces) else None
    if _WORD.fullmatch(last_word[-1:]) and not out[-1].startswith("(?:"):
        out.append(r"(?!\w)")
    return re.compile("".join(out))


@dataclass(frozen=True)
class Needle:
    """How the text of one gated stretch is found in an entry: whole, or, in an entry
    that holds part of it (an index may start a new entry at a heading), each run of it
    between headings. Each pattern comes with the word it must start with, where it
    starts with one (found among an entry's words first, not by a scan of the entry)."""

    whole: re.Pattern[str] | None
    runs: tuple[re.Pattern[str], ...]
    whole_lead: str | None = None
    run_leads: tuple[str | None, ...] = ()

    def find(self, view: str, words: ViewWords) -> list[tuple[int, int]]:
        """The spans of ``view`` (whose ``words`` these are) it covers."""
        spans = _found(self.whole, self.whole_lead, view, words)
        if not spans:
            for run, lead in zip(self.runs, self.run_leads, strict=True):
                spans += _found(run, lead, view, words)
        return spans


class ViewWords:
    """Where each word of an entry's view starts, looked up by how a word begins."""

    def __init__(self, view: str) -> None:
        starts: dict[str, list[int]] = {}
        for word in _WORD.finditer(view):
            starts.setdefault(word.group(), []).append(word.start())
        self.starts = starts
        self.sorted = sorted(starts)

    def beginning(self, lead: str) -> list[int]:
        """Where the words that begin with ``lead`` start."""
        out: list[int] = []
        at = bisect.bisect_left(self.sorted, lead)
        while at < len(self.sorted) and self.sorted[at].startswith(lead):
            out += self.starts[self.sorted[at]]
            at += 1
        return out


def _found(pattern: re.Pattern[str] | None, lead: str | None, view: str,
           words: ViewWords) -> list[tuple[int, int]]:
    if pattern is None:
        return []
    if lead is None:
        matches = list(pattern.finditer(view))
    else:
        matches = [found for at in words.beginning(lead) if (found := pattern.match(view, at))]
    return [match.span() for match in matches if match.end() > match.start()]


def _lead(pieces: Sequence[tuple[str, int]]) -> str | None:
    """The word a pattern of ``pieces`` must start with: its first text word when that
    starts with a letter, digit or underscore and nothing optional comes first."""
    for text, kind in pieces:
        if kind == PIECE_BREAK:
            continue
        words = text.split()
        if not words:
            continue
        if kind != PIECE_TEXT:
            return None
        first = _WORD.match(words[0])
        return first.group() if first is not None else None
    return None


@functools.lru_cache(maxsize=512)
def needle(pieces: tuple[tuple[str, int], ...]) -> Needle:
    """The needle of a gated stretch's text pieces (made once for a while)."""
    groups: list[list[tuple[str, int]]] = [[]]
    for piece in pieces:
        if piece[1] == PIECE_BREAK:
            groups.append([])
        else:
            groups[-1].append(piece)
    runs = [(found, _lead(group)) for group in groups if (found := _pattern(group)) is not None]
    if len(runs) < 2:
        runs = []
    return Needle(_pattern(pieces), tuple(run for run, _ in runs), _lead(pieces),
                  tuple(lead for _, lead in runs))


def _view(text: str, markup: bool) -> tuple[str, list[tuple[int, int, int, bool]]]:
    """An entry's text as words and single spaces (tags Material keeps count as spaces,
    its escapes as the characters), and its runs: (start in the view, start and end in
    the text, whether the run is the text itself)."""
    out: list[str] = []
    runs: list[tuple[int, int, int, bool]] = []
    at = 0
    for found in (_MARKUP_RUNS if markup else _PLAIN_RUNS).finditer(text):
        if found.group("space") is not None:
            piece, literal = " ", False
        elif markup and found.group("escape") is not None:
            piece, literal = _UNESCAPE[found.group("escape")], False
        else:
            piece, literal = found.group(), True
        runs.append((at, found.start(), found.end(), literal))
        out.append(piece)
        at += len(piece)
    return "".join(out), runs


def _cut_spans(text: str, runs: list[tuple[int, int, int, bool]],
               spans: list[tuple[int, int]], markup: bool) -> str:
    """``text`` less the view's ``spans``, each left as one space between words."""
    starts = [run[0] for run in runs]

    def where(pos: int, end: bool) -> int:
        view_at, start, stop, literal = runs[bisect.bisect_right(starts, pos) - 1]
        if literal:
            return start + (pos - view_at) + (1 if end else 0)
        return stop if end else start

    cuts = sorted((where(start, False), where(end - 1, True)) for start, end in spans)
    out: list[str] = []
    at = 0
    for start, end in cuts:
        if end <= at:
            continue
        start = max(start, at)
        out.append(text[at:start])
        before = text[start - 1:start]
        if not before or before.isspace():
            while end < len(text) and text[end].isspace():
                end += 1  # the space after it goes too
        elif end < len(text) and not text[end].isspace():
            out.append(" ")
        at = end
    out.append(text[at:])
    left = "".join(out)
    if markup:  # as Material leaves out an element it kept a tag of that holds no text
        while (emptied := _EMPTY_KEPT.sub("", left)) != left:
            left = emptied
    return left.strip()


class Scrub:
    """What one reader may not see of a page whose gated elements are known: the text
    of the stretches gated for them (``needles``) and the ids in them, and what they may
    see: the ids and words of the rest of the page.

    ``text`` takes every stretch's text out of an entry's; an entry whose text then
    still holds a word the reader is not shown on the page keeps no text (an index may
    hold a stretch in a way not found here). The same holds for the page's parts that
    leave with a link: a word of theirs (``gone``) must stand in what the reader is shown
    of the page's text (``kept``). Where no gated element is hidden (``words`` None), only
    those words are checked: an index may join a page's headings into words it shows
    nowhere (Material's titles).
    """

    def __init__(self, needles: Sequence[Needle], hidden_ids: Collection[str],
                 open_ids: Sequence[Collection[str]], words: Sequence[Words] | None, *,
                 gone: Words | None = None, kept: Words | None = None) -> None:
        self.needles = needles
        self.hidden_ids = hidden_ids
        self.open_ids = open_ids
        self.words = words
        self.gone = gone
        self.kept = kept

    def anchor(self, anchor: str) -> bool:
        """Whether an anchor names an element of the page this reader is shown."""
        names = {anchor, unquote(anchor)}
        if any(name in self.hidden_ids for name in names):
            return False
        return any(name in ids for ids in self.open_ids for name in names)

    def text(self, text: str, *, markup: bool = False) -> str | None:
        """``text`` (Material's with ``markup``) less what this reader may not see; None
        when words may be left that they are not shown."""
        view, runs = _view(text, markup)
        words = ViewWords(view)
        spans: list[tuple[int, int]] = []
        for found in self.needles:
            spans += found.find(view, words)
        if spans:
            text = _cut_spans(text, runs, spans, markup)
            view = _view(text, markup)[0]
        for word in _WORD.findall(view):
            key = hash(word.casefold())
            if self.words is not None and not any(key in words for words in self.words):
                return None
            if self.gone is not None and key in self.gone \
                    and (self.kept is None or key not in self.kept):
                return None
        return text


# -- MkDocs -----------------------------------------------------------------------------


async def filter_mkdocs(body: bytes, judge: Judge, base: str) -> bytes:
    """MkDocs' ``search_index.json`` with only the docs the judge shows.

    A page with gated elements the reader may not see keeps its entries less their text
    (Material for MkDocs' too, whose text keeps some tags): a section entry whose heading
    is in such an element goes, and an entry whose title still holds a word the reader is
    not shown goes, one whose text does loses it. Where those elements are not known the
    page keeps its own entry, without text (bare).
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    config = data.get("config", {}) if isinstance(data, dict) else {}
    docs = data.get("docs") if isinstance(data, dict) else None
    # Material for MkDocs' search (which keeps some tags) writes "pipeline"; MkDocs' own
    # writes "indexing" instead.
    markup = isinstance(config, dict) and "pipeline" in config and "indexing" not in config
    kept: list[Any] = []
    if isinstance(docs, list):
        valid = [doc for doc in docs
                 if isinstance(doc, dict) and isinstance(doc.get("location"), str)]
        entries = [[site_path(doc["location"].split("#", 1)[0], base)] for doc in valid]
        shown = await judge.scrubs(entries)
        for doc, verdict in zip(valid, shown, strict=True):
            if isinstance(verdict, Scrub):
                scrubbed = _scrub_doc(doc, verdict, markup)
                if scrubbed is not None:
                    kept.append(scrubbed)
            elif verdict == SHOWN:
                kept.append(doc)
            elif verdict == BARE and "#" not in doc["location"]:
                # Its sections and words may come from gated elements: title and page only.
                kept.append({**doc, "text": ""})
    # Only the two keys MkDocs writes: anything else could name pages in a way not read here.
    out = {"config": config, "docs": kept}
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_SCRIPT_INDEX = b"var __index ="


async def filter_mkdocs_script(body: bytes, judge: Judge, base: str) -> bytes:
    """Material for MkDocs' offline ``search_index.js`` (``var __index = {...}``, the
    index as a script for pages opened from disk), filtered as ``filter_mkdocs`` filters
    the JSON; a script of any other shape keeps no page."""
    text = body.strip()
    if text.startswith(_SCRIPT_INDEX):
        text = text[len(_SCRIPT_INDEX):].rstrip(b";").strip()
    else:
        text = b""
    return _SCRIPT_INDEX + b" " + await filter_mkdocs(text, judge, base)


def _scrub_doc(doc: dict[str, Any], scrub: Scrub, markup: bool) -> dict[str, Any] | None:
    """A MkDocs entry less what the reader may not see, or None when it goes."""
    _, _, anchor = doc["location"].partition("#")
    if anchor and not scrub.anchor(anchor):
        return None  # a section whose heading the reader is not shown, or not known
    title = doc.get("title")
    if isinstance(title, str):
        title = scrub.text(title, markup=markup)
        if title is None:
            return None
    elif title is not None:
        return None
    text = doc.get("text")
    if isinstance(text, str):
        text = scrub.text(text, markup=markup)
    return {**doc, "title": title, "text": text or ""}


# -- Sphinx -----------------------------------------------------------------------------

_SPHINX_KEEP = ("objnames", "objtypes", "envversion")


async def filter_sphinx(body: bytes, judge: Judge, base: str) -> bytes:
    """Sphinx' ``searchindex.js`` with only the docs the judge shows, renumbered."""
    data = _sphinx_data(body)
    # Before Sphinx 1.8 the docnames were written as "filenames".
    names_key = "docnames" if isinstance(data, dict) and "docnames" in data else "filenames"
    names = data.get(names_key) if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(names, list) or not all(
            isinstance(name, str) for name in names):
        return _sphinx_dump({"docnames": [], "filenames": [], "titles": [], "terms": {},
                             "titleterms": {}, "objects": {}, "alltitles": {},
                             "indexentries": {}})
    entries = [_sphinx_paths(name, base) for name in names]
    shown = await judge.verdicts(entries)
    renumber = {old: new for new, old in enumerate(
        i for i, verdict in enumerate(shown) if verdict != HIDDEN)}
    # Pages whose words may come from gated elements keep their name and title only, and
    # their objects and titles where they hold no gated element the reader may not see.
    words = {old: new for old, new in renumber.items() if shown[old] == SHOWN}
    defined = await judge.verdicts(entries, objects=True)
    objects = {old: new for old, new in renumber.items() if defined[old] == SHOWN}
    out: dict[str, Any] = {}
    for key in ("docnames", "filenames", "titles"):
        values = data.get(key)
        if isinstance(values, list) and len(values) == len(names):
            out[key] = [values[i] for i in renumber]
    # A page that only loses linked parts (list entries, rows, cards: no section title is
    # one) keeps its titles' terms as well.
    out["terms"] = _sphinx_terms(data.get("terms"), words)
    out["titleterms"] = _sphinx_terms(data.get("titleterms"), objects)
    out["objects"] = _sphinx_objects(data.get("objects"), objects)
    out["indexentries"] = _sphinx_refs(data.get("indexentries"), objects)
    out["alltitles"] = _sphinx_refs(data.get("alltitles"), renumber, objects)
    for key in _SPHINX_KEEP:
        if key in data:
            out[key] = data[key]
    return _sphinx_dump(out)


def _sphinx_data(body: bytes) -> Any:
    text = body.decode("utf-8", errors="replace").strip().rstrip(";").rstrip()
    start = text.find(_SPHINX_CALL)
    if start < 0 or not text.endswith(")"):
        return None
    try:
        return json.loads(text[start + len(_SPHINX_CALL):-1])
    except (ValueError, RecursionError):
        return None


def _sphinx_dump(data: dict[str, Any]) -> bytes:
    return (_SPHINX_CALL + json.dumps(data, separators=(",", ":")) + ")").encode("ascii")


def _sphinx_paths(docname: str, base: str) -> list[str | None]:
    """The page a docname is served as: ``name.html`` (html builder) or ``name/`` (dirhtml)."""
    folder = docname[:-len("index")] if docname == "index" or docname.endswith("/index") \
        else docname + "/"
    return [site_path(docname + ".html", base), site_path(folder, base)]


def _doc(value: Any, renumber: dict[int, int]) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return renumber.get(value)
    return None


def _sphinx_terms(terms: Any, renumber: dict[int, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(terms, dict):
        return out
    for term, value in terms.items():
        if isinstance(value, list):
            docs = [new for new in (_doc(v, renumber) for v in value) if new is not None]
            if docs:
                out[term] = docs
        else:
            new = _doc(value, renumber)
            if new is not None:
                out[term] = new
    return out


def _sphinx_objects(objects: Any, renumber: dict[int, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(objects, dict):
        return out
    for prefix, children in objects.items():
        if isinstance(children, list):  # Sphinx 4.3 on: [[doc, type, prio, anchor, name], ...]
            rows = [[new, *row[1:]] for row in children if isinstance(row, list) and row
                    and (new := _doc(row[0], renumber)) is not None]
            if rows:
                out[prefix] = rows
        elif isinstance(children, dict):  # before: {name: [doc, type, prio, anchor]}
            named = {name: [new, *row[1:]] for name, row in children.items()
                     if isinstance(row, list) and row
                     and (new := _doc(row[0], renumber)) is not None}
            if named:
                out[prefix] = named
    return out


def _sphinx_refs(refs: Any, renumber: dict[int, int],
                 sections: dict[int, int] | None = None) -> dict[str, Any]:
    """``alltitles`` and ``indexentries``: {text: [[doc, anchor, ...], ...]}.

    With ``sections``, a row with an anchor (a section title) is kept only for those docs.
    """
    out: dict[str, Any] = {}
    if not isinstance(refs, dict):
        return out
    for text, rows in refs.items():
        if not isinstance(rows, list):
            continue
        kept = [[new, *row[1:]] for row in rows if isinstance(row, list) and row
                and (new := _doc(row[0], renumber)) is not None
                and (sections is None or len(row) < 2 or row[1] is None
                     or row[0] in sections)]
        if kept:
            out[text] = kept
    return out


# -- links ------------------------------------------------------------------------------

_PAGE_SCHEMES = frozenset({"", "http", "https"})


class Unreadable(UpstreamError):
    """A listing the gateway recognises and cannot read: refused, never passed on."""


def link_paths(location: str, base: str, base_path: str) -> list[str | None] | None:
    """The spellings of the page a link in a listing names, every one to be judged; None
    for a link that names no page of a site (``mailto:``, a fragment of the listing).

    A copy of a page's source (``gateway.paths.copy_of_pages``: ``a/index.md``, ``a.md``,
    ``a.html.md``, Sphinx's ``_sources/a.rst.txt``) is judged with the page it was made
    from; an address without a suffix also as the folder a static host serves for it
    (``/docs/intro`` and ``/docs/intro/``).
    """
    location = location.strip()
    try:
        scheme = urlsplit(location).scheme.lower() if ":" in location else ""
        if scheme not in _PAGE_SCHEMES or not location or location.startswith("#"):
            return None
        # A relative link starts from the listing's folder below the public base path; an
        # absolute one names its path in full (the base path is taken off again).
        path = site_path(location, base_path + base, base_path=base_path)
    except ValueError:  # not a URL at all (a broken IPv6 host, say)
        return [None]
    if path is None:
        return [None]
    name = path.rpartition("/")[2]
    if not name:
        return [path]
    pages = copy_of_pages(packing_of(path)[0])  # a .md.gz holds the .md's text
    if pages:
        return [path, *pages]
    if "." not in name:
        return [path, path + "/"]
    return [path]


def _combine(verdicts: Sequence[int]) -> int:
    """One verdict for several links that must all be open (any hidden hides them all)."""
    if any(verdict == HIDDEN for verdict in verdicts):
        return HIDDEN
    return BARE if any(verdict == BARE for verdict in verdicts) else SHOWN


class _Entries:
    """Entries of several links each, judged in one call and combined per entry."""

    def __init__(self) -> None:
        self.rows: list[list[str | None]] = []
        self.owners: list[int] = []

    def add(self, owner: int, paths: list[str | None]) -> None:
        self.rows.append(paths)
        self.owners.append(owner)

    async def judge(self, judge: Judge, count: int, *, words: bool) -> list[int]:
        """A verdict per owner (0 to ``count``); an owner with no link is SHOWN."""
        found: list[list[int]] = [[] for _ in range(count)]
        if self.rows:
            for owner, verdict in zip(self.owners,
                                      await judge.verdicts(self.rows, words=words),
                                      strict=True):
                found[owner].append(verdict)
        return [_combine(verdicts) for verdicts in found]


# -- llms.txt ---------------------------------------------------------------------------

_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")
_FENCE_OPEN = re.compile(r" {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]|\r?\n|\Z)")
_ITEM = re.compile(r"[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]|\r?\n|\Z)")
_INLINE = re.compile(r"\]\(\s*(<[^>\n]*>|[^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)")
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]{1,31}:[^<>\s]*)>")
_BARE_URL = re.compile(r"https?://[^\s<>()\[\]{}\"'`|\\^]+", re.IGNORECASE)
_HREF_ATTR = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""",
                        re.IGNORECASE)
_DEFINITION = re.compile(r" {0,3}\[([^\]\n]+)\]:[ \t]*<?([^\s>]+)>?", re.MULTILINE)
_LABEL = re.compile(r"\[([^\[\]\n]+)\]")


@dataclass
class _Block:
    """Lines ``start`` to ``end`` (exclusive) of a Markdown text: one judged unit."""

    kind: str  # "blank", "heading", "fence", "item" or "text"
    start: int
    end: int
    level: int = 0


def _decode_text(body: bytes, what: str) -> tuple[str, str]:
    """A UTF-8 text listing and its byte-order mark ("" without); refused when it is
    anything else."""
    bom = "\ufeff" if body.startswith(b"\xef\xbb\xbf") else ""
    # UTF-16 and UTF-32 without a byte-order mark are valid UTF-8 when the text is ASCII,
    # with a NUL beside every character: read so, no link would be found and every entry
    # kept. A text listing never holds a NUL.
    if b"\x00" in body:
        raise Unreadable(f"the docs server sent {what} with NUL bytes (UTF-16 or UTF-32?); "
                         "only UTF-8 text is read")
    try:
        return body[len(bom.encode()):].decode("utf-8"), bom
    except UnicodeDecodeError:
        raise Unreadable(f"the docs server sent {what} that is not UTF-8 text") from None


def _lines(text: str) -> list[str]:
    return _LINE.findall(text)


def _fence_end(lines: list[str], start: int) -> int:
    """The line after the fenced code block opened at ``start`` (its end, or the text's)."""
    opener = _FENCE_OPEN.match(lines[start])
    assert opener is not None
    mark = opener.group(1)
    closing = re.compile(r" {0,3}" + re.escape(mark[0]) + "{" + str(len(mark))
                         + r",}[ \t]*\r?\n?\Z")
    for index in range(start + 1, len(lines)):
        if closing.match(lines[index]):
            return index + 1
    return len(lines)


def _starts_block(line: str) -> bool:
    return not line.strip() or bool(_FENCE_OPEN.match(line) or _HEADING.match(line)
                                    or _ITEM.match(line))


def _md_blocks(lines: list[str]) -> list[_Block]:
    """The text's blocks: blank lines, headings, fenced code, list items (with their lazy
    continuation lines) and runs of other lines."""
    blocks: list[_Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            blocks.append(_Block("blank", index, index + 1))
            index += 1
            continue
        if _FENCE_OPEN.match(line):
            end = _fence_end(lines, index)
            blocks.append(_Block("fence", index, end))
            index = end
            continue
        heading = _HEADING.match(line)
        if heading:
            blocks.append(_Block("heading", index, index + 1, len(heading.group(1))))
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not _starts_block(lines[end]):
            end += 1
        blocks.append(_Block("item" if _ITEM.match(line) else "text", index, end))
        index = end
    return blocks


def _md_links(text: str, definitions: dict[str, str]) -> list[str]:
    """Every address a piece of Markdown may link to: inline links and images, autolinks,
    bare URLs, ``href`` attributes, reference definitions and the labels that use them."""
    found = [m.group(1).strip("<>") for m in _INLINE.finditer(text)]
    found += [m.group(1) for m in _AUTOLINK.finditer(text)]
    found += [m.group(0).rstrip(".,;:!?*_~") for m in _BARE_URL.finditer(text)]
    found += [next(g for g in m.groups() if g is not None) for m in _HREF_ATTR.finditer(text)]
    found += [m.group(2) for m in _DEFINITION.finditer(text)]
    if definitions:
        found += [definitions[label] for m in _LABEL.finditer(text)
                  if (label := _label(m.group(1))) in definitions]
    return found


def _label(text: str) -> str:
    return " ".join(text.split()).casefold()


def _definitions(text: str) -> dict[str, str]:
    return {_label(m.group(1)): m.group(2) for m in _DEFINITION.finditer(text)}


async def filter_llms(body: bytes, judge: Judge, base: str, base_path: str = "") -> bytes:
    """An ``llms.txt`` (llmstxt.org) with only the entries whose every link the judge shows.

    Every block (a list item, a paragraph, a heading, a code block) is judged by all the
    addresses it links to; a block with a closed one goes whole, its title and description
    with it, and a section left empty by that loses its heading.
    """
    text, bom = _decode_text(body, "an llms.txt")
    lines = _lines(text)
    blocks = _md_blocks(lines)
    kept = await _judge_blocks(lines, blocks, judge, base, base_path, _definitions(text))
    return (bom + "".join(_assemble(lines, blocks, kept))).encode("utf-8")


async def _judge_blocks(lines: list[str], blocks: list[_Block], judge: Judge, base: str,
                        base_path: str, definitions: dict[str, str],
                        *, words: bool = False) -> list[int]:
    entries = _Entries()
    for number, block in enumerate(blocks):
        if block.kind == "blank":
            continue
        for location in dict.fromkeys(_md_links("".join(lines[block.start:block.end]),
                                                definitions)):
            paths = link_paths(location, base, base_path)
            if paths is not None:
                entries.add(number, paths)
    return await entries.judge(judge, len(blocks), words=words)


def _assemble(lines: list[str], blocks: list[_Block], verdicts: list[int]) -> list[str]:
    """The lines of the blocks kept; a heading whose section lost every line it had goes
    too, and the blank lines a removed block leaves are not doubled."""
    keep = [verdict != HIDDEN for verdict in verdicts]
    removed = [not k and block.kind != "blank" for k, block in zip(keep, blocks, strict=True)]
    # Sections from the innermost out: a heading's section runs to the next heading of
    # its level or above.
    for number in range(len(blocks) - 1, -1, -1):
        block = blocks[number]
        if block.kind != "heading" or not keep[number]:
            continue
        end = number + 1
        while end < len(blocks) and not (blocks[end].kind == "heading"
                                         and blocks[end].level <= block.level):
            end += 1
        inside = range(number + 1, end)
        if any(removed[i] for i in inside) and not any(
                keep[i] and blocks[i].kind != "blank" for i in inside):
            keep[number] = False
            removed[number] = True
    out: list[str] = []
    after_removal = False
    for block, kept in zip(blocks, keep, strict=True):
        if not kept:
            after_removal = True
            continue
        if block.kind == "blank" and after_removal and (not out or not out[-1].strip()):
            continue  # the blank line of a removed block, next to another
        after_removal = after_removal and block.kind == "blank"
        out += lines[block.start:block.end]
    return out


# -- llms-full.txt ----------------------------------------------------------------------

_PAGE_KEY = re.compile(r"[ \t]*([A-Za-z][\w-]{0,30})[ \t]*:[ \t]*(\S.*?)[ \t]*\r?\n?\Z")
_URL_KEYS = ("url", "source")
#: Fetches a file of the site (relative to the base path) as the gateway itself: its body
#: unpacked, or None when it does not answer 200 or cannot be read.
FetchText = Callable[[str], Awaitable[bytes | None]]


@dataclass
class _Page:
    """A page of an llms-full.txt: lines ``start`` to ``end``, its heading and address
    lines up to ``head``, and the addresses that name it."""

    start: int
    head: int
    end: int
    urls: list[str]


async def filter_llms_full(body: bytes, judge: Judge, base: str, base_path: str = "",
                           fetch_text: FetchText | None = None) -> bytes:
    """An ``llms-full.txt`` with only the pages the judge shows (bare: heading only).

    Pages are told apart by the heading that introduces each with its address (a ``URL:``
    or ``Source:`` line under it), or, for mkdocs-llmstxt's file, which names no page, by
    the ``llms.txt`` and the pages' Markdown copies beside it: the file must be exactly
    what they make. Anything else is refused.
    """
    text, bom = _decode_text(body, "an llms-full.txt")
    lines = _lines(text)
    pages = _headed_pages(lines)
    if pages:
        return (bom + await _filter_headed(lines, pages, judge, base, base_path)).encode()
    if fetch_text is None:
        raise Unreadable("an llms-full.txt that names no page cannot be filtered here")
    return (bom + await _filter_mkdocs_llmstxt(text, judge, base, base_path, fetch_text)
            ).encode("utf-8")


def _page_head(lines: list[str], index: int) -> tuple[int, list[str]]:
    """After a heading at ``index``: the line its address lines end at, and the addresses
    (``URL:`` ones, else ``Source:`` ones); no addresses when none follow."""
    at = index + 1
    while at < len(lines) and at <= index + 2 and not lines[at].strip():
        at += 1
    keys: list[tuple[str, str]] = []
    while at < len(lines) and len(keys) < 8 and (found := _PAGE_KEY.match(lines[at])):
        keys.append((found.group(1).lower(), found.group(2)))
        at += 1
    for wanted in _URL_KEYS:
        urls = [value.strip("<>") for key, value in keys if key == wanted]
        if urls:
            return at, urls
    return index + 1, []


def _headed_pages(lines: list[str]) -> list[_Page]:
    """The pages of a file whose pages each start with a heading and their address; the
    text before the first is not a page. Empty when no page is introduced so. Refused
    when a heading as high as the pages' names no address: where such a page ends is not
    known."""
    pages: list[_Page] = []
    level = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        if _FENCE_OPEN.match(line):
            index = _fence_end(lines, index)
            continue
        heading = _HEADING.match(line)
        if heading:
            head, urls = _page_head(lines, index)
            depth = len(heading.group(1))
            if urls and (not pages or depth == level):
                if pages:
                    pages[-1].end = index
                level = depth
                pages.append(_Page(index, head, len(lines), urls))
                index = head
                continue
            if pages and (depth <= level or urls):
                # Where a page ends, or which page a heading with an address belongs to,
                # would be a guess.
                raise Unreadable("an llms-full.txt's pages cannot be told apart")
        index += 1
    return pages


async def _filter_headed(lines: list[str], pages: list[_Page], judge: Judge, base: str,
                         base_path: str) -> str:
    intro = lines[:pages[0].start]
    intro_blocks = _md_blocks(intro)
    intro_text = "".join(intro)
    kept_intro = await _judge_blocks(intro, intro_blocks, judge, base, base_path,
                                     _definitions(intro_text))
    entries = _Entries()
    for number, page in enumerate(pages):
        for url in page.urls:
            entries.add(number, link_paths(url, base, base_path) or [None])
    verdicts = await entries.judge(judge, len(pages), words=True)
    out = _assemble(intro, intro_blocks, kept_intro)
    for page, verdict in zip(pages, verdicts, strict=True):
        if verdict == SHOWN:
            out += lines[page.start:page.end]
        elif verdict == BARE:
            # Its words may come from gated elements: the heading and address only.
            out += lines[page.start:page.head]
            if out and not out[-1].endswith("\n"):
                out[-1] += "\n"
            out.append("\n")
    return "".join(out)


_LLMSTXT_SECTION = re.compile(r"## ([^\n]*)\n\n((?:- [^\n]*\n)*)\n")
_LLMSTXT_ITEM = re.compile(r"- \[(.*)\]\(([^()\s]*)\)(?:: .*)?\n")
_FETCHES = 8


async def _filter_mkdocs_llmstxt(text: str, judge: Judge, base: str, base_path: str,
                                 fetch_text: FetchText) -> str:
    """mkdocs-llmstxt's llms-full.txt: its header, then per section ``# name`` and the
    section's pages' Markdown copies joined by a newline, the sections and pages those
    of the llms.txt beside it. Rebuilt from them, and refused unless that is the file."""
    sibling = await fetch_text(base + "llms.txt")
    if sibling is None:
        raise Unreadable("an llms-full.txt without page addresses needs its llms.txt")
    index_text, _bom = _decode_text(sibling, "an llms.txt")
    cut = index_text.find("\n## ")
    if cut < 0:
        raise Unreadable("the llms.txt beside an llms-full.txt has no sections")
    header = index_text[:cut + 1]
    sections: list[tuple[str, list[str]]] = []
    at = cut + 1
    while at < len(index_text):
        section = _LLMSTXT_SECTION.match(index_text, at)
        if section is None:
            raise Unreadable("the llms.txt beside an llms-full.txt is not mkdocs-llmstxt's")
        items = [_LLMSTXT_ITEM.fullmatch(line) for line in _lines(section.group(2))]
        if not all(items):
            raise Unreadable("the llms.txt beside an llms-full.txt is not mkdocs-llmstxt's")
        sections.append((section.group(1), [item.group(2) for item in items if item]))
        at = section.end()
    copies = await _fetch_copies([url for _, urls in sections for url in urls], base,
                                 base_path, fetch_text)
    rebuilt = header + "".join(f"# {name}\n\n" + "\n".join(copies[url] for url in urls)
                               for name, urls in sections)
    if rebuilt != text:
        raise Unreadable("an llms-full.txt is not what the llms.txt and page copies make")
    entries = _Entries()
    pages = [url for _, urls in sections for url in urls]
    for number, url in enumerate(pages):
        entries.add(number, link_paths(url, base, base_path) or [None])
    verdicts = dict(zip(pages, await entries.judge(judge, len(pages), words=True),
                        strict=True))
    head_lines = _lines(header)
    head_blocks = _md_blocks(head_lines)
    kept_head = await _judge_blocks(head_lines, head_blocks, judge, base, base_path,
                                    _definitions(header))
    out = "".join(_assemble(head_lines, head_blocks, kept_head))
    for name, urls in sections:
        kept = []
        for url in urls:
            if verdicts[url] == SHOWN:
                kept.append(copies[url])
            elif verdicts[url] == BARE:
                first = _lines(copies[url])[:1]
                if first and _HEADING.match(first[0]):
                    kept.append(first[0] if first[0].endswith("\n") else first[0] + "\n")
        if kept or not urls:
            out += f"# {name}\n\n" + "\n".join(kept)
    return out


async def _fetch_copies(urls: list[str], base: str, base_path: str,
                        fetch_text: FetchText) -> dict[str, str]:
    """The text of each page copy named, a few at a time; refused when one is missing."""
    limit = asyncio.Semaphore(_FETCHES)

    async def one(url: str) -> tuple[str, str]:
        path = site_path(url, base_path + base, base_path=base_path)
        if path is None:
            raise Unreadable("an llms.txt names a page copy that is no path of the site")
        async with limit:
            body = await fetch_text(path)
        if body is None:
            raise Unreadable("a page copy an llms.txt names could not be read")
        return url, _decode_text(body, "a page copy")[0]

    return dict(await asyncio.gather(*(one(url) for url in dict.fromkeys(urls))))


# -- feeds: RSS 2.0, Atom, JSON Feed ----------------------------------------------------

_ATOM = "http://www.w3.org/2005/Atom"
_XML_BASE = "http://www.w3.org/XML/1998/namespace base"
_DC = "http://purl.org/dc/elements/1.1/"
#: What a bare entry keeps (its words may come from gated elements): names, addresses,
#: dates, authors and categories; everything else (descriptions, content) goes.
_RSS_BARE = frozenset({"title", "link", "guid", "pubDate", "author", "category", "comments",
                       "source", f"{_ATOM} link", f"{_DC} creator", f"{_DC} date"})
_ATOM_BARE = frozenset(f"{_ATOM} {name}" for name in (
    "id", "title", "link", "updated", "published", "author", "contributor", "category"))
_JSON_FEED_TOP = frozenset({"version", "title", "home_page_url", "feed_url", "description",
                            "user_comment", "next_url", "icon", "favicon", "author",
                            "authors", "language", "expired", "hubs", "items"})
_JSON_FEED_BARE = frozenset({"id", "url", "title", "date_published", "date_modified",
                             "author", "authors", "tags", "language"})
_XML_ENCODINGS = frozenset({"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1",
                            "latin1"})


async def filter_feed(body: bytes, judge: Judge, base: str, base_path: str = "") -> bytes:
    """An RSS 2.0 or Atom feed, or a JSON Feed, with only the entries the judge shows.

    An ``<item>`` / ``<entry>`` / item is judged by the addresses that name its page (its
    link, a permalink guid, an id that is a URL) and goes whole when one is closed; a bare
    one keeps its title, links and dates only. Anything else is refused.
    """
    start = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start == b"{":
        return await _filter_json_feed(body, judge, base, base_path)
    if start == b"<":
        return await _filter_xml_feed(body, judge, base, base_path)
    raise Unreadable("the docs server sent a feed that is neither XML nor JSON")


@dataclass
class _Element:
    name: str
    start: int
    tag_end: int
    empty: bool
    base: str


@dataclass
class _FeedEntry:
    start: int
    depth: int
    end: int = -1
    urls: list[str] = field(default_factory=list)
    children: list[tuple[str, int, int]] = field(default_factory=list)


def _tag_end(body: bytes, start: int) -> int:
    """The offset after the tag that starts at ``start`` (quoted ``>`` do not end it)."""
    quote = 0
    for index in range(start + 1, len(body)):
        byte = body[index]
        if quote:
            if byte == quote:
                quote = 0
        elif byte in (0x22, 0x27):
            quote = byte
        elif byte == 0x3E:
            return index + 1
    raise Unreadable("a feed's tag does not end")


class _FeedReader:
    """Reads an XML feed with expat: where each entry and its children start and end,
    the addresses naming its page, and the comments (which go: they could hide anything).
    A document type (and so any entity declaration) is refused."""

    def __init__(self, body: bytes, feed_url: str) -> None:
        self.body = body
        self.feed_url = feed_url
        self.kind = ""
        self.stack: list[_Element] = []
        self.entries: list[_FeedEntry] = []
        self.entry: _FeedEntry | None = None
        self.comments: list[tuple[int, int]] = []
        self.text: list[str] | None = None
        self.text_base = ""
        self.parser = expat.ParserCreate(namespace_separator=" ")
        self.parser.buffer_text = True
        self.parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        self.parser.StartDoctypeDeclHandler = self._refuse
        self.parser.EntityDeclHandler = self._refuse
        self.parser.XmlDeclHandler = self._declaration
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._characters
        self.parser.CommentHandler = self._comment

    def read(self) -> None:
        if self.body.startswith((b"\xff\xfe", b"\xfe\xff")) or self.body[:2] in (b"\x00<",
                                                                                 b"<\x00"):
            raise Unreadable("a feed in UTF-16 cannot be filtered here")
        try:
            self.parser.Parse(self.body, True)
        except expat.ExpatError as exc:
            raise Unreadable(f"the docs server sent a feed that is not XML: {exc}") from None
        if not self.kind:
            raise Unreadable("the docs server sent an empty feed")

    def _refuse(self, *args: Any) -> None:
        raise Unreadable("a feed with a document type cannot be filtered here")

    def _declaration(self, version: str | None, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.lower() not in _XML_ENCODINGS:
            raise Unreadable(f"a feed in {encoding} cannot be filtered here")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        start = self.parser.CurrentByteIndex
        tag_end = _tag_end(self.body, start)
        parent_base = self.stack[-1].base if self.stack else self.feed_url
        xml_base = attrs.get(_XML_BASE)
        element = _Element(name, start, tag_end, self.body[tag_end - 2:tag_end] == b"/>",
                           urljoin(parent_base, xml_base) if xml_base else parent_base)
        depth = len(self.stack)
        if depth == 0:
            if name == "rss":
                self.kind = "rss"
            elif name == f"{_ATOM} feed":
                self.kind = "atom"
            else:
                raise Unreadable(f"a feed whose root is {name.split()[-1]!r} is not RSS 2.0 "
                                 "or Atom")
        is_entry = name == ("item" if self.kind == "rss" else f"{_ATOM} entry")
        if is_entry:
            in_place = depth == 1 if self.kind == "atom" else (
                depth == 2 and self.stack[1].name == "channel")
            if not in_place or self.entry is not None:
                raise Unreadable("a feed holds an entry where entries do not go")
            self.entry = _FeedEntry(start, depth)
        elif self.entry is not None and depth == self.entry.depth + 1:
            self._entry_child(name, attrs, element.base)
        self.stack.append(element)

    def _entry_child(self, name: str, attrs: dict[str, str], base: str) -> None:
        assert self.entry is not None
        if name == f"{_ATOM} link":
            if attrs.get("rel", "alternate") == "alternate" and attrs.get("href"):
                self.entry.urls.append(urljoin(base, attrs["href"].strip()))
        elif self.kind == "rss" and (name == "link" or (
                name == "guid" and attrs.get("isPermaLink", "true").strip().lower() != "false")):
            self.text, self.text_base = [], base
        elif self.kind == "atom" and name == f"{_ATOM} id":
            self.text, self.text_base = [], ""  # an id names a page only as a URL

    def _characters(self, data: str) -> None:
        if self.text is not None:
            self.text.append(data)

    def _end(self, name: str) -> None:
        element = self.stack.pop()
        end = element.tag_end if element.empty else _tag_end(self.body,
                                                             self.parser.CurrentByteIndex)
        entry = self.entry
        if entry is None:
            return
        if len(self.stack) == entry.depth + 1:  # a child of the entry
            if self.text is not None:
                value = "".join(self.text).strip()
                self.text = None
                if value and self.text_base:
                    entry.urls.append(urljoin(self.text_base, value))
                elif value.lower().startswith(("http://", "https://")):
                    entry.urls.append(value)
            entry.children.append((name, element.start, end))
        elif len(self.stack) == entry.depth:
            entry.end = end
            self.entries.append(entry)
            self.entry = None

    def _comment(self, data: str) -> None:
        start = self.parser.CurrentByteIndex
        end = self.body.find(b"-->", start + 4)
        if end < 0:
            raise Unreadable("a feed's comment does not end")
        self.comments.append((start, end + 3))


async def _filter_xml_feed(body: bytes, judge: Judge, base: str, base_path: str) -> bytes:
    reader = _FeedReader(body, "http://site.invalid" + base_path + base)
    reader.read()
    entries = _Entries()
    for number, entry in enumerate(reader.entries):
        if not entry.urls:
            entries.add(number, [None])  # names no page: which page it tells of is unknown
        for url in entry.urls:
            entries.add(number, link_paths(url, base, base_path) or [None])
    verdicts = await entries.judge(judge, len(reader.entries), words=True)
    bare = _RSS_BARE if reader.kind == "rss" else _ATOM_BARE
    cuts: list[tuple[int, int]] = []
    for entry, verdict in zip(reader.entries, verdicts, strict=True):
        if verdict == HIDDEN:
            cuts.append((_blank_before(body, entry.start), entry.end))
        elif verdict == BARE:
            cuts += [(_blank_before(body, start), end)
                     for name, start, end in entry.children if name not in bare]
    return _cut(body, cuts + [(_blank_before(body, start), end)
                              for start, end in reader.comments])


def _blank_before(body: bytes, start: int) -> int:
    while start > 0 and body[start - 1] in b" \t\r\n":
        start -= 1
    return start


def _cut(body: bytes, cuts: list[tuple[int, int]]) -> bytes:
    """The body less the given ranges (ranges inside others count once)."""
    out: list[bytes] = []
    at = 0
    for start, end in sorted(cuts):
        if end <= at:
            continue
        out.append(body[at:max(start, at)])
        at = end
    out.append(body[at:])
    return b"".join(out)


async def _filter_json_feed(body: bytes, judge: Judge, base: str, base_path: str) -> bytes:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    items = data.get("items") if isinstance(data, dict) else None
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(items, list) \
            or not isinstance(version, str) or not version.startswith("https://jsonfeed.org/"):
        raise Unreadable("the docs server sent a JSON feed the gateway cannot read")
    if not all(isinstance(item, dict) for item in items):
        raise Unreadable("the docs server sent a JSON feed the gateway cannot read")
    entries = _Entries()
    for number, item in enumerate(items):
        urls = [item["url"]] if isinstance(item.get("url"), str) else []
        ident = item.get("id")
        if isinstance(ident, str) and ident.lower().startswith(("http://", "https://", "/")):
            urls.append(ident)
        if not urls:
            entries.add(number, [None])
        for url in urls:
            entries.add(number, link_paths(url, base, base_path) or [None])
    verdicts = await entries.judge(judge, len(items), words=True)
    kept: list[Any] = []
    for item, verdict in zip(items, verdicts, strict=True):
        if verdict == SHOWN:
            kept.append(item)
        elif verdict == BARE:
            kept.append({key: value for key, value in item.items() if key in _JSON_FEED_BARE})
    # Only the keys JSON Feed defines: an extension could name pages in a way not read here.
    out = {key: value for key, value in data.items() if key in _JSON_FEED_TOP}
    out["items"] = kept
    return json.dumps(out, ensure_ascii=False, indent=2).encode("utf-8")


# -- Docusaurus: @easyops-cn/docusaurus-search-local ------------------------------------

_LUNR_K1, _LUNR_B = 1.2, 0.75  # lunr's defaults, which the plugin keeps
_LUNR_SLACK = 0.0011  # a stored weight is rounded to 1/1000


async def filter_docusaurus(body: bytes, judge: Judge, base: str, base_path: str = "") -> bytes:
    """The ``search-index*.json`` of @easyops-cn/docusaurus-search-local with only the
    documents of pages the judge shows, numbered anew, and each lunr index rebuilt as lunr
    builds it from those documents.

    The file is a list of document groups (titles, headings, descriptions, keywords,
    contents), each ``{documents, index}``; a document's ``u`` is its page and ``p`` the
    page's title document. A bare page keeps its title document only. A file that is not
    this, or whose indexes are not what lunr makes of their documents (so they cannot be
    rebuilt the same way), is refused.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, list) or not all(
            isinstance(group, dict) and isinstance(group.get("documents"), list)
            and isinstance(group.get("index"), dict) for group in data):
        raise Unreadable("the docs server sent a search index the gateway cannot read")
    pages: dict[str, int] = {}
    for group in data:
        for doc in group["documents"]:
            if not isinstance(doc, dict) or not _is_int(doc.get("i")) \
                    or not isinstance(doc.get("u"), str) \
                    or ("p" in doc and not _is_int(doc["p"])):
                raise Unreadable("the docs server sent a search index the gateway cannot read")
            pages.setdefault(doc["u"], len(pages))
    entries = _Entries()
    for url, number in pages.items():
        entries.add(number, link_paths(url.split("#", 1)[0], base, base_path) or [None])
    verdicts = await entries.judge(judge, len(pages), words=True)
    kept = [[doc for doc in group["documents"]
             if verdicts[pages[doc["u"]]] == SHOWN
             or (verdicts[pages[doc["u"]]] == BARE and "p" not in doc)] for group in data]
    # Numbered anew from 1, in order: gaps would tell how many documents went.
    renumber = {old: new for new, old in enumerate(
        sorted({doc["i"] for docs in kept for doc in docs}), start=1)}
    out = []
    for group, docs in zip(data, kept, strict=True):
        if any("p" in doc and doc["p"] not in renumber for doc in docs):
            raise Unreadable("a search index document names a page it does not hold")
        new_docs = [{**doc, "i": renumber[doc["i"]],
                     **({"p": renumber[doc["p"]]} if "p" in doc else {})} for doc in docs]
        refs = {str(doc["i"]) for doc in group["documents"]}
        if len(refs) != len(group["documents"]):
            raise Unreadable("a search index holds one document twice")
        index = _lunr_rebuild(group["index"], refs,
                              [(str(doc["i"]), str(renumber[doc["i"]])) for doc in docs])
        out.append({"documents": new_docs, "index": index})
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class _Lunr:
    """A serialized lunr 2 index, read: its fields, documents in order, postings per term
    and term frequencies per field of each document."""

    fields: list[str]
    docs: list[str]
    postings: dict[str, dict[str, dict[str, Any]]]
    term_index: dict[str, int]
    frequencies: dict[tuple[str, str], dict[str, int]]
    vectors: dict[tuple[str, str], list[Any]]


def _lunr_read(index: dict[str, Any], refs: set[str]) -> _Lunr:
    bad = Unreadable("a search index holds a lunr index the gateway cannot rebuild")
    fields = index.get("fields")
    vectors = index.get("fieldVectors")
    inverted = index.get("invertedIndex")
    if not isinstance(index.get("version"), str) or not index["version"].startswith("2.") \
            or not isinstance(fields, list) or not fields \
            or not all(isinstance(name, str) and "/" not in name for name in fields) \
            or not isinstance(vectors, list) or not isinstance(inverted, list) \
            or not isinstance(index.get("pipeline"), list):
        raise bad
    read = _Lunr(fields, [], {}, {}, {}, {})
    for row in vectors:
        if not isinstance(row, list) or len(row) != 2 or not isinstance(row[0], str) \
                or not isinstance(row[1], list) or len(row[1]) % 2:
            raise bad
        name, _, ref = row[0].partition("/")
        if name not in fields or ref not in refs or (name, ref) in read.vectors:
            raise bad
        if ref not in read.docs:
            read.docs.append(ref)
        read.vectors[(name, ref)] = row[1]
        read.frequencies[(name, ref)] = {}
    # Every document has a vector per field, even an empty one.
    if set(read.docs) != refs or len(read.vectors) != len(refs) * len(fields):
        raise bad
    for row in inverted:
        if not isinstance(row, list) or len(row) != 2 or not isinstance(row[0], str) \
                or not isinstance(row[1], dict) or not _is_int(row[1].get("_index")) \
                or set(row[1]) - {"_index", *fields} or row[0] in read.postings:
            raise bad
        term, posting = row
        read.term_index[term] = posting["_index"]
        read.postings[term] = {}
        for name in fields:
            per = posting.get(name, {})
            if not isinstance(per, dict):
                raise bad
            for ref, meta in per.items():
                # The plugin keeps each occurrence's position: their count is the term's
                # frequency, which the weights and the field lengths are made of.
                positions = meta.get("position") if isinstance(meta, dict) else None
                if ref not in refs or not isinstance(positions, list) or not positions:
                    raise bad
                read.frequencies[(name, ref)][term] = len(positions)
            read.postings[term][name] = per
    return read


def _lunr_vectors(read: _Lunr, docs: list[str],
                  term_index: dict[str, int]) -> dict[tuple[str, str], list[Any]]:
    """The field vectors lunr's builder makes for ``docs`` (BM25, k1 1.2, b 0.75, weights
    rounded to 1/1000 as lunr does)."""
    wanted = set(docs)
    count = len(docs)
    lengths = {(name, ref): sum(read.frequencies[(name, ref)].values())
               for ref in docs for name in read.fields}
    average = {name: sum(lengths[(name, ref)] for ref in docs) / count if count else 0.0
               for name in read.fields}
    idf: dict[str, float] = {}
    out: dict[tuple[str, str], list[Any]] = {}
    for ref in docs:
        for name in read.fields:
            pairs: list[tuple[int, float]] = []
            length = lengths[(name, ref)]
            for term, frequency in read.frequencies[(name, ref)].items():
                if term not in idf:
                    having = sum(1 for per in read.postings[term].values()
                                 for other in per if other in wanted)
                    idf[term] = math.log(1 + abs((count - having + 0.5) / (having + 0.5)))
                score = idf[term] * ((_LUNR_K1 + 1) * frequency) / (
                    _LUNR_K1 * (1 - _LUNR_B + _LUNR_B * (length / average[name])) + frequency)
                pairs.append((term_index[term], math.floor(score * 1000 + 0.5) / 1000))
            out[(name, ref)] = [value for pair in sorted(pairs) for value in pair]
    return out


def _lunr_first_seen(read: _Lunr, docs: list[str]) -> list[str] | None:
    """The terms of ``docs`` in the order lunr's builder meets them (documents in order,
    fields in order, each field's terms by their first position); None when positions
    are not [start, length] pairs."""
    order: dict[str, None] = {}
    for ref in docs:
        for name in read.fields:
            firsts = []
            for term in read.frequencies[(name, ref)]:
                positions = read.postings[term][name][ref]["position"]
                if not all(isinstance(pos, list) and len(pos) == 2 and all(map(_is_int, pos))
                           for pos in positions):
                    return None
                firsts.append((min(pos[0] for pos in positions), read.term_index[term], term))
            for _, _, term in sorted(firsts):
                order.setdefault(term)
    return list(order)


def _lunr_rebuild(index: dict[str, Any], refs: set[str],
                  kept: list[tuple[str, str]]) -> dict[str, Any]:
    """The lunr index of the ``kept`` documents ((old ref, new ref), in order), as lunr
    builds it from them; refused unless the stored index is what lunr builds from its
    own documents (the same weights, so nothing else went into it)."""
    read = _lunr_read(index, refs)
    made = _lunr_vectors(read, read.docs, read.term_index)
    for key, stored in read.vectors.items():
        mine = made[key]
        if len(stored) != len(mine) or any(
                not isinstance(value, int | float) or isinstance(value, bool)
                or (position % 2 == 0 and value != mine[position])
                or abs(value - mine[position]) > _LUNR_SLACK
                for position, value in enumerate(stored)):
            raise Unreadable("a search index's lunr weights are not what its documents make")
    old_docs = [old for old, _ in kept]
    # Terms are numbered as lunr meets them; the stored numbers tell whether positions
    # show that order (else the stored order is kept, less the terms that went).
    seen_all = _lunr_first_seen(read, read.docs)
    by_position = seen_all is not None and all(
        read.term_index[term] == number for number, term in enumerate(seen_all))
    seen = _lunr_first_seen(read, old_docs) if by_position else None
    if seen is None:
        having = {term for ref in old_docs for name in read.fields
                  for term in read.frequencies[(name, ref)]}
        seen = sorted(having, key=read.term_index.__getitem__)
    numbers = {term: number for number, term in enumerate(seen)}
    vectors = _lunr_vectors(read, old_docs, numbers)
    rename = dict(kept)
    inverted = []
    for term in sorted(numbers, key=lambda word: word.encode("utf-16-be")):
        posting: dict[str, Any] = {"_index": numbers[term]}
        for name in read.fields:
            per = read.postings[term].get(name, {})
            posting[name] = {rename[ref]: per[ref] for ref in
                             sorted((ref for ref in per if ref in rename),
                                    key=lambda ref: int(rename[ref]))}
        inverted.append([term, posting])
    return {"version": index["version"], "fields": read.fields,
            "fieldVectors": [[f"{name}/{new}", vectors[(name, old)]]
                             for old, new in kept for name in read.fields],
            "invertedIndex": inverted, "pipeline": index["pipeline"]}
