"""Sitemaps and static search indexes filtered per reader, and the page metadata they need.

An index lists pages; a reader may only see the entries of pages they may open. Whether
they may open a page is the config rules (``Policy.decide``) plus, where no rule speaks,
the page's own ``<meta name="gateway:...">``. That metadata is learned on demand: every
page the gateway serves records it (``Pages.process``), and when an index lists a page
that is not known yet, the head of that page is fetched through the upstream, a few at a
time, and kept for a while. A page whose metadata cannot be learned is left out of the
index for every reader its metadata could concern (fail closed).

Formats: ``sitemap*.xml`` (and ``.xml.gz``), MkDocs' ``search/search_index.json`` (also
Material for MkDocs), and Sphinx's ``searchindex.js``, the index of the most widely used
generator after MkDocs whose index is plain data (Docusaurus' lunr indexes are serialized
search structures and Pagefind's are binary fragments).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import html
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urljoin, urlsplit

from gateway.errors import GatewayError
from gateway.html import PageMeta, decode_body
from gateway.paths import decoded, normalize_path
from gateway.policy import Policy
from gateway.user import User


@dataclass(frozen=True)
class Learned:
    """What the gateway knows of a page: its metadata, and whether it holds gated elements
    or fields (None: not known, which counts as yes)."""

    meta: PageMeta
    fragments: bool | None = None


#: Learns one page: a bare PageMeta says nothing about the page's gated elements.
FetchMeta = Callable[[str], Awaitable[PageMeta | Learned | None]]

SITEMAP, MKDOCS, SPHINX = "sitemap", "mkdocs", "sphinx"
#: Largest index body the gateway filters; a bigger one is refused rather than passed on.
INDEX_LIMIT = 32 * 1024 * 1024

_log = logging.getLogger("gateway.indexes")
_SITEMAP_NAME = re.compile(r"sitemap[\w.-]*\.xml(?:\.gz)?", re.IGNORECASE)
_COMMENT = re.compile(rb"<!--.*?(?:-->|\Z)", re.DOTALL)
_URLSET = re.compile(rb"<([\w.-]+:)?urlset\b[^>]*>")
_URL_BLOCK = re.compile(rb"<(?P<p>(?:[\w.-]+:)?)url\b[^>]*>(?P<body>.*?)</(?P=p)url\s*>",
                        re.DOTALL)
_HREF = re.compile(rb"""<[\w.-]+:link\b[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_SPHINX_CALL = "Search.setIndex("
_EMPTY_URLSET = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
                 b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n</urlset>\n')


@dataclass(frozen=True)
class IndexFile:
    """An index the gateway filters: its format and the folder its locations start from."""

    kind: str
    base: str
    content_type: str


def match_index(path: str) -> IndexFile | None:
    """The index a decoded path (relative to the docs base path) names, or None."""
    folder, _, name = path.rpartition("/")
    folder += "/"
    if _SITEMAP_NAME.fullmatch(name):
        gz = name.lower().endswith(".gz")
        return IndexFile(SITEMAP, folder, "application/gzip" if gz else "application/xml")
    if name == "search_index.json" and folder.endswith("/search/"):
        return IndexFile(MKDOCS, folder[:-len("search/")], "application/json")
    if name == "searchindex.js":
        return IndexFile(SPHINX, folder, "text/javascript; charset=utf-8")
    return None


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
    are removed from pages), the words an index holds for a page with gated elements may
    come from them: such entries keep their page and title but lose their text.
    """

    def __init__(self, *, fragments: bool, base_path: str = "", ttl: float = 300.0,
                 miss_ttl: float = 30.0, max_entries: int = 20_000, concurrency: int = 8,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fragments = fragments
        self.base_path = base_path
        self.ttl = ttl
        self.miss_ttl = miss_ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Learned | None, float]] = OrderedDict()
        self._pending: dict[str, asyncio.Task[Learned | None]] = {}
        self._limit = asyncio.Semaphore(concurrency)
        #: Recently filtered indexes; they may lag behind page changes by ``miss_ttl``.
        self.filtered = FilteredCache(clock=clock, ttl=miss_ttl)

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, path: str, meta: PageMeta, *, fragments: bool | None = None) -> None:
        """Remember what a page served just now declares (and whether it has gated parts)."""
        self._store(page_key(path), Learned(meta, fragments))

    def known(self, path: str) -> tuple[bool, Learned | None]:
        """(True, what) for a page known now (None: unreadable), else (False, None)."""
        entry = self._entries.get(page_key(path))
        if entry is None or entry[1] <= self._clock():
            return False, None
        return True, entry[0]

    async def lookup(self, paths: Iterable[str],
                     fetch_meta: FetchMeta) -> dict[str, Learned | None]:
        """What is known of each path, fetching the rest (None: could not be read)."""
        result: dict[str, Learned | None] = {}
        waiting: dict[str, asyncio.Task[Learned | None]] = {}
        for path in dict.fromkeys(paths):
            found, meta = self.known(path)
            if found:
                self._entries.move_to_end(page_key(path))
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
        self._entries[key] = (learned, self._clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class FilteredCache:
    """Recent filtered indexes by (index, reader's access), so a page view costs no parse."""

    def __init__(self, *, clock: Callable[[], float], ttl: float,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._size = 0
        self._items: OrderedDict[tuple[Any, ...], tuple[bytes, float]] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        """A fresh filtered body, or None."""
        item = self._items.get(key)
        if item is None or item[1] <= self._clock():
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: tuple[Any, ...], body: bytes) -> None:
        """Keep a filtered body (the oldest go first past the size bound)."""
        if len(body) > self._max_bytes // 4:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._size -= len(old[0])
        self._items[key] = (body, self._clock() + self._ttl)
        self._size += len(body)
        while self._size > self._max_bytes:
            _, (dropped, _) = self._items.popitem(last=False)
            self._size -= len(dropped)


HIDDEN, SHOWN, BARE = 0, 1, 2  # BARE: shown, without the words the index holds for it


class _Judge:
    """Decides, for one reader, which of an index's pages they may open."""

    def __init__(self, user: User | None, policy: Policy, page_index: PageIndex,
                 fetch_meta: FetchMeta) -> None:
        self.user = user
        self.policy = policy
        self.page_index = page_index
        self.fetch_meta = fetch_meta

    async def verdicts(self, entries: Sequence[Sequence[str | None]], *,
                       words: bool = True) -> list[int]:
        """Per entry (its candidate paths; None: a location outside the site): HIDDEN,
        SHOWN or BARE.

        Every candidate the reader's access can be known for must be open to them, and at
        least one must be known: a page a rule or its metadata closes stays out.
        """
        scrub = words and self.page_index.fragments
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
        out = []
        for candidates, row in zip(entries, opens, strict=True):
            for col, path in enumerate(candidates):
                found = learned.get(path) if path is not None else None
                if row[col] is None and found is not None and path is not None:
                    row[col] = self.policy.may_view(path, self.user, found.meta)
            if not any(v is True for v in row) or any(v is False for v in row):
                out.append(HIDDEN)
                continue
            clean = any((found := learned.get(path)) is not None and found.fragments is False
                        for path in candidates if path is not None)
            out.append(BARE if scrub and not clean else SHOWN)
        return out


async def filter_index(kind: str, body: bytes, user: User | None, policy: Policy,
                       page_index: PageIndex, fetch_meta: FetchMeta, *,
                       base: str = "/") -> bytes:
    """The index ``body`` with only the pages ``user`` may open (``base``: the folder its
    relative locations start from, relative to the docs base path)."""
    reader = None if user is None else tuple(sorted(set(user.groups)))
    cache_key = (kind, base, hashlib.blake2b(body, digest_size=16).digest(), user is None, reader)
    cached = page_index.filtered.get(cache_key)
    if cached is not None:
        return cached
    judge = _Judge(user, policy, page_index, fetch_meta)
    if kind == SITEMAP:
        out = await _filter_sitemap(body, judge, page_index.base_path, base)
    elif kind == MKDOCS:
        out = await _filter_mkdocs(body, judge, base)
    elif kind == SPHINX:
        out = await _filter_sphinx(body, judge, base)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    page_index.filtered.put(cache_key, out)
    return out


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


async def _filter_sitemap(body: bytes, judge: _Judge, base_path: str, base: str) -> bytes:
    if body[:2] == b"\x1f\x8b":
        raw = decode_body(body, "gzip", limit=INDEX_LIMIT)
        inner = _EMPTY_URLSET if raw is None else await _filter_sitemap(raw, judge, base_path,
                                                                          base)
        return gzip.compress(inner, mtime=0)
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


# -- MkDocs -----------------------------------------------------------------------------


async def _filter_mkdocs(body: bytes, judge: _Judge, base: str) -> bytes:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    config = data.get("config", {}) if isinstance(data, dict) else {}
    docs = data.get("docs") if isinstance(data, dict) else None
    kept: list[Any] = []
    if isinstance(docs, list):
        valid = [doc for doc in docs
                 if isinstance(doc, dict) and isinstance(doc.get("location"), str)]
        entries = [[site_path(doc["location"].split("#", 1)[0], base)] for doc in valid]
        shown = await judge.verdicts(entries)
        for doc, verdict in zip(valid, shown, strict=True):
            if verdict == SHOWN:
                kept.append(doc)
            elif verdict == BARE and "#" not in doc["location"]:
                # Its sections and words may come from gated elements: title and page only.
                kept.append({**doc, "text": ""})
    # Only the two keys MkDocs writes: anything else could name pages in a way not read here.
    out = {"config": config, "docs": kept}
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- Sphinx -----------------------------------------------------------------------------

_SPHINX_KEEP = ("objnames", "objtypes", "envversion")


async def _filter_sphinx(body: bytes, judge: _Judge, base: str) -> bytes:
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
    # Pages whose words may come from gated elements keep their name and title only.
    words = {old: new for old, new in renumber.items() if shown[old] == SHOWN}
    out: dict[str, Any] = {}
    for key in ("docnames", "filenames", "titles"):
        values = data.get(key)
        if isinstance(values, list) and len(values) == len(names):
            out[key] = [values[i] for i in renumber]
    for key in ("terms", "titleterms"):
        out[key] = _sphinx_terms(data.get(key), words)
    out["objects"] = _sphinx_objects(data.get("objects"), words)
    out["indexentries"] = _sphinx_refs(data.get("indexentries"), words)
    out["alltitles"] = _sphinx_refs(data.get("alltitles"), renumber, words)
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
