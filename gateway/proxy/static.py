"""Serve a built docs folder (``upstream.root``) the way nginx or Caddy's file_server would."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from aiohttp import hdrs, web
from multidict import CIMultiDict

from gateway.proxy.origin import CHUNK, Answer, BrokenAnswer, Origin
from gateway.responses import error_response, wants_html
from gateway.scope import Scope

ALLOW = "GET, HEAD"
# Longer request paths cannot name a file on any common filesystem.
_MAX_PATH = 4096
# Bigger than any sane error page; such a 404.html is not kept in memory.
_MAX_404_PAGE = 1024 * 1024
# Dot names are build leftovers (.git, .env, .buildinfo); only this one is meant to be public.
_PUBLIC_DOT_NAMES = frozenset({".well-known"})
_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII | re.IGNORECASE)
_NOSNIFF = ("X-Content-Type-Options", "nosniff")

# Fixed here because the system's mime.types differs between hosts (.js, .wasm, .woff2...).
_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".wasm": "application/wasm",
    ".pdf": "application/pdf",
    ".gz": "application/gzip",
    ".zip": "application/zip",
}
_FALLBACK_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class _Found:
    file: str
    st: os.stat_result
    directory: bool  # reached through a directory, i.e. this is its index.html


# A file found at an address is taken as found there for a moment without a new lookup
# (symlinks resolved, each part checked, off the event loop): only its own stat, and that
# of the address's own name, are asked again, and any change to them (another file, new
# bytes, other permissions, a link on the way taken away or pointed elsewhere) looks it up
# anew, as does the end of KEPT_FOR. At most so many addresses, and so many bytes of small
# files, are kept.
KEPT_FOR = 1.0
KEPT_ADDRESSES = 512
KEPT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Kept:
    found: _Found
    small: bytes | None
    until: float
    #: The address's own name in the folder, as it stood (not followed, None: not there):
    #: a link there taken away or pointed elsewhere is seen at once.
    named: tuple[int, int] | None


def _named(root: str, path: str) -> tuple[int, int] | None:
    """The inode and change time of what ``path`` names in ``root``, links not followed."""
    try:
        st = os.lstat(root + path.rstrip("/"))
    except (OSError, ValueError):
        return None
    return st.st_ino, st.st_ctime_ns


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_dev, a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_mode) == \
        (b.st_ino, b.st_dev, b.st_size, b.st_mtime_ns, b.st_ctime_ns, b.st_mode)


def _usable_range(value: str, size: int) -> tuple[int, int] | None:
    """The one well-formed byte range asked for, as (first, last) within a file of ``size``
    bytes, or None to send the whole file: a range that cannot be honoured (several, other
    units, malformed) is ignored (RFC 9110 14.2). (-1, -1) when it cannot be satisfied."""
    match = _SINGLE_RANGE.fullmatch(value)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if first and last and int(first) > int(last):
        return None
    if not first:  # the last N bytes
        count = int(last)
        return (max(size - count, 0), size - 1) if count and size else (-1, -1)
    start = int(first)
    if start >= size:
        return (-1, -1)
    return start, min(int(last), size - 1) if last else size - 1


class FileAnswer(Answer):
    """The built folder's answer: a file's bytes (or part of them), or a short body."""

    def __init__(self, status: int, reason: str, headers: CIMultiDict[str],
                 body: bytes = b"", file: str | None = None, offset: int = 0,
                 length: int = 0) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._body = body
        self._file = file
        self._offset = offset
        self._left = length if file is not None else len(body)
        # An unchanged answer has no body, and says nothing of its length.
        self.content_length = None if status == 304 else self._left
        self._handle: BinaryIO | None = None

    async def read(self) -> bytes:
        if self._file is None:
            body, self._body, self._left = self._body, b"", 0
            return body
        if self._left <= 0:
            self.release()
            return b""
        try:
            chunk = await asyncio.to_thread(self._read_chunk, min(self._left, CHUNK))
        except OSError:
            self.release()
            raise BrokenAnswer("the file could not be read to its end") from None
        if not chunk:  # shorter than when it was looked up
            self.release()
            raise BrokenAnswer("the file shrank while it was sent")
        self._left -= len(chunk)
        return chunk

    def arrived(self) -> bytes | None:
        if self._file is not None:
            return None
        body, self._body, self._left = self._body, b"", 0
        return body

    def _read_chunk(self, size: int) -> bytes:
        if self._handle is None:
            assert self._file is not None
            self._handle = open(self._file, "rb")
            self._handle.seek(self._offset)
        return self._handle.read(size)

    async def read_all(self, limit: int) -> bytes:
        if self._left > limit:
            raise ValueError("file over the limit")
        parts: list[bytes] = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        self._left = 0
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()


class StaticSite(Origin):
    """A built docs folder served read-only: index pages, ugly URLs, ETags, ranges, 404.html.

    Answers are read the way the upstream's are: a file's bytes are read in chunks as the
    reader takes them (a small file with its lookup), so pages are read and judged by the
    same steps whichever origin holds them.
    """

    def __init__(self, root: Path, base_path: str = "") -> None:
        self._root = os.path.realpath(root)
        self._prefix = self._root.rstrip(os.sep) + os.sep
        self._base = base_path
        self._types: dict[str, str] = dict(_TYPES)
        self._page_404: tuple[tuple[int, int], bytes] | None = None
        self._kept: dict[str, _Kept] = {}  # oldest first
        self._kept_bytes = 0

    def __repr__(self) -> str:
        return f"StaticSite(root={self._root!r})"

    async def ping(self) -> bool:
        """Whether the folder is there (readiness)."""
        return os.path.isdir(self._root)

    async def close(self) -> None:
        """Nothing to release: files are opened per answer."""

    @property
    def root(self) -> Path:
        """The folder served, with symlinks resolved."""
        return Path(self._root)

    def file_for(self, path: str) -> Path | None:
        """The file a GET of ``path`` answers with 200, or None (missing, refused, redirect)."""
        found = self._lookup(path)
        if found is None or (found.directory and not path.endswith("/")):
            return None
        return Path(found.file)

    async def open(self, request: web.Request, scope: Scope,
                   extra: Iterable[tuple[str, str]], whole: bool = False,
                   validator: str | None = None) -> Answer:
        """Answer ``request`` for ``scope.path`` (decoded, with the public base path); a
        page read from the folder is always answered whole (``validator`` is not asked)."""
        if request.method not in ("GET", "HEAD"):
            answer = _error_answer(request, 405, "method_not_allowed",
                                   "Only GET and HEAD are served here.")
            answer.headers[hdrs.ALLOW] = ALLOW
            return answer
        query = f"?{scope.query}" if scope.query else ""
        path = scope.path
        if self._base:
            if path == self._base:
                # Relative links in the index page only resolve under the trailing slash.
                return _redirect(self._base + "/" + query)
            if not path.startswith(self._base + "/"):
                return await self._not_found(request)
            path = path[len(self._base):]
        found, small = await self._find(path)
        if found is None:
            return await self._not_found(request)
        if found.directory and not path.endswith("/"):
            # Relative to the address asked for, so any base path in front is kept, and
            # "./" stops a name like "http:x" reading as a scheme.
            return _redirect("./" + quote(path.rsplit("/", 1)[-1], safe="") + "/" + query)
        return self._whole_answer(found, small) if whole \
            else self._file_answer(request, found, small)

    async def fetch(self, path: str) -> Answer | None:
        """The file at ``path`` (below the base path) as a GET gets it; None when missing."""
        found, small = await self._find(path)
        if found is None or (found.directory and not path.endswith("/")):
            return None
        return self._whole_answer(found, small)

    def _whole_answer(self, found: _Found, small: bytes | None) -> FileAnswer:
        """The whole file, as a GET without conditions or ranges gets it."""
        return self._body_answer(200, "OK", self._headers_for(found), found, small, 0,
                                 found.st.st_size)

    def response_pairs(self, answer: Answer) -> tuple[tuple[str, str], ...]:
        """The folder's headers are its own: sent as they are."""
        return answer.header_pairs()

    @property
    def kept(self) -> int:
        """How many addresses are kept as found (``KEPT_FOR``)."""
        return len(self._kept)

    async def _find(self, path: str) -> tuple[_Found | None, bytes | None]:
        """The file at ``path`` and, when it is small, its bytes: as kept, when that file
        is still the same, else looked up (and kept when found)."""
        kept = self._kept.get(path)
        if kept is not None:
            try:
                now = os.stat(kept.found.file)
            except OSError:
                now = None
            if now is not None and time.monotonic() < kept.until \
                    and _same_file(now, kept.found.st) \
                    and _named(self._root, path) == kept.named:
                return kept.found, kept.small
            self._forget(path)
        named = _named(self._root, path)
        found, small = await asyncio.to_thread(self._lookup_and_read, path)
        if found is not None:
            self._keep(path, _Kept(found, small, time.monotonic() + KEPT_FOR, named))
        return found, small

    def _keep(self, path: str, kept: _Kept) -> None:
        self._forget(path)
        self._kept[path] = kept
        self._kept_bytes += len(kept.small or b"")
        while len(self._kept) > KEPT_ADDRESSES or self._kept_bytes > KEPT_BYTES:
            oldest = next(iter(self._kept))
            self._forget(oldest)

    def _forget(self, path: str) -> None:
        gone = self._kept.pop(path, None)
        if gone is not None:
            self._kept_bytes -= len(gone.small or b"")

    def _lookup_and_read(self, path: str) -> tuple[_Found | None, bytes | None]:
        """The file ``path`` names and, when it is small, its bytes (one trip off the loop)."""
        found = self._lookup(path)
        if found is None or found.st.st_size > CHUNK:
            return found, None
        try:
            with open(found.file, "rb") as handle:
                data = handle.read(CHUNK + 1)
        except OSError:
            return None, None
        return found, data if len(data) == found.st.st_size else None

    def _headers_for(self, found: _Found) -> CIMultiDict[str]:
        return CIMultiDict({
            hdrs.CONTENT_TYPE: self.content_type_for(found.file),
            hdrs.ETAG: _etag(found.st),
            hdrs.LAST_MODIFIED: _http_date(found.st.st_mtime),
            hdrs.ACCEPT_RANGES: "bytes",
            _NOSNIFF[0]: _NOSNIFF[1],
        })

    def _file_answer(self, request: web.Request, found: _Found, small: bytes | None) -> Answer:
        """A found file's answer to ``request``: conditions first, then a range."""
        headers = self._headers_for(found)
        etag = headers[hdrs.ETAG]
        mtime = int(found.st.st_mtime)
        size = found.st.st_size
        asked = request.headers
        if_match = asked.get(hdrs.IF_MATCH)
        if if_match is not None:
            if not _etag_listed(if_match, etag, weak=False):
                return FileAnswer(412, "Precondition Failed", headers)
        else:
            since = _date(asked.get(hdrs.IF_UNMODIFIED_SINCE))
            if since is not None and mtime > since:
                return FileAnswer(412, "Precondition Failed", headers)
        if_none = asked.get(hdrs.IF_NONE_MATCH)
        if if_none is not None:
            unchanged = _etag_listed(if_none, etag, weak=True)
        else:
            modified_since = _date(asked.get(hdrs.IF_MODIFIED_SINCE))
            unchanged = modified_since is not None and mtime <= modified_since
        if unchanged:
            headers.popall(hdrs.CONTENT_TYPE, None)
            return FileAnswer(304, "Not Modified", headers)
        ranges = asked.get(hdrs.RANGE)
        span = _usable_range(ranges, size) if ranges is not None \
            and _if_range_holds(asked.get(hdrs.IF_RANGE), etag, headers) else None
        if span == (-1, -1):
            refused = CIMultiDict({hdrs.CONTENT_RANGE: f"bytes */{size}",
                                   _NOSNIFF[0]: _NOSNIFF[1]})
            return FileAnswer(416, "Range Not Satisfiable", refused)
        if span is not None:
            first, last = span
            headers[hdrs.CONTENT_RANGE] = f"bytes {first}-{last}/{size}"
            return self._body_answer(206, "Partial Content", headers, found, small, first,
                                     last - first + 1)
        return self._body_answer(200, "OK", headers, found, small, 0, size)

    @staticmethod
    def _body_answer(status: int, reason: str, headers: CIMultiDict[str], found: _Found,
                     small: bytes | None, offset: int, length: int) -> FileAnswer:
        if small is not None:
            return FileAnswer(status, reason, headers, small[offset:offset + length])
        return FileAnswer(status, reason, headers, file=found.file, offset=offset,
                          length=length)

    def content_type_for(self, file: str) -> str:
        """The Content-Type this folder serves a file with (by its suffix, any case)."""
        suffix = os.path.splitext(file)[1].lower()
        known = self._types.get(suffix)
        if known is None:
            guessed = mimetypes.guess_type("f" + suffix, strict=False)[0] if suffix else None
            known = guessed or _FALLBACK_TYPE
            if known.startswith("text/"):
                known += "; charset=utf-8"
            self._types[suffix] = known
        return known

    async def _not_found(self, request: web.Request) -> Answer:
        if wants_html(request):
            page = await asyncio.to_thread(self._site_404_page)
            if page is not None:
                return FileAnswer(404, "Not Found", CIMultiDict({
                    hdrs.CONTENT_TYPE: "text/html; charset=utf-8", _NOSNIFF[0]: _NOSNIFF[1]}),
                    page)
        return _error_answer(request, 404, "not_found", "There is no page at this address.")

    def _site_404_page(self) -> bytes | None:
        found = self._lookup("/404.html")
        if found is None or found.st.st_size > _MAX_404_PAGE:
            return None
        key = (found.st.st_mtime_ns, found.st.st_size)
        cached = self._page_404
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            with open(found.file, "rb") as page:
                body = page.read(_MAX_404_PAGE)
        except OSError:
            return None
        self._page_404 = (key, body)
        return body

    def _lookup(self, path: str) -> _Found | None:
        """Resolve ``path`` to a readable regular file inside the root; all refusals are None."""
        if (not isinstance(path, str) or not path.startswith("/") or len(path) > _MAX_PATH
                or "\x00" in path or "\\" in path):
            return None
        parts = [part for part in path.split("/") if part]
        if any(part in (".", "..") or _hidden(part) for part in parts):
            return None
        base = os.path.join(self._root, *parts)
        trailing = path.endswith("/")
        target = self._stat_inside(base)
        if target is not None:
            real, st = target
            if stat.S_ISDIR(st.st_mode):
                index = self._stat_inside(os.path.join(real, "index.html"))
                if index is not None and stat.S_ISREG(index[1].st_mode):
                    return _Found(index[0], index[1], directory=True)
            elif stat.S_ISREG(st.st_mode) and not trailing:
                return _Found(real, st, directory=False)
        if trailing or not parts or parts[-1].lower().endswith((".html", ".htm")):
            return None
        # "/guide" for guide.html: MkDocs without directory URLs, Hugo's ugly URLs.
        sibling = self._stat_inside(base + ".html")
        if sibling is not None and stat.S_ISREG(sibling[1].st_mode):
            return _Found(sibling[0], sibling[1], directory=False)
        return None

    def _stat_inside(self, candidate: str) -> tuple[str, os.stat_result] | None:
        """Resolve symlinks, refuse anything that ends up outside the root, then stat."""
        try:
            real = os.path.realpath(candidate)
            if real != self._root and not real.startswith(self._prefix):
                return None
            if any(_hidden(part) for part in real[len(self._prefix):].split(os.sep)):
                return None
            st = os.stat(real)
            if stat.S_ISREG(st.st_mode) and not os.access(real, os.R_OK):
                return None  # unreadable: answered like a missing file, never a 500
        except (OSError, ValueError):  # ENAMETOOLONG, ELOOP, EACCES, unencodable names
            return None
        return real, st


@lru_cache(maxsize=1024)
def _http_date(mtime: float) -> str:
    return formatdate(mtime, usegmt=True)


def _hidden(name: str) -> bool:
    return name.startswith(".") and name not in _PUBLIC_DOT_NAMES


def _redirect(location: str) -> FileAnswer:
    return FileAnswer(301, "Moved Permanently", CIMultiDict({
        hdrs.LOCATION: location, _NOSNIFF[0]: _NOSNIFF[1]}))


def _error_answer(request: web.Request, status: int, code: str, message: str) -> FileAnswer:
    """The gateway's own error page (HTML for browsers, JSON otherwise) as an answer."""
    page = error_response(request, status, code, message)
    body = page.body
    assert isinstance(body, bytes)
    headers = CIMultiDict(page.headers)
    headers.popall(hdrs.CONTENT_LENGTH, None)
    return FileAnswer(status, page.reason, headers, body)


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def _etag_listed(value: str, etag: str, *, weak: bool) -> bool:
    """Whether an If-Match / If-None-Match list names ``etag`` (weak comparison for
    If-None-Match, strong for If-Match; the folder's own tags are strong)."""
    for tag in value.split(","):
        tag = tag.strip()
        if tag == "*" or tag == etag or (weak and tag.startswith("W/") and tag[2:] == etag):
            return True
    return False


def _date(value: str | None) -> int | None:
    """An HTTP date as seconds since the epoch; None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return int(parsed.timestamp())


def _if_range_holds(value: str | None, etag: str, headers: CIMultiDict[str]) -> bool:
    """Whether a Range may be honoured under If-Range: its tag is the file's (strongly),
    or its date is exactly the file's Last-Modified."""
    if value is None:
        return True
    if value.startswith(("W/", '"')):
        return value == etag
    return value == headers[hdrs.LAST_MODIFIED]
