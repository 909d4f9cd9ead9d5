"""A lean HTTP/1.1 client for the one docs upstream: pooled keep-alive connections, llhttp
parsing (httptools), streamed bodies with backpressure both ways.

The general-purpose aiohttp client spends most of a proxied request's time on work a
single-upstream proxy never needs (cookie jars, redirects, URL re-encoding, tracing), so the
hot path uses this instead; WebSockets and the IdP calls still use aiohttp's client.

The upstream's ``Date`` is kept apart from its other fields (``Response.dates``): an answer
gets the gateway's own when it is written (as nginx's proxy gives its own), so the heads of
one page version are alike.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import AsyncIterator, Iterable
from ssl import SSLContext
from typing import Final, cast

import httptools
from multidict import CIMultiDict

from gateway.proxy.origin import Answer, BrokenAnswer

# Buffered response body above which reading from the upstream socket pauses.
HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024
# Largest response head (status line and headers) taken from the upstream.
MAX_HEAD: Final = 64 * 1024
# Idle pooled connections older than this are not reused (upstreams close them first).
IDLE_LIMIT: Final = 20.0
NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class UpstreamClosed(BrokenAnswer):
    """The connection failed or closed before a complete response."""

    def __init__(self, message: str, *, sent_nothing: bool = False) -> None:
        super().__init__(message)
        self.sent_nothing = sent_nothing


class UpstreamTimedOut(BrokenAnswer):
    """The upstream did not answer (or stopped sending) within the read timeout."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.exchange: Response | None = None
        self.alive = True
        self.idle_since = time.monotonic()
        self._drained: asyncio.Event = asyncio.Event()
        self._drained.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes nobody asked for: the connection cannot be trusted for reuse.
            self.close()
            return
        exchange.feed(data)

    def eof_received(self) -> bool | None:
        self.alive = False
        if self.exchange is not None:
            self.exchange.feed_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._drained.set()
        if self.exchange is not None:
            self.exchange.feed_eof()

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()

    async def drain(self) -> None:
        """Wait until the socket buffer drains (request-body backpressure)."""
        await self._drained.wait()
        if not self.alive:
            raise UpstreamClosed("the docs server closed the connection")

    def write(self, data: bytes) -> None:
        """Send bytes, or fail if the connection is gone."""
        if not self.alive or self.transport is None or self.transport.is_closing():
            raise UpstreamClosed("the docs server closed the connection")
        self.transport.write(data)

    def close(self) -> None:
        """Drop the connection."""
        self.alive = False
        if self.transport is not None:
            self.transport.close()


class Response(Answer):
    """A response being received: status and headers first, then the body as it arrives."""

    def __init__(self, pool: Pool, conn: _Connection, method: str, read_timeout: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.conn = conn
        self.method = method
        self.read_timeout = read_timeout
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.pairs: tuple[tuple[str, str], ...] = ()
        self.content_length: int | None = None
        self.chunked = False
        self.received_any = False
        self._raw_headers: list[tuple[str, str]] = []
        self._dates: list[str] = []
        # The first Content-Length, Transfer-Encoding and Connection values, as the head
        # arrives (None: not sent), for the framing and reuse decisions.
        self._length: str | None = None
        self._coding: str | None = None
        self._connection: str | None = None
        # The parser holds this response (its callbacks): a cycle, broken by release() so
        # that the response is freed at once rather than left to the garbage collector.
        # None once released.
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._loop = loop
        self._head: asyncio.Future[None] = loop.create_future()
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        # Made when a reader must wait: small bodies usually arrive with the head.
        self._wakeup: asyncio.Event | None = None
        self._complete = False
        self._error: Exception | None = None
        # llhttp forgets keep-alive once a message completes, so it is read before that.
        self._keep_alive = False
        self._head_bytes = 0
        self._overrun = False

    def header_pairs(self) -> tuple[tuple[str, str], ...]:
        return self.pairs

    def dates(self) -> tuple[str, ...]:
        return tuple(self._dates)

    # -- parser callbacks ------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        if not self._overrun:
            reason = header_text(status)
            # A control character (llhttp lets NUL, VT and DEL through) could not be sent on.
            self.reason = "" if _CONTROL.search(reason) else reason

    def on_message_begin(self) -> None:
        if self._head.done():
            # A second response to one request (bytes after a complete one, in the same
            # read): it must not rewrite this one's status and headers, and the
            # connection cannot be trusted for another request.
            self._overrun = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._overrun:
            return
        size = len(name)
        if size == 4 and name.lower() == b"date":
            self._dates.append(header_text(value))
            return
        text = header_text(value)
        self._raw_headers.append((name.decode("latin-1"), text))
        if size == 14:
            if self._length is None and name.lower() == b"content-length":
                self._length = text
        elif size == 17:
            if self._coding is None and name.lower() == b"transfer-encoding":
                self._coding = text
        elif size == 10 and self._connection is None and name.lower() == b"connection":
            self._connection = text

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # callbacks run inside feed(), which holds the parser
        if self._overrun:
            return
        status = parser.get_status_code()
        if status == 101:
            # Nothing sent here asks to switch protocols (a WebSocket has a client of its
            # own): what follows is no HTTP, and a 101 no answer to pass on.
            self._fail(UpstreamClosed("the docs server switched protocols unasked"))
            return
        if 100 <= status < 200:
            self._raw_headers.clear()  # an interim response: the real one follows
            self._dates.clear()
            self._length = self._coding = self._connection = None
            return
        self.status = status
        self.pairs = tuple(self._raw_headers)
        self.headers = CIMultiDict(self.pairs)
        # llhttp hands on a value with the blanks after it (it drops those before).
        length = self._length.strip(" \t") if self._length is not None else None
        if length is not None and length.isascii() and length.isdigit():
            self.content_length = int(length)
        coding = self._coding
        self.chunked = coding is not None and "chunked" in coding.lower()
        self._keep_alive = parser.should_keep_alive()
        if self.method == "HEAD" or status in (204, 304):
            self._complete = True
            if status in (204, 304) and (length not in (None, "0") or coding is not None):
                # A body announced where none may follow: bytes may still come after the
                # head, and would be read as the next request's answer.
                self._keep_alive = False
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._complete or self._overrun:
            return
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.conn.transport:
            self._paused = True
            self.conn.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # callbacks run inside feed(), which holds the parser
        if self.status and not self._overrun:
            self._keep_alive = self._keep_alive and parser.should_keep_alive()
            self._complete = True
            self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    # -- feeding -----------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.received_any = True
        if self._complete:
            self.conn.close()  # more bytes than the response framing allows
            return
        parser = self._parser
        if parser is None:  # released: nothing more is read for this response
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # After a 101 (refused as it came): the connection speaks something else now.
            self._fail(UpstreamClosed("the docs server switched protocols unasked"))
            self.conn.close()
            return
        except httptools.HttpParserError as exc:
            self._fail(UpstreamClosed(f"malformed response from the docs server ({exc})"))
            self.conn.close()
            return
        if self._overrun:
            self.conn.close()  # more bytes than the response framing allows
        # Counted only while the head is still incomplete after this chunk, so body bytes
        # that arrive with the head never count against it.
        if not self._head.done():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._fail(UpstreamClosed("the docs server sent an oversized response head"))
                self.conn.close()

    def feed_eof(self) -> None:
        if self._complete:
            return
        if self._head.done() and self.content_length is None and not self.chunked \
                and self.status and not self._keep_alive:
            self._complete = True  # a body delimited by the connection closing
            self._wake()
            return
        self._fail(UpstreamClosed("the docs server closed the connection",
                                  sent_nothing=not self.received_any))

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: nobody may be waiting yet
        self._wake()

    # -- consumer side -------------------------------------------------------------------
    async def wait_head(self) -> None:
        """Wait for the status line and headers."""
        if self._head.done():
            return self._head.result()
        # A bare timer (not asyncio.timeout) on the one future: this runs per request.
        timer = self._loop.call_later(self.read_timeout, self._head_timed_out)
        try:
            await self._head
        finally:
            timer.cancel()

    def _head_timed_out(self) -> None:
        if not self._head.done():
            self._head.set_exception(UpstreamTimedOut("the docs server did not answer in time"))
            self.conn.close()

    async def read(self) -> bytes:
        """The next body chunk; b"" at the end."""
        while not self._body:
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            if self._wakeup is None:
                self._wakeup = asyncio.Event()
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self.read_timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                self.conn.close()
                raise UpstreamTimedOut("the docs server stopped sending") from None
        chunk = self._body.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < LOW_WATER and self.conn.transport:
            self._paused = False
            self.conn.transport.resume_reading()
        return chunk

    async def read_all(self, limit: int) -> bytes:
        """The whole body, refusing more than ``limit`` bytes (ValueError)."""
        if self._complete and self._error is None and self._buffered <= limit:
            # All of it arrived with the head (the usual page): no waiting, one join.
            body = b"".join(self._body)
            self._body.clear()
            self._buffered = 0
            return body
        parts: list[bytes] = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if size > limit:
                raise ValueError("response body over the limit")
            parts.append(chunk)
        return b"".join(parts)

    def arrived(self) -> bytes | None:
        if not self._complete or self._error is not None or self._parser is None:
            return None
        body = b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        return body

    def release(self) -> None:
        """Give the connection back when the exchange finished cleanly, else drop it."""
        if self._parser is None:
            return
        self._parser = None
        conn = self.conn
        conn.exchange = None
        reusable = (self._complete and self._error is None and conn.alive
                    and self._keep_alive and not self._body
                    and (self._connection is None
                         or "close" not in self._connection.lower()))
        if self._paused and conn.transport is not None and reusable:
            conn.transport.resume_reading()
        self.pool.put_back(conn, reusable)


class Slots:
    """At most ``limit`` exchanges at once, handed out first come, first served.

    Unlike ``asyncio.Semaphore``, a free slot is taken by a plain call, with no coroutine
    and no scan of the waiters: the common case on every proxied request.
    """

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_free(self) -> bool:
        """Take a slot if one is free (and nobody is queued for it)."""
        if self.free and not self.waiters:
            self.free -= 1
            return True
        return False

    async def wait(self, loop: asyncio.AbstractEventLoop) -> None:
        """Queue for the next slot given back."""
        waiter: asyncio.Future[None] = loop.create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as this wait was cancelled: pass it on
            elif waiter in self.waiters:
                self.waiters.remove(waiter)
            raise

    def give(self) -> None:
        """Give a slot back: to the longest waiter still waiting, or to the free count."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class Pool:
    """Keep-alive connections to one host:port, at most ``limit`` at once."""

    def __init__(self, host: str, port: int, *, limit: int, connect_timeout: float,
                 read_timeout: float, ssl: SSLContext | None = None,
                 server_hostname: str | None = None
                 ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle: collections.deque[_Connection] = collections.deque()
        self.slots = Slots(limit)
        self._loop = asyncio.get_running_loop()  # a pool lives in the loop that made it

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _transport, conn = await self._loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl,
                    server_hostname=self.server_hostname if self.ssl else None)
        except TimeoutError:
            raise UpstreamTimedOut("connecting to the docs server timed out") from None
        except OSError as exc:
            raise ConnectionRefusedError(str(exc)) from None
        return conn

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if conn.alive and now - conn.idle_since < IDLE_LIMIT:
                return conn
            conn.close()
        return None

    def put_back(self, conn: _Connection, reusable: bool) -> None:
        """Return a connection after an exchange."""
        if reusable:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.close()
        self.slots.give()

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]],
                      body: AsyncIterator[bytes] | None, content_length: int | None
                      ) -> Response:
        """Send a request and wait for the response head; the body is read from the result.

        A reused connection that turns out to be closed is retried once on a new connection,
        but only for idempotent requests without a body.
        """
        head = _request_head(method, target, headers, body is not None, content_length)
        if not self.slots.take_free():
            try:
                # Waiting for a free connection counts as connecting (as aiohttp's client does).
                async with asyncio.timeout(self.connect_timeout):
                    await self.slots.wait(self._loop)
            except TimeoutError:
                raise UpstreamTimedOut("every connection to the docs server is busy") from None
        try:
            conn = self._take_idle()
            retry_allowed = conn is not None and method in IDEMPOTENT and body is None
            if conn is None:
                conn = await self._connect()
            try:
                return await self._exchange(conn, method, head, body, content_length)
            except UpstreamClosed as exc:
                if not (retry_allowed and exc.sent_nothing):
                    raise
            conn = await self._connect()
            return await self._exchange(conn, method, head, body, content_length)
        except BaseException:
            self.slots.give()
            raise

    async def _exchange(self, conn: _Connection, method: str, head: bytes,
                        body: AsyncIterator[bytes] | None, content_length: int | None
                        ) -> Response:
        response = Response(self, conn, method, self.read_timeout, self._loop)
        conn.exchange = response
        try:
            conn.write(head)
            if body is not None:
                await _send_body(conn, body, chunked=content_length is None)
            await response.wait_head()
        except BaseException:
            conn.exchange = None
            conn.close()
            raise
        return response

    def close(self) -> None:
        """Close every idle connection."""
        while self.idle:
            self.idle.pop().close()


_CONTROL: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def header_text(value: bytes) -> str:
    """A response header's bytes as a browser reads them: UTF-8, else latin-1 (never
    surrogates, which could not be sent on)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _request_head(method: str, target: str, headers: Iterable[tuple[str, str]],
                  has_body: bool, content_length: int | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend([f"{name}: {value}" for name, value in headers])
    text = "".join(lines)
    if "\r" in text or "\n" in text:
        # Never let a value split the request (smuggling): such a header is left out.
        lines = [lines[0], *(line for line in lines[1:] if "\r" not in line and "\n" not in line)]
    if has_body:
        lines.append("Transfer-Encoding: chunked" if content_length is None
                     else f"Content-Length: {content_length}")
    elif method not in NO_BODY_METHODS:
        lines.append("Content-Length: 0")
    # A client's own header values and target reach here as aiohttp decoded them (UTF-8,
    # undecodable bytes kept as surrogates): encoded back so, they are the client's bytes.
    # The gateway's own values (a reader's name in a plain header) go out as UTF-8; a lone
    # surrogate in one (a JSON escape in a token's claims) cannot, and becomes "?".
    text = "\r\n".join(lines) + "\r\n\r\n"
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "".join(char if not 0xD800 <= ord(char) <= 0xDFFF or 0xDC80 <= ord(char) <= 0xDCFF
                       else "?" for char in text).encode("utf-8", "surrogateescape")


async def _send_body(conn: _Connection, body: AsyncIterator[bytes], *, chunked: bool) -> None:
    async for chunk in body:
        if not chunk:
            continue
        conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        await conn.drain()
    if chunked:
        conn.write(b"0\r\n\r\n")
