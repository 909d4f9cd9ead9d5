"""The pipeline's one gate: no docs response starts without an enforced decision.

A branch that forgot to enforce would be an authorization bypass; these tests hold the
structure that makes forgetting fail closed, in the code and at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.boundary import error_boundary
from gateway.bounded import HEAD_MEMO_FIELDS, HEAD_MEMO_LENGTH
from gateway.docsport import encode_fields
from gateway.errors import Denied
from gateway.html.page import enforce
from gateway.metrics import Metrics
from gateway.pipeline import (
    _PAGE_HEADS,
    _UPDATED,
    AS_IS,
    GZIPPED,
    NOT_MODIFIED,
    PAGE_HEAD_MEMO,
    PageHead,
    make_page_head,
    page_head,
    start,
    updated,
)
from gateway.policy import Decision, Outcome
from gateway.scope import SCOPE, Scope, ScopeBuilder
from gateway.types import DocsHandler, Handler
from tests.helpers import make_config

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"
#: The only places a response's head is written before it goes back to the boundary.
PREPARE_SITES = {
    "pipeline.py": {"start"},
    "proxy/websocket.py": {"pipe_websocket"},  # called only after require_allowed
    # A forward-auth check's denial: the docs' answer for an address that cannot exist (only
    # a 4xx passes), streamed as the proxy streams a missing page.
    "denial.py": {"missing_page_for_check"},
    # The docs port's connection sends what the entry (the error boundary) returned.
    "docsport.py": {"_answer"},
}


def prepare_calls() -> dict[str, set[str]]:
    """Module -> the functions in which ``.prepare(...)`` is called."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("demo/"):
            continue
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "prepare":
                    found.setdefault(relative, set()).add(function.name)
    return found


def test_a_response_head_is_written_in_known_places_only() -> None:
    assert prepare_calls() == PREPARE_SITES


def test_the_websocket_is_piped_only_after_the_check() -> None:
    source = (PACKAGE / "pipeline.py").read_text()
    before = source.split("await pipe_websocket(", 1)[0].rsplit("\n", 3)
    assert "require_allowed(ex.scope)" in "\n".join(before[-3:])


ALLOW = Decision(Outcome.ALLOW)


def boundary_for(handler: Handler) -> DocsHandler:
    config = make_config()
    return error_boundary(config, ScopeBuilder(config), Metrics(), handler)


async def test_a_docs_answer_without_an_enforced_decision_is_refused() -> None:
    async def forgetful(request: web.Request) -> web.StreamResponse:
        return web.Response(text="SECRET")

    async def careful(request: web.Request) -> web.StreamResponse:
        enforce(ALLOW, request[SCOPE])
        return web.Response(text="page")

    request = make_mocked_request("GET", "/guide/", headers={"Accept": "application/json"})
    refused = await boundary_for(forgetful)(request)
    assert refused.status == 404
    assert isinstance(refused, web.Response) and b"SECRET" not in (refused.body or b"")
    served = await boundary_for(careful)(
        make_mocked_request("GET", "/guide/", headers={"Accept": "application/json"}))
    assert served.status == 200


async def test_a_gateway_route_needs_no_page_decision() -> None:
    async def route(request: web.Request) -> web.StreamResponse:
        request[SCOPE].route = "gateway"
        return web.Response(text="ok")

    answer = await boundary_for(route)(make_mocked_request("GET", "/_gateway/healthz"))
    assert answer.status == 200


async def test_a_stream_never_starts_without_an_enforced_decision() -> None:
    request = make_mocked_request("GET", "/guide/")
    scope = Scope(request_id="r", client_ip="127.0.0.1", trusted=False, scheme="http",
                  host="docs.test", path="/guide/", query="", forwarded_for="")
    response = web.StreamResponse()
    with pytest.raises(Denied):
        await start(request, scope, response)
    assert not response.prepared
    for refusing in (Outcome.DENIED, Outcome.NEEDS_LOGIN):
        with pytest.raises(Exception):
            enforce(Decision(refusing), scope)
    assert not scope.allowed
    enforce(ALLOW, scope)
    await start(request, scope, response)
    assert response.prepared


HEAD = (("Server", "nginx"), ("Date", "Mon, 07 Dec 2026 12:00:00 GMT"),
        ("Content-Type", "text/html"), ("Last-Modified", "Mon, 07 Dec 2026 11:00:00 GMT"),
        ("ETag", '"6570e5b0-5b54"'), ("Cache-Control", "public, max-age=600"),
        ("Surrogate-Control", "max-age=3600"), ("Vary", "Accept-Language"))


@pytest.mark.parametrize("private", [True, False])
@pytest.mark.parametrize("reader", [True, False])
@pytest.mark.parametrize("variant", [AS_IS, GZIPPED, NOT_MODIFIED])
def test_a_rendered_page_head_is_remade_for_each_way_it_goes_out(
        private: bool, reader: bool, variant: int) -> None:
    head = PageHead(HEAD, "text/html; charset=utf-8", False, private, False)
    made = page_head(head, 200, reader, variant)
    assert page_head(head, 200, reader, variant) is made
    assert made.pairs == make_page_head(head, 200, reader, variant)
    # Encoded once, the reader's ETag in the place of the empty one.
    own = tuple((name, value or '"v"') for name, value in made.pairs)
    assert made.has_etag and b"".join(made.encode('"v"', None)) == encode_fields(own)
    fields = dict(made.pairs)
    assert "Last-Modified" not in fields and fields["ETag"] == ""
    assert ("Cache-Control" in fields and fields["Cache-Control"].startswith("private")) \
        == private
    assert ("Surrogate-Control" in fields) == (not private)
    assert ("Cookie" in fields["Vary"]) == (private or reader)
    assert ("Accept-Encoding" in fields["Vary"]) == (variant != NOT_MODIFIED)
    assert fields.get("Content-Encoding") == ("gzip" if variant == GZIPPED else None)
    assert ("Content-Type" in fields) == (variant != NOT_MODIFIED)


def test_the_remembered_page_heads_stay_bounded() -> None:
    def key(head: PageHead) -> tuple[object, ...]:
        return (head.pairs, 200, "text/html", False, True, True, False, AS_IS)

    heads = [PageHead((*HEAD, ("X-Number", str(number))), "text/html", False, True, False)
             for number in range(PAGE_HEAD_MEMO + 10)]
    for number, head in enumerate(heads):
        assert dict(page_head(head, 200, True, AS_IS).pairs)["X-Number"] == str(number)
    assert len(_PAGE_HEADS) == PAGE_HEAD_MEMO
    # The latest made are kept.
    assert key(heads[-1]) in _PAGE_HEADS and key(heads[9]) not in _PAGE_HEADS
    # A head too long, or of too many fields, is made each time, and not kept.
    for extra in ((("X-Long", "v" * HEAD_MEMO_LENGTH),),
                  tuple((f"X-{number}", "") for number in range(HEAD_MEMO_FIELDS))):
        big = PageHead((*HEAD, *extra), "text/html", False, True, False)
        assert dict(page_head(big, 200, True, AS_IS).pairs)[extra[-1][0]] == extra[-1][1]
        assert len(_PAGE_HEADS) == PAGE_HEAD_MEMO
        assert (big.pairs, 200, "text/html", False, True, True, False, AS_IS) not in _PAGE_HEADS


def test_a_304s_fields_replace_the_kept_ones_where_they_stood() -> None:
    kept = (("Server", "nginx"), ("Content-Type", "text/html"), ("X-A", "1"), ("X-A", "2"),
            ("Cache-Control", "no-cache"))
    fresh = (("server", "nginx/2"), ("X-A", "3"), ("Content-Type", "text/plain"),
             ("ETag", '"x"'), ("Content-Length", "0"), ("X-New", "n"))
    assert updated(kept, fresh) == (
        ("server", "nginx/2"), ("Content-Type", "text/html"), ("X-A", "3"),
        ("Cache-Control", "no-cache"), ("X-New", "n"))
    assert updated(kept, (("ETag", '"x"'), ("Content-Type", "text/plain"))) is kept


def test_the_updated_heads_kept_stay_bounded() -> None:
    _UPDATED.clear()
    kept = (("Content-Type", "text/html"),)
    for second in range(PAGE_HEAD_MEMO + 40):
        fresh = (("Date", f"Mon, 01 Jan 2001 00:{second // 60:02d}:{second % 60:02d} GMT"),)
        assert updated(kept, fresh) == kept + fresh
    assert len(_UPDATED) == PAGE_HEAD_MEMO
    assert updated(kept, (("X-Long", "x" * HEAD_MEMO_LENGTH),)) not in _UPDATED.values()
    # What the 304 sent counts too, though it is left out of the updated head.
    large = (("Content-Location", "x" * HEAD_MEMO_LENGTH),)
    assert updated(kept, large) == kept and (kept, large) not in _UPDATED
