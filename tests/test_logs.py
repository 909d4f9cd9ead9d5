"""The access log: written straight to the gateway's handler, the same line a record makes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.config.model import LoggingConfig
from gateway.logs import AccessLogger, setup_logging
from gateway.scope import SCOPE, Scope


@pytest.fixture
def logged() -> Iterator[Any]:
    """setup_logging for one format, its output in a buffer; restored afterwards."""
    root = logging.getLogger("gateway")
    saved = (list(root.handlers), root.level, root.propagate)

    def configure(fmt: str) -> io.StringIO:
        setup_logging(LoggingConfig(level="info", format=fmt))
        buffer = io.StringIO()
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
        return buffer

    yield configure
    root.handlers[:], root.level, root.propagate = saved


def served(path: str = "/guide?token=secret") -> tuple[web.Request, web.Response]:
    request = make_mocked_request("GET", path)
    request[SCOPE] = Scope(request_id="r-1", client_ip="203.0.113.9", trusted=False,
                           scheme="http", host="docs", path="/guide", query="token=secret",
                           forwarded_for="203.0.113.9", sub="ada")
    return request, web.Response(status=200, body=b"x" * 12)


def test_json_access_line_written_directly(logged: Any) -> None:
    out = logged("json")
    access = AccessLogger(logging.getLogger("gateway.access"), "")
    assert access.enabled and access._direct is not None
    access.log(*served(), 0.0123)
    entry = json.loads(out.getvalue())
    assert entry["logger"] == "gateway.access" and entry["msg"] == "request"
    assert entry["level"] == "info" and entry["time"].endswith("Z")
    assert {k: entry[k] for k in ("request_id", "client", "method", "path", "status", "ms",
                                  "user")} == {
        "request_id": "r-1", "client": "203.0.113.9", "method": "GET", "path": "/guide",
        "status": 200, "ms": 12.3, "user": "ada"}
    assert "secret" not in out.getvalue()  # the query string never reaches the log


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_direct_line_matches_a_logged_record(logged: Any, fmt: str) -> None:
    out = logged(fmt)
    access = AccessLogger(logging.getLogger("gateway.access"), "")
    access.log(*served(), 0.5)
    direct = out.getvalue()
    out.seek(0)
    out.truncate()
    access._direct = None  # the same fields through a log record and the formatter
    access.log(*served(), 0.5)
    through_record = out.getvalue()
    # The same line but for the time, which moved on.
    strip = (lambda line: {k: v for k, v in json.loads(line).items() if k != "time"}) \
        if fmt == "json" else (lambda line: line.split(" ", 1)[1])
    assert strip(direct) == strip(through_record)


def test_a_handler_of_its_own_gets_records(logged: Any) -> None:
    logged("json")
    access_logger = logging.getLogger("gateway.access")
    mine = io.StringIO()
    extra = logging.StreamHandler(mine)
    access_logger.addHandler(extra)
    try:
        access = AccessLogger(access_logger, "")
        assert access._direct is None  # somebody else wants the lines: records, as usual
        access.log(*served(), 0.1)
        assert "request" in mine.getvalue()
    finally:
        access_logger.removeHandler(extra)
