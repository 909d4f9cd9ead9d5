"""Structured logs: one JSON (or text) line per request, plus the gateway's own events."""

from __future__ import annotations

import json
import logging
import sys
import time
from time import time as _now
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.config.model import LoggingConfig
from gateway.scope import REQUEST_ID

log = logging.getLogger("gateway")
access = logging.getLogger("gateway.access")
audit = logging.getLogger("gateway.audit")

# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))
_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to each record logged while a request is handled (the records of
    tasks the request started too: they copy its context)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in record.__dict__:
            request_id = REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record carries beyond the standard ones (its ``extra``)."""
    return {key: value for key, value in record.__dict__.items()
            if key not in _STD and not key.startswith("_")}


class JsonFormatter(logging.Formatter):
    """A JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def stamp(self, created: float) -> str:
        """``created`` as UTC ISO 8601 to the second (one strftime a second, not one a line)."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._stamp

    def line(self, created: float, level: str, logger: str, msg: str,
             fields: dict[str, Any]) -> str:
        """One line from its parts (what ``format`` and the access log share)."""
        millis = int((created - int(created)) * 1000)
        entry = {"time": f"{self.stamp(created)}.{millis:03d}Z", "level": level,
                 "logger": logger, "msg": msg, **fields}
        return _ENCODER.encode(entry)

    def format(self, record: logging.LogRecord) -> str:
        fields = _extras(record)
        if record.exc_info and record.exc_info[0] is not None:
            fields["exc"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname.lower(), record.name,
                         record.getMessage(), fields)


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...``."""

    def line(self, created: float, level: str, logger: str, msg: str,
             fields: dict[str, Any]) -> str:
        """One line from its parts (what ``format`` and the access log share)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        extras = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{stamp} {level} {logger} {msg}"
        return f"{line} {extras}" if extras else line

    def format(self, record: logging.LogRecord) -> str:
        fields = _extras(record)
        line = self.line(record.created, record.levelname.lower(), record.name,
                         record.getMessage(), fields)
        if record.exc_info and record.exc_info[0] is not None:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(config: LoggingConfig) -> None:
    """Send the gateway's logs to stderr in the configured format and level.

    Records skip what no line shows (the caller's file and line, thread and process names):
    finding the caller alone walks the stack on every access line.
    """
    logging._srcfile = None  # the documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    root.propagate = False


class AccessLogger(AbstractAccessLogger):
    """One line per request: no query string, no cookies, no tokens. A refused request's
    line says why (``reason``) and, when known, what was ``expected`` and ``received``.

    When the line goes to the gateway's own handler (as ``setup_logging`` makes it), it is
    formatted and written straight away: a log record and its handler chain would cost
    several times what the line itself does, on every request.
    """

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._direct = _own_handler(logger)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.line(request, response.status, response.body_length, time)

    def line(self, request: web.BaseRequest, status: int, length: int, time: float) -> None:
        """The line for a request answered with ``status`` and ``length`` bytes of body."""
        scope = request.get("gateway.scope")
        fields = {
            "request_id": getattr(scope, "request_id", None),
            "client": getattr(scope, "client_ip", request.remote),
            "method": request.method,
            "path": request.path,
            "status": status,
            "bytes": length,
            "ms": round(time * 1000, 2),
            "user": getattr(scope, "sub", None),
        }
        refusal = getattr(scope, "refusal", None)
        if refusal:
            fields.update(refusal)
        handler = self._direct
        if handler is None:
            self.logger.info("request", extra=fields)
            return
        formatter = handler.formatter
        assert isinstance(formatter, JsonFormatter | TextFormatter)
        text = formatter.line(_now(), "info", self.logger.name, "request", fields)
        handler.acquire()
        try:
            handler.stream.write(text + "\n")
            handler.flush()
        finally:
            handler.release()

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def _own_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The one stream handler ``setup_logging`` gave the gateway, when it alone takes the
    access log's lines (no handler or filter of the access logger's own in between)."""
    parent = logging.getLogger("gateway")
    if logger.handlers or logger.filters or logger.parent is not parent \
            or len(parent.handlers) != 1:
        return None
    handler = parent.handlers[0]
    if type(handler) is not logging.StreamHandler \
            or any(type(own) is not RequestIdFilter for own in handler.filters) \
            or handler.level > logging.INFO \
            or not isinstance(handler.formatter, JsonFormatter | TextFormatter):
        return None
    return handler
