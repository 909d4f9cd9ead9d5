"""Sitemaps, static search indexes and other listings filtered per reader, and the page
metadata they need.

An index lists pages; a reader may only see the entries of pages they may open. Whether
they may open a page is the config rules (``Policy.decide``) plus, where no rule speaks,
the page's own ``<meta name="gateway:...">``. That metadata is learned on demand: every
page the gateway serves records it (``Pages.process``), and when an index lists a page
that is not known yet, the head of that page is fetched through the upstream, a few at a
time, and kept for a while. A page whose metadata cannot be learned is left out of the
index for every reader its metadata could concern (fail closed).

With gated elements removed from pages (``access.fragments``), a page that holds some is
learned with what they hold (``PageText``): the stretches the rewriter removes for a reader
who may see none of them, each with the gating attributes of the elements in it, and the
words and ids of the rest. A reader who may not see some of them gets the page's search
entries less their text (``Scrub``); where that is not known, less all their text (BARE).
With navigation filtered (``access.navigation``), the parts of a page's text that leave it
with a link to a closed page (a list entry, a table row, a card) are learned the same way,
and leave its entries for a reader who may not open where they link.

The formats themselves (sitemaps, MkDocs, Sphinx, llms.txt and llms-full.txt, RSS, Atom
and JSON feeds, Docusaurus' local search) are read and written in ``indexes.formats``; the
names of the listings other than sitemaps and the MkDocs and Sphinx indexes are settings
(``access.index_names``).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from gateway.bounded import Expiring
from gateway.config.model import IndexNames, ServerConfig
from gateway.errors import UpstreamError
from gateway.html.encoding import decode_body
from gateway.html.gating import PIECE_BREAK, GatedPart, allows, gated_text, linked_text
from gateway.html.head import PageMeta
from gateway.html.navigation import Link, document_bases, linked_parts, term_parts
from gateway.indexes.formats import (
    BARE,
    HIDDEN,
    SHOWN,
    FetchText,
    Scrub,
    Words,
    filter_docusaurus,
    filter_feed,
    filter_llms,
    filter_llms_full,
    filter_mkdocs,
    filter_mkdocs_script,
    filter_sitemap,
    filter_sphinx,
    needle,
    word_keys,
)
from gateway.indexes.inventory import filter_inventory
from gateway.paths import PACKINGS, LinkTargets, link_targets, packing_of
from gateway.policy import Policy
from gateway.proxy.origin import Answer, Origin, fetched
from gateway.user import User


@dataclass(frozen=True)
class LinkedPart:
    """An element of a page's text that leaves the page whole for a reader who may not
    open where one of its links lead (``navigation.linked_parts``), or each of them
    (``every``: ``navigation.term_parts``): those links' targets as written, and its text
    pieces, ids and words."""

    hrefs: tuple[str, ...]
    pieces: tuple[tuple[str, int], ...]
    ids: frozenset[str]
    words: Words
    #: It leaves only when every one of its links does (a bare term over its own list).
    every: bool = False


@dataclass(frozen=True)
class PageText:
    """What search needs to know of a page's gated elements: the stretches the rewriter
    removes for a reader who may see none of them (``parts``) with the words each holds,
    and the ids and words of the rest of the page; and, with navigation filtered, the
    parts of its text that leave with a link (``linked``), with the words of the page's
    text region by the linked parts around them (indexes into ``linked``)."""

    parts: tuple[GatedPart, ...]
    part_words: tuple[Words, ...]
    ids: frozenset[str]
    words: Words
    linked: tuple[LinkedPart, ...] = ()
    linked_words: tuple[tuple[frozenset[int], Words], ...] = ()
    #: The page's ``<base href>`` values, which its links are followed from.
    bases: tuple[str, ...] = ()


def _words(pieces: Iterable[tuple[str, int]]) -> Words:
    return Words(word_keys(text for text, kind in pieces if kind != PIECE_BREAK))


def page_text(page: bytes, links: list[Link] | None = None, *,
              gated: bool = True) -> PageText | None:
    """The ``PageText`` of a page in UTF-8 (as the rewriter reads it), with what leaves it
    with its ``links`` (given where navigation is filtered); None when where its gated
    elements or those parts end is not known. Without ``gated`` (gated elements are not
    removed here), the page has no gated parts: every reader is shown all of it; one with
    no linked parts either has nothing search must keep from anyone (its text is not
    read, and its ``PageText`` is empty)."""
    parts = linked_parts(links) if links else {}
    terms = {at: hrefs for at, hrefs in term_parts(links).items() if at not in parts} \
        if links else {}
    parts |= terms
    if not gated and not parts:
        return PageText((), (), frozenset(), Words(()))
    found = gated_text(page) if gated else None
    if gated and found is None:
        return None
    read = linked_text(page, frozenset(parts)) if parts or not gated else None
    if (parts or not gated) and read is None:
        return None
    linked: tuple[LinkedPart, ...] = ()
    cells: tuple[tuple[frozenset[int], Words], ...] = ()
    if parts and read is not None:
        order = {at: index for index, at in enumerate(sorted(parts))}
        linked = tuple(LinkedPart(parts[at], read.pieces[at], read.ids[at],
                                  _words(read.pieces[at]), at in terms) for at in order)
        cells = tuple((frozenset(order[at] for at in around), Words(word_keys(text)))
                      for around, text in read.text)
    bases = document_bases(page) if linked else ()
    if found is not None:
        return PageText(found.parts, tuple(_words(part.pieces) for part in found.parts),
                        found.ids, Words(word_keys(found.text)), linked, cells, bases)
    assert read is not None
    return PageText((), (), read.every_id, Words(word_keys(read.every_text)), linked, cells,
                    bases)


@dataclass(frozen=True)
class Learned:
    """What the gateway knows of a page: its metadata, whether it holds gated elements
    or fields (None: not known, which counts as yes), and for one that does, or one with
    linked parts, what they hold (None: not known, so its words are kept from every
    reader who may not see all of them)."""

    meta: PageMeta
    fragments: bool | None = None
    text: PageText | None = field(default=None, compare=False, repr=False)


#: Learns one page: a bare PageMeta says nothing about the page's gated elements.
FetchMeta = Callable[[str], Awaitable[PageMeta | Learned | None]]

SITEMAP, MKDOCS, SPHINX = "sitemap", "mkdocs", "sphinx"
#: Sphinx's inventory of a build's objects (intersphinx reads it).
SPHINX_INVENTORY = "sphinx_inventory"
#: Material for MkDocs' offline plugin: the same index as a script (``var __index = {...}``).
MKDOCS_SCRIPT = "mkdocs_script"
LLMS, LLMS_FULL, FEED, DOCUSAURUS = "llms", "llms_full", "feed", "docusaurus"
#: Largest index body the gateway filters; a bigger one is refused rather than passed on.
INDEX_LIMIT = 32 * 1024 * 1024

_log = logging.getLogger("gateway.indexes")
_SITEMAP_NAME = re.compile(r"sitemap[\w.-]*\.xml", re.IGNORECASE)
_UNKNOWN = Learned(PageMeta())  # a sentinel: ``known`` compares by identity


@dataclass(frozen=True)
class IndexFile:
    """An index the gateway filters: its format, the folder its locations start from, and
    ``packing``: the compression suffix of a precompressed copy ("" for the file itself)."""

    kind: str
    base: str
    content_type: str
    packing: str = ""


_GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_NAMES = IndexNames()


#: The listings named by setting, in the order they are tried, and their types.
_NAMED = ((LLMS, "llms", "text/plain; charset=utf-8"),
          (LLMS_FULL, "llms_full", "text/plain; charset=utf-8"),
          (FEED, "feeds", "application/xml"),
          (DOCUSAURUS, "docusaurus", "application/json"))


def _name_regex(globs: Sequence[str]) -> str:
    """One alternation of file-name globs (``*`` any run of characters, ``?`` one)."""
    return "|".join("".join(".*" if char == "*" else "." if char == "?" else re.escape(char)
                            for char in glob.lower()) for glob in globs) or "(?!)"


@functools.lru_cache(maxsize=16)
def _named(names: IndexNames) -> tuple[re.Pattern[str], tuple[tuple[str, str,
                                                                    re.Pattern[str]], ...]]:
    """A quick test of a last path segment (a packing suffix allowed), and per kind of
    listing the test of the unpacked name."""
    kinds = tuple((kind, content_type, re.compile(_name_regex(getattr(names, setting)),
                                                  re.DOTALL))
                  for kind, setting, content_type in _NAMED)
    every = "|".join(f"(?:{pattern.pattern})" for _, _, pattern in kinds)
    packings = "|".join(re.escape(packing) for packing in sorted(PACKINGS))
    quick = re.compile(rf"(?:{every})(?:\.(?:{packings}))?", re.DOTALL)
    return quick, kinds


def match_index(path: str, names: IndexNames = DEFAULT_NAMES) -> IndexFile | None:
    """The index a decoded path (relative to the docs base path) names, or None; names
    are compared without case (a case-blind file system serves every spelling). Sitemaps
    and the MkDocs and Sphinx indexes go by their own names, the other listings by
    ``names`` (``access.index_names``)."""
    last = path[path.rfind("/") + 1:].lower()
    quick, named = _named(names)
    if "sitemap" not in last and "index" not in last and not last.startswith("objects.inv") \
            and quick.fullmatch(last) is None:
        return None  # most paths: no listing
    unpacked, packing = packing_of(path)
    folder, _, name = unpacked.rpartition("/")
    folder += "/"
    name = name.lower()
    if _SITEMAP_NAME.fullmatch(name):
        found = IndexFile(SITEMAP, folder, "application/xml")
    elif name == "search_index.json" and folder.lower().endswith("/search/"):
        found = IndexFile(MKDOCS, folder[:-len("search/")], "application/json")
    elif name == "search_index.js" and folder.lower().endswith("/search/"):
        found = IndexFile(MKDOCS_SCRIPT, folder[:-len("search/")],
                          "text/javascript; charset=utf-8")
    elif name == "searchindex.js":
        found = IndexFile(SPHINX, folder, "text/javascript; charset=utf-8")
    elif name == "objects.inv":
        found = IndexFile(SPHINX_INVENTORY, folder, "application/octet-stream")
    else:
        for kind, content_type, pattern in named:
            if pattern.fullmatch(name):
                found = IndexFile(kind, folder, content_type)
                break
        else:
            return None
    if not packing:
        return found
    packed_type = "application/gzip" if packing == "gz" else "application/octet-stream"
    return IndexFile(found.kind, found.base, packed_type, packing)


def page_key(path: str) -> str:
    """The one spelling a page's metadata is kept under (``/a/index.html`` is ``/a/``)."""
    for index in ("index.html", "index.htm"):
        if path.endswith("/" + index):
            return path[:-len(index)]
    return path


class PageIndex:
    """What the gateway has learned about pages, bounded and expiring.

    ``lookup`` fetches what it does not know, ``concurrency`` pages at a time; readers
    asking for the same page at once share one fetch. With ``fragments`` (gated elements
    are removed from pages, or navigation is filtered), the words an index holds for a
    page with gated elements or linked parts may come from them: such entries keep their
    page and title but lose their text. ``targets``: where links on pages lead (by
    default, as for a site at the configuration's default public address).
    """

    def __init__(self, *, fragments: bool, base_path: str = "", ttl: float = 300.0,
                 miss_ttl: float = 30.0, max_entries: int = 20_000, concurrency: int = 8,
                 clock: Callable[[], float] = time.monotonic,
                 targets: LinkTargets | None = None) -> None:
        self.fragments = fragments
        self.base_path = base_path
        #: Where the links on pages lead (as navigation follows them).
        server = ServerConfig()
        self.targets = targets if targets is not None else \
            link_targets(server.public_url + base_path, base_path + server.prefix, base_path)
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self.max_entries = max_entries
        self._entries: Expiring[str, Learned | None] = Expiring(max_entries, clock=clock)
        self._pending: dict[str, asyncio.Task[Learned | None]] = {}
        self._limit = asyncio.Semaphore(concurrency)
        #: Recently filtered indexes; they may lag behind page changes by ``miss_ttl``.
        self.filtered = FilteredCache(clock=clock, ttl=miss_ttl)

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, path: str, meta: PageMeta, *, fragments: bool | None = None,
               text: PageText | None = None) -> None:
        """Remember what a page served just now declares (whether it has gated parts, and
        what they hold)."""
        self._store(page_key(path), Learned(meta, fragments, text))

    def known(self, path: str) -> tuple[bool, Learned | None]:
        """(True, what) for a page known now (None: unreadable), else (False, None)."""
        found = self._entries.get(page_key(path), _UNKNOWN)
        return (False, None) if found is _UNKNOWN else (True, found)

    async def lookup(self, paths: Iterable[str],
                     fetch_meta: FetchMeta) -> dict[str, Learned | None]:
        """What is known of each path, fetching the rest (None: could not be read)."""
        result: dict[str, Learned | None] = {}
        waiting: dict[str, asyncio.Task[Learned | None]] = {}
        for path in dict.fromkeys(paths):
            found, meta = self.known(path)
            if found:
                self._entries.touch(page_key(path))
                result[path] = meta
                continue
            key = page_key(path)
            task = self._pending.get(key)
            if task is None:
                task = asyncio.ensure_future(self._fetch(key, path, fetch_meta))
                self._pending[key] = task
                task.add_done_callback(partial(self._forget, key))
            waiting[path] = task
        if waiting:
            # A reader who goes away does not cancel fetches other readers may share.
            await asyncio.wait(set(waiting.values()))
            for path, task in waiting.items():
                result[path] = None if task.cancelled() else task.result()
        return result

    async def close(self) -> None:
        """Cancel fetches still running (at shutdown)."""
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _fetch(self, key: str, path: str, fetch_meta: FetchMeta) -> Learned | None:
        async with self._limit:
            try:
                found = await fetch_meta(path)
            except Exception as exc:  # any failure means "unknown", which fails closed
                _log.warning("page metadata for %s could not be read: %s", path,
                             type(exc).__name__)
                found = None
        learned = Learned(found) if isinstance(found, PageMeta) else found
        self._store(key, learned)
        return learned

    def _forget(self, key: str, task: asyncio.Task[Learned | None]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]

    def _store(self, key: str, learned: Learned | None) -> None:
        ttl = self.ttl if learned is not None else self.miss_ttl
        self._entries.put(key, learned, ttl)


class FilteredCache:
    """Recent filtered indexes by (index, reader's access), so a page view costs no parse."""

    def __init__(self, *, clock: Callable[[], float], ttl: float,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._items: Expiring[tuple[Any, ...], bytes] = Expiring(max_bytes, clock=clock, weigh=len)

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        """A fresh filtered body, or None."""
        body = self._items.get(key)
        if body is not None:
            self._items.touch(key)
        return body

    def put(self, key: tuple[Any, ...], body: bytes) -> None:
        """Keep a filtered body (the oldest go first past the size bound)."""
        if len(body) <= self._max_bytes // 4:
            self._items.put(key, body, self._ttl)


class _Judge:
    """The ``Judge`` of one reader: the config rules, then the metadata of the pages."""

    def __init__(self, user: User | None, policy: Policy, page_index: PageIndex,
                 fetch_meta: FetchMeta) -> None:
        self.user = user
        self.policy = policy
        self.page_index = page_index
        self.fetch_meta = fetch_meta
        # The entries last judged, and how: a format may ask of the same entries twice
        # (Sphinx: for its words, and for its objects).
        self._last: tuple[Sequence[Sequence[str | None]], bool,
                          list[tuple[int, list[tuple[str, Learned]]]]] | None = None

    async def verdicts(self, entries: Sequence[Sequence[str | None]], *,
                       words: bool = True, objects: bool = False) -> list[int]:
        """HIDDEN, SHOWN or BARE per entry (see ``Judge.verdicts``): BARE for a page with
        gated elements or linked parts unless they are known and the reader may see
        every one (with ``objects``, linked parts do not count)."""
        judged = await self._judge(entries, words and self.page_index.fragments)
        texts = [self._text(known) if verdict == BARE else None for verdict, known in judged]
        cut = await self.linked_cut(texts) if not objects else {}
        return [SHOWN if text is not None and not any(self._hidden(text[1]))
                and not cut.get(id(text[1])) else verdict
                for (verdict, _), text in zip(judged, texts, strict=True)]

    async def scrubs(self, entries: Sequence[Sequence[str | None]]) -> list[int | Scrub]:
        """As ``verdicts``, with a ``Scrub`` of what the reader may not see of a page
        whose gated elements and linked parts are known (see ``Judge.scrubs``)."""
        judged = await self._judge(entries, self.page_index.fragments)
        texts = [self._text(known) if verdict == BARE else None for verdict, known in judged]
        cut = await self.linked_cut(texts)
        made: dict[int, int | Scrub] = {}
        out: list[int | Scrub] = []
        for (verdict, _), text in zip(judged, texts, strict=True):
            if text is None:
                out.append(verdict)
                continue
            if id(text[1]) not in made:
                made[id(text[1])] = self._scrub(text[1], cut[id(text[1])])
            out.append(made[id(text[1])])
        return out

    @staticmethod
    def _text(known: list[tuple[str, Learned]]) -> tuple[str, PageText] | None:
        """What the gated elements and linked parts of a page learned under the spellings
        ``known`` hold, and the path it was learned at; None unless every spelling that
        holds some has the same known ones."""
        texts: list[tuple[str, PageText]] = []
        for path, found in known:
            if found.fragments is False and found.text is None:
                continue
            if found.text is None:
                return None
            if all(found.text != text for _, text in texts):  # one page, two spellings
                texts.append((path, found.text))
        return texts[0] if len(texts) == 1 else None

    async def linked_cut(self, texts: Sequence[tuple[str, PageText] | None]
                          ) -> dict[int, frozenset[int]]:
        """Per page text (by id), its linked parts that leave for this reader: those with
        a link to a page they may not open (or whose access cannot be known)."""
        base_path = self.page_index.base_path
        follow = self.page_index.targets
        # Where each link leads: from the page's address and, under a <base href>, from
        # there too (a part leaves when its link leads to a closed page either way).
        targets: dict[tuple[str, str], tuple[str | None, ...]] = {}
        for text in texts:
            if text is not None:
                path, found_text = text
                public = base_path + path
                starts = [follow.origin + public, *follow.bases(public, found_text.bases)]
                for part in found_text.linked:
                    for href in part.hrefs:
                        if (path, href) not in targets:
                            targets[path, href] = tuple(follow.target_from(start, href)
                                                        for start in starts)
        wanted = sorted({target for found in targets.values() for target in found
                         if target is not None})
        judged = await self._judge_anew([[target] for target in wanted], False) \
            if wanted else []
        closed = {target for target, (verdict, _) in zip(wanted, judged, strict=True)
                  if verdict == HIDDEN}
        cut: dict[int, frozenset[int]] = {}
        for text in texts:
            if text is not None and id(text[1]) not in cut:
                path, found = text
                cut[id(found)] = frozenset(
                    index for index, part in enumerate(found.linked)
                    if (all if part.every else any)(
                        any(target in closed for target in targets[path, href])
                        for href in part.hrefs))
        return cut

    def _hidden(self, text: PageText) -> list[bool]:
        """Per gated stretch of a page, whether the reader may not see it."""
        return [not all(allows(markers, self.user) for markers in part.markers)
                for part in text.parts]

    def _scrub(self, text: PageText, cut: frozenset[int]) -> int | Scrub:
        """What the reader may not see of a page (SHOWN: nothing); ``cut``: its linked
        parts that leave for them."""
        hidden = self._hidden(text)
        if not any(hidden) and not cut:
            return SHOWN
        parts = list(zip(text.parts, text.part_words, hidden, strict=True))
        linked = [part for index, part in enumerate(text.linked) if index in cut]
        return Scrub([*(needle(part.pieces) for part, _, gone in parts if gone),
                      *(needle(part.pieces) for part in linked)],
                     frozenset(name for part, _, gone in parts if gone for name in part.ids)
                     | frozenset(name for part in linked for name in part.ids),
                     [text.ids, *(part.ids for part, _, gone in parts if not gone)],
                     [text.words, *(words for _, words, gone in parts if not gone)]
                     if any(hidden) else None,
                     gone=Words.union(part.words for part in linked) if linked else None,
                     kept=Words.union(words for around, words in text.linked_words
                                      if not around & cut))

    async def _judge(self, entries: Sequence[Sequence[str | None]],
                     scrub: bool) -> list[tuple[int, list[tuple[str, Learned]]]]:
        """HIDDEN, SHOWN or BARE per entry (BARE only with ``scrub``), and what is known of
        its pages.

        Every candidate the reader's access can be known for must be open to them, and at
        least one must be known: a page a rule or its metadata closes stays out.
        """
        last = self._last
        if last is not None and last[0] is entries and last[1] == scrub:
            return last[2]
        judged = await self._judge_anew(entries, scrub)
        self._last = (entries, scrub, judged)
        return judged

    async def _judge_anew(self, entries: Sequence[Sequence[str | None]],
                          scrub: bool) -> list[tuple[int, list[tuple[str, Learned]]]]:
        opens: list[list[bool | None]] = []
        wanted: set[str] = set()
        for candidates in entries:
            row: list[bool | None] = []
            for path in candidates:
                if path is None:
                    row.append(False)
                    continue
                decision = self.policy.decide(path, self.user)
                row.append(None if decision.meta_applies else decision.allowed)
                if decision.meta_applies or (scrub and decision.allowed):
                    wanted.add(path)
            opens.append(row)
        learned = await self.page_index.lookup(sorted(wanted), self.fetch_meta) if wanted \
            else {}
        out: list[tuple[int, list[tuple[str, Learned]]]] = []
        for candidates, row in zip(entries, opens, strict=True):
            for col, path in enumerate(candidates):
                found = learned.get(path) if path is not None else None
                if row[col] is None and found is not None and path is not None:
                    row[col] = self.policy.may_view(path, self.user, found.meta)
            if not any(v is True for v in row) or any(v is False for v in row):
                out.append((HIDDEN, []))
                continue
            # Clean: known without gated or linked parts under every spelling that is
            # known (a page's Markdown copy holds none, yet its words are the page's).
            known = [(path, found) for path in candidates if path is not None
                     and (found := learned.get(path)) is not None]
            clean = bool(known) and all(found.fragments is False and found.text is None
                                        for _, found in known)
            out.append((BARE if scrub and not clean else SHOWN, known))
        return out


async def closed_linked(text: PageText, path: str, user: User | None, policy: Policy,
                        page_index: PageIndex, fetch_meta: FetchMeta) -> frozenset[int]:
    """The linked parts of the page learned at ``path`` (with ``text``) that leave it for
    ``user``, by their indexes in ``text.linked``."""
    judge = _Judge(user, policy, page_index, fetch_meta)
    return (await judge.linked_cut([(path, text)]))[id(text)]


def text_fetcher(origin: Origin) -> FetchText:
    """How the listings read other files of the site (the llms.txt and page copies an
    llms-full.txt is made of): an anonymous GET, unpacked; None unless it answers 200."""

    async def use(answer: Answer) -> bytes | None:
        body = await answer.read_all(INDEX_LIMIT)
        encodings = ",".join(answer.headers.getall("Content-Encoding", ()))
        return decode_body(body, encodings, limit=INDEX_LIMIT) if encodings else body

    async def fetch(path: str) -> bytes | None:
        return await fetched(origin, path, use)

    return fetch


async def filter_index(index: IndexFile, body: bytes, user: User | None, policy: Policy,
                       page_index: PageIndex, fetch_meta: FetchMeta,
                       fetch_text: FetchText | None = None) -> bytes:
    """The index ``body`` with only the pages ``user`` may open; a gzipped one (a ``.gz``
    copy, or a file that is gzip inside) comes back gzipped. ``fetch_text`` reads other
    files of the site, for a listing made of them (without it, such a listing is refused).

    Raises UpstreamError for a copy packed in a way the gateway cannot undo, one that
    does not unpack, or a listing (other than a sitemap or the MkDocs and Sphinx indexes)
    that cannot be read: refused, never passed on unfiltered.
    """
    if index.packing not in ("", "gz"):
        raise UpstreamError(f"a .{index.packing} copy of an index cannot be filtered here")
    if body.startswith(_GZIP_MAGIC):
        inner = decode_body(body, "gzip", limit=INDEX_LIMIT)
        if inner is None:
            raise UpstreamError("the docs server sent a gzipped index that does not unpack")
        plain = replace(index, packing="")
        return gzip.compress(await filter_index(plain, inner, user, policy, page_index,
                                                fetch_meta, fetch_text), mtime=0)
    reader = None if user is None else tuple(sorted(set(user.groups)))
    cache_key = (index.kind, index.base, hashlib.blake2b(body, digest_size=16).digest(),
                 user is None, reader)
    cached = page_index.filtered.get(cache_key)
    if cached is not None:
        return cached
    judge = _Judge(user, policy, page_index, fetch_meta)
    if index.kind == SITEMAP:
        out = await filter_sitemap(body, judge, page_index.base_path, index.base)
    elif index.kind == MKDOCS:
        out = await filter_mkdocs(body, judge, index.base)
    elif index.kind == MKDOCS_SCRIPT:
        out = await filter_mkdocs_script(body, judge, index.base)
    elif index.kind == SPHINX:
        out = await filter_sphinx(body, judge, index.base)
    elif index.kind == SPHINX_INVENTORY:
        out = await filter_inventory(body, judge, index.base, INDEX_LIMIT)
    elif index.kind == LLMS:
        out = await filter_llms(body, judge, index.base, page_index.base_path)
    elif index.kind == LLMS_FULL:
        out = await filter_llms_full(body, judge, index.base, page_index.base_path, fetch_text)
    elif index.kind == FEED:
        out = await filter_feed(body, judge, index.base, page_index.base_path)
    elif index.kind == DOCUSAURUS:
        out = await filter_docusaurus(body, judge, index.base, page_index.base_path)
    else:
        raise ValueError(f"unknown index kind {index.kind!r}")
    page_index.filtered.put(cache_key, out)
    return out
