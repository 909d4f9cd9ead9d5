"""Serve a built docs folder (``upstream.root``) the way nginx or Caddy's file_server would."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from gateway.responses import error_response, wants_html

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


def _usable_range(value: str) -> bool:
    """A single, well-formed byte range; anything else is ignored (RFC 9110 14.2)."""
    match = _SINGLE_RANGE.fullmatch(value)
    if match is None:
        return False
    first, last = match.groups()
    if not first and not last:
        return False
    return not (first and last and int(first) > int(last))


class _FileSend(web.FileResponse):
    """FileResponse that sends the whole file for a Range it cannot honour, not a 416.

    aiohttp refuses multi-range and foreign-unit ranges with 416 and ignores an ETag in
    If-Range; a plain 200 is what the HTTP spec asks for. It also sends a foo.gz next to
    foo compressed, which only happens here when ``precompressed`` is on.
    """

    def __init__(self, path: str, etag: str, headers: dict[str, str], precompressed: bool) -> None:
        super().__init__(path, headers=headers)
        self._file_etag = etag
        self._precompressed = precompressed

    def _if_range_holds(self, value: str | None) -> bool:
        if value is None or not value.startswith(("W/", '"')):
            return True  # absent, or a date: aiohttp compares dates itself
        return value.startswith('"') and value.strip('"') == self._file_etag

    def _adjusted(self, request: web.BaseRequest) -> web.BaseRequest:
        drop: list[str] = []
        ranges = request.headers.get(hdrs.RANGE)
        if ranges is not None and not (
            _usable_range(ranges) and self._if_range_holds(request.headers.get(hdrs.IF_RANGE))
        ):
            drop.append(hdrs.RANGE)
        accept = request.headers.get(hdrs.ACCEPT_ENCODING, "").lower()
        if not self._precompressed and ("gzip" in accept or "br" in accept):
            drop.append(hdrs.ACCEPT_ENCODING)
        if not drop:
            return request
        headers = CIMultiDict(request.headers)
        for name in drop:
            headers.popall(name, None)
        try:
            return request.clone(headers=headers)
        except RuntimeError:  # the body was read; cloning is refused, serve as asked
            return request

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        """Send the file, with the request's unusable Range (and Accept-Encoding) set aside."""
        return await super().prepare(self._adjusted(request))


class StaticSite:
    """A built docs folder served read-only: index pages, ugly URLs, ETags, ranges, 404.html."""

    def __init__(self, root: Path, *, precompressed: bool = False) -> None:
        self._root = os.path.realpath(root)
        self._prefix = self._root.rstrip(os.sep) + os.sep
        self._precompressed = precompressed
        self._types: dict[str, str] = dict(_TYPES)
        self._page_404: tuple[tuple[int, int], bytes] | None = None

    def __repr__(self) -> str:
        return f"StaticSite(root={self._root!r})"

    async def ping(self) -> bool:
        """Whether the folder is there (readiness)."""
        return os.path.isdir(self._root)

    async def close(self) -> None:
        """Nothing to release: files are opened per request."""

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

    async def exists(self, path: str) -> bool:
        """Whether ``path`` would be served with 200 (the disk is read off the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.file_for, path) is not None

    async def serve(self, request: web.Request, path: str) -> web.StreamResponse:
        """Answer ``request`` for ``path`` (decoded, relative to the docs base path)."""
        if request.method not in ("GET", "HEAD"):
            response = error_response(request, 405, "method_not_allowed",
                                      "Only GET and HEAD are served here.")
            response.headers[hdrs.ALLOW] = ALLOW
            response.headers.add(*_NOSNIFF)
            return response
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, self._lookup, path)
        if found is None:
            return await self._not_found(request)
        if found.directory and not request.path.endswith("/"):
            return self._slash_redirect(request)
        headers = {hdrs.CONTENT_TYPE: self.content_type_for(found.file), _NOSNIFF[0]: _NOSNIFF[1]}
        etag = f"{found.st.st_mtime_ns:x}-{found.st.st_size:x}"  # the form FileResponse sends
        return _FileSend(found.file, etag, headers, self._precompressed)

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

    def _slash_redirect(self, request: web.Request) -> web.Response:
        # Relative to the URL the browser asked for, so any base path in front is kept
        # (also "/docs" -> "/docs/"), and "./" stops a name like "http:x" reading as a scheme.
        target = "./" + quote(request.path.rsplit("/", 1)[-1], safe="") + "/"
        query = request.rel_url.raw_query_string
        response = web.Response(status=301, headers={
            hdrs.LOCATION: f"{target}?{query}" if query else target,
        })
        response.headers.add(*_NOSNIFF)
        return response

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        if wants_html(request):
            loop = asyncio.get_running_loop()
            page = await loop.run_in_executor(None, self._site_404_page)
            if page is not None:
                response = web.Response(status=404, body=page, content_type="text/html",
                                        charset="utf-8")
                response.headers.add(*_NOSNIFF)
                return response
        response = error_response(request, 404, "not_found", "There is no page at this address.")
        response.headers.add(*_NOSNIFF)
        return response

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


def _hidden(name: str) -> bool:
    return name.startswith(".") and name not in _PUBLIC_DOT_NAMES
