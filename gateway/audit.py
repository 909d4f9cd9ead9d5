"""``docs-gateway audit``: read the site as several readers and report the text a reader
receives that appears only on pages that reader may not open.

Each reader named by ``--as`` crawls the running gateway over HTTP (at ``public_url``, or
``--url``): pages, listings (sitemaps, search indexes, llms.txt, feeds) and assets
(scripts, styles, JSON; addresses found in their bodies are followed too, webpack's chunk
names included). Every address one reader reads with success, every other reader reads
too. A sentence (five words or more) or a title (three or more) on a page one reader got
is hidden from another reader when no page that one may open shows it (text shown to an
anonymous reader, and the site's frame, never are); each body a reader received is
searched for the text hidden from it, and for the ``--marker`` texts.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import re
import secrets
import sys
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import aiohttp
from yarl import URL

from gateway.cli import PROG, count, describe
from gateway.config.load import load_config
from gateway.config.model import Config, default_config_path
from gateway.handshakes.jwt_token import TokenCommandError, build_payload, sign
from gateway.html.tokens import (
    END,
    RAW_TEXT,
    START,
    TEXT,
    UNFINISHED,
    attr_text,
    raw_end,
    script_end,
    token_at,
)

#: Addresses read per reader at most, unless ``--max-pages`` says otherwise.
MAX_PAGES = 500
#: Requests one reader has under way at once.
WORKERS = 4
#: Bytes of a body read (after gzip is undone); the rest is not searched.
MAX_BODY = 16 * 1024 * 1024
TIMEOUT = 30.0
#: A sentence counts from this many words, a page title from TITLE_WORDS.
MIN_WORDS = 5
TITLE_WORDS = 3
#: Leaks printed per reader and address; more are counted on one extra line.
MAX_PER_ADDRESS = 3
#: Text on more than half of all pages (once there are this many) is the site's frame.
FRAME_PAGES = 4
#: Lifetime of the login tokens the audit signs.
TOKEN_TTL = 60.0
#: Where listings usually live, below the base path; read whether linked or not.
SEEDS = ("", "sitemap.xml", "sitemap_index.xml", "robots.txt", "llms.txt", "llms-full.txt",
         "search/search_index.json", "search-index.json", "searchindex.js", "index.xml",
         "feed.xml", "rss.xml", "atom.xml")
#: Never fetched: they hold no text.
BINARY_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".ico", ".bmp", ".tif",
                   ".tiff", ".woff", ".woff2", ".ttf", ".otf", ".eot", ".mp3", ".mp4", ".webm",
                   ".ogg", ".wav", ".m4a", ".mov", ".zip", ".tar", ".tgz", ".pdf", ".wasm")
#: Mintlify's route names (``server.compat: ["mintlify"]``), never fetched.
COMPAT_ROUTES = ("/login", "/logout", "/mintlify-oauth-callback")
ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CLOSED = frozenset({401, 403, 404, 410})
#: JSON keys whose string values are addresses, whatever they look like; and keys never
#: followed (a source map's sources: files of the build's input, its text already inside).
ADDRESS_KEYS = frozenset({"location", "url", "u", "href", "link", "permalink", "loc", "src"})
SKIPPED_KEYS = frozenset({"sources", "sourceRoot", "file"})

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_TAG = re.compile(r"<[^>]*>")
_JS_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|([nrt])|(.))", re.S)
_QUOTED = re.compile(r'"([^"\\\s<>]{1,400})"|\'([^\'\\\s<>]{1,400})\'|`([^`\\\s<>${}]{1,400})`')
_BARE = re.compile(r"^[\w@~.+-]+(?:/[\w@~.+%-]+)*\.(?:html?|m?js|css|json|xml|txt|md|svg|map)"
                   r"(?:\?[^#\s]*)?$")
_ABSOLUTE = re.compile(r"https?://[^\s<>\"'()\[\]`{}|\\^]+")
_MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)")
_LINE_URL = re.compile(r"^(?:Sitemap|Source|URL):\s*(\S+)", re.M | re.I)
_CSS_URL = re.compile(r"url\(\s*(['\"]?)([^'\")]+)\1\s*\)|@import\s+(['\"])([^'\"]+)\3")
_SOURCE_MAP = re.compile(r"[#@]\s*sourceMappingURL=([^\s'\"*]+)")
_XML_ADDRESS = re.compile(r"<(?:loc|link|guid|id)\b[^>]*>\s*([^<\s]+)\s*</|"
                          r"\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_PUBLIC_PATH = re.compile(r"\.p\s*=\s*\"([^\"]*)\"")
# webpack's chunk file names: "assets/js/" + ({1: "name"}[id] || id) + "." + {1: "hash"}[id] + ".js"
_CHUNKS = re.compile(
    r"\"([^\"]*)\"\s*\+\s*(?:\(\s*(\{[^{}]*\})\s*\[\s*(\w+)\s*\]\s*\|\|\s*\w+\s*\)|(\w+))"
    r"\s*\+\s*\"([^\"]*)\"\s*\+\s*(\{[^{}]*\})\s*\[\s*\w+\s*\]\s*\+\s*\"([^\"]*)\"")
_PAIR = re.compile(r"([\w$]+|\"[^\"]*\"|'[^']*')\s*:\s*\"([^\"]*)\"")
_STATE = re.compile(r"[?&]state=([^&\"'#\s]+)")
_CSRF = re.compile(r"name=\"csrf\"\s+value=\"([^\"]*)\"")

BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "dialog",
    "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
    "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "option", "p", "section",
    "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul", "body", "head",
    "html", "button", "label", "select", "textarea", "img", "svg"})
HIDDEN_TAGS = frozenset({"script", "style", "template"})


class AuditError(Exception):
    """The audit could not run (a bad argument, the gateway unreachable, a failed login)."""


# ---------------------------------------------------------------------------
# Readers


@dataclass(frozen=True)
class Reader:
    """One ``--as``: a name, its groups (None: anonymous) and the cookies it sends."""

    name: str
    groups: tuple[str, ...] | None
    cookie: str | None = None

    @property
    def logged_in(self) -> bool:
        return self.groups is not None or self.cookie is not None

    def describe(self) -> str:
        if self.cookie is not None:
            return "with its cookies"
        if self.groups is None:
            return "anonymous"
        return f"groups {', '.join(self.groups)}" if self.groups else "logged in, no groups"


def parse_reader(text: str) -> Reader:
    """``NAME`` (anonymous), ``NAME:`` (logged in, no groups) or ``NAME:a,b``."""
    name, colon, rest = text.partition(":")
    name = name.strip()
    if not name or any(ch.isspace() for ch in name):
        raise AuditError(f"--as {text!r}: give a name, like everyone or admins:admin")
    if not colon:
        return Reader(name, None)
    groups = tuple(group.strip() for group in rest.split(",") if group.strip())
    return Reader(name, groups)


def readers_of(specs: Sequence[str], cookies: Sequence[str]) -> list[Reader]:
    """The readers of ``--as``, each with the ``--cookie NAME=COOKIE-HEADER`` given for it."""
    readers = [parse_reader(spec) for spec in specs]
    names = [reader.name for reader in readers]
    doubled = sorted({name for name in names if names.count(name) > 1})
    if doubled:
        raise AuditError(f"--as names {', '.join(doubled)} more than once")
    given: dict[str, str] = {}
    for item in cookies:
        name, equals, header = item.partition("=")
        if not equals or not header.strip():
            raise AuditError(f"--cookie {item!r}: write NAME=COOKIE-HEADER, "
                             "like readers=session=abc")
        if name not in names:
            raise AuditError(f"--cookie {name}: no --as names {name}")
        if name in given:
            raise AuditError(f"--cookie {name}: given twice")
        given[name] = header.strip()
    return [Reader(r.name, r.groups, given.get(r.name)) for r in readers]


# ---------------------------------------------------------------------------
# Addresses


@dataclass(frozen=True)
class Site:
    """Which URLs belong to the docs, as addresses (path and query), and where to send them."""

    public_url: str
    fetch_origin: str
    base_path: str
    route_base: str
    compat: bool

    @classmethod
    def of(cls, config: Config, url: str | None) -> Site:
        server = config.server
        origin = server.public_origin
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise AuditError(f"--url {url!r}: give an http or https address")
            origin = f"{parts.scheme}://{parts.netloc}"
        return cls(public_url=server.public_url, fetch_origin=origin,
                   base_path=server.base_path, route_base=server.route_base,
                   compat="mintlify" in server.compat)

    @property
    def root(self) -> str:
        """The address of the site's first page."""
        return self.base_path + "/"

    def base_url(self) -> str:
        """The site's root as readers know it: relative addresses in listings start here."""
        return self.public(self.root)

    def public(self, address: str) -> str:
        """The address as readers know it (under ``public_url``)."""
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}{address}"

    def fetch(self, address: str) -> URL:
        return URL(self.fetch_origin + address, encoded=True)

    def address(self, url: str) -> str | None:
        """The address of a URL of this site worth reading; None for anything else."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        key = (parts.scheme, parts.hostname.lower(), port or _default_port(parts.scheme))
        if key not in (_origin_key(self.public_url), _origin_key(self.fetch_origin)):
            return None
        path = quote(parts.path or "/", safe="/:@!$&'()*+,;=~-._%")
        if self.base_path and path != self.base_path and not path.startswith(self.root):
            return None
        if path == self.route_base or path.startswith(self.route_base + "/"):
            return None  # the gateway's own routes: logout would end the session
        inner = path[len(self.base_path):]
        if self.compat and any(inner == r or inner.startswith(r + "/") for r in COMPAT_ROUTES):
            return None
        if path.lower().endswith(BINARY_SUFFIXES) or len(path) > 2000:
            return None
        return path + (f"?{parts.query}" if parts.query else "")

    def is_login(self, url: str) -> bool:
        """Whether a redirect goes to a login: the gateway's login route, or off the site."""
        parts = urlsplit(url)
        if _origin_key(url) not in (_origin_key(self.public_url), _origin_key(self.fetch_origin)):
            return True
        inner = parts.path[len(self.base_path):] if parts.path.startswith(self.base_path) else ""
        return parts.path.startswith(self.route_base + "/login") or \
            (self.compat and inner.startswith("/login"))


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _origin_key(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or _default_port(parts.scheme)


# ---------------------------------------------------------------------------
# Bodies: their kind, their text and the addresses they name


@dataclass
class Answer:
    """What one reader got at one address."""

    status: int  # 0: no answer (a network failure or a timeout)
    kind: str = ""  # html, js, css, json, xml, text, binary; "" without a body
    text: str = ""
    redirect: str | None = None  # a same-site redirect's target address
    login: bool = False  # a redirect to a login, or off the site
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def page(self) -> bool:
        return self.ok and self.kind == "html"

    @property
    def closed(self) -> bool:
        return self.status in CLOSED or self.login


def body_kind(content_type: str, path: str, data: bytes) -> str:
    """How a body is read: by its type, by its name when the type says little (plain text,
    bytes, none), then by a look at its bytes."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in ("text/html", "application/xhtml+xml"):
        return "html"
    if ctype == "image/svg+xml" or ctype.endswith(("/xml", "+xml")):
        return "xml"
    if ctype == "text/css":
        return "css"
    if "javascript" in ctype or "ecmascript" in ctype:
        return "js"
    if ctype == "application/json" or ctype.endswith("+json"):
        return "json"
    if ctype.startswith(("image/", "font/", "audio/", "video/")):
        return "binary"
    name = path.split("?")[0].lower().removesuffix(".gz")
    for suffixes, kind in (((".html", ".htm"), "html"), ((".js", ".mjs"), "js"),
                           ((".css",), "css"), ((".json", ".map"), "json"),
                           ((".xml", ".svg"), "xml"), ((".txt", ".md"), "text")):
        if name.endswith(suffixes):
            return kind
    if ctype.startswith("text/"):
        return "text"
    if b"\0" in data[:1024]:
        return "binary"
    head = data[:512].lstrip().lower()
    return "html" if head.startswith((b"<!doctype html", b"<html")) else "text"


def gunzip(data: bytes) -> bytes | None:
    """A gzip body unpacked (at most MAX_BODY bytes); None when it is not one."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, MAX_BODY)
    except zlib.error:
        return None


def decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def plain(text: str) -> str:
    """Text with HTML character references and JavaScript/JSON escapes undone."""
    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return chr(int(match.group(1), 16))
        if match.group(2):
            return " "
        return match.group(3)

    return _JS_ESCAPE.sub(one, html.unescape(text))


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def collapse(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


class _Markup:
    """Tags and text of a page, read with the gateway's own tokenizer (``html.tokens``),
    which reads markup as a browser does; handlers as ``html.parser`` names them."""

    def feed(self, source: str) -> None:
        page = source.encode("utf-8", "replace")
        pos, size = 0, len(page)
        while pos < size:
            lt = page.find(b"<", pos)
            if lt < 0:
                self.handle_data(html.unescape(page[pos:].decode("utf-8", "replace")))
                return
            if lt > pos:
                self.handle_data(html.unescape(page[pos:lt].decode("utf-8", "replace")))
            kind, end, tag = token_at(page, lt)
            if kind == UNFINISHED:
                return  # a browser drops a tag the page ends inside
            if kind == TEXT:
                self.handle_data(html.unescape(page[lt:end].decode("utf-8", "replace")))
            elif tag is not None and kind == END:
                self.handle_endtag(tag.name.decode("ascii", "replace"))
            elif tag is not None and kind == START:
                name = tag.name.decode("ascii", "replace")
                attrs = [(key.decode("utf-8", "replace"), attr_text(values[0]))
                         for key, values in tag.attrs.items()]
                if tag.self_closing:
                    self.handle_startendtag(name, attrs)
                else:
                    self.handle_starttag(name, attrs)
                if tag.name == b"plaintext":
                    self.handle_data(page[end:].decode("utf-8", "replace"))
                    return
                if tag.name in RAW_TEXT:
                    stop = script_end(page, end) if tag.name == b"script" \
                        else raw_end(page, tag.name, end)
                    raw = page[end:stop].decode("utf-8", "replace")
                    self.handle_data(html.unescape(raw) if tag.name in (b"title", b"textarea")
                                     else raw)
                    end = stop
            pos = end

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str]]) -> None:
        """A start tag."""

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str]]) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        """An end tag."""

    def handle_data(self, data: str) -> None:
        """Text (character references resolved, but for scripts and styles)."""


class _Links(_Markup):
    """The addresses a page names: attributes, inline scripts and styles."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []  # (kind: url, js, css; value)
        self.base: str | None = None
        self.cdata: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str]]) -> None:
        values = dict(attrs)
        if tag == "base" and self.base is None and values.get("href"):
            self.base = values["href"]
        for name in ("href", "src", "poster", "data", "manifest"):
            if values.get(name):
                self.found.append(("url", values[name]))
        for name in ("srcset", "imagesrcset"):
            for item in values.get(name, "").split(","):
                if item.split():
                    self.found.append(("url", item.split()[0]))
        if tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            _, _, target = values.get("content", "").partition("=")
            if target.strip():
                self.found.append(("url", target.strip().strip("'\"")))
        if values.get("style"):
            self.found.append(("css", values["style"]))
        if tag in ("script", "style"):
            self.cdata = "js" if tag == "script" else "css"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.cdata = None

    def handle_data(self, data: str) -> None:
        if self.cdata is not None and data.strip():
            self.found.append((self.cdata, data))


def html_links(text: str, url: str, site_base: str) -> list[str]:
    parser = _Links()
    parser.feed(text)
    base = urljoin(url, parser.base) if parser.base else url
    out: list[str] = []
    for kind, value in parser.found:
        if kind == "url":
            out.append(urljoin(base, value))
        elif kind == "js":
            out += js_links(value, base, site_base)
        else:
            out += css_links(value, base)
    return out


def looks_like_address(value: str) -> bool:
    if value.startswith(("http://", "https://", "//", "./", "../")):
        return True
    if value.startswith("/"):
        return "$" not in value and "*" not in value
    return _BARE.match(value) is not None


def resolve(value: str, url: str, site_base: str) -> str:
    """A script's or index's address: ``./`` and ``../`` from the file, bare names from
    the site's root (as bundlers' public paths and search indexes write them)."""
    if value.startswith(("./", "../")):
        return urljoin(url, value)
    return urljoin(site_base, value)


def js_links(text: str, url: str, site_base: str) -> list[str]:
    out = [resolve(value, url, site_base) for value in _quoted(text) if looks_like_address(value)]
    out += [urljoin(url, m.group(1)) for m in _SOURCE_MAP.finditer(text)]
    public_path = _PUBLIC_PATH.search(text)
    chunk_base = urljoin(site_base, public_path.group(1)) if public_path else site_base
    out += [urljoin(chunk_base, name) for name in webpack_chunks(text)]
    return out


def _quoted(text: str) -> Iterator[str]:
    for match in _QUOTED.finditer(text):
        yield match.group(1) or match.group(2) or match.group(3) or ""


def webpack_chunks(text: str) -> list[str]:
    """The chunk file names a webpack runtime builds (``__webpack_require__.u``): Docusaurus'
    ``assets/js/<name>.<hash>.js``, which no page names."""
    names: list[str] = []
    for match in _CHUNKS.finditer(text):
        prefix, named, middle, hashes, suffix = (match.group(1), match.group(2),
                                                 match.group(5), match.group(6), match.group(7))
        by_id = _object(named) if named else {}
        for chunk, digest in _object(hashes).items():
            names.append(f"{prefix}{by_id.get(chunk, chunk)}{middle}{digest}{suffix}")
    return names


def _object(text: str) -> dict[str, str]:
    """A JavaScript object literal of string values, keys as written (quotes taken off)."""
    return {key.strip("\"'"): value for key, value in _PAIR.findall(text)}


def css_links(text: str, url: str) -> list[str]:
    out = [urljoin(url, m.group(2) or m.group(4)) for m in _CSS_URL.finditer(text)]
    out += [urljoin(url, m.group(1)) for m in _SOURCE_MAP.finditer(text)]
    return [link for link in out if not link.startswith("data:")]


def json_links(text: str, url: str, site_base: str) -> list[str]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return js_links(text, url, site_base)
    out: list[str] = []
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((str(k), v) for k, v in value.items() if k not in SKIPPED_KEYS)
        elif isinstance(value, list):
            stack.extend((key, item) for item in value)
        elif isinstance(value, str) and value and len(value) <= 2000 and \
                not any(ch.isspace() for ch in value) and \
                (looks_like_address(value) or key.lower() in ADDRESS_KEYS):
            out.append(resolve(value, url, site_base))
    return out


def xml_links(text: str, url: str) -> list[str]:
    text = html.unescape(text)
    out = [urljoin(url, m.group(1) or m.group(2)) for m in _XML_ADDRESS.finditer(text)]
    return out + _ABSOLUTE.findall(text)


def text_links(text: str, url: str) -> list[str]:
    out = [urljoin(url, m.group(1)) for m in _MD_LINK.finditer(text)]
    out += [urljoin(url, m.group(1)) for m in _LINE_URL.finditer(text)]
    return out + _ABSOLUTE.findall(text)


def links_of(answer: Answer, url: str, site_base: str) -> list[str]:
    """Every URL a body names, resolved."""
    if answer.kind == "html":
        return html_links(answer.text, url, site_base)
    if answer.kind == "js":
        return js_links(answer.text, url, site_base)
    if answer.kind == "css":
        return css_links(answer.text, url)
    if answer.kind == "json":
        return json_links(answer.text, url, site_base)
    if answer.kind == "xml":
        return xml_links(answer.text, url)
    if answer.kind == "text":
        return text_links(answer.text, url)
    return []


# ---------------------------------------------------------------------------
# What a page shows


@dataclass(frozen=True)
class Segment:
    """A sentence or title: its words (the match) and its text (what is printed)."""

    words: tuple[str, ...]
    text: str


class _Visible(_Markup):
    """A page's visible text in blocks, its text runs and its title."""

    def __init__(self) -> None:
        self.blocks: list[list[str]] = [[]]
        self.runs: list[str] = []
        self.title: list[str] = []
        self.hidden = 0
        self.in_title = False
        self.pre = 0

    def _break(self) -> None:
        if self.blocks[-1]:
            self.blocks.append([])

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str]]) -> None:
        if tag in HIDDEN_TAGS:
            self.hidden += 1
        elif tag == "title":
            self.in_title = True
            self._break()
        elif tag == "pre":
            self.pre += 1
            self._break()
        elif tag in BLOCK_TAGS:
            self._break()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str]]) -> None:
        if tag in BLOCK_TAGS:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag in HIDDEN_TAGS:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "title":
            self.in_title = False
            self._break()
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
            self._break()
        elif tag in BLOCK_TAGS:
            self._break()

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if self.in_title:
            self.title.append(data)
        lines = data.split("\n") if self.pre else [data]
        for index, line in enumerate(lines):
            if index:
                self._break()
            self.blocks[-1].append(line)
            self.runs.append(line)


@dataclass
class PageText:
    """A page as a reader sees it: its visible words, and its sentences and title."""

    words: list[str]
    text: str
    segments: list[Segment]


def page_text(source: str) -> PageText:
    parser = _Visible()
    parser.feed(source)
    blocks = [collapse("".join(block)) for block in parser.blocks]
    text = "\n".join(block for block in blocks if block)
    found: dict[tuple[str, ...], Segment] = {}
    title = collapse("".join(parser.title))
    if len(words(title)) >= TITLE_WORDS:
        found[tuple(words(title))] = Segment(tuple(words(title)), title)
    for piece in [*blocks, *(collapse(run) for run in parser.runs)]:
        for sentence in _SENTENCE.split(piece):
            key = tuple(words(sentence))
            if len(key) >= MIN_WORDS and key not in found:
                found[key] = Segment(key, sentence.strip())
    return PageText(words(text), text, list(found.values()))


class Finder:
    """Finds, in a list of words, which of many word sequences it holds."""

    def __init__(self, sequences: Iterable[tuple[str, ...]]) -> None:
        self.index: dict[tuple[str, str, str], list[tuple[str, ...]]] = {}
        for sequence in sequences:
            if len(sequence) >= 3:
                first = (sequence[0], sequence[1], sequence[2])
                self.index.setdefault(first, []).append(sequence)
        self.firsts = {key[0] for key in self.index}

    def find(self, haystack: Sequence[str]) -> list[tuple[str, ...]]:
        """The sequences found, in the order they first appear."""
        found: dict[tuple[str, ...], None] = {}
        if not self.index:
            return []
        firsts, index = self.firsts, self.index
        for i in range(len(haystack) - 2):
            if haystack[i] not in firsts:
                continue
            candidates = index.get((haystack[i], haystack[i + 1], haystack[i + 2]))
            for sequence in candidates or ():
                if sequence not in found and tuple(haystack[i:i + len(sequence)]) == sequence:
                    found[sequence] = None
        return list(found)


# ---------------------------------------------------------------------------
# Crawling as one reader


@dataclass
class Crawl:
    """One reader's reading of the site."""

    reader: Reader
    site: Site
    client: aiohttp.ClientSession
    max_pages: int
    cookies: dict[str, str] = field(default_factory=dict)
    answers: dict[str, Answer] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)
    left: set[str] = field(default_factory=set)
    pending: deque[str] = field(default_factory=deque)

    def __post_init__(self) -> None:
        # The reader's own cookies, by name, so one the gateway sets again replaces its old
        # value (a session cookie sent twice makes the request anonymous).
        for pair in (self.reader.cookie or "").split(";"):
            name, equals, value = pair.strip().partition("=")
            if name and equals:
                self.cookies[name] = value

    def add(self, address: str) -> None:
        if address in self.known or address in self.left:
            return
        if len(self.known) >= self.max_pages:
            self.left.add(address)
            return
        self.known.add(address)
        self.pending.append(address)

    async def drain(self) -> None:
        """Read every address waiting, and every one they name, within the bound."""
        async def worker() -> None:
            while self.pending:
                address = self.pending.popleft()
                answer = await self.get(address)
                self.answers[address] = answer
                for link in self.links(address, answer):
                    self.add(link)

        while self.pending:
            await asyncio.gather(*(worker() for _ in range(WORKERS)))

    def links(self, address: str, answer: Answer) -> list[str]:
        if answer.redirect is not None:
            return [answer.redirect]
        found = links_of(answer, self.site.public(address), self.site.base_url())
        return [a for a in (self.site.address(url) for url in found) if a is not None]

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"Accept": ACCEPT, "Accept-Encoding": "gzip, deflate",
                   "User-Agent": f"{PROG}-audit", **extra}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    def remember(self, response: aiohttp.ClientResponse) -> None:
        """Keep the cookies a response sets (and forget the ones it clears)."""
        for name, morsel in response.cookies.items():
            if not morsel.value or morsel["max-age"] == "0":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value

    async def get(self, address: str) -> Answer:
        try:
            async with self.client.get(self.site.fetch(address), headers=self.headers(),
                                       allow_redirects=False) as response:
                self.remember(response)
                if response.status in REDIRECTS and "Location" in response.headers:
                    target = urljoin(self.site.public(address), response.headers["Location"])
                    if self.site.is_login(target):
                        return Answer(response.status, login=True)
                    return Answer(response.status, redirect=self.site.address(target))
                data = await read_body(response)
                content_type = response.headers.get("Content-Type", "")
                charset = response.charset
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            return Answer(0, error=describe(exc))
        if data[:2] == b"\x1f\x8b":
            data = gunzip(data) or b""
        kind = body_kind(content_type, address, data) if data else ""
        text = decode(data, charset) if kind and kind != "binary" else ""
        return Answer(response.status, kind=kind, text=text)

    async def get_route(self, route: str, *, method: str = "GET",
                        data: dict[str, str] | None = None,
                        headers: dict[str, str] | None = None) -> tuple[int, str, str]:
        """A request to one of the gateway's own routes: status, Location and body."""
        url = URL(self.site.fetch_origin + self.site.route_base + route, encoded=True)
        async with self.client.request(method, url, data=data,
                                       headers=self.headers(**(headers or {})),
                                       allow_redirects=False) as response:
            self.remember(response)
            body = (await read_body(response)).decode("utf-8", "replace")
            return response.status, response.headers.get("Location", ""), body


async def read_body(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY:
            break
    return b"".join(chunks)


# ---------------------------------------------------------------------------
# Logging in


async def log_in(crawl: Crawl, config: Config, key: str | None) -> None:
    """Give a reader its session: its cookies, or a login token signed for it and posted to
    the gateway's JWT callback as a browser would; then check ``/user`` knows it."""
    reader = crawl.reader
    if reader.cookie is None:
        if reader.groups is None:
            return
        await jwt_login(crawl, config, key)
    status, _, body = await crawl.get_route("/user", headers={"Accept": "application/json"})
    if status != 200:
        raise AuditError(f"{reader.name}: login failed: {crawl.site.route_base}/user answers "
                         f"{status}{_said(body)}")


async def jwt_login(crawl: Crawl, config: Config, key: str | None) -> None:
    reader, hs = crawl.reader, config.handshake
    assert reader.groups is not None
    if hs.method != "jwt":
        raise AuditError(f"{reader.name}: give its cookies (--cookie {reader.name}=...): "
                         f"the audit logs in by itself only with handshake.method jwt, "
                         f"not {hs.method}")
    settings = hs.jwt
    if key is None and settings.secret is None:
        raise AuditError(f"{reader.name}: give --key PEM, the private key your login flow "
                         "signs login tokens with")
    state = None
    if settings.bind_state:
        status, location, body = await crawl.get_route(
            "/login?" + _query(redirect=crawl.site.root))
        found = _STATE.search(location) or _STATE.search(html.unescape(body))
        if found is None:
            raise AuditError(f"{reader.name}: login failed: {crawl.site.route_base}/login "
                             f"answers {status} without a state")
        state = unquote(found.group(1))
    status, _, page = await crawl.get_route("/jwt-callback?" + _query(redirect=crawl.site.root))
    if status != 200:
        raise AuditError(f"{reader.name}: login failed: {crawl.site.route_base}/jwt-callback "
                         f"answers {status}{_said(page)}")
    csrf = _CSRF.search(page)
    payload = build_payload(
        sub=reader.name, host=config.server.public_host if settings.require_host else None,
        groups=list(reader.groups), content={}, ttl=min(TOKEN_TTL, settings.max_age),
        state=state)
    if settings.issuer is not None:
        payload["iss"] = settings.issuer
    if settings.audience is not None:
        payload["aud"] = settings.audience
    try:
        if key is not None:
            token = sign(payload, key_path=key)
        else:
            hs_algorithm = next((a for a in settings.algorithms if a.startswith("HS")), "HS256")
            token = sign(payload, key_path=None, secret=settings.secret, alg=hs_algorithm)
    except TokenCommandError as exc:
        raise AuditError(str(exc)) from None
    form = {"token": token, "redirect": crawl.site.root, "csrf": csrf.group(1) if csrf else ""}
    status, _, body = await crawl.get_route(
        "/jwt-callback?" + _query(redirect=crawl.site.root), method="POST", data=form,
        headers={"Accept": "application/json", "Origin": config.server.public_origin,
                 "Sec-Fetch-Site": "same-origin"})
    if status != 303:
        raise AuditError(f"{reader.name}: login failed: the JWT callback answers "
                         f"{status}{_said(body)}")


def _query(**values: str) -> str:
    return "&".join(f"{name}={quote(value, safe='')}" for name, value in values.items())


def _said(body: str) -> str:
    """The message of a JSON error answer, when it is one."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return ""
    message = data.get("message")
    return f" ({data['error']}: {message})" if isinstance(message, str) else f" ({data['error']})"


# ---------------------------------------------------------------------------
# Finding leaks


@dataclass(frozen=True)
class Leak:
    reader: str
    address: str
    what: str

    def line(self, site: Site) -> str:
        return f"{self.reader}  {site.public(self.address)}  {self.what}"


def shorten(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[:width - 3].rstrip() + "..."


def find_leaks(crawls: Sequence[Crawl], markers: Sequence[str],
               missing: str | None = None) -> list[Leak]:
    """Each address where a reader receives page text hidden from it, or a marker no page
    it may open shows.

    Text is hidden from a reader when a page another reader got shows it and no page this
    one may open does, nor the site's missing page (its answer at ``missing``, an address
    that cannot exist). Text an anonymous reader is shown is public, and text on most pages
    is the site's frame: neither is ever hidden.
    """
    pages: dict[str, dict[str, PageText]] = {}
    seen_on: dict[tuple[str, ...], set[str]] = {}
    public: set[tuple[str, ...]] = set()
    for crawl in crawls:
        mine = pages.setdefault(crawl.reader.name, {})
        for address, answer in crawl.answers.items():
            if answer.page:
                mine[address] = page_text(answer.text)
                for segment in mine[address].segments:
                    seen_on.setdefault(segment.words, set()).add(address)
                    if not crawl.reader.logged_in:
                        public.add(segment.words)
    addresses = {address for mine in pages.values() for address in mine}
    if len(addresses) >= FRAME_PAGES:
        public |= {key for key, where in seen_on.items() if 2 * len(where) > len(addresses)}
    leaks: list[Leak] = []
    for crawl in crawls:
        name = crawl.reader.name
        shown = list(pages[name].values())
        nowhere = crawl.answers.get(missing) if missing is not None else None
        if nowhere is not None and nowhere.kind == "html" and not nowhere.page:
            shown.append(page_text(nowhere.text))
        shown_words: list[str] = []
        for text in shown:
            shown_words += [*text.words, ""]
        shown_text = "\n".join(text.text for text in shown)
        hidden: dict[tuple[str, ...], tuple[Segment, str]] = {}
        for other in crawls:
            if other is not crawl:
                for address, text in pages[other.reader.name].items():
                    for segment in text.segments:
                        if segment.words not in public:
                            hidden.setdefault(segment.words, (segment, address))
        for key in Finder(hidden).find(shown_words):
            del hidden[key]
        finder = Finder(hidden)
        hidden_markers = [m for m in map(collapse, markers) if m and m not in shown_text]
        for address in sorted(crawl.answers):
            answer = crawl.answers[address]
            if not answer.text:
                continue
            body = plain(answer.text)
            streams = [body, _TAG.sub(" ", body)] if answer.kind == "html" else [body]
            found: dict[tuple[str, ...], None] = {}
            for stream in streams:
                for key in finder.find(words(stream)):
                    found[key] = None
            flat = [collapse(stream) for stream in streams] if hidden_markers else []
            what = [f"marker {marker!r}" for marker in hidden_markers
                    if any(marker in stream for stream in flat)]
            for key in outermost(list(found)):
                segment, source = hidden[key]
                what.append(f'"{shorten(segment.text)}" (text of {source})')
            for item in what[:MAX_PER_ADDRESS]:
                leaks.append(Leak(name, address, item))
            if len(what) > MAX_PER_ADDRESS:
                leaks.append(Leak(name, address, f"and {len(what) - MAX_PER_ADDRESS} more"))
    return leaks


def outermost(found: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The sequences that are no part of another one found (a text run of a sentence)."""
    if len(found) < 2:
        return found
    parts: set[tuple[str, ...]] = set()
    kept: set[tuple[str, ...]] = set()
    for key in sorted(found, key=len, reverse=True):
        if key not in parts:
            kept.add(key)
            parts.update(key[i:j] for i in range(len(key)) for j in range(i + 3, len(key) + 1))
    return [key for key in found if key in kept]


# ---------------------------------------------------------------------------
# The command


@dataclass
class Outcome:
    leaks: list[Leak]
    notes: list[str]
    incomplete: bool


async def audit(config: Config, readers: Sequence[Reader], *, key: str | None,
                markers: Sequence[str], max_pages: int, url: str | None) -> Outcome:
    """Log every reader in, read the site as each, and find the leaks."""
    site = Site.of(config, url)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    connector = aiohttp.TCPConnector(limit=WORKERS * max(1, len(readers)))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout,
                                     connector=connector) as client:
        try:
            async with client.get(site.fetch(site.root), allow_redirects=False) as response:
                await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AuditError(f"cannot reach the gateway at {site.fetch_origin}: "
                             f"{describe(exc)}") from None
        crawls = [Crawl(reader, site, client, max_pages) for reader in readers]
        for crawl in crawls:
            try:
                await log_in(crawl, config, key)
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise AuditError(f"{crawl.reader.name}: login failed: {describe(exc)}") \
                    from None
        missing = f"{site.root}{PROG}-audit-missing-{secrets.token_hex(6)}/"
        for crawl in crawls:
            for seed in SEEDS:
                crawl.add(site.root + seed)
            crawl.add(missing)
        while True:
            await asyncio.gather(*(crawl.drain() for crawl in crawls))
            opened = {address for crawl in crawls
                      for address, answer in crawl.answers.items() if answer.ok}
            for crawl in crawls:
                for address in sorted(opened - crawl.known):
                    crawl.add(address)
            if not any(crawl.pending for crawl in crawls):
                break
    leaks = find_leaks(crawls, markers, missing)
    notes: list[str] = []
    incomplete = False
    for crawl in crawls:
        name = crawl.reader.name
        pages_elsewhere = {address for other in crawls if other is not crawl
                           for address, answer in other.answers.items() if answer.page}
        closed = sum(1 for address in pages_elsewhere
                     if address in crawl.answers and crawl.answers[address].closed)
        leaked = len({leak.address for leak in leaks if leak.reader == name})
        notes.append(f"{name} ({crawl.reader.describe()}): "
                     f"{count(len(crawl.answers), 'address', 'addresses')} read, "
                     f"{count(closed, 'page')} closed to it, "
                     f"{count(leaked, 'address', 'addresses')} with leaks")
        failed = sorted(a for a, answer in crawl.answers.items() if answer.status == 0)
        if failed:
            incomplete = True
            answer = crawl.answers[failed[0]]
            notes.append(f"{name}: {count(len(failed), 'address', 'addresses')} could not "
                         "be read "
                         f"(first: {failed[0]}: {answer.error})")
        if crawl.left:
            incomplete = True
            notes.append(f"{name}: stopped at --max-pages {crawl.max_pages}; "
                         f"{count(len(crawl.left), 'more address', 'more addresses')} not read")
    return Outcome(leaks, notes, incomplete)


def main(args: argparse.Namespace) -> int:
    """Exit 0 when clean, 1 with one line per leak, 2 when the audit could not run or
    could not read the whole site."""
    config = load_config(args.config or default_config_path())
    started = time.monotonic()
    try:
        readers = readers_of(args.readers, args.cookie or [])
        if args.key is not None and not Path(args.key).is_file():
            raise AuditError(f"--key {args.key}: no such file")
        outcome = asyncio.run(audit(config, readers, key=args.key, markers=args.marker or [],
                                    max_pages=args.max_pages or MAX_PAGES,
                                    url=args.url))
    except AuditError as exc:
        print(f"{PROG}: audit: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.verbose:
            raise
        print(f"{PROG}: audit: {describe(exc)}", file=sys.stderr)
        return 2
    site = Site.of(config, args.url)
    for leak in outcome.leaks:
        print(leak.line(site))
    for note in outcome.notes:
        print(f"{PROG}: audit: {note}", file=sys.stderr)
    elapsed = f"{time.monotonic() - started:.1f}s"
    if outcome.leaks:
        print(f"{PROG}: audit: {count(len(outcome.leaks), 'leak')} ({elapsed})"
              + ("; the site was not read whole" if outcome.incomplete else ""),
              file=sys.stderr)
        return 1
    if outcome.incomplete:
        print(f"{PROG}: audit: no leaks in what was read, but the site was not read whole "
              f"({elapsed})", file=sys.stderr)
        return 2
    print(f"{PROG}: audit: no leaks ({elapsed})", file=sys.stderr)
    return 0
