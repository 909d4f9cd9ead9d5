"""Pages: each copy of a page is scanned once, and a changed page is scanned again."""

from __future__ import annotations

import gzip
import html
import json
import random
import time
import zlib
from typing import Any

import pytest

from gateway.errors import Denied, UpstreamError
from gateway.html.gating import Template
from gateway.html.head import PageMeta
from gateway.html.page import (
    CRC_PARTS,
    MEMO_PAGE_LIMIT,
    RECORD_EVERY,
    PageMemo,
    Pages,
    Scanned,
    crc_shift,
    crc_shifted,
    keep,
)
from gateway.policy import Decision, Policy
from gateway.scope import Scope
from gateway.user import User
from tests.helpers import make_config

# The script as a page that loads it itself spells it; the gateway's own carries the
# reader's user object (null: nobody logged in).
LOADED = b'<script src="/_gateway/client.js" defer></script>'
TAG = b'<script src="/_gateway/client.js" data-user="null" defer></script>'
TAG_START = b'<script src="/_gateway/client.js" data-user="'


def object_for(user: User) -> str:
    """``user``'s object as the script's tag carries it."""
    text = json.dumps(user.to_json(("expiresAt", "groups", "content", "apiPlaygroundInputs")),
                      separators=(",", ":"))
    return html.escape(text, quote=True)


def tag_for(user: User) -> bytes:
    """The script's tag as ``user`` gets it."""
    return TAG_START + object_for(user).encode() + b'" defer></script>'


def attribute_for(user: User) -> str:
    """The attribute a page's own tag of the script gets for ``user``."""
    return f' data-user="{object_for(user)}"'


def make_pages(clock: Any = time.monotonic, **access: Any) -> Pages:
    config = make_config(access=access)
    return Pages(config, Policy(config), clock=clock)


def page(head: str = "", body: str = "<p>hello</p>") -> bytes:
    return f"<html><head><title>t</title>{head}</head><body>{body}</body></html>".encode()


def scope(path: str) -> Scope:
    return Scope(request_id="r", client_ip="127.0.0.1", trusted=False, scheme="http",
                 host="docs", path=path, query="", forwarded_for="127.0.0.1")


def reader(*groups: str) -> User:
    return User(sub="u1", expires_at=time.time() + 3600, groups=groups)


def process(pages: Pages, body: bytes, decision: Decision, user: User | None, where: Scope,
            rel: str | None) -> tuple[Decision, bytes]:
    """A page through the pipeline's steps: scanned, judged, delivered."""
    scanned = pages.scan(body, rel)
    decided = pages.judge(scanned, decision, user, where)
    decided, result = pages.deliver(scanned, decided, user)
    return decided, result.body


def test_the_same_bytes_reuse_the_scan_and_equal_copies_count_as_the_same() -> None:
    pages = make_pages()
    first = pages.scan(page(), "/a/")
    assert pages.scan(page(), "/a/") is first  # an equal copy, not the same object
    assert pages.scan(page(), "/b/") is not first  # another path is its own entry
    assert pages.scan(page(), None) is not pages.scan(page(), None)  # no path: never kept


def test_a_crc_moved_past_more_bytes_is_the_crc_of_the_whole() -> None:
    rng = random.Random(7)
    sizes = [0, 1, 3, 4, 255, 256, 1023, 65_537, 70_000]
    for first in sizes:
        for second in sizes:
            a, b = rng.randbytes(first), rng.randbytes(second)
            assert crc_shifted(crc_shift(len(b)), zlib.crc32(a)) ^ zlib.crc32(b) \
                == zlib.crc32(a + b), (first, second)


def test_a_compressed_page_seen_before_is_not_decompressed_again() -> None:
    pages = make_pages()
    decision = pages.policy.decide("/a/", None)
    body = page()
    packed = gzip.compress(body, mtime=0)

    def read(came: bytes, coding: str = "gzip", kind: str = "text/html") -> bytes:
        readable = pages.decode(came, decision, coding, kind, "/a/")
        assert readable is not None
        scanned = pages.scan(readable[0], "/a/", (kind, readable[1]), (coding, came))
        assert scanned.page == body
        return readable[0]

    first = read(packed)
    assert first == body
    # The very bytes remembered, not a new decompression of them.
    assert read(packed) is first and read(bytes(packed)) is first
    # Other compressed bytes, another coding or another declared type: read anew.
    other = gzip.compress(body, compresslevel=1, mtime=0)
    assert other != packed
    assert read(other) is not first and read(other) is first
    assert pages.memo.size == len(body) + len(other)  # the bytes it came in count too
    assert read(packed) is not first
    assert read(gzip.compress(packed, mtime=0), "gzip, gzip") is not first
    assert read(packed, kind="text/html; charset=utf-8") is not first
    # A changed page at the path is read and scanned again.
    changed = page(body="<p>changed</p>")
    readable = pages.decode(gzip.compress(changed, mtime=0), decision, "gzip", "text/html",
                            "/a/")
    assert readable is not None and readable[0] == changed


def test_compressed_bytes_are_remembered_only_as_the_type_they_came_in() -> None:
    pages = make_pages()
    decision = pages.policy.decide("/a/", None)
    body = page(body="<p>caf\u00e9</p>")
    utf8, utf16 = "text/html; charset=utf-8", "text/html; charset=utf-16le"
    readable = pages.decode(body, decision, None, utf8, "/a/")
    assert readable is not None
    pages.scan(readable[0], "/a/", (utf8, readable[1]))
    # The same page, sent compressed in UTF-16: read, and the same page as remembered.
    packed = gzip.compress(body.decode().encode("utf-16-le"), mtime=0)
    readable = pages.decode(packed, decision, "gzip", utf16, "/a/")
    assert readable is not None and readable[0] == body
    scanned = pages.scan(readable[0], "/a/", (utf16, readable[1]), ("gzip", packed))
    assert scanned.packed == b""  # not under the type the remembered page came in
    # Those bytes declared UTF-8 are no such page: read as they are declared.
    with pytest.raises(UpstreamError):
        pages.decode(packed, decision, "gzip", utf8, "/a/")
    # A page in far more bytes of packing than the memo keeps a page in: not kept so.
    bulky = b"".join(gzip.compress(b"", mtime=0) for _ in range(MEMO_PAGE_LIMIT // 10))
    other = pages.scan(page(body="<p>tiny</p>"), "/b/", (utf8, utf8), ("gzip", bulky))
    assert other.packed == b"" and pages.memo.size < MEMO_PAGE_LIMIT


def test_a_page_with_many_fields_gets_a_valid_gzip_form_too() -> None:
    for fields in (1, 2, 3, 12):
        parts = tuple(f"<p>part {n}</p>".encode() * 50 for n in range(fields + 1))
        kept = keep(Template(parts, tuple((f"content.f{n}", b"own") for n in range(fields))))
        assert bool(kept.crcs) is (fields + 1 <= CRC_PARTS)
        rendered = kept.for_reader(None)
        assert gzip.decompress(rendered.gzip()) == rendered.body


def test_a_changed_page_is_judged_on_its_new_metadata() -> None:
    pages = make_pages()
    decision = pages.policy.decide("/guide/", None)
    public = page('<meta name="gateway:public" content="true">')
    decided, out = process(pages, public, decision, None, scope("/guide/"), "/guide/")
    assert decided.public and TAG in out
    # The same path now declares a group: the remembered public scan must not stand.
    admin = page('<meta name="gateway:groups" content="admin">')
    member = pages.policy.decide("/guide/", reader("staff"))
    with pytest.raises(Denied):
        process(pages, admin, member, reader("staff"), scope("/guide/"), "/guide/")
    boss = reader("admin")
    admitted = pages.policy.decide("/guide/", boss)
    decided, out = process(pages, admin, admitted, boss, scope("/guide/"), "/guide/")
    assert out == admin.replace(b"</head>", tag_for(boss) + b"</head>")


def test_the_script_goes_in_once_and_a_page_that_loads_it_gets_it_once() -> None:
    pages = make_pages()
    who = reader()
    decision = pages.policy.decide("/p", who)
    plain = page()
    for _ in range(2):
        _, out = process(pages, plain, decision, who, scope("/p"), "/p")
        mine = tag_for(who)
        assert out.count(TAG_START) == 1 and out.index(mine) == plain.index(b"</head>")
    loaded = page(LOADED.decode())
    for _ in range(2):
        _, out = process(pages, loaded, decision, who, scope("/q"), "/q")
        # The page's own tag, with the reader's object added as its first attribute.
        assert out == page(LOADED.decode().replace("<script", "<script" + attribute_for(who)))


def test_gated_parts_are_rewritten_per_reader_even_from_the_memo() -> None:
    pages = make_pages(fragments=True)
    gated = page(body='<p>all</p><div data-gateway-groups="admin">secret</div>')
    for who, sees in ((reader("admin"), True), (reader(), False), (reader("admin"), True)):
        decision = pages.policy.decide("/g", who)
        decided, out = process(pages, gated, decision, who, scope("/g"), "/g")
        assert (b"secret" in out) is sees
        assert not decided.public and out.count(tag_for(who)) == 1


def test_the_index_hears_of_a_served_page_at_most_every_interval() -> None:
    now = [1000.0]
    pages = make_pages(clock=lambda: now[0], indexes=True)
    assert pages.index is not None
    recorded: list[str] = []
    original = pages.index.record

    def record(path: str, meta: PageMeta, *, fragments: bool | None = None) -> None:
        recorded.append(path)
        original(path, meta, fragments=fragments)

    pages.index.record = record  # type: ignore[method-assign]
    for _ in range(3):
        pages.scan(page(), "/a/")
    assert recorded == ["/a/"]
    now[0] += RECORD_EVERY
    pages.scan(page(), "/a/")
    assert recorded == ["/a/", "/a/"]
    pages.scan(page("<meta name=gateway:public content=true>"), "/a/")  # changed: at once
    assert recorded == ["/a/", "/a/", "/a/"]


def test_the_memo_keeps_to_its_budget_dropping_the_oldest() -> None:
    memo = PageMemo(budget=100)

    def entry(size: int) -> Scanned:
        return Scanned(b"x" * size, PageMeta(), False, None)

    memo.put("/a", entry(40))
    memo.put("/b", entry(40))
    memo.put("/c", entry(40))
    assert memo.size == 80 and len(memo) == 2
    assert memo.get("/a", b"x" * 40) is None and memo.get("/c", b"x" * 40) is not None
    memo.put("/c", entry(10))  # replacing an entry gives its bytes back
    assert memo.size == 50
    memo.put("/big", Scanned(b"x" * (MEMO_PAGE_LIMIT + 1), PageMeta(), False, None))
    assert memo.get("/big", b"x" * (MEMO_PAGE_LIMIT + 1)) is None and memo.size == 50
    assert memo.get("/c", b"y" * 10) is None  # other bytes at the path: not a hit


def test_each_reader_gets_their_own_user_object_from_one_kept_copy() -> None:
    pages = make_pages()
    plain = page('<meta name="gateway:public" content="true">')
    ada = User(sub="ada", expires_at=time.time() + 3600, groups=("staff",),
               content={"firstName": 'Ada "</script><script>alert(1)</script>'})
    bob = User(sub="bob", expires_at=time.time() + 3600, groups=("staff",),
               content={"firstName": "Bob"})
    results = {}
    for who in (ada, bob, None, ada):
        decision = pages.policy.decide("/p", who)
        scanned = pages.scan(plain, "/p")
        decided = pages.judge(scanned, decision, who, scope("/p"))
        _, result = pages.deliver(scanned, decided, who)
        assert result.reader and result.body.count(TAG_START) == 1
        assert result.body == plain.replace(b"</head>", (tag_for(who) if who else TAG) + b"</head>")
        assert gzip.decompress(result.gzip()) == result.body
        results[who.sub if who else None] = result
    assert len(pages.renders) == 1  # one copy kept for all three, filled per reader
    # The user object cannot leave its attribute: the only quote in it is the one closing it.
    ada_tag = tag_for(ada)
    assert ada_tag.count(b'"') == 4 and b"<" not in ada_tag[1:-len(b"></script>")]
    etags = {result.etag for result in results.values()}
    assert len(etags) == 3  # a reader's validator is theirs alone
    # The same reader with a changed user object (a refreshed session) gets the new one.
    renamed = User(sub="ada", expires_at=ada.expires_at, groups=("staff",),
                   content={"firstName": "Ada Lovelace"})
    _, result = pages.deliver(pages.scan(plain, "/p"), pages.policy.decide("/p", renamed),
                              renamed)
    assert b"Ada Lovelace" in result.body and result.etag not in etags


def test_a_page_with_fields_carries_the_user_object_beside_them() -> None:
    pages = make_pages(fragments=True)
    marked = page(body='<p data-gateway-field="content.firstName">you</p>'
                       '<div data-gateway-groups="staff">staff only</div>')
    for name in ("Ada", "Bob"):
        who = User(sub=name.lower(), expires_at=time.time() + 3600, groups=("staff",),
                   content={"firstName": name})
        _, out = process(pages, marked, pages.policy.decide("/f", who), who, scope("/f"), "/f")
        assert f">{name}</p>".encode() in out and b"staff only" in out
        assert out.count(tag_for(who)) == 1


def test_a_readers_new_values_fill_a_page_that_cannot_be_kept_as_a_template() -> None:
    # A field inside another: no template for the audience, so the page is kept per reader,
    # and a new session of the same subject may carry other values.
    pages = make_pages(fragments=True)
    nested = page(body='<p data-gateway-field="content.plan">Plan: <b data-gateway-field='
                       '"content.firstName">x</b></p><div data-gateway-groups="ops">ops</div>')
    for plan in ("free", "KEY-NEW-123", "free"):
        who = User(sub="same", expires_at=time.time() + 3600, groups=("staff",),
                   content={"plan": plan, "firstName": "Ann"})
        scanned = pages.scan(nested, "/n")
        decided = pages.judge(scanned, pages.policy.decide("/n", who), who, scope("/n"))
        _, result = pages.deliver(scanned, decided, who)
        assert f">{plan}</p>".encode() in result.body, result.body
        assert b"ops</div>" not in result.body


def test_a_page_that_loads_the_script_itself_gets_the_gateways_tag_in_its_place() -> None:
    pages = make_pages()
    forged = b'<script src="/_gateway/client.js" data-user="{&quot;sub&quot;:&quot;x&quot;}">'
    loaded = page(forged.decode() + "</script>", body="<p>a</p>" + LOADED.decode())
    who = reader()
    for _ in range(2):  # made, then from the kept copy
        scanned = pages.scan(loaded, "/l")
        _, result = pages.deliver(scanned, pages.policy.decide("/l", who), who)
        ours = b"<script" + attribute_for(who).encode()
        # Both of the page's own tags carry the reader's object first (HTML keeps the first
        # of an attribute given twice): its forged user object is never read.
        assert result.body == loaded.replace(b"<script", ours)
        assert result.body.count(ours + b' src="/_gateway/client.js"') == 2 and result.reader


def test_which_listing_a_path_names_is_remembered_for_short_paths_only() -> None:
    from gateway.html.page import INDEX_FILES_KEPT, INDEX_PATH_KEPT

    pages = make_pages()
    found = pages.index_file("/search/search_index.json")
    assert found is not None and found.kind == "mkdocs"
    assert pages.index_file("/search/search_index.json") is found  # the remembered answer
    assert pages.index_file("/guide/") is None
    long_path = "/" + "a" * INDEX_PATH_KEPT + "/sitemap.xml"
    assert pages.index_file(long_path) is not None
    assert long_path not in pages._index_files  # client-chosen lengths are not kept
    for number in range(INDEX_FILES_KEPT + 10):
        assert pages.index_file(f"/p{number}/") is None
    assert len(pages._index_files) <= INDEX_FILES_KEPT
