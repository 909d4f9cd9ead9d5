"""The docs port's HTTP/1.1 connections.

aiohttp's connection handler does more per request than the docs port needs: a task of
its own for each request, keep-alive timers armed again and again, a response's head
prepared in many steps. Here a connection reads its requests with aiohttp's own parser
(llhttp, in C where aiohttp is built with its extensions), hands them one after another to
the gateway's entry as aiohttp requests, in the connection's one task, and writes a whole
answer (a page, a small asset, an error) with its head in one call. A rendered page comes
as the gateway's own ``WholeAnswer`` (its head kept encoded per page head, no aiohttp
response made for it); streamed answers still go through aiohttp's writer.

So what a request may carry is what aiohttp's server lets through: the parser's limits on
the line, each field and the number of fields, no second ``Host``, ``Content-Length`` or
other singleton field, no framing two servers could read differently; and here, a ``Host``
on every HTTP/1.1 request, HTTP/1.0 or 1.1 only, a head of at most ``MAX_HEAD`` bytes. A
request refused is answered after the answers under way, and the connection closes. Where
the parser's reading of what follows a request cannot be trusted (a chunked body's
trailer, a switch to a protocol other than WebSocket), that request is the connection's
last. A connection that closes lingers, reading and letting go what the client still
sends, so that the answer is not lost to a reset.

What a connection holds stays bounded: at most ``MAX_WAITING`` requests read ahead of the
one being answered (a long read is parsed a slice at a time), a body's buffer, and the
next request waits while the client has not read the answers before it. A client that
sends nothing of its body, or takes nothing of its answer, for the keep-alive time is cut
off.

A request that asks to switch protocols (a WebSocket) is handed, with the connection, to
aiohttp's own handler once the answers before it are written; if the switch does not
happen, the connection closes after the answer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final, cast

from aiohttp import StreamReader, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import (
    SERVER_SOFTWARE,
    HttpProcessingError,
    HttpRequestParser,
    HttpVersion,
    HttpVersion10,
    HttpVersion11,
)
from aiohttp.http_parser import RawRequestMessage
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_exceptions import HTTPException
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestPayloadError
from aiohttp.web_request import Request
from multidict import CIMultiDict
from mypy_extensions import mypyc_attr

log = logging.getLogger("gateway")

#: The request line, one field, the number of fields (aiohttp's parser's limits).
MAX_LINE: Final = 16384
MAX_FIELD: Final = 32768
MAX_HEADERS: Final = 128
#: A request's whole head, over however many reads it comes.
MAX_HEAD: Final = 131072
#: Requests read ahead of the one being answered before the connection stops reading.
MAX_WAITING: Final = 16
#: The most of one read parsed at once once a read is long or the queue has filled.
SLICE: Final = 4096
#: A request body's buffer before the connection stops reading (as aiohttp's).
BODY_BUFFER: Final = 2**16
#: How long, and how much, a refused client's bytes are still read before its connection
#: closes.
LINGER: Final = 2.0
LINGER_BYTES: Final = 2**20
#: How long a connection may sit without a request being answered (aiohttp's default).
KEEPALIVE: Final = 75.0

Handler = Callable[[web.BaseRequest], Awaitable["web.StreamResponse | WholeAnswer"]]
RequestFactory = Callable[[RawRequestMessage, StreamReader, Any, StreamWriter,
                           "asyncio.Task[None]"], web.BaseRequest]


@mypyc_attr(native_class=False)
class DocsRequest(Request):
    """A request on the docs port. No router stands between the port and the gateway's
    entry, so the request holds its application itself (``request.app``)."""

    ATTRS = Request.ATTRS | frozenset(["docs_app"])
    docs_app: web.Application

    @property
    def app(self) -> web.Application:
        return self.docs_app

    def clone(self, **changes: Any) -> DocsRequest:
        copy = super().clone(**changes)
        assert isinstance(copy, DocsRequest)
        copy.docs_app = self.docs_app
        return copy


def request_factory(app: web.Application, loop: asyncio.AbstractEventLoop,
                    max_body: int) -> RequestFactory:
    """The docs port's requests for ``app``: each a ``DocsRequest`` holding it."""

    # The message is aiohttp's parser's own (in C, no tuple), the writer aiohttp's.
    def make_request(message: Any, payload: StreamReader, protocol: Any,
                     writer: Any, task: asyncio.Task[None]) -> web.BaseRequest:
        # The docs port's protocol knows its client's address and scheme once for all its
        # requests (aiohttp's handler, after a switch of protocols, does not); a path (the
        # only target the gateway takes) names its host in Host, when it has one.
        request = DocsRequest(message, payload, protocol, writer, task, loop,
                              client_max_size=max_body,
                              remote=getattr(protocol, "remote", None),
                              scheme=getattr(protocol, "scheme", None),
                              host=message.headers.get("Host")
                              if message.path.startswith("/") else None)
        request.docs_app = app
        return request

    return make_request


class BadRequest(Exception):
    """A request the connection refuses before the gateway sees it: its status, and the
    reason for the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class _Date:
    """The ``Date`` field's value, made once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.value = ""
        self.field = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.value = formatdate(second, usegmt=True)
            self.field = f"Date: {self.value}\r\n"
        return self.value

    def line(self) -> str:
        """The field as a line of a head."""
        self.now()
        return self.field


DATE: Final = _Date()


class _Waiting:
    """A request read and waiting for its answer: the message and its body, or what was
    wrong with it, or the WebSocket request to hand over with the bytes after it."""

    def __init__(self, message: Any, payload: StreamReader,
                 refused: BadRequest | None = None, handover: bytes | None = None,
                 last: bool = False) -> None:
        self.message = message
        self.payload = payload
        self.refused = refused
        self.handover = handover
        # The last request the connection answers (a switch the docs port does not make,
        # a chunked body: what follows it cannot be read for sure).
        self.last = last


class DocsServer(web.Server):
    """aiohttp's low-level server, whose connections are the docs port's own; aiohttp's
    handler takes over a connection that switches protocols."""

    def __init__(self, handler: Handler, *, request_factory: RequestFactory,
                 loop: asyncio.AbstractEventLoop, access_log_class: type[AbstractAccessLogger]
                 | None = None, access_log: logging.Logger | None = None,
                 keepalive_timeout: float | None = None, **kwargs: Any) -> None:
        if keepalive_timeout is None:
            keepalive_timeout = KEEPALIVE

        async def handed_over(request: web.BaseRequest) -> web.StreamResponse:
            # A connection handed over for a switch that did not happen (the docs server
            # refused it, the reader may not open the page) closes after the answer: the
            # docs port's own limits hold only on its own connections.
            answer = await handler(request)
            response = answer.response() if isinstance(answer, WholeAnswer) else answer
            if response.status != 101:
                response.force_close()
            return response

        super().__init__(handed_over, request_factory=cast(Any, request_factory), loop=loop,
                         access_log_class=access_log_class or AccessLogger,
                         access_log=access_log, keepalive_timeout=keepalive_timeout, **kwargs)
        self.entry = handler
        self.loop = loop
        self.keepalive = keepalive_timeout
        self.factory = request_factory
        self.access: AbstractAccessLogger | None = None
        if access_log is not None and access_log_class is not None:
            self.access = access_log_class(access_log, AccessLogger.LOG_FORMAT)
        self.open: set[DocsConnection] = set()
        self.stopping = False

    def __call__(self) -> Any:
        return DocsProtocol(self)

    def handler(self) -> Any:
        """aiohttp's handler for a connection handed over."""
        return super().__call__()

    def pre_shutdown(self) -> None:
        self.pre_shutdown_connections()
        super().pre_shutdown()

    def pre_shutdown_connections(self) -> None:
        """Idle connections close now, busy ones once their answer is written."""
        self.stopping = True
        for connection in list(self.open):
            connection.stop()

    async def shutdown(self, timeout: float | None = None) -> None:
        self.pre_shutdown_connections()
        tasks = [c.task for c in self.open if c.task is not None and not c.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for connection in list(self.open):
            connection.close()
        await super().shutdown(timeout)


#: The reason phrase of each status (aiohttp's too).
REASONS: Final = {status.value: status.phrase for status in HTTPStatus}


class KeptHead:
    """Fields a head shares with others (a page's, the same for every view of one page
    version), encoded once, with the places of an answer's own two: its ``ETag`` where
    the empty one is in ``pairs``, its ``X-Request-Id`` where the first one is (the
    answer's replaces any the head had, as setting the field on aiohttp's response did)."""

    def __init__(self, pairs: tuple[tuple[str, str], ...]) -> None:
        self.pairs = pairs
        self.has_server = any(name.lower() == "server" for name, _ in pairs)
        runs: list[list[tuple[str, str]]] = [[]]
        slots: list[str] = []
        for name, value in pairs:
            if name == "ETag" and not value and "ETag" not in slots:
                slots.append("ETag")
            elif name.lower() == "x-request-id":
                if "X-Request-Id" in slots:
                    continue
                slots.append("X-Request-Id")
            else:
                runs[-1].append((name, value))
                continue
            runs.append([])
        self.slots = tuple(slots)
        self.has_etag = "ETag" in self.slots
        self.has_request_id = "X-Request-Id" in self.slots
        # A field that would break the head is refused when it is written, as any is.
        self.broken = False
        try:
            self.runs = tuple(encode_fields(run) for run in runs)
        except ValueError:
            self.runs = tuple(b"" for _ in runs)
            self.broken = True

    def encode(self, etag: str | None, request_id: str | None) -> list[bytes]:
        """The head's fields with the answer's ``ETag`` and ``X-Request-Id`` in their places
        (a request id the head has no place for is left to the caller)."""
        runs = self.runs
        out = [runs[0]]
        for index, slot in enumerate(self.slots):
            value = etag if slot == "ETag" else request_id
            if value is not None:
                out.append(own_field(slot, value))
            out.append(runs[index + 1])
        return out


class WholeAnswer:
    """An answer the docs port writes in one call without an aiohttp response being made
    for it: its status, a kept head, its ``ETag`` and ``X-Request-Id``, the fields added
    on the way out (``extra``: no cookies, no framing) and its body. ``response()`` makes
    the same answer as aiohttp's, for a writer other than the docs port's."""

    def __init__(self, status: int, body: bytes, kept: KeptHead, etag: str | None) -> None:
        self.status = status
        self.reason = REASONS.get(status, "")
        self.body = body
        self.kept = kept
        self.etag = etag if kept.has_etag else None
        self.request_id: str | None = None
        self.extra: list[tuple[str, str]] = []
        self.keep_alive: bool | None = None

    def force_close(self) -> None:
        self.keep_alive = False

    def response(self) -> web.Response:
        response = web.Response(status=self.status, reason=self.reason,
                                body=self.body if self.status not in (204, 304) else None)
        for name, value in self.kept.pairs:
            if name != "ETag" or value:
                response.headers.add(name, value)
            elif self.etag is not None:
                response.headers.add(name, self.etag)
        if self.request_id is not None:
            response.headers["X-Request-Id"] = self.request_id
        response.headers.extend(self.extra)
        if self.keep_alive is False:
            response.force_close()
        return response


# aiohttp's writer, parser, body buffers and request take a protocol of aiohttp's own: a
# subclass of its base, a regular class (that base has slots). It is what the transport
# and aiohttp see; the connection's own work is done by a native class behind it.
@mypyc_attr(native_class=False)
class DocsProtocol(BaseProtocol):
    """The protocol of one client connection, for the transport and for aiohttp: its flow
    control and what aiohttp's request reads of it; the rest is the ``DocsConnection``'s."""

    def __init__(self, server: DocsServer) -> None:
        super().__init__(server.loop)
        # What aiohttp's request reads of its protocol (a multipart body's limits, the
        # client's address) once the connection is made.
        self.max_field_size = MAX_FIELD
        self.max_headers = MAX_HEADERS
        self.ssl_context: Any = None
        self.peername: Any = None
        self.sockname: Any = None
        self.remote: str | None = None
        self.scheme = "http"
        self.connection = DocsConnection(server, self)
        # Each read goes straight to the connection (the transport looks it up once).
        self.data_received = self.connection.data_received  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self.ssl_context = transport.get_extra_info("sslcontext")
        # What aiohttp's request would work out from these on each request.
        peer = self.peername
        self.remote = None if peer is None else str(peer[0]) \
            if isinstance(peer, (list, tuple)) else str(peer)
        self.scheme = "https" if self.ssl_context else "http"
        self.connection.connection_made(cast(asyncio.Transport, transport))

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.connection.connection_lost()

    # Flow control asked for by a body's buffer (aiohttp's StreamReader).
    def pause_reading(self) -> None:
        self._reading_paused = True
        self.connection.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_paused = False
        self.connection.resume_reading()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.connection.pause_writing()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.connection.resume_writing()

    async def drain(self) -> None:
        """Wait until what was written has gone out to the client (or it left)."""
        await self._drain_helper()


class DocsConnection:
    """One client connection: its requests parsed, answered in order."""

    def __init__(self, server: DocsServer, wire: DocsProtocol) -> None:
        self.server = server
        # The protocol aiohttp's parts are given, and the transport writes to.
        self.wire = wire
        self._loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = self._new_parser()
        self.task: asyncio.Task[None] | None = None
        self.queue: collections.deque[_Waiting] = collections.deque()
        self.wakeup: asyncio.Future[None] | None = None
        # Bytes read and not yet parsed: a read is parsed a slice at a time while the
        # queue has room, so what is read ahead stays bounded.
        self.unread = b""
        # Bytes parsed since a request's head last ended, with no body being read: the
        # head being read (one read more at most).
        self.in_head = 0
        # The body of the connection's last request (see _parse), while it is read.
        self.ending: StreamReader | None = None
        # Whether the next read begins a request (the last ended with a head or a body).
        self.at_boundary = True
        # Reading is held for a full queue, a body's full buffer, or a handover.
        self.held = False
        # A request body's buffer is full (its reader asked the protocol to pause).
        self.body_full = False
        self.refused = False
        # A refusal written: what the client still sends is read and let go, then it closes.
        self.lingering = False
        self.lingered = 0
        self.moved_at = 0.0
        self.drained_at: float | None = None
        self.closing = False
        self.busy = False
        self.answering: StreamReader | None = None
        # When the client last sent bytes; since when the answer's bytes wait for it.
        self.read_at = 0.0
        self.writing_since: float | None = None
        self.write_left = 0
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if self.server.stopping:
            transport.close()
            return
        self.server.open.add(self)
        loop = self._loop
        self.last = loop.time()
        self.timer = loop.call_at(self.last + self.server.keepalive, self._idle)
        self.task = loop.create_task(self._serve())

    def connection_lost(self) -> None:
        self.transport = None
        self.closing = True
        self.server.open.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        try:
            self.parser.feed_eof()
        except HttpProcessingError:
            pass  # a body cut short: its reader is told below
        payloads = [waiting.payload for waiting in self.queue]
        if self.answering is not None:
            payloads.append(self.answering)
        for payload in payloads:
            if payload is not EMPTY_PAYLOAD and not payload.is_eof():
                payload.set_exception(ConnectionResetError("the client left"))
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.read_at = self._loop.time()
        if self.lingering:
            self.lingered += len(data)
            if self.lingered > LINGER_BYTES:
                self._reading(False)  # enough let go: the close waits for the answer
            return
        if self.refused or (self.closing and not self.busy and not self.queue):
            return
        if self.unread or len(data) > SLICE:
            self.unread += data
            self._parse_unread()
        else:
            self._parse(data)

    def _parse_unread(self) -> None:
        """Parse what was read a slice at a time, while the queue has room."""
        while self.unread and not self.refused and len(self.queue) < MAX_WAITING:
            data, self.unread = self.unread[:SLICE], self.unread[SLICE:]
            self._parse(data)
        if self.unread:
            self._hold()

    def _parse(self, data: bytes) -> None:
        broken: BadRequest | None = None
        try:
            messages, upgraded, tail = self.parser.feed_data(data)
        except HttpProcessingError as failed:
            # The parser keeps what it read before the fault to itself: read again.
            broken = BadRequest(400, f"the request could not be read: {failed.message}")
            messages = self._read_again(data) if self.at_boundary else []
            upgraded, tail = False, b""
            if not messages:
                self._refuse(broken)
                return
        queue = self.queue
        if not messages:
            last = queue[-1].payload if queue else self.answering
            if last is None or last.is_eof():
                self.in_head += len(data)
                if self.in_head > MAX_HEAD:
                    self._refuse(BadRequest(431, "the request's head is too large"))
                    return
        else:
            self.in_head = 0
        for message, payload in messages:
            if self.ending is not None:
                break  # after the connection's last request: not read
            if message.version == HttpVersion11 and "Host" not in message.headers:
                self._refuse(BadRequest(400, "an HTTP/1.1 request without Host"))
                return
            version = message.version
            if version != HttpVersion11 and version != HttpVersion10:
                self._refuse(BadRequest(505, "an HTTP version other than 1.0 and 1.1"))
                return
            if message.method == "CONNECT":
                self._refuse(BadRequest(400, "a CONNECT request"))  # no tunnels here
                return
            if message.upgrade and payload is not EMPTY_PAYLOAD \
                    and message.headers.get("Upgrade", "").lower() == "websocket":
                self._refuse(BadRequest(400, "a WebSocket request with a body"))
                return
            if (message.upgrade and not upgraded) or message.chunked or message.should_close:
                # The connection's last request, once its body is read: after a switch the
                # parser does not make (h2c, ...) it reads nothing more; after chunks, a
                # trailer would be read into the next request's fields; after a request
                # that closes the connection, nothing is for it.
                queue.append(_Waiting(message, payload, last=True))
                self.ending = payload
                break
            queue.append(_Waiting(message, payload))
        ending = self.ending
        if ending is not None and ending.is_eof() and not self.refused:
            self._read_no_more()  # the last request is read whole: nothing after it is
        if upgraded:
            # The last request switches protocols: nothing more is read here; it is handed
            # over, with the bytes after it, once the answers before it are written.
            switching = queue[-1] if queue else None
            if switching is None or switching.message is None \
                    or switching.payload is not EMPTY_PAYLOAD:
                if switching is not None and switching.message is not None:
                    queue.pop()  # not begun: the refusal answers it
                self._refuse(BadRequest(400, "a protocol switch with a body"))
                return
            switching.handover = bytes(tail) + self.unread  # what followed it, all of it
            self._read_no_more()
        if broken is not None and not self.refused:
            if messages[-1][0].should_close:
                self._read_no_more()  # bytes after a request that closes: not read
            else:
                self._refuse(broken)
                return
        self.at_boundary = data.endswith(b"\r\n\r\n") and (
            queue[-1].payload.is_eof() if queue else
            self.answering is None or self.answering.is_eof())
        if len(queue) >= MAX_WAITING:
            self._hold()
        if messages or upgraded:
            self._wake()

    def _new_parser(self) -> Any:
        """aiohttp's request parser, within the docs port's limits, its bodies paced by this
        connection."""
        return HttpRequestParser(self.wire, self._loop, BODY_BUFFER, max_line_size=MAX_LINE,
                                 max_field_size=MAX_FIELD, max_headers=MAX_HEADERS,
                                 payload_exception=RequestPayloadError)

    def _read_again(self, data: bytes) -> list[tuple[Any, StreamReader]]:
        """The requests whose heads a read begins with, up to the one that closes the
        connection, one with a body, or the fault: read one head at a time by a parser of
        their own (the read begins a request: ``at_boundary``)."""
        parser = self._new_parser()
        read: list[tuple[Any, StreamReader]] = []
        start = 0
        while (end := data.find(b"\r\n\r\n", start)) >= 0:
            try:
                messages, upgraded, _tail = parser.feed_data(data[start:end + 4])
            except HttpProcessingError:
                break
            start = end + 4
            if upgraded or len(messages) != 1 or messages[0][1] is not EMPTY_PAYLOAD:
                break
            read.append(messages[0])
            if messages[0][0].should_close:
                break
        return read

    # Flow control asked for by a body's buffer (aiohttp's StreamReader), through the
    # protocol.
    def pause_reading(self) -> None:
        self.body_full = True
        self._hold()

    def resume_reading(self) -> None:
        self.body_full = False
        if len(self.queue) < MAX_WAITING:
            self._release()

    # -- answering -------------------------------------------------------------------------

    async def _serve(self) -> None:
        """Answer the connection's requests in order, until it closes."""
        try:
            while True:
                if not self.queue:
                    if self.closing or self.transport is None:
                        return
                    self.wakeup = self._loop.create_future()
                    await self.wakeup
                    self.wakeup = None
                    continue
                if self.transport is None:
                    return
                waiting = self.queue.popleft()
                if self.held and len(self.queue) < MAX_WAITING \
                        and not self.body_full:
                    self._release()
                if waiting.refused is not None:
                    self._write_refusal(waiting.refused)
                    return
                if waiting.handover is not None:
                    self._give_away(waiting)
                    return
                assert waiting.message is not None
                if waiting.last:
                    self.closing = True
                self.busy = True
                self.answering = waiting.payload
                try:
                    keep = await self._answer(waiting.message, waiting.payload)
                finally:
                    self.busy = False
                    self.answering = None
                    self.last = self._loop.time()
                transport = self.transport
                if transport is None:
                    return
                if not keep:
                    self._linger(transport)  # what the client sent after it is let go
                    return
                if self.writing_since is not None:
                    # The client reads slower than answers are written (the transport
                    # paused writing): the next waits.
                    await self.wire.drain()
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            self.close()  # the client left while its answer was written
        except Exception:
            log.exception("a connection failed")
            self.close()

    async def _answer(self, message: Any, payload: StreamReader) -> bool:
        """Answer one request; whether the connection may carry another."""
        loop = self._loop
        started = loop.time()
        writer = StreamWriter(self.wire, loop)
        task = self.task
        assert task is not None
        request = self.server.factory(message, payload, self.wire, writer, task)
        response: web.StreamResponse | WholeAnswer
        try:
            response = await self.server.entry(request)
        except HTTPException as exc:
            response = exc
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("the docs port's handler failed")
            response = web.Response(status=500, text="500 Internal Server Error")
            response.force_close()
        if payload is not EMPTY_PAYLOAD and not payload.is_eof():
            # A body not read to its end: what follows it cannot be told from it.
            response.force_close()
        if isinstance(response, WholeAnswer):
            keep, length = self._write_answer(message, response)
            self._log(request, response.status, length, loop.time() - started)
            return keep and not self.closing and (payload is EMPTY_PAYLOAD or payload.is_eof())
        written = whole(response) if isinstance(response, web.Response) \
            and not response.prepared else None
        if written is not None:
            assert isinstance(response, web.Response)
            keep, length = self._write_whole(message, response, written)
        else:
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:
                return False
            keep, length = bool(response.keep_alive), response.body_length
        self._log(request, response.status, length, loop.time() - started)
        # A body the handler did not read to its end leaves the connection unusable.
        return keep and not self.closing and (payload is EMPTY_PAYLOAD or payload.is_eof())

    def _write_whole(self, message: Any, response: web.Response,
                     body: bytes) -> tuple[bool, int]:
        """A response whose body is at hand, with its head, in one write: the fields aiohttp
        would add, and none of the body where the request or status has none."""
        method, status = message.method, response.status
        headers = response.headers
        for cookie in response.cookies.values():
            headers.add("Set-Cookie", cookie.output(header="")[1:])
        empty = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        if "Content-Length" in headers:
            if status in (204, 304) or 100 <= status < 200:
                del headers["Content-Length"]
        elif body or not (status == 304 or method == "HEAD"):
            headers["Content-Length"] = str(len(body))
        if not empty and body and "Content-Type" not in headers:
            headers["Content-Type"] = "application/octet-stream"
        if "Date" not in headers:
            headers["Date"] = DATE.now()
        if "Server" not in headers:
            headers["Server"] = SERVER_SOFTWARE
        keep = self._keeps(message, response.keep_alive)
        if "Connection" not in headers:
            connection = _connection(message.version, keep)
            if connection:
                headers["Connection"] = connection
        self._send(encode_head(message.version, status, response.reason, headers),
                   b"" if empty else body)
        return keep, 0 if empty else len(body)

    def _write_answer(self, message: Any, answer: WholeAnswer) -> tuple[bool, int]:
        """A whole answer of the gateway's own: its kept head as encoded, the fields only
        it has, and what ``_write_whole`` adds to any (its length, date, server, whether
        the connection stays). Its own values are the gateway's (a digest, a request id, a
        number, a date), each checked for a line break or NUL as any field is."""
        kept, status, body = answer.kept, answer.status, answer.body
        if kept.broken:
            raise ValueError("a line break or NUL in the response's head")
        version = message.version
        request_id = answer.request_id
        head = [status_line(version, status, answer.reason),
                *kept.encode(answer.etag, request_id)]
        bodiless = status in (204, 304) or 100 <= status < 200
        empty = bodiless or message.method == "HEAD"
        if request_id is not None and not kept.has_request_id:
            head.append(own_field("X-Request-Id", request_id))
        if answer.extra:
            head.append(encode_fields(answer.extra))
        own = f"Content-Length: {len(body)}\r\n" \
            if not bodiless and (body or message.method != "HEAD") else ""
        keep = self._keeps(message, answer.keep_alive)
        connection = _connection(version, keep)
        head.append(f"{own}{DATE.line()}{'' if kept.has_server else SERVER_LINE}"
                    f"{f'Connection: {connection}{CRLF}' if connection else ''}\r\n".encode())
        self._send(b"".join(head), b"" if empty else body)
        return keep, 0 if empty else len(body)

    def _keeps(self, message: Any, keep_alive: bool | None) -> bool:
        """Whether the connection stays open after this answer (the answer's own word,
        else the request's: aiohttp's ``keep_alive``)."""
        keep = not message.should_close if keep_alive is None else keep_alive
        return keep and not self.closing

    def _send(self, head: bytes, body: bytes) -> None:
        transport = self.transport
        # A transport closed on the client's reset refuses writes before the connection
        # hears of it.
        if transport is not None and not transport.is_closing():
            if body:
                transport.writelines((head, body))
            else:
                transport.write(head)

    def _log(self, request: web.BaseRequest, status: int, length: int, took: float) -> None:
        access = self.server.access
        if access is None or not access.enabled:
            return
        line = getattr(access, "line", None)
        try:
            if line is not None:
                line(request, status, length, took)
            else:
                response = web.Response(status=status)
                access.log(request, response, took)
        except Exception:
            log.exception("the access log failed")

    def _write_refusal(self, refused: BadRequest) -> None:
        """A request refused before the gateway saw it: its status, and the connection
        closes."""
        log.debug("request refused: %s", refused)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            reason = {400: "Bad Request", 431: "Request Header Fields Too Large",
                      505: "HTTP Version Not Supported"}.get(refused.status, "Bad Request")
            text = f"{refused.status} {reason}".encode()
            transport.write(
                f"HTTP/1.1 {refused.status} {reason}\r\nContent-Type: text/plain; "
                f"charset=utf-8\r\nContent-Length: {len(text)}\r\nDate: {DATE.now()}\r\n"
                f"Server: {SERVER_SOFTWARE}\r\nConnection: close\r\n\r\n".encode() + text)
            self._linger(transport)
            return
        self.close()

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close once the client has had the answer: what it still sends is read and let go
        for a while (``LINGER`` seconds, ``LINGER_BYTES`` at most), since closing with bytes
        unread would reset the connection before the client reads the answer."""
        self.lingering = True
        self.closing = True
        try:
            if transport.can_write_eof():
                transport.write_eof()
        except (OSError, RuntimeError):
            # The client is gone already (the transport closed on its reset, and is yet to
            # tell the connection): nothing is left to linger for.
            transport.abort()
            return
        if self.timer is not None:
            self.timer.cancel()
        self.write_left = transport.get_write_buffer_size()
        self.moved_at = self._loop.time()
        self.drained_at = None
        self.timer = self._loop.call_later(LINGER / 4, self._linger_end)
        self.held = False
        self._reading(True)

    def _linger_end(self) -> None:
        """Close a lingering connection ``LINGER`` seconds after its answer has left the
        connection's buffer; while the answer still goes out, linger on; cut it off when it
        has not moved for the keep-alive time."""
        self.timer = None
        transport = self.transport
        if transport is None:
            return
        now = self._loop.time()
        self.moved_at = self._written(self.moved_at, now)
        if self.write_left:
            if now - self.moved_at > self.server.keepalive:
                transport.abort()
                return
        elif self.drained_at is None:
            self.drained_at = now
        elif now - self.drained_at >= LINGER:
            self.close()
            return
        self.timer = self._loop.call_later(LINGER / 4, self._linger_end)

    def _give_away(self, waiting: _Waiting) -> None:
        """Hand the connection to aiohttp's handler, with the request that asked to switch
        protocols, as it came, and what followed it."""
        transport = self.transport
        if transport is None:
            return
        assert waiting.message is not None and waiting.handover is not None
        self.closing = True
        self.server.open.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        handler = self.server.handler()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        self._release()
        transport.resume_reading()
        handler.data_received(encode_request(waiting.message) + waiting.handover)

    # -- the connection --------------------------------------------------------------------

    def _refuse(self, refused: BadRequest) -> None:
        """Stop reading; the refusal is answered after the requests before it. A body cut
        short by it is told so: a request not yet begun is answered by the refusal."""
        self._read_no_more()
        queue = self.queue
        if queue and queue[-1].payload is not EMPTY_PAYLOAD and not queue[-1].payload.is_eof():
            queue.pop()
        elif self.answering is not None and not self.answering.is_eof():
            self.answering.set_exception(ConnectionResetError("the request could not be read"))
        queue.append(_Waiting(None, EMPTY_PAYLOAD, refused=refused))
        self._wake()

    def _read_no_more(self) -> None:
        """Nothing more the client sends is read as a request: what is unread is let go."""
        self.refused = True
        self.unread = b""
        self._hold()

    def _hold(self) -> None:
        if not self.held and self.transport is not None:
            self.held = True
            self._reading(False)

    def _release(self) -> None:
        if self.held and not self.refused and self.transport is not None:
            if self.unread:
                self._parse_unread()
                if self.unread or self.refused:
                    return
            self.held = False
            self._reading(True)

    def _reading(self, on: bool) -> None:
        """Let the transport read, or stop it (where it cannot be told, nothing)."""
        transport = self.transport
        if transport is None:
            return
        try:
            if on:
                transport.resume_reading()
            else:
                transport.pause_reading()
        except (AttributeError, NotImplementedError, RuntimeError):
            pass

    def _wake(self) -> None:
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _idle(self) -> None:
        """Close a connection no request has been answered on for the server's keep-alive
        time; and one whose request is being answered once its client has sent nothing of
        the body, or read nothing of the answer, for that long."""
        self.timer = None
        if self.transport is None:
            return
        loop = self._loop
        now = loop.time()
        keepalive = self.server.keepalive
        # An answer in progress, or written and not yet taken: the client must go on
        # sending its body, and reading (what waits to be sent must shrink).
        body = self.answering
        if self.writing_since is not None:
            self.writing_since = self._written(self.writing_since, now)
        if (self.writing_since is not None and now - self.writing_since > keepalive) \
                or (body is not None and not body.is_eof() and now - self.read_at > keepalive):
            self.transport.abort()
            return
        if self.busy or self.writing_since is not None:
            self.timer = loop.call_at(now + min(keepalive, 1.0), self._idle)
            return
        due = self.last + keepalive
        if due > now:
            self.timer = loop.call_at(max(due, now + 0.1), self._idle)
            return
        self.close()

    def _written(self, since: float, now: float) -> float:
        """Since when the answer's bytes have not moved: ``since``, or ``now`` when what waits
        to be sent has shrunk since last asked (kept in ``write_left``)."""
        transport = self.transport
        left = transport.get_write_buffer_size() if transport is not None else 0
        moved = left < self.write_left
        self.write_left = left
        return now if moved else since

    def pause_writing(self) -> None:
        self.writing_since = self._loop.time()
        self.write_left = self.transport.get_write_buffer_size() if self.transport else 0

    def resume_writing(self) -> None:
        self.writing_since = None

    def stop(self) -> None:
        """The server stops: an idle connection closes now, a busy one after its answer."""
        self.closing = True
        if not self.busy and not self.queue:
            self.close()
        self._wake()

    def close(self) -> None:
        self.closing = True
        transport = self.transport
        if transport is not None:
            transport.close()
        self._wake()


def whole(response: web.Response) -> bytes | None:
    """The body of a response that can go out with its head in one write, else None."""
    if response.chunked or response.compression:
        return None
    if "Transfer-Encoding" in response.headers:
        return None
    body = response.body
    if body is None:
        return b""
    return body if isinstance(body, bytes) else None


def encode_head(version: HttpVersion, status: int, reason: str,
                headers: CIMultiDict[str]) -> bytes:
    """A response's head. A line break or NUL inside a field or the reason would make
    another head of it: such a head is refused, as aiohttp's writer refuses it."""
    lines = [f"HTTP/{version.major}.{version.minor} {status} {reason}\r\n"]
    lines.extend([f"{name}: {value}\r\n" for name, value in headers.items()])
    lines.append("\r\n")
    return _checked(lines)


def encode_fields(fields: Iterable[tuple[str, str]]) -> bytes:
    """Fields of a head, a line each (refused as ``encode_head`` refuses them)."""
    return _checked([f"{name}: {value}\r\n" for name, value in fields])


def _checked(lines: list[str]) -> bytes:
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines) or "\x00" in text:
        raise ValueError("a line break or NUL in the response's head")
    return text.encode("utf-8", "surrogateescape")


CRLF: Final = "\r\n"
SERVER_LINE: Final = f"Server: {SERVER_SOFTWARE}\r\n"
_STATUS_LINES: Final[dict[tuple[int, int], bytes]] = {}


def status_line(version: HttpVersion, status: int, reason: str) -> bytes:
    """An answer's first line (the reason is the status's own: the lines are remembered
    by version and status)."""
    minor = 1 if version == HttpVersion11 else 0
    line = _STATUS_LINES.get((minor, status))
    if line is None:
        line = f"HTTP/{version.major}.{version.minor} {status} {reason}\r\n".encode()
        if version.major == 1 and minor == version.minor and reason == REASONS.get(status, ""):
            _STATUS_LINES[(minor, status)] = line
    return line


def own_field(name: str, value: str) -> bytes:
    """One field the gateway made (a digest, a request id), refused as ``encode_head``
    refuses any with a line break or NUL."""
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValueError("a line break or NUL in the response's head")
    return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")


def _connection(version: HttpVersion, keep: bool) -> str:
    """The ``Connection`` field an answer needs (none: empty): HTTP/1.0 stays open only
    when told, HTTP/1.1 closes only when told."""
    if keep and version == HttpVersion10:
        return "keep-alive"
    if not keep and version == HttpVersion11:
        return "close"
    return ""


def encode_request(message: Any) -> bytes:
    """A request's head again, from what was read of it (for aiohttp's handler)."""
    version = message.version
    lines = [f"{message.method} ".encode() + message.path.encode("utf-8", "surrogateescape")
             + f" HTTP/{version.major}.{version.minor}\r\n".encode()]
    for name, value in message.raw_headers:
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)
