"""The index formats the gateway filters, each reduced to the entries a reader may see.

``sitemap*.xml`` (and ``.xml.gz``), MkDocs' ``search/search_index.json`` (also Material
for MkDocs), and Sphinx's ``searchindex.js``, the index of the most widely used generator
after MkDocs whose index is plain data (Docusaurus' lunr indexes are serialized search
structures and Pagefind's are binary fragments). Each filter reads its format, asks a
``Judge`` about the pages the entries name, and writes the entries it may keep.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from gateway.errors import GatewayError
from gateway.paths import decoded, normalize_path

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
                       words: bool = True) -> list[int]:
        """Per entry (its candidate paths; None: a location outside the site): HIDDEN,
        SHOWN or BARE (``words`` False: the format holds no words, never BARE)."""
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


# -- MkDocs -----------------------------------------------------------------------------


async def filter_mkdocs(body: bytes, judge: Judge, base: str) -> bytes:
    """MkDocs' ``search_index.json`` with only the docs the judge shows (bare: no text)."""
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
