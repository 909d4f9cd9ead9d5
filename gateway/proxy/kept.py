"""Pages the upstream sent whole, kept to be revalidated rather than sent again.

A page is read whole before it goes out (it may declare or gate its own access). When the
upstream gave it with an entity tag, the same request again (every header the upstream
sees alike but the request id: the same reader, the same page, the same encodings) asks
with ``If-None-Match``; a ``304`` with that tag means the kept copy is the page, and it is
read from here instead of the socket. Anything else (a new copy, another status, a 304
without the tag) is the answer as the upstream gave it.

Only what the upstream may send to that very request again is kept: a 200 with an
``ETag``, no ``Set-Cookie``, no ``Cache-Control: no-store``, of at most ``KEPT_PAGE_LIMIT``
bytes, for a request of at most ``KEY_LIMIT`` characters of fields. The copies share a byte
budget; the requests that lead to them are bounded in number.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from multidict import CIMultiDict

from gateway.bounded import Bounded
from gateway.proxy.origin import Answer

#: The bytes of kept copies, all told, and the largest one kept.
KEPT_BUDGET: Final = 8 * 1024 * 1024
KEPT_PAGE_LIMIT: Final = 256 * 1024
#: Distinct requests (readers and pages) remembered as leading to a kept copy, each with
#: at most so many characters of fields.
KEPT_REQUESTS: Final = 4096
KEY_LIMIT: Final = 8192
#: Fields a 304 updates in the kept head (RFC 9111 4.3.4, without the framing and the
#: representation's own fields, which a 304 with the same tag cannot change).
FRESHENED: Final = frozenset({"date", "expires", "cache-control", "last-modified", "age"})

RequestKey = tuple[str, str, tuple[tuple[str, str], ...]]


class KeptCopy:
    """A 200 as the upstream sent it: status line, head, body (as it came, compressed or
    not) and the entity tag it came with."""

    def __init__(self, target: str, etag: str, reason: str, headers: CIMultiDict[str],
                 body: bytes) -> None:
        self.target = target
        self.etag = etag
        self.reason = reason
        self.headers = headers
        self.body = body
        #: Its fields a 304 does not freshen, and those it may.
        self.lasting: CIMultiDict[str] = CIMultiDict()
        self.freshened: list[tuple[str, str]] = []
        for name, value in headers.items():
            if name.lower() in FRESHENED:
                self.freshened.append((name, value))
            else:
                self.lasting.add(name, value)


def keepable(status: int, headers: CIMultiDict[str]) -> str | None:
    """The entity tag under which a response may be kept, else None."""
    if status != 200 or "Set-Cookie" in headers:
        return None
    etags = headers.getall("ETag", ())
    if len(etags) != 1 or not etags[0]:
        return None
    if "no-store" in ",".join(headers.getall("Cache-Control", ())).lower():
        return None
    return etags[0]


class KeptAnswers:
    """Kept copies by (target, tag), and which requests lead to which."""

    def __init__(self, budget: int = KEPT_BUDGET, requests: int = KEPT_REQUESTS) -> None:
        self.budget = budget
        self.size = 0
        self._copies: OrderedDict[tuple[str, str], KeptCopy] = OrderedDict()
        self._requests: Bounded[RequestKey, KeptCopy] = Bounded(requests)

    def __len__(self) -> int:
        return len(self._copies)

    def copy_for(self, key: RequestKey) -> KeptCopy | None:
        """The copy this request last led to, while it is kept."""
        copy = self._requests.get(key)
        if copy is None:
            return None
        if self._copies.get((copy.target, copy.etag)) is not copy:
            del self._requests[key]  # its copy made room for others
            return None
        return copy

    def keep(self, key: RequestKey, target: str, etag: str, reason: str,
             headers: CIMultiDict[str], body: bytes) -> None:
        """Remember that ``key`` was answered with this copy."""
        if len(body) > KEPT_PAGE_LIMIT:
            self._requests.pop(key, None)
            return
        slot = (target, etag)
        copy = self._copies.get(slot)
        if copy is None or copy.body != body or copy.headers != headers:
            # A new copy (or the same tag on other bytes: the latest is kept).
            if copy is not None:
                self.size -= len(copy.body)
            copy = KeptCopy(target, etag, reason, headers.copy(), body)
            self._copies[slot] = copy
            self.size += len(body)
        self._copies.move_to_end(slot)
        self._requests.put(key, copy)
        while self._copies and self.size > self.budget:
            _slot, oldest = self._copies.popitem(last=False)
            self.size -= len(oldest.body)

    def forget(self, key: RequestKey) -> None:
        """The request no longer leads to a kept copy."""
        self._requests.pop(key, None)


class Replayed(Answer):
    """A kept copy answering a request the upstream confirmed it for (a 304)."""

    def __init__(self, copy: KeptCopy, confirmed: CIMultiDict[str]) -> None:
        self.status = 200
        self.reason = copy.reason
        fresh = [(name, value) for name, value in confirmed.items()
                 if name.lower() in FRESHENED]
        named = {name.lower() for name, _ in fresh}
        # What the 304 does not say stays as the kept copy said it.
        stale = [(name, value) for name, value in copy.freshened if name.lower() not in named]
        headers = copy.lasting.copy()
        headers.extend(stale)
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
