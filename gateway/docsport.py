"""The docs port's HTTP/1.1 connections.

aiohttp's connection handler does more per request than the docs port needs: a task of
its own for each request, keep-alive timers armed again and again, a response's head
prepared in many steps. Here a connection parses its requests with llhttp (httptools),
hands them one after another to the gateway's entry as aiohttp requests, in the
connection's one task, and writes a whole answer (a page, a small asset, an error) with
its head in one call. Streamed answers still go through aiohttp's writer.

What a request may carry is checked as aiohttp's own parser checks it: the line and each
field within the server's limits, at most ``MAX_HEADERS`` fields and ``MAX_HEAD`` bytes of
head, no NUL in a value, no second ``Host``, ``Content-Length``, ``Transfer-Encoding`` or
other singleton field, a ``Host`` on every HTTP/1.1 request. Anything else llhttp refuses
(a malformed line, both a length and chunks, a bad chunk) is refused here too: a 400, and
the connection closes.

A request that asks to switch protocols (a WebSocket) is handed, with the connection, to
aiohttp's own handler once the answers before it are written.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any, Final, cast

import httptools
from aiohttp import StreamReader, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import SERVER_SOFTWARE, HttpVersion, HttpVersion10, HttpVersion11
from aiohttp.http_parser import RawRequestMessage
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_log import AccessLogger
from multidict import CIMultiDict, CIMultiDictProxy
from mypy_extensions import mypyc_attr
from yarl import URL

log = logging.getLogger("gateway")

#: The request line's target, one field (name or value), all fields, the whole head.
MAX_LINE: Final = 16384
MAX_FIELD: Final = 32768
MAX_HEADERS: Final = 128
MAX_HEAD: Final = 131072
#: Requests read ahead of the one being answered before the connection stops reading.
MAX_WAITING: Final = 16
#: A request body's buffer before the connection stops reading (as aiohttp's).
BODY_BUFFER: Final = 2**16
#: How long a connection may sit without a request being answered (aiohttp's default).
KEEPALIVE: Final = 75.0

#: Fields a request may carry once (RFC 9110): a second one is refused, as aiohttp does.
SINGLETONS: Final = frozenset({
    "content-length", "content-location", "content-range", "content-type", "etag", "host",
    "max-forwards", "server", "transfer-encoding", "user-agent",
})

#: aiohttp's request message: a NamedTuple to the type checker, a compiled class of its own
#: where aiohttp's parser is compiled; called as Any so the compiled build takes either.
MESSAGE: Any = RawRequestMessage

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
RequestFactory = Callable[[RawRequestMessage, StreamReader, Any, StreamWriter,
                           "asyncio.Task[None]"], web.BaseRequest]


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

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.value = formatdate(second, usegmt=True)
        return self.value


DATE: Final = _Date()


class _Waiting:
    """A request read and waiting for its answer: the message and its body, or what was
    wrong with it, or the WebSocket request to hand over with the bytes after it."""

    def __init__(self, message: Any, payload: StreamReader,
                 refused: BadRequest | None = None, handover: bytes | None = None) -> None:
        self.message = message
        self.payload = payload
        self.refused = refused
        self.handover = handover


class DocsServer(web.Server):
    """aiohttp's low-level server, whose connections are the docs port's own; aiohttp's
    handler takes over a connection that switches protocols."""

    def __init__(self, handler: Handler, *, request_factory: RequestFactory,
                 loop: asyncio.AbstractEventLoop, access_log_class: type[AbstractAccessLogger]
                 | None = None, access_log: logging.Logger | None = None,
                 keepalive_timeout: float | None = None, **kwargs: Any) -> None:
        if keepalive_timeout is None:
            keepalive_timeout = KEEPALIVE
        super().__init__(handler, request_factory=cast(Any, request_factory), loop=loop,
                         access_log_class=access_log_class or AccessLogger,
                         access_log=access_log, keepalive_timeout=keepalive_timeout, **kwargs)
        self.entry = handler
        self.keepalive = keepalive_timeout
        self.factory = request_factory
        self.access: AbstractAccessLogger | None = None
        if access_log is not None and access_log_class is not None:
            self.access = access_log_class(access_log, AccessLogger.LOG_FORMAT)
        self.open: set[DocsConnection] = set()
        self.stopping = False

    def __call__(self) -> Any:
        return DocsConnection(self)

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


# aiohttp's writer and body buffers take the connection as their protocol: a subclass of
# aiohttp's, a regular class (its base has slots).
@mypyc_attr(native_class=False)
class DocsConnection(BaseProtocol):
    """One client connection: its requests parsed, answered in order."""

    def __init__(self, server: DocsServer) -> None:
        super().__init__(server._loop)
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.task: asyncio.Task[None] | None = None
        self.queue: collections.deque[_Waiting] = collections.deque()
        self.wakeup: asyncio.Future[None] | None = None
        self.ssl_context: Any = None
        self.peername: Any = None
        self.sockname: Any = None
        # The request being read.
        self.url = bytearray()
        self.fields: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.head_reads = 0
        self.in_head = False
        self.body: StreamReader | None = None
        # Reading is held for a full queue, a body's full buffer, or a handover.
        self.held = False
        self.refused = False
        self.closing = False
        self.busy = False
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self.ssl_context = transport.get_extra_info("sslcontext")
        if self.server.stopping:
            transport.close()
            return
        self.server.open.add(self)
        loop = self._loop
        self.last = loop.time()
        self.timer = loop.call_at(self.last + self.server.keepalive, self._idle)
        self.task = loop.create_task(self._serve())

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.transport = None
        self.closing = True
        self.server.open.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.body is not None:
            self.body.set_exception(ConnectionResetError("the client closed the connection"))
            self.body = None
        for waiting in self.queue:
            if waiting.payload is not EMPTY_PAYLOAD and not waiting.payload.is_eof():
                waiting.payload.set_exception(ConnectionResetError("the client left"))
        self._wake()

    def data_received(self, data: bytes) -> None:
        if self.refused or (self.closing and not self.busy and not self.queue):
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._hand_over(data[int(upgrade.args[0]):])
            return
        except httptools.HttpParserCallbackError as failed:
            # What a callback raised: a refusal, or a fault of the connection's own.
            cause = failed.__context__
            if not isinstance(cause, BadRequest):
                log.error("a request could not be read", exc_info=cause)
                cause = BadRequest(400, "the request could not be read")
            self._refuse(cause)
            return
        except httptools.HttpParserError as malformed:
            self._refuse(BadRequest(400, f"malformed request: {malformed}"))
            return
        if self.in_head:
            # A head still open after this read: llhttp holds what it has of its last
            # field, so the reads themselves are counted too (with room for the end of
            # the request before it, which the same reads may hold).
            self.head_reads += len(data)
            if self.head_reads > 2 * MAX_HEAD:
                self._refuse(BadRequest(431, "the request's head is too large"))

    # Flow control asked for by a body's buffer (aiohttp's StreamReader).
    def pause_reading(self) -> None:
        self._reading_paused = True
        self._hold()

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_paused = False
        if len(self.queue) < MAX_WAITING:
            self._release()

    # -- llhttp ----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = bytearray()
        self.fields = []
        self.head_bytes = 0
        self.head_reads = 0
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_LINE:
            raise BadRequest(414, "the request's target is too long")
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) > MAX_FIELD or len(value) > MAX_FIELD:
            raise BadRequest(431, "a request header is too large")
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD:
            raise BadRequest(431, "the request's head is too large")
        # llhttp takes the blanks before a value off, not those after it.
        self.fields.append((name, value.rstrip(b" \t")))
        if len(self.fields) > MAX_HEADERS:
            raise BadRequest(431, "too many request headers")

    def on_headers_complete(self) -> None:
        self.in_head = False
        message = self._message()
        parser = self.parser
        if parser.should_upgrade():
            # Handed over with the connection (see data_received): the bytes after the
            # head follow it.
            self.queue.append(_Waiting(message, EMPTY_PAYLOAD, handover=b""))
            return
        payload: StreamReader = EMPTY_PAYLOAD
        if message.chunked or message.headers.get("Content-Length", "0") != "0":
            payload = StreamReader(self, BODY_BUFFER, loop=self._loop)
            self.body = payload
        self._enqueue(_Waiting(message, payload))

    def on_body(self, body: bytes) -> None:
        if self.body is not None:
            self.body.feed_data(body)

    def on_message_complete(self) -> None:
        if self.body is not None:
            self.body.feed_eof()
            self.body = None

    def _message(self) -> Any:
        """The request whose head was read, as aiohttp's parser gives it (a
        ``RawRequestMessage``, a tuple or aiohttp's own compiled class)."""
        parser = self.parser
        spelled = parser.get_http_version()
        if spelled == "1.1":
            version = HttpVersion11
        else:
            major, _, minor = spelled.partition(".")
            version = HttpVersion(int(major), int(minor))
        headers: CIMultiDict[str] = CIMultiDict()
        seen: set[str] = set()
        for raw_name, raw_value in self.fields:
            name = raw_name.decode("utf-8", "surrogateescape")
            value = raw_value.decode("utf-8", "surrogateescape")
            if "\x00" in value:
                raise BadRequest(400, "a request header holds a NUL")
            lowered = name.lower()
            if lowered in SINGLETONS:
                if lowered in seen:
                    raise BadRequest(400, f"a second {name} header")
                seen.add(lowered)
            headers.add(name, value)
        if version == HttpVersion11 and "Host" not in headers:
            raise BadRequest(400, "an HTTP/1.1 request without Host")
        chunked = False
        if "Transfer-Encoding" in headers:
            # A request's body is framed by chunks or by its length: a coding after chunked,
            # or no chunked at all, leaves its end unknown (RFC 9112, section 6.3).
            codings = headers["Transfer-Encoding"].split(",")
            if codings[-1].strip().lower() != "chunked":
                raise BadRequest(400, "a Transfer-Encoding that does not end in chunked")
            chunked = True
        target = self.url.decode("utf-8", "surrogateescape")
        method = parser.get_method().decode("ascii")
        return MESSAGE(
            method, target, version, CIMultiDictProxy(headers), tuple(self.fields),
            not parser.should_keep_alive(), headers.get("Content-Encoding"),
            parser.should_upgrade(), chunked, request_url(method, target))

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
                if self.held and len(self.queue) < MAX_WAITING and not self._reading_paused:
                    self._release()
                if waiting.refused is not None:
                    self._write_refusal(waiting.refused)
                    return
                if waiting.handover is not None:
                    self._give_away(waiting)
                    return
                assert waiting.message is not None
                self.busy = True
                try:
                    keep = await self._answer(waiting.message, waiting.payload)
                finally:
                    self.busy = False
                    self.last = self._loop.time()
                if not keep or self.transport is None:
                    self.close()
                    return
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
        writer = StreamWriter(self, loop)
        task = self.task
        assert task is not None
        request = self.server.factory(message, payload, self, writer, task)
        try:
            response = await self.server.entry(request)
        except web.HTTPException as exc:
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
        written = whole(response) if isinstance(response, web.Response) \
            and not response.prepared else None
        if written is not None:
            assert isinstance(response, web.Response)
            keep, length = self._write_whole(request, response, written)
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

    def _write_whole(self, request: web.BaseRequest, response: web.Response,
                     body: bytes) -> tuple[bool, int]:
        """A response whose body is at hand, with its head, in one write: the fields aiohttp
        would add, and none of the body where the request or status has none."""
        method, status = request.method, response.status
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
        keep = response.keep_alive
        if keep is None:
            keep = request.keep_alive
        keep = keep and not self.closing
        version = request.version
        if "Connection" not in headers:
            if keep and version == HttpVersion10:
                headers["Connection"] = "keep-alive"
            elif not keep and version == HttpVersion11:
                headers["Connection"] = "close"
        head = encode_head(version, status, response.reason, headers)
        transport = self.transport
        if transport is not None:
            if empty or not body:
                transport.write(head)
            else:
                transport.writelines((head, body))
        return keep, 0 if empty else len(body)

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
        if transport is not None:
            reason = {400: "Bad Request", 414: "URI Too Long",
                      431: "Request Header Fields Too Large"}.get(refused.status, "Bad Request")
            text = f"{refused.status} {reason}".encode()
            transport.write(
                f"HTTP/1.1 {refused.status} {reason}\r\nContent-Type: text/plain; "
                f"charset=utf-8\r\nContent-Length: {len(text)}\r\nDate: {DATE.now()}\r\n"
                f"Server: {SERVER_SOFTWARE}\r\nConnection: close\r\n\r\n".encode() + text)
        self.close()

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

    def _enqueue(self, waiting: _Waiting) -> None:
        self.queue.append(waiting)
        if len(self.queue) >= MAX_WAITING:
            self._hold()
        self._wake()

    def _refuse(self, refused: BadRequest) -> None:
        """Stop reading; the refusal is answered after the requests before it."""
        self.refused = True
        self.in_head = False
        if self.body is not None:
            if self.queue and self.queue[-1].payload is self.body:
                self.queue.pop()  # not begun: the refusal answers it
            else:
                self.body.set_exception(ConnectionResetError("the request could not be read"))
            self.body = None
        self._hold()
        self.queue.append(_Waiting(None, EMPTY_PAYLOAD, refused=refused))
        self._wake()

    def _hand_over(self, rest: bytes) -> None:
        """The request before ``rest`` asks to switch protocols: stop reading, and hand the
        connection over once the answers before it are written."""
        self._hold()
        self.refused = True  # nothing more is read here
        upgrade = self.queue[-1] if self.queue else None
        if upgrade is None or upgrade.handover is None:
            self.queue.append(_Waiting(None, EMPTY_PAYLOAD,
                                       refused=BadRequest(400, "a lost upgrade")))
        else:
            upgrade.handover = bytes(rest)
        self._wake()

    def _hold(self) -> None:
        if not self.held and self.transport is not None:
            self.held = True
            try:
                self.transport.pause_reading()
            except (AttributeError, NotImplementedError, RuntimeError):
                pass

    def _release(self) -> None:
        if self.held and not self.refused and self.transport is not None:
            self.held = False
            try:
                self.transport.resume_reading()
            except (AttributeError, NotImplementedError, RuntimeError):
                pass

    def _wake(self) -> None:
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _idle(self) -> None:
        """Close a connection no request has been answered on for the server's keep-alive
        time; one whose request is being answered waits for it."""
        self.timer = None
        if self.transport is None:
            return
        loop = self._loop
        due = self.last + self.server.keepalive
        if self.busy or due > loop.time():
            self.timer = loop.call_at(max(due, loop.time() + 0.1), self._idle)
            return
        self.close()

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


def request_url(method: str, target: str) -> URL:
    """The target as aiohttp's parser reads it: origin-form, ``*`` for OPTIONS, or
    absolute-form with a host."""
    if target.startswith("/"):
        path, mark, rest = target.partition("?")
        query, fragment = rest, ""
        if mark:
            query, _, fragment = rest.partition("#")
        else:
            path, _, fragment = path.partition("#")
        return URL.build(path=path, query_string=query, fragment=fragment, encoded=True)
    if target == "*" and method == "OPTIONS":
        return URL(target, encoded=True)
    if "://" in target:
        try:
            url = URL(target, encoded=True)
        except ValueError:
            pass
        else:
            if url.raw_host:
                return url
    raise BadRequest(400, "the request's target is not a path")


def encode_head(version: HttpVersion, status: int, reason: str,
                headers: CIMultiDict[str]) -> bytes:
    """A response's head. A line break or NUL inside a field or the reason would make
    another head of it: such a head is refused, as aiohttp's writer refuses it."""
    lines = [f"HTTP/{version.major}.{version.minor} {status} {reason}\r\n"]
    lines.extend([f"{name}: {value}\r\n" for name, value in headers.items()])
    lines.append("\r\n")
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines) or "\x00" in text:
        raise ValueError("a line break or NUL in the response's head")
    return text.encode("utf-8", "surrogateescape")


def encode_request(message: Any) -> bytes:
    """A request's head again, from what was read of it (for aiohttp's handler)."""
    version = message.version
    lines = [f"{message.method} ".encode() + message.path.encode("utf-8", "surrogateescape")
             + f" HTTP/{version.major}.{version.minor}\r\n".encode()]
    for name, value in message.raw_headers:
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)
