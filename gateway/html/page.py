"""HTML pages from the docs: page metadata, the client script, server-side gating.

Also what the index filter needs from pages: their metadata, recorded whenever a page is
read here and learned (the whole page) from the upstream or the built folder when an
index lists a page not seen yet.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import itertools
import json
import re
import secrets
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from multidict import CIMultiDict

from gateway.config.model import Config
from gateway.errors import Denied, NeedsLogin, UpstreamError, listed
from gateway.html.encoding import Undecodable, as_utf8, decode_body, is_html
from gateway.html.gating import (
    SLOT,
    Template,
    from_marked,
    has_fields,
    has_markers,
    marked,
    rewrite,
    template,
)
from gateway.html.head import (
    PageMeta,
    insert_at,
    own_scripts,
    read_page_meta,
    script_offset,
    script_tag,
)
from gateway.html.navigation import Cuts, Link, document_bases, find_links, leftovers
from gateway.indexes.filter import (
    FetchMeta,
    IndexFile,
    Learned,
    PageIndex,
    PageText,
    match_index,
    page_text,
)
from gateway.paths import link_targets
from gateway.policy import Decision, Outcome, Policy, private
from gateway.proxy.origin import Answer, Origin, fetched
from gateway.scope import Scope
from gateway.user import User

#: The largest page learned for the index filter (read whole: metadata may stand anywhere).
PAGE_READ_LIMIT = 8 * 1024 * 1024
#: Pages larger than this are scanned on every read and never remembered.
MEMO_PAGE_LIMIT = 256 * 1024
#: How often a remembered page is recorded again in the page index (which forgets after
#: five minutes), while it keeps being served unchanged.
RECORD_EVERY = 60.0
#: How long after the docs server was last asked for a page whole its 304 stands for the
#: kept copy: a docs server whose ETag stays the same when the page changes (nginx's is made
#: of the file's time and size, which a rewrite may keep) is asked whole again within it.
KEPT_TRUSTED = 1.0
#: Pages too large for the memo whose gated text is kept (by digest) between requests.
TEXTS_KEPT = 64
#: Readers whose user object, as the client script's tag carries it, is kept (each at most
#: ``OBJECT_KEPT_LIMIT`` bytes; a larger one is written for each page).
OBJECTS_KEPT = 1024
OBJECT_KEPT_LIMIT = 16 * 1024


@dataclass(slots=True)
class Scanned:
    """What one copy of a page told: its metadata, whether it has gated parts, and where
    the client script goes (None: the page loads it already)."""

    page: bytes
    meta: PageMeta
    gated: bool
    script_at: int | None
    recorded: float = float("-inf")
    #: The Content-Type the page came with, and the one it goes out with (``decode``).
    declared: str | None = None
    retyped: str = ""
    #: Its links (read once, when navigation is filtered), and where their targets lead
    #: from the address in ``base`` (a docs path, or None outside the docs).
    links: list[Link] | None = None
    #: The ``href`` of each of its ``<base>`` tags (read with its links).
    written_bases: tuple[str, ...] = ()
    base: str = ""
    targets: dict[str, tuple[str | None, ...]] | None = None
    #: How many of each link's targets are its first readings (from the page's <base>
    #: tags, else from its address); the rest count only for a page known to be closed.
    first_readings: int = 1
    #: What leaves it per audience (groups, None: anonymous), and since when.
    cuts: dict[tuple[str, ...] | None, tuple[float, Cuts | None]] = field(default_factory=dict)
    #: Which remembered copy this is (its renderings may be kept); 0: not remembered.
    version: int = 0
    #: What its gated elements hold, for search (read once, when the page index first
    #: hears of this copy; None also when it cannot be told).
    text: PageText | None = None
    text_read: bool = False
    #: The body as it last came when it came compressed, and its Content-Encoding: the
    #: same bytes again are this page, with no need to undo the compression again.
    packed: bytes = b""
    packing: str = ""
    #: The docs server's ETag for this copy, when one copy serves every reader (see
    #: ``shared_validator``): asked with, an unchanged page comes back as a 304 with no
    #: body. The headers it came with, as a reader may get them, go with it.
    validator: str = ""
    pairs: tuple[tuple[str, str], ...] = ()
    #: The host it was asked for (a docs server may serve several), and when it was last
    #: asked for whole (``Pages.clock``).
    host: str = ""
    read_at: float = float("-inf")
    #: Whether it may hold fields filled from the reader's user object (None: not read yet;
    #: read once, on the first reader's view, not on every view).
    fields: bool | None = None

    def has_fields(self) -> bool:
        fields = self.fields
        if fields is None:
            fields = self.fields = has_fields(self.page)
        return fields


@dataclass(init=False, slots=True)
class KeptCopy:
    """A kept copy of a page as it stood when the docs server was asked about it (another
    request may change what is kept meanwhile)."""

    scanned: Scanned
    validator: str
    pairs: tuple[tuple[str, str], ...]

    # Written out (init=False): compiled, it runs natively; it is made once per request.
    def __init__(self, scanned: Scanned, validator: str,
                 pairs: tuple[tuple[str, str], ...]) -> None:
        self.scanned = scanned
        self.validator = validator
        self.pairs = pairs


@dataclass(init=False, slots=True)
class Rendered:
    """A page as one audience receives it, kept per page version: its bytes, a validator
    derived from them, and (made on first demand) its gzip form."""

    body: bytes
    etag: str
    gzipped: bytes | None
    #: Puts the gzip form together (a page filled from a kept template).
    packer: Callable[[], bytes] | None
    #: Whether it is kept (and its size counted) in a RenderCache.
    kept: bool
    #: Whether it carries the reader's user object (the client script's tag): it then
    #: depends on who asks, even where nothing else on it does.
    reader: bool

    # Its own __init__ (made per request): a compiled build runs it natively.
    def __init__(self, body: bytes, etag: str, packer: Callable[[], bytes] | None = None,
                 reader: bool = False) -> None:
        self.body = body
        self.etag = etag
        self.gzipped = None
        self.packer = packer
        self.kept = False
        self.reader = reader

    def gzip(self) -> bytes:
        """The body, gzip-compressed (once)."""
        if self.gzipped is None:
            self.gzipped = self.packer() if self.packer is not None else \
                gzip.compress(self.body, compresslevel=6, mtime=0)
        return self.gzipped

    @property
    def size(self) -> int:
        return len(self.body) + (len(self.gzipped) if self.gzipped is not None else 0)


_GZIP_HEAD = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# An empty last block: what ends a deflate stream.
_LAST_BLOCK = zlib.compressobj(6, zlib.DEFLATED, -15).flush()


def deflated(data: bytes) -> bytes:
    """``data`` as deflate blocks that refer to nothing before them and end on a byte with
    the stream left open: pieces made so join into one stream (RFC 1951)."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush(zlib.Z_FULL_FLUSH)


# CRC-32 (as zlib computes it) of joined pieces from their own CRCs (zlib's crc32_combine):
# a page filled for a reader gets its gzip trailer without reading all of its bytes again.
_CRC_POLY = 0xEDB88320


def crc_shift(length: int) -> tuple[int, ...]:
    """What a CRC becomes when ``length`` more bytes follow, as 8 tables of 16 (one per
    4 bits of it): ``crc_shifted(crc_shift(len(b)), crc32(a)) ^ crc32(b) == crc32(a + b)``.
    """
    # x^(8 * length) modulo the polynomial, bits reflected as zlib keeps them.
    factor = 1 << 31  # x^0
    for power in _BYTE_POWERS:
        if not length:
            break
        if length & 1:
            factor = _gf2_product(power, factor)
        length >>= 1
    # The product with each bit of a CRC (the top bit is x^0, each lower one x times
    # the one above), then with each of the 16 values of each 4 bits.
    bits = [0] * 32
    value = factor
    for bit in range(31, -1, -1):
        bits[bit] = value
        value = (value >> 1) ^ _CRC_POLY if value & 1 else value >> 1
    table: list[int] = []
    for group in range(8):
        values = [0]
        for offset in range(4):
            bit = bits[4 * group + offset]
            values += [value ^ bit for value in values]
        table += values
    return tuple(table)


def crc_shifted(shift: tuple[int, ...], crc: int) -> int:
    """``crc`` moved past the bytes ``shift`` was made for (see ``crc_shift``)."""
    out = 0
    for group in range(8):
        out ^= shift[16 * group + (crc >> 4 * group & 15)]
    return out


def _gf2_product(a: int, b: int) -> int:
    """The product of two polynomials modulo the CRC's, bits reflected (zlib's multmodp)."""
    mask = 1 << 31
    product = 0
    while a:
        if a & mask:
            product ^= b
            a ^= mask
        mask >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
    return product


def _byte_powers() -> tuple[int, ...]:
    """x^(8 * 2^k) modulo the CRC's polynomial, for k from 0 (x^8: one byte) to 63."""
    powers = [1 << 23]
    for _ in range(63):
        powers.append(_gf2_product(powers[-1], powers[-1]))
    return tuple(powers)


_BYTE_POWERS = _byte_powers()


def stored(data: bytes) -> bytes:
    """``data`` as stored (uncompressed) deflate blocks, starting and ending on a byte: a
    reader's few bytes between compressed parts, without a compressor's set-up."""
    out = []
    for start in range(0, len(data), 0xFFFF):
        chunk = data[start:start + 0xFFFF]
        out.append(struct.pack("<BHH", 0, len(chunk), len(chunk) ^ 0xFFFF) + chunk)
    return b"".join(out)


@dataclass(slots=True)
class KeptTemplate:
    """A page with fields, kept for an audience: filled for each reader of it, its gzip
    form put together from the parts compressed once and the reader's values."""

    template: Template
    packed: tuple[bytes, ...]
    #: A digest of the parts: a reader's validator adds their values to it.
    digest: bytes
    #: Each part's CRC-32, and for each part after the first what it does to the CRC of
    #: the bytes before it (``crc_shift``): the gzip form's trailer without a pass over
    #: the whole page (empty for a page of more than ``CRC_PARTS`` parts).
    crcs: tuple[int, ...] = ()
    shifts: tuple[tuple[int, ...], ...] = ()
    #: Which field is the reader's user object in the client script's tag (-1: none).
    user_slot: int = -1

    @property
    def size(self) -> int:
        return sum(map(len, self.template.parts)) + sum(map(len, self.packed)) \
            + sum(len(path) + len(own) for path, own in self.template.fields) \
            + _SHIFT_BYTES * len(self.shifts)

    def for_reader(self, user: User | None, user_object: bytes = b"null") -> Rendered:
        """The page for ``user``: its fields filled, and ``user_object`` (their user
        object, escaped for an attribute) in the client script's tag."""
        pieces = self.template.fill(user, self.user_slot, user_object)
        values = pieces[1::2]
        # The digest of the parts, then each value after its length, hashed in one call.
        framed = [self.digest]
        for value in values:
            framed.append(len(value).to_bytes(4, "little"))
            framed.append(value)
        tag = hashlib.blake2b(b"".join(framed), digest_size=12).hexdigest()
        body = b"".join(pieces)

        def packer() -> bytes:
            out = [_GZIP_HEAD, self.packed[0]]
            for value, packed in zip(values, self.packed[1:], strict=True):
                out.append(stored(value))
                out.append(packed)
            if self.crcs:
                crc = self.crcs[0]
                for value, part_crc, shift in zip(values, self.crcs[1:], self.shifts,
                                                  strict=True):
                    crc = crc_shifted(shift, zlib.crc32(value, crc)) ^ part_crc
            else:
                crc = zlib.crc32(body)
            out.append(_LAST_BLOCK)
            out.append(struct.pack("<II", crc, len(body) & 0xFFFFFFFF))
            return b"".join(out)

        return Rendered(body, '"' + tag + '"', packer=packer,
                        reader=self.user_slot >= 0)


#: The field of a kept page that holds the reader's user object: its path is no page's
#: (it is new in each process, and starts with a NUL).
_USER_FIELD = ("\x00user-" + secrets.token_hex(8), b"null")


def keep(kept: Template) -> KeptTemplate:
    """A template with its parts compressed."""
    digest = hashlib.blake2b(b"\x00".join(kept.parts), digest_size=16).digest()
    user_slot = next((number for number, (path, _) in enumerate(kept.fields)
                      if path == _USER_FIELD[0]), -1)
    combined = len(kept.parts) <= CRC_PARTS
    return KeptTemplate(kept, tuple(deflated(part) for part in kept.parts), digest,
                        tuple(zlib.crc32(part) for part in kept.parts) if combined else (),
                        tuple(crc_shift(len(part)) for part in kept.parts[1:])
                        if combined else (), user_slot)


#: What one part's ``crc_shift`` table counts against the render cache (128 numbers).
_SHIFT_BYTES = 128 * 40
#: Pages of at most so many parts (the user object and a field or two) get their gzip
#: trailer's CRC from their parts' own; a page with more fields is read through for it.
CRC_PARTS = 4


def slot_mark(number: int) -> bytes:
    """The mark of field ``number`` in a body about to become a template."""
    return SLOT + str(number).encode() + b"\x00"


def etag_of(body: bytes) -> str:
    """A validator for the very bytes sent."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def rendered(body: bytes, reader: bool = False) -> Rendered:
    """A rendering with its validator: a digest of the very bytes sent."""
    return Rendered(body, etag_of(body), reader=reader)


# How the client script's tag ends (``script_tag``): its other attributes go before it.
_TAG_TAIL = b" defer></script>"


#: What a rendering depends on besides the page: the reader's kind and groups, their
#: subject for a page with fields, and the links taken out.
RenderKey = tuple[int, bool, tuple[str, ...], str | None, frozenset[str] | None]


class RenderCache:
    """Renderings by page version and audience, within a byte budget (least recently
    used dropped first): the first reader of an audience pays the rewrite, the rest get
    the kept bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._entries: OrderedDict[RenderKey, Rendered | KeptTemplate] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: RenderKey) -> Rendered | KeptTemplate | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: RenderKey, value: Rendered | KeptTemplate) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= old.size
        if value.size * 4 > self.budget:
            return  # one page may not crowd out the rest
        if isinstance(value, Rendered):
            value.kept = True
        self._entries[key] = value
        self.size += value.size
        self.trim()

    def grew(self, value: Rendered, before: int) -> None:
        """Account for a kept rendering that grew (its gzip form was made)."""
        self.size += value.size - before
        self.trim()

    def trim(self) -> None:
        while self._entries and self.size > self.budget:
            _key, dropped = self._entries.popitem(last=False)
            self.size -= dropped.size


_VERSIONS = itertools.count(1)
# The subject slot of a render key for a page kept with its fields open.
_TEMPLATE = "\x00fields"


class PageMemo:
    """The last scan of each page, by path, within a byte budget (oldest dropped first).

    The same bytes come back for every reader, so a page equal to the remembered copy (one
    comparison of the bytes, no hashing) skips the scans. A changed page is scanned again.
    """

    def __init__(self, budget: int = 8 * 1024 * 1024) -> None:
        self.budget = budget
        self.size = 0
        self._entries: dict[str, Scanned] = {}
        #: When the docs server was asked for the copy last kept with its validator, by
        #: path: an answer asked for before it, and read after, keeps none.
        self.asked: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, rel: str, page: bytes) -> Scanned | None:
        """The scan of ``page`` at ``rel`` when these very bytes were scanned before."""
        scanned = self._entries.get(rel)
        return scanned if scanned is not None and scanned.page == page else None

    def latest(self, rel: str) -> Scanned | None:
        """The last scan of the page at ``rel``, if it is remembered."""
        return self._entries.get(rel)

    def put(self, rel: str, scanned: Scanned) -> None:
        """Remember a scan (replacing the path's previous one); large pages are not kept."""
        old = self._entries.pop(rel, None)
        if old is not None:
            self.size -= _weight(old)
        if len(scanned.page) > MEMO_PAGE_LIMIT:
            return
        scanned.version = next(_VERSIONS)
        self._entries[rel] = scanned
        self.size += _weight(scanned)
        self.trim()

    def repack(self, rel: str, scanned: Scanned, packing: str, packed: bytes) -> None:
        """The page remembered at ``rel`` came compressed in other bytes: remember those."""
        if self._entries.get(rel) is scanned:
            self.size += len(packed) - len(scanned.packed)
        scanned.packing, scanned.packed = packing, packed
        self.trim()

    def reweigh(self, rel: str, scanned: Scanned, validator: str,
                pairs: tuple[tuple[str, str], ...], host: str) -> None:
        """The page remembered at ``rel`` has another validator, headers and host."""
        if self._entries.get(rel) is scanned:
            self.size -= _weight(scanned)
            scanned.validator, scanned.pairs, scanned.host = validator, pairs, host
            self.size += _weight(scanned)
        self.trim()

    def trim(self) -> None:
        """Drop the oldest entries until the memo is within its budget."""
        while self._entries and self.size > self.budget:
            oldest = next(iter(self._entries))
            self.size -= _weight(self._entries.pop(oldest))
            self.asked.pop(oldest, None)


def _weight(scanned: Scanned) -> int:
    """What a remembered scan counts against the memo's budget: the page, and the bytes
    it came in when it came compressed."""
    return len(scanned.page) + len(scanned.packed) + len(scanned.validator) + len(scanned.host) \
        + sum(len(name) + len(value) for name, value in scanned.pairs)


def return_path(scope: Scope) -> str:
    """Where to come back to after login: the path (and query) asked for."""
    return scope.path + (f"?{scope.query}" if scope.query else "")


def enforce(decision: Decision, scope: Scope) -> None:
    """Raise for a decision that blocks the request; for ALLOW, mark the request allowed
    (no docs response starts before that)."""
    if decision.outcome is Outcome.NEEDS_LOGIN:
        raise NeedsLogin(return_to=return_path(scope), expected=_wanted(decision),
                         received="anonymous")
    if decision.outcome is Outcome.DENIED:
        user = scope.user
        raise Denied(expected=_wanted(decision),
                     received=f"groups {listed(user.groups)}" if user is not None else None)
    scope.allowed = True


def _wanted(decision: Decision) -> str:
    """Who a decision lets in, for the log line of a refusal."""
    if decision.groups is None:
        return "a logged-in reader"
    if not decision.groups:
        return "nobody (groups: [])"
    return f"any of groups {listed(decision.groups)}"


class Pages:
    """Decides whether an HTML page needs reading, and rewrites it for one reader.

    ``index`` holds the page metadata learned so far (None with ``access.indexes`` off).
    """

    def __init__(self, config: Config, policy: Policy,
                 clock: Callable[[], float] = time.monotonic,
                 renders: RenderCache | None = None) -> None:
        self.policy = policy
        self.inject = config.identity.inject_script
        self.fragments = config.access.fragments
        self.base_path = config.server.base_path
        src = config.server.route_base + "/client.js"
        tag = script_tag(src, compat="mintlify" if "mintlify" in config.server.compat else None)
        #: The tag as a page that loads the script itself spells it (that tag stays, the
        #: reader's object added as its first attribute).
        self.tag = tag
        # The tag a reader gets carries their user object (null: nobody logged in), so the
        # script needs no second request to learn who reads.
        self.tag_head = tag[:-len(_TAG_TAIL)] + b' data-user="'
        self.expose = config.identity.expose
        # Each reader's object as last written, by the user it was written from (held, so
        # that its id names no other object meanwhile): opened sessions are kept, and with
        # them their user, so a reader's next page reuses it.
        self.objects: dict[int, tuple[User, bytes]] = {}
        #: Links to pages the reader may not open leave every page (``access.navigation``).
        self.navigation = config.access.navigation and not policy.personalize
        # Page metadata learned so far: for filtering indexes, and navigation.
        server = config.server
        self.index = PageIndex(fragments=self.fragments or self.navigation,
                               base_path=self.base_path,
                               targets=link_targets(server.public_url, server.route_base,
                                                    server.base_path)) \
            if config.access.indexes or self.navigation else None
        self.indexes = config.access.indexes
        self.index_names = config.access.index_names
        # Which listing each path names (most: none), remembered per path asked for.
        self._index_files: dict[str, IndexFile | None] = {}
        self.memo = PageMemo()
        #: What the gated elements of pages too large for the memo hold, by path: (digest
        #: of the copy, its PageText), the most recent ``TEXTS_KEPT``.
        self.texts: dict[str, tuple[bytes, PageText | None]] = {}
        self.renders = renders if renders is not None else \
            RenderCache(config.access.page_cache_mb * 1024 * 1024)
        self.clock = clock

    def wants(self, decision: Decision) -> bool:
        """Whether an HTML page on this decision must be read before it is sent."""
        return decision.meta_applies or self.inject or self.fragments or self.navigation

    def guards(self, decision: Decision) -> bool:
        """Whether reading a page on this decision is a matter of access (its metadata, its
        gated elements, its links to closed pages), so that a page the gateway cannot read
        is refused."""
        return decision.meta_applies or self.fragments or self.navigation

    def decode(self, body: bytes, decision: Decision, content_encoding: str | None,
               content_type: str | None, rel: str | None = None) -> tuple[bytes, str] | None:
        """The page as the tokenizer reads it, and the Content-Type it then goes out with
        (naming the charset it was read in); None when it cannot be read and need not be
        (it is sent as it is).

        Raises UpstreamError for a page that must be read and cannot be: an encoding or
        a compression the gateway cannot undo, or a body cut short.
        """
        if rel is not None:
            # The same bytes as last time at this path, with the same headers: read the
            # same (a compressed page too: its decompression is the costly part).
            known = self.memo.latest(rel)
            if known is not None and known.retyped and known.declared == content_type:
                if not content_encoding:
                    if known.page == body:
                        return body, known.retyped
                elif known.packing == content_encoding and known.packed == body:
                    return known.page, known.retyped
        decoded = decode_body(body, content_encoding) if content_encoding else body
        try:
            if decoded is not None:
                return as_utf8(decoded, content_type)
        except Undecodable:
            pass
        if self.guards(decision):
            raise UpstreamError("the docs server sent a page the gateway cannot read")
        return None

    def scan(self, page: bytes, rel: str | None,
             reading: tuple[str | None, str] = (None, ""),
             packed: tuple[str, bytes] | None = None) -> Scanned:
        """What the page declares and holds, from the memo when these bytes were seen at
        ``rel`` before; the page index hears of it at most every ``RECORD_EVERY`` seconds.
        ``reading``: the Content-Type the page came with and the one it goes out with;
        ``packed``: the Content-Encoding and the body as it came, when it came compressed.
        """
        scanned = self.memo.get(rel, page) if rel is not None else None
        if packed is not None and len(packed[1]) > MEMO_PAGE_LIMIT:
            packed = None  # a few bytes of page in many more of packing: not worth keeping
        if scanned is None:
            scanned = Scanned(
                page, read_page_meta(page) if self.policy.page_meta else PageMeta(),
                self.fragments and has_markers(page),
                script_offset(page, self.tag) if self.inject else None,
                declared=reading[0], retyped=reading[1])
            if packed is not None:
                scanned.packing, scanned.packed = packed
            if rel is not None:
                self.memo.put(rel, scanned)
        elif packed is not None and rel is not None and \
                (scanned.packing, scanned.packed) != packed and \
                (scanned.declared, scanned.retyped) == reading:
            # Only under the headers the remembered page came with: what the same bytes
            # read as depends on the type (and charset) they are declared in.
            self.memo.repack(rel, scanned, *packed)
        if rel is not None:
            self.heard(scanned, rel)
        return scanned

    def kept_copy(self, rel: str, host: str) -> KeptCopy | None:
        """The copy of the page at ``rel`` on ``host`` remembered with the docs server's
        validator, asked for whole at most ``KEPT_TRUSTED`` seconds ago: to ask whether it
        changed."""
        scanned = self.memo.latest(rel)
        if scanned is None or not scanned.validator or scanned.host != host \
                or self.clock() - scanned.read_at >= KEPT_TRUSTED:
            return None
        return KeptCopy(scanned, scanned.validator, scanned.pairs)

    def keep_validator(self, rel: str, host: str, scanned: Scanned, validator: str | None,
                       pairs: tuple[tuple[str, str], ...], asked_at: float) -> None:
        """Remember the validator the copy at ``rel`` on ``host`` came with (None: it may
        not be asked with), and the headers that go with it; ``asked_at``: when the docs
        server was asked for it (``clock``), from which ``KEPT_TRUSTED`` counts."""
        if self.memo.latest(rel) is not scanned:
            return  # not remembered (too large): nothing to ask with
        scanned.read_at = asked_at
        if validator is not None and asked_at < self.memo.asked.get(rel, float("-inf")):
            validator = None  # older than the copy kept last (a slow read): not asked with
        if validator is None:
            validator, pairs, host = "", (), ""
        else:
            self.memo.asked[rel] = asked_at
        if (validator, pairs, host) != (scanned.validator, scanned.pairs, scanned.host):
            self.memo.reweigh(rel, scanned, validator, pairs, host)

    def heard(self, scanned: Scanned, rel: str) -> None:
        """The page index hears of the copy at ``rel`` at most every ``RECORD_EVERY``
        seconds."""
        if self.index is not None:
            now = self.clock()
            if now - scanned.recorded >= RECORD_EVERY:
                scanned.recorded = now
                text = self.gated_text(scanned, rel)
                if scanned.gated or (text is not None and text.linked):
                    self.index.record(rel, scanned.meta, fragments=scanned.gated, text=text)
                else:
                    # Not known (None) where its linked parts could not be read.
                    self.index.record(rel, scanned.meta, fragments=None
                                      if self.navigation and text is None else False)

    def gated_text(self, scanned: Scanned, rel: str) -> PageText | None:
        """What a page's gated elements and linked parts hold, for the index filter and
        the page's copies: read once per copy (a copy too large for the memo is known by
        its digest), None when neither indexes nor navigation are filtered here."""
        if not (self.indexes or self.navigation) or not (scanned.gated or self.navigation):
            return None
        if not scanned.text_read:
            links = self.links(scanned) if self.navigation else None
            if scanned.version:
                scanned.text = page_text(scanned.page, links, gated=scanned.gated)
            else:
                digest = hashlib.blake2b(scanned.page, digest_size=16).digest()
                known = self.texts.pop(rel, None)
                scanned.text = known[1] if known is not None and known[0] == digest \
                    else page_text(scanned.page, links, gated=scanned.gated)
                self.texts[rel] = (digest, scanned.text)
                if len(self.texts) > TEXTS_KEPT:
                    del self.texts[next(iter(self.texts))]
            scanned.text_read = True
        return scanned.text

    def judge(self, scanned: Scanned, decision: Decision, user: User | None,
              scope: Scope) -> Decision:
        """Apply the page's own metadata to ``decision`` and enforce it (raising if it
        blocks)."""
        if decision.meta_applies:
            if scanned.meta.unreadable:
                # Its head could not be read to the end: what it declares is unknown.
                raise UpstreamError("the docs server sent a page the gateway cannot read")
            decision = self.policy.decide_meta(decision, scanned.meta, user)
        enforce(decision, scope)
        return decision

    def reader_tag(self, user_object: bytes) -> bytes:
        """The client script's tag carrying a user object (escaped for an attribute)."""
        return self.tag_head + user_object + b'"' + _TAG_TAIL

    def place_script(self, page: bytes, at: int | None, user_object: bytes) -> bytes:
        """``page`` with the client script carrying ``user_object``: inserted at ``at``, or,
        where the page loads the script itself (``at`` None), as the first attribute of each
        of the page's own start tags: the tag keeps its own attributes (a nonce, its timing),
        and no user object the page's markup spells is believed (of an attribute given
        twice, HTML keeps the first).
        """
        if at is not None:
            return insert_at(page, self.reader_tag(user_object), at)
        attribute = b' data-user="' + user_object + b'"'
        out: list[bytes] = []
        last = 0
        for start, _ in own_scripts(page, self.tag):
            named = start + len(b"<script")
            out += (page[last:named], attribute)
            last = named
        out.append(page[last:])
        return b"".join(out)

    def carries_keys(self, user: User | None) -> bool:
        """Whether ``user``'s object, as the client script's tag carries it, holds their
        API playground inputs (their keys, as a rule)."""
        return self.inject and user is not None and bool(user.api_playground_inputs) \
            and "apiPlaygroundInputs" in self.expose

    def user_object(self, user: User | None) -> bytes:
        """``user``'s object as ``/_gateway/user`` answers it, escaped for an attribute;
        ``null`` for nobody."""
        if user is None or not self.inject:
            return b"null"
        known = self.objects.get(id(user))
        if known is not None and known[0] is user:
            return known[1]
        text = json.dumps(user.view(self.expose), separators=(",", ":"))
        written = html.escape(text, quote=True).encode()
        if len(written) <= OBJECT_KEPT_LIMIT:
            if len(self.objects) >= OBJECTS_KEPT:
                self.objects.clear()
            self.objects[id(user)] = (user, written)
        return written

    def render(self, scanned: Scanned, decision: Decision, user: User | None,
               cuts: Cuts | None = None, user_object: bytes = b"null",
               ) -> tuple[Decision, bytes]:
        """The judged page as ``user`` receives it: gated elements and fields, the links
        ``cuts`` names (elements removed, links unwrapped), the client script carrying
        ``user_object``.

        A link to a closed page still there after the rewrite is taken out by itself;
        one that cannot be is refused (UpstreamError), never sent.
        """
        page = scanned.page
        if scanned.gated or cuts:
            if cuts is None:
                page = rewrite(page, user)
            else:
                page = rewrite(page, user, cuts.cut, cuts.unwrap)
                left = leftovers(page, cuts)
                if left:
                    page = rewrite(page, user, left)
                    if leftovers(page, cuts):
                        raise UpstreamError("the docs server sent a page whose links to "
                                            "closed pages cannot be taken out")
            decision = private(decision)
            if self.inject:
                # The rewritten page is this reader's: where the script goes is found again.
                page = self.place_script(page, script_offset(page, self.tag), user_object)
        elif self.inject:
            page = self.place_script(page, scanned.script_at, user_object)
        return decision, page

    def deliver(self, scanned: Scanned, decision: Decision, user: User | None,
                cuts: Cuts | None = None) -> tuple[Decision, Rendered]:
        """``render``, kept per page version and audience when the page is remembered: a
        reader of an audience seen before gets the bytes rendered for it."""
        changes = scanned.gated or cuts is not None
        user_object = self.user_object(user)
        key: RenderKey | None = None
        if scanned.version:
            groups: tuple[str, ...] = ()
            sub = None
            if user is not None and changes:
                groups = tuple(sorted(user.groups))
                if scanned.gated and scanned.has_fields():
                    # Kept for the audience with its fields open, filled for each reader.
                    key = (scanned.version, False, groups, _TEMPLATE,
                           cuts.closed if cuts is not None else None)
                    found = self.renders.get(key)
                    if not isinstance(found, KeptTemplate):
                        found = self.keep_template(scanned, user, cuts)
                        if found is not None:
                            self.renders.put(key, found)
                    if found is not None:
                        return private(decision), \
                            found.for_reader(user, user_object)
                    # Fields filled from this reader's own values, kept for those values.
                    sub = user.fields_digest()
            key = (scanned.version, user is None and changes, groups, sub,
                   cuts.closed if cuts is not None else None)
            kept = self.renders.get(key)
            if kept is not None:
                if changes:
                    decision = private(decision)
                return decision, (kept if isinstance(kept, Rendered)
                                  else kept.for_reader(user, user_object))
            # Kept with the user object left open, filled for each reader.
            decision, page = self.render(scanned, decision, user, cuts, slot_mark(0))
            made = from_marked(page, (_USER_FIELD,)) if self.inject else None
            if made is not None:
                kept_page = keep(made)
                self.renders.put(key, kept_page)
                return decision, kept_page.for_reader(user, user_object)
            if SLOT not in page:  # no client script here: nothing to fill
                result = rendered(page)
                self.renders.put(key, result)
                return decision, result
            # The page loads the script more than once: each of its tags gets the object.
            return decision, rendered(page.replace(slot_mark(0), user_object), reader=True)
        decision, page = self.render(scanned, decision, user, cuts, user_object)
        return decision, rendered(page, reader=self.inject)

    def keep_template(self, scanned: Scanned, user: User, cuts: Cuts | None,
                      ) -> KeptTemplate | None:
        """The page for ``user``'s audience with its fields open (as ``render`` makes it),
        or None when it cannot be kept so (then each reader's copy is made for them)."""
        made = template(scanned.page, user, *((cuts.cut, cuts.unwrap) if cuts else ()))
        if made is None:
            return None
        body = marked(made)
        if cuts is not None and leftovers(body, cuts):
            return None  # the per-reader rendering takes such links out one by one
        fields: tuple[tuple[str, bytes], ...] = made.fields
        if self.inject:
            body = self.place_script(body, script_offset(body, self.tag),
                                     slot_mark(len(fields)))
            fields += (_USER_FIELD,)
        made = from_marked(body, fields)
        return None if made is None else keep(made)

    def gzip(self, result: Rendered) -> bytes:
        """A rendering's gzip form, made once and counted against the cache's budget."""
        before = result.size
        packed = result.gzip()
        if result.kept:
            self.renders.grew(result, before)
        return packed

    def links(self, scanned: Scanned) -> list[Link]:
        """The page's links, read once per page version."""
        if scanned.links is None:
            scanned.written_bases = document_bases(scanned.page)
            scanned.links = find_links(scanned.page)
        return scanned.links

    def untyped(self, body: bytes, decision: Decision, content_encoding: str | None,
                declared: str | None) -> None:
        """Check a body sent without a page's type that may still be a page: one that
        declares or gates access (or cannot be read to tell) is refused with UpstreamError.
        """
        unpacked = decode_body(body, content_encoding)
        if unpacked is not None and not _may_gate(unpacked):
            return  # not a word of page metadata or gating in it, in any reading
        readable = self.decode(body, decision, content_encoding, declared)
        meta = None if readable is None else read_page_meta(readable[0])
        if readable is None or meta is None or has_markers(readable[0]) or meta.declared \
                or meta.unreadable:
            raise UpstreamError("the docs server sent a page without a type the gateway "
                                "can read")

    def index_file(self, rel: str | None) -> IndexFile | None:
        """The sitemap or search index a path names, when indexes are filtered here.

        Also in ``personalize`` mode: every page is listed there, but words from gated
        elements must still not reach search.
        """
        if self.index is None or rel is None or not self.indexes:
            return None
        if rel in self._index_files:
            return self._index_files[rel]
        found = match_index(rel, self.index_names)
        if len(rel) <= INDEX_PATH_KEPT:  # paths are client-chosen: the memo stays small
            if len(self._index_files) >= INDEX_FILES_KEPT:
                self._index_files.clear()
            self._index_files[rel] = found
        return found


# Paths whose listing (or none) ``Pages.index_file`` remembers, and the longest it keeps.
INDEX_FILES_KEPT = 4096
INDEX_PATH_KEPT = 256


# Suffixes of files that are not pages. Every other path (a folder, .html, no suffix, an
# unknown one) may answer with a page, so its request is sent for the whole body.
ASSET_SUFFIXES = frozenset("""
    css js mjs cjs map json jsonld wasm png jpg jpeg gif webp avif svg ico bmp tif tiff
    woff woff2 ttf otf eot mp4 webm ogg ogv mp3 m4a wav flac pdf zip gz tgz bz2 xz zst br
    7z tar whl txt csv xml yaml yml md rst epub ipynb bin exe msi dmg pkg deb rpm apk jar
    iso img appimage
""".split())
# Types that are surely not a page. On a page's path every other type (text/plain,
# application/octet-stream, a server's fallback for a file whose type it does not know:
# nginx's default_type, or its types table left out) may be a page sent as something else.
_NOT_PAGES = frozenset({"text/css", "text/javascript", "application/javascript",
                        "application/x-javascript", "application/json", "application/pdf",
                        "application/zip", "application/gzip", "application/wasm"})
_NOT_PAGE_KINDS = ("image/", "audio/", "video/", "font/")


def _may_gate(body: bytes) -> bool:
    """Whether a body may hold page metadata or gating attributes, read as bytes or as
    UTF-16 (both orders): each spells "gateway", unless a value hides it in character
    references, so a body with either is read in full."""
    for text in (body, body.decode("utf-16-le", "ignore").encode(),
                 body.decode("utf-16-be", "ignore").encode()):
        lower = text.lower()
        if b"gateway" in lower or b"&#" in lower:
            return True
    return False


def page_like(rel: str) -> bool:
    """Whether a path may name a page (anything but a known kind of asset)."""
    name = rel.rpartition("/")[2]
    dot = name.rfind(".")
    return dot < 0 or name[dot + 1:].lower() not in ASSET_SUFFIXES


def content_type(headers: CIMultiDict[str]) -> str | None:
    """The one Content-Type a response declares, or None when it declares none, several,
    or a list (a browser takes the last of a list, so which one applies is not clear)."""
    values = headers.getall("Content-Type", ())
    if len(values) != 1 or "," in values[0]:
        return None
    return values[0]


def content_encodings(headers: CIMultiDict[str]) -> str | None:
    """Every Content-Encoding a response applied, in order (the header may repeat)."""
    values = headers.getall("Content-Encoding", ())
    return ",".join(values) if values else None


#: An entity tag as the docs server may send it (RFC 9110 8.8.3), of a sane length.
_ENTITY_TAG: Final = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]{0,200}"')


def shared_validator(headers: CIMultiDict[str]) -> str | None:
    """The ETag of a page the docs server sent as one copy for every reader, as a shared
    cache would keep it (RFC 9111 3): one well-formed ETag, no ``Set-Cookie``, not
    ``private`` or ``no-store``, no ``Vary`` but on ``Accept-Encoding`` (the gateway reads
    every encoding). None for any other page: it is asked for whole every time."""
    if "Set-Cookie" in headers:
        return None
    tags = headers.getall("ETag", ())
    if len(tags) != 1 or not _ENTITY_TAG.fullmatch(tags[0]):
        return None
    for value in headers.getall("Cache-Control", ()):
        for directive in value.lower().split(","):
            if directive.split("=", 1)[0].strip() in ("private", "no-store"):
                return None
    for value in headers.getall("Vary", ()):
        for name in value.split(","):
            if name.strip().lower() not in ("accept-encoding", ""):
                return None
    return tags[0]


def same_tag(sent: str, came: str) -> bool:
    """Whether two entity tags match by weak comparison (RFC 9110 8.8.3.2)."""
    return sent.removeprefix("W/") == came.removeprefix("W/")


def unidentified(value: str | None, rel: str) -> bool:
    """Whether a response may be a page under another type: it has no type, several, or
    on a page's path one that does not say it is no page (its body is then looked into
    before it is sent)."""
    if value is None:
        return True
    mime = value.split(";", 1)[0].strip().lower()
    if is_html(mime) or mime.startswith(_NOT_PAGE_KINDS) or mime in _NOT_PAGES \
            or mime.endswith("+json"):
        return False
    return page_like(rel)


def needs_whole(method: str, upstream: Answer) -> bool:
    """Whether an answer to a request sent as it came (an asset's path) must be fetched
    again whole: it is, or may be, a page, and came back partial, unchanged or headless."""
    status = upstream.status
    value = content_type(upstream.headers)
    html_page = value is not None and is_html(value)
    if status in (412, 416):
        # A failed precondition or range tells that a file exists, and how large it is.
        return True
    if status == 206:
        # A multipart answer's parts each name a type: they are not read, so ask for all.
        return value is None or html_page or value.lower().startswith("multipart/")
    if status == 304:
        return html_page
    return method == "HEAD" and 200 <= status < 300 and (value is None or html_page)


def learn(data: bytes, content_type: str | None = None, *, navigation: bool = False,
          fragments: bool = True) -> Learned | None:
    """What a whole page tells (its metadata, which may stand anywhere in it, with
    ``fragments`` its gated elements, and with ``navigation`` the parts of its text that
    leave with a link); None when it cannot be read (an encoding the gateway cannot
    decode, a head that ends inside a tag)."""
    try:
        data = as_utf8(data, content_type)[0]
    except Undecodable:
        return None
    meta = read_page_meta(data)
    if meta.unreadable:
        return None
    gated = fragments and has_markers(data)
    if not (gated or navigation):
        return Learned(meta, False)
    text = page_text(data, find_links(data) if navigation else None, gated=gated)
    if text is None:
        return Learned(meta, True if gated else None)  # where its parts end: unknown
    return Learned(meta, gated, text if gated or text.linked else None)


async def whole_page(answer: Answer) -> bytes | None:
    """A page's body, read whole and unpacked; None when it is larger than
    ``PAGE_READ_LIMIT`` or packed in a way the gateway cannot undo."""
    try:
        data = await answer.read_all(PAGE_READ_LIMIT)
    except ValueError:
        return None
    return decode_body(data, content_encodings(answer.headers))


def links_fetcher(origin: Origin
                  ) -> Callable[[str], Awaitable[tuple[list[Link], tuple[str, ...]] | None]]:
    """Read the links of a page from ``origin`` (an anonymous GET, read whole), with its
    ``<base href>`` values: None when it does not answer 200 with a page the gateway can
    read."""

    async def fetch(path: str) -> tuple[list[Link], tuple[str, ...]] | None:
        async def use(answer: Answer) -> tuple[list[Link], tuple[str, ...]] | None:
            declared = content_type(answer.headers)
            if declared is None or not is_html(declared):
                return None
            body = await whole_page(answer)
            try:
                if body is None:
                    return None
                page = as_utf8(body, declared)[0]
                return find_links(page), document_bases(page)
            except Undecodable:
                return None

        return await fetched(origin, path, use)

    return fetch


#: What is learned of a page that answers and cannot be read: closed to every reader.
UNREADABLE = Learned(PageMeta(unreadable=True))


def meta_fetcher(origin: Origin, *, navigation: bool = False,
                 fragments: bool = True) -> FetchMeta:
    """Learn pages from ``origin`` with an anonymous GET, read whole.

    A page that does not answer 200 is unknown (None). One that answers and cannot be
    read (larger than ``PAGE_READ_LIMIT``, an encoding or a head the gateway cannot read,
    or what may be a page under another type) is ``UNREADABLE``: its metadata is not
    known, so it is closed. One that is not HTML declares and gates nothing.
    """

    async def fetch(path: str) -> Learned | None:
        async def use(answer: Answer) -> Learned | None:
            declared = content_type(answer.headers)
            if unidentified(declared, path):
                return UNREADABLE  # it may be a page under another type
            if not is_html(declared):
                return Learned(PageMeta(), False)
            body = await whole_page(answer)  # (None: too large, or packed unreadably)
            learned = None if body is None else learn(body, declared, navigation=navigation,
                                                      fragments=fragments)
            return UNREADABLE if learned is None else learned

        return await fetched(origin, path, use)

    return fetch
