"""Pages the upstream sent whole, kept to be revalidated rather than sent again.

A page is read whole before it goes out (it may declare or gate its own access). When the
upstream gave it with an entity tag, the same request again (every header the upstream
sees alike but the request id: the same reader, the same page, the same encodings) asks
with ``If-None-Match``; a ``304`` naming that tag means the kept copy is the page, and it
is read from here instead of the socket. Anything else (a new copy, another status, a 304
naming no tag or another, setting a cookie or forbidding storage) is the answer as the
upstream gave it, or the page asked for again.

An entity tag may stay the same over an edit (nginx makes it of the file's time and size:
a deploy that keeps files' times, an edit of the same length in the same second), so a
kept copy stands on the upstream's word for ``KEPT_FOR`` seconds from when its bytes last
came: after that the page is asked for whole again, as the gateway's other per-page
memories of what leaves a page count from then on.

Only what the upstream may send to that very request again is kept: a 200 with one
``ETag``, its length framed (not ended by a close), no ``Set-Cookie``, no ``no-store``, of
at most ``KEPT_PAGE_LIMIT`` bytes. The copies share a byte budget (each counted with its
fields) and are no more than the requests that may lead to them, which are bounded in
number and in length.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from multidict import CIMultiDict

from gateway.bounded import Bounded
from gateway.proxy.origin import Answer

#: The bytes of kept copies, all told, and the largest one kept.
KEPT_BUDGET: Final = 8 * 1024 * 1024
KEPT_PAGE_LIMIT: Final = 256 * 1024
#: Distinct requests (readers and pages) remembered as leading to a kept copy, each by
#: its fields when they are at most so long, else by a digest.
KEPT_REQUESTS: Final = 2048
KEY_LENGTH: Final = 4096
#: What a copy counts against the budget besides its body (its object and fields).
COPY_WEIGHT: Final = 2048
#: Seconds a copy is taken on the upstream's word after its bytes last came.
KEPT_FOR: Final = 5.0
#: Fields a 304 updates in the kept head (RFC 9111 4.3.4, without the framing and the
#: representation's own fields, which a 304 with the same tag cannot change).
FRESHENED: Final = frozenset({"date", "expires", "cache-control", "last-modified", "age"})

_SERIALS: Final = itertools.count(1)


def request_key(text: str) -> str | bytes:
    """A request as the upstream sees it (``request_text``: its line and fields), told
    apart from any other: the text itself, or a digest of it when it is long."""
    if len(text) <= KEY_LENGTH and text.isascii():  # (one byte a character)
        return text
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def opaque(etag: str) -> str:
    """An entity tag as weak comparison reads it (RFC 9110 8.8.3.2)."""
    return etag[2:] if etag.startswith("W/") else etag


def unstorable(headers: CIMultiDict[str]) -> bool:
    """Whether a response sets a cookie or forbids being stored."""
    return "Set-Cookie" in headers \
        or "no-store" in ",".join(headers.getall("Cache-Control", ())).lower()


def keepable(status: int, headers: CIMultiDict[str]) -> str | None:
    """The entity tag under which a response may be kept, else None."""
    if status != 200 or unstorable(headers):
        return None
    etags = headers.getall("ETag", ())
    if len(etags) != 1 or not etags[0]:
        return None
    return etags[0]


# Field name (as spelled) -> whether a 304 freshens it.
_FRESHENS: Final[dict[str, bool]] = {}


def freshens(name: str) -> bool:
    """Whether a 304 updates the field ``name``; remembered per spelling."""
    known = _FRESHENS.get(name)
    if known is None:
        known = name.lower() in FRESHENED
        if len(_FRESHENS) < 4096:  # names are the upstream's: keep the memo bounded
            _FRESHENS[name] = known
    return known


def split_fields(headers: CIMultiDict[str]) -> tuple[CIMultiDict[str], list[tuple[str, str]]]:
    """A head's fields a 304 does not freshen, and those it may."""
    lasting: CIMultiDict[str] = CIMultiDict()
    freshened: list[tuple[str, str]] = []
    for name, value in headers.items():
        if freshens(name):
            freshened.append((name, value))
        else:
            lasting.add(name, value)
    return lasting, freshened


class KeptCopy:
    """A 200 as the upstream sent it: status line, head, body (as it came, compressed or
    not), the entity tag it came with, and when its bytes last came."""

    def __init__(self, target: str, etag: str, reason: str, headers: CIMultiDict[str],
                 body: bytes, read_at: float) -> None:
        self.target = target
        self.etag = etag
        self.reason = reason
        self.body = body
        self.read_at = read_at
        self.serial = next(_SERIALS)
        self.lasting, self.freshened = split_fields(headers)


class KeptAnswers:
    """Kept copies by (target, tag), and which requests lead to which."""

    def __init__(self, budget: int = KEPT_BUDGET, requests: int = KEPT_REQUESTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self.size = 0
        self.clock = clock
        self._copies: OrderedDict[tuple[str, str], KeptCopy] = OrderedDict()
        # A request's digest -> the copy it led to (its slot and serial, not the copy: a
        # copy that made room for others is gone at once).
        self._requests: Bounded[str | bytes, tuple[tuple[str, str], int]] = Bounded(requests)

    def __len__(self) -> int:
        return len(self._copies)

    def copy_for(self, key: str | bytes) -> KeptCopy | None:
        """The copy this request last led to, while it is kept and taken on trust."""
        led = self._requests.get(key)
        if led is None:
            return None
        copy = self._copies.get(led[0])
        if copy is None or copy.serial != led[1] \
                or self.clock() - copy.read_at > KEPT_FOR:
            del self._requests[key]
            return None
        self._requests.move_to_end(key)
        self._copies.move_to_end(led[0])
        return copy

    def keep(self, key: str | bytes, target: str, etag: str, reason: str,
             headers: CIMultiDict[str], body: bytes) -> None:
        """Remember that ``key`` was answered with this copy."""
        if len(body) > KEPT_PAGE_LIMIT:
            self._requests.pop(key, None)
            return
        slot = (target, etag)
        now = self.clock()
        copy = self._copies.get(slot)
        if copy is not None and copy.body == body and copy.reason == reason \
                and copy.lasting == split_fields(headers)[0]:
            copy.read_at = now  # the same bytes again: trusted for another while
        else:
            # A new copy (or the same tag on other bytes: only the latest is kept, and
            # requests that led to the other no longer lead anywhere).
            if copy is not None:
                self.size -= COPY_WEIGHT + len(copy.body)
            copy = KeptCopy(target, etag, reason, headers, body, now)
            self._copies[slot] = copy
            self.size += COPY_WEIGHT + len(body)
        self._copies.move_to_end(slot)
        self._requests.put(key, (slot, copy.serial))
        # No more copies than requests that may lead to them, within the byte budget.
        while self._copies and (self.size > self.budget
                                or len(self._copies) > self._requests.limit):
            _slot, oldest = self._copies.popitem(last=False)
            self.size -= COPY_WEIGHT + len(oldest.body)

    def forget(self, key: str | bytes) -> None:
        """The request no longer leads to a kept copy."""
        self._requests.pop(key, None)


class Replayed(Answer):
    """A kept copy answering a request the upstream confirmed it for (a 304)."""

    def __init__(self, copy: KeptCopy, confirmed: CIMultiDict[str]) -> None:
        self.status = 200
        self.reason = copy.reason
        headers = copy.lasting.copy()
        fresh = [(name, value) for name, value in confirmed.items() if freshens(name)]
        for name, value in copy.freshened:
            # What the 304 does not say stays as the kept copy said it.
            if name not in confirmed:
                headers.add(name, value)
        headers.extend(fresh)
        self.headers = headers
        self.content_length = len(copy.body)
        self._body: bytes | None = copy.body

    async def read(self) -> bytes:
        body, self._body = self._body or b"", None
        return body

    async def read_all(self, limit: int) -> bytes:
        body, self._body = self._body or b"", None
        if len(body) > limit:
            raise ValueError("response body over the limit")
        return body

    def arrived(self) -> bytes | None:
        body, self._body = self._body or b"", None
        return body

    def release(self) -> None:
        self._body = None
