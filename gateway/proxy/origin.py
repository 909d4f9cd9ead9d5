"""Where the docs come from: one interface, two origins (the upstream, the built folder).

The pipeline asks an ``Origin`` for a request's ``Answer`` and reads every answer the same
way (status and headers first, then the body in chunks), whichever origin gave it: one
serving path, one place that decides what a reader gets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from aiohttp import web
from multidict import CIMultiDict

from gateway.scope import Scope

CHUNK = 64 * 1024
T = TypeVar("T")


class BrokenAnswer(Exception):
    """An answer's body broke off (the origin closed, stopped sending, lost the file)."""


class Answer:
    """An origin's answer to one request: its head, then its body read in chunks."""

    status: int
    reason: str
    headers: CIMultiDict[str]
    #: The body's length when the origin said it; None when it is sent in chunks.
    content_length: int | None

    def header_pairs(self) -> tuple[tuple[str, str], ...]:
        """The headers, in order."""
        return tuple(self.headers.items())

    def dates(self) -> tuple[str, ...]:
        """The origin's own ``Date`` values, kept out of ``headers`` (none by default)."""
        return ()

    async def read(self) -> bytes:
        """The next body chunk; b"" at the end (BrokenAnswer when it breaks off)."""
        raise NotImplementedError

    async def read_all(self, limit: int) -> bytes:
        """The whole body, refusing more than ``limit`` bytes (ValueError)."""
        raise NotImplementedError

    def arrived(self) -> bytes | None:
        """The whole body when all of it is here already (taken: nothing is left to read),
        else None and nothing taken: a small body goes out with its head in one write."""
        return None

    def release(self) -> None:
        """Let go of what the answer holds (a pooled connection, an open file); idempotent."""
        raise NotImplementedError


def asked_method(method: str, whole: bool) -> str:
    """The method an answer is asked with: a HEAD whose answer is read (``whole``) is
    asked as a GET (a page is judged by its body)."""
    return "GET" if whole and method == "HEAD" else method


class Origin:
    """The docs host: asked for a reader's request, and for pages to learn."""

    async def open(self, request: web.Request, scope: Scope,
                   extra: Iterable[tuple[str, str]], whole: bool = False,
                   validator: str | None = None) -> Answer:
        """The answer to ``request`` at ``scope.path`` (with the identity headers ``extra``,
        for an origin that takes them). ``whole``: the answer is read, so it is the whole
        body as a GET gets it: no range, no condition of the reader's, a HEAD asked as a GET
        (a 206 or a 304 would carry or skip bytes the gateway never got to read).
        ``validator``: the ETag of the copy the gateway holds, whose 304 it reads as that
        copy (an origin may ignore it and answer whole)."""
        raise NotImplementedError

    async def fetch(self, path: str) -> Answer | None:
        """An anonymous GET of ``path`` (below the public base path), to learn the page
        there; None when the origin cannot be asked."""
        raise NotImplementedError

    def response_pairs(self, answer: Answer) -> tuple[tuple[str, str], ...]:
        """The headers of ``answer`` as the reader may get them, in order."""
        raise NotImplementedError

    def response_headers(self, answer: Answer) -> CIMultiDict[str]:
        """The headers of ``answer`` as the reader may get them."""
        return CIMultiDict(self.response_pairs(answer))

    async def ping(self) -> bool:
        """Whether the origin is there (readiness)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the origin holds."""
        raise NotImplementedError


async def stream_body(request: web.Request, answer: Answer,
                      response: web.StreamResponse) -> None:
    """Copy an answer's body to the client chunk by chunk; ``write`` awaits the drain."""
    try:
        while chunk := await answer.read():
            await response.write(chunk)
        await response.write_eof()
    except BrokenAnswer:
        # Headers are already sent: the only honest signal left is a cut connection,
        # so the client sees a truncated body rather than a complete-looking one.
        if request.transport is not None:
            request.transport.abort()
    except ConnectionResetError:
        pass  # the client went away; the unread rest is dropped below
    finally:
        answer.release()


async def fetched(origin: Origin, path: str, use: Callable[[Answer], Awaitable[T | None]],
                  ) -> T | None:
    """What ``use`` makes of an anonymous GET of ``path`` that answered 200; None when the
    origin cannot be asked, answers otherwise, breaks off or sends more than ``use``
    reads (ValueError). The answer is released either way."""
    answer = await origin.fetch(path)
    if answer is None:
        return None
    try:
        return await use(answer) if answer.status == 200 else None
    except (BrokenAnswer, OSError, ValueError):
        return None
    finally:
        answer.release()
