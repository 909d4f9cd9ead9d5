from __future__ import annotations

import gzip
import zlib

import pytest

from gateway.html.encoding import (
    AS_IS,
    Undecodable,
    as_utf8,
    decode_body,
    is_html,
    mime_parts,
    page_codec,
)
from gateway.html.head import (
    PageMeta,
    head_complete,
    insert_at,
    read_page_meta,
    script_offset,
    script_tag,
)

TAG = b'<script src="/_gateway/client.js" defer></script>'


def inject(page: bytes, tag: bytes) -> bytes:
    """``tag`` where the gateway puts the client script (nowhere when the page loads it)."""
    return insert_at(page, tag, script_offset(page, tag))


def page(head: str, body: str = "<p>Hello</p>") -> bytes:
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>".encode()


def test_meta_public_double_quotes() -> None:
    meta = read_page_meta(page('<meta name="gateway:public" content="true">'))
    assert meta == PageMeta(public=True)


def test_meta_public_single_quotes_uppercase_and_reordered() -> None:
    meta = read_page_meta(page("<META CONTENT='TRUE' NAME='Gateway:Public'/>"))
    assert meta.public


def test_meta_unquoted_and_self_closing() -> None:
    assert read_page_meta(page("<meta name=gateway:public content=true />")).public
    # As a browser reads it, an unquoted value runs up to ">" or a space: the slash is
    # part of it ("true/"), so the page does not say it is public.
    assert not read_page_meta(page("<meta name=gateway:public content=true/>")).public
    assert read_page_meta(page("<meta name=gateway:groups content=admin/>")).groups \
        == ("admin/",)
    meta = read_page_meta(page("<meta name=gateway:groups content=admin>"))
    assert meta.groups == ("admin",)


def test_meta_groups_with_spaces_and_empty_items() -> None:
    head = '<meta name="gateway:groups" content=" admin,  beta team ,,admin ">'
    meta = read_page_meta(page(head))
    assert meta.groups == ("admin", "beta team")
    assert not meta.public


def test_meta_groups_empty_content_admits_nobody() -> None:
    assert read_page_meta(page('<meta name="gateway:groups" content="">')).groups == ()


def test_meta_public_other_values_are_not_public() -> None:
    for value in ("false", "yes", "", "1"):
        assert not read_page_meta(page(f'<meta name="gateway:public" content="{value}">')).public


def test_meta_both_and_entities() -> None:
    meta = read_page_meta(page(
        '<meta charset="utf-8">'
        '<title>Docs &lt;meta name="gateway:public" content="true"&gt;</title>'
        '<meta name="gateway:groups" content="r&amp;d, ops">'))
    assert meta == PageMeta(public=False, groups=("r&d", "ops"))


def test_meta_inside_comment_script_or_title_is_ignored() -> None:
    head = ('<!-- <meta name="gateway:public" content="true"> -->'
            '<script>var s = \'<meta name="gateway:public" content="true"></head>\';</script>'
            '<title><meta name="gateway:public" content="true"></title>'
            '<meta name="gateway:groups" content="admin">')
    assert read_page_meta(page(head)) == PageMeta(groups=("admin",))


def test_meta_after_head_is_ignored() -> None:
    body = '<meta name="gateway:public" content="true">'
    assert read_page_meta(page("<title>x</title>", body)) == PageMeta()
    no_head_close = b'<html><body><meta name="gateway:public" content="true"></body>'
    assert read_page_meta(no_head_close) == PageMeta()


def test_meta_first_declaration_wins() -> None:
    head = ('<meta name="gateway:groups" content="admin">'
            '<meta name="gateway:groups" content="everyone">')
    assert read_page_meta(page(head)).groups == ("admin",)


def test_no_meta_declares_nothing() -> None:
    meta = read_page_meta(page('<meta name="description" content="gateway:public">'))
    assert meta == PageMeta()
    assert not meta.declared


def test_meta_attribute_with_gt_inside_quotes() -> None:
    head = '<link rel="x" title="a > b"><meta name="gateway:public" content="true">'
    assert read_page_meta(page(head)).public


def test_meta_reads_a_big_page() -> None:
    filler = "".join(f'<link rel="stylesheet" href="/assets/{i}.css">' for i in range(300))
    meta = read_page_meta(page(filler + '<meta name="gateway:groups" content="a,b">', "x" * 10_000))
    assert meta.groups == ("a", "b")


def test_head_complete_on_close_or_body() -> None:
    assert not head_complete(b"<html><head><title>Docs</title>")
    assert not head_complete(b'<html><head><meta name="gateway:public" con')
    assert head_complete(b"<html><head><title>Docs</title></head>")
    assert not head_complete(b"<html><HEAD></HEAD")  # the close tag has not fully arrived
    assert head_complete(b"<html><HEAD></HEAD >")
    assert head_complete(b"<html><head><title>x</title><BODY class='a'>")


def test_head_complete_ignores_lookalikes() -> None:
    assert not head_complete(b"<head><!-- </head> -->")
    assert not head_complete(b"<head><script>document.write('<body>')</script>")
    assert not head_complete(b"<head><script>let a = 1;")
    assert not head_complete(b"<head><!-- unfinished")
    assert head_complete(b"<head><!-- </head> --></head>")


def test_head_complete_agrees_with_read_page_meta_when_streaming() -> None:
    whole = page('<meta name="gateway:groups" content="admin">')
    for cut in range(len(whole)):
        if head_complete(whole[:cut]):
            assert read_page_meta(whole[:cut]).groups == ("admin",)


def test_inject_before_head_close() -> None:
    out = inject(page("<title>x</title>"), TAG)
    assert out.count(TAG) == 1
    assert out.index(TAG) < out.index(b"</head>")
    assert b"<title>x</title>" + TAG + b"</head>" in out


def test_inject_case_insensitive_and_first_head_close() -> None:
    src = b"<HTML><HEAD><title>x</title></HEAD><BODY><pre>&lt;/head&gt;</pre></head></BODY></HTML>"
    out = inject(src, TAG)
    assert out == src.replace(b"</HEAD>", TAG + b"</HEAD>", 1)


def test_inject_skips_head_close_in_comment() -> None:
    src = b"<head><!-- </head> --><title>x</title></head><body></body>"
    out = inject(src, TAG)
    assert out.index(TAG) > out.index(b"<title>")


def test_inject_before_body_close_without_head() -> None:
    src = b"<html><body><p>x</p></body></html>"
    assert inject(src, TAG) == b"<html><body><p>x</p>" + TAG + b"</body></html>"


def test_inject_appends_to_fragment() -> None:
    assert inject(b"<p>just a fragment</p>", TAG) == b"<p>just a fragment</p>" + TAG


def test_inject_not_twice() -> None:
    once = inject(page(""), TAG)
    assert inject(once, TAG) == once
    already = page("<script defer src='/_gateway/client.js'></script>")
    assert inject(already, TAG) == already
    other = page('<script src="/other.js"></script>')
    assert inject(other, TAG).count(b"<script") == 2


def test_script_tag_escapes_src() -> None:
    assert script_tag("/_gateway/client.js") == TAG
    tag = script_tag('/x"><img src=y onerror=alert(1)>.js')
    assert b'"><img' not in tag
    assert tag.startswith(b'<script src="/x&quot;&gt;&lt;img')
    assert script_tag("/c.js", compat="mintlify") == (
        b'<script src="/c.js" data-compat="mintlify" defer></script>')


def test_decode_identity_and_none() -> None:
    assert decode_body(b"abc", None) == b"abc"
    assert decode_body(b"abc", "") == b"abc"
    assert decode_body(b"abc", "Identity") == b"abc"


def test_decode_gzip() -> None:
    body = page("<title>x</title>") * 50
    assert decode_body(gzip.compress(body), "gzip") == body
    assert decode_body(gzip.compress(body), "x-gzip") == body
    # Two gzip members back to back are one body.
    assert decode_body(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip") == b"abcd"


def test_decode_deflate_zlib_and_raw() -> None:
    body = page("<title>x</title>") * 50
    assert decode_body(zlib.compress(body), "deflate") == body
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode_body(raw.compress(body) + raw.flush(), "DEFLATE") == body


def test_decode_stacked_encodings() -> None:
    body = b"hello" * 100
    assert decode_body(gzip.compress(zlib.compress(body)), "deflate, gzip") == body


def test_decode_unknown_encodings_leave_page_alone() -> None:
    for coding in ("br", "zstd", "compress", "gzip, br"):
        assert decode_body(b"\x00\x01", coding) is None


def test_decode_corrupt_or_truncated_is_none() -> None:
    assert decode_body(b"not gzip at all", "gzip") is None
    assert decode_body(gzip.compress(b"x" * 10_000)[:-20], "gzip") is None
    assert decode_body(b"\xff\xfe garbage", "deflate") is None


def test_decode_bomb_guard() -> None:
    bomb = gzip.compress(b"\0" * (21 * 1024 * 1024))
    assert len(bomb) < 100_000
    assert decode_body(bomb, "gzip") is None
    assert decode_body(zlib.compress(b"a" * 2000), "deflate", limit=1000) is None
    assert decode_body(b"a" * 2000, None, limit=1000) is None
    assert decode_body(zlib.compress(b"a" * 1000), "deflate", limit=1000) == b"a" * 1000


def test_page_codec_follows_the_browser_order() -> None:
    utf16 = "<html><head></head>".encode("utf-16-le")
    assert page_codec(b"<html>", "text/html") == (AS_IS, "utf-8")
    assert page_codec(b"<html>", "text/html; charset=ISO-8859-1") == (AS_IS, "iso-8859-1")
    assert page_codec(b"<html>", 'text/html;charset="UTF-16"') == ("utf-16-le", "utf-8")
    assert page_codec(b"<html>", "text/html; charset=unicodeFFFE") == ("utf-16-be", "utf-8")
    # The byte-order mark wins over the header, the header over <meta charset>.
    assert page_codec(b"\xff\xfe" + utf16, "text/html; charset=utf-8")[0] == "utf-16-le"
    assert page_codec(b"\xef\xbb\xbf<html>", "text/html; charset=utf-16") == (AS_IS, "utf-8")
    assert page_codec(b"<meta charset=iso-2022-jp>", "text/html; charset=utf-8") \
        == (AS_IS, "utf-8")
    assert page_codec(b"<meta charset=iso-2022-jp>", None) == ("iso2022_jp", "utf-8")
    assert page_codec(b'<meta http-equiv=Content-Type content="text/html; charset=csISO2022JP">',
                      "text/html")[0] == "iso2022_jp"
    assert page_codec(b"<meta charset=Shift_JIS>", None) == (AS_IS, "shift_jis")
    # A label a browser does not know is passed over; a prescan never finds UTF-16.
    assert page_codec(b"<meta charset=iso-2022-jp>", "text/html; charset=nope")[0] \
        == "iso2022_jp"
    assert page_codec(b"<meta charset=utf-16>", None) == (AS_IS, "utf-8")
    assert page_codec(b"<!-- <meta charset=iso-2022-jp> -->", None) == (AS_IS, "utf-8")
    # UTF-16 markup without its mark is still read as UTF-16.
    assert page_codec(utf16, None)[0] == "utf-16-le"
    with pytest.raises(Undecodable):
        page_codec(b"<html>", "text/html; charset=ISO-2022-KR")


def test_content_type_parameters_are_read_as_a_browser_reads_them() -> None:
    # A quoted value hides the ";" and "charset=" inside it; the first charset wins.
    assert mime_parts('text/html; x="; charset=utf-8"; charset=utf-16le') == (
        "text/html", {"x": "; charset=utf-8", "charset": "utf-16le"})
    assert page_codec(b"<p>", 'text/html; x="; charset=utf-8"; charset=utf-16le')[0] \
        == "utf-16-le"
    assert page_codec(b"<p>", "text/html; charset=utf-16le; charset=utf-8")[0] == "utf-16-le"
    assert mime_parts('Text/HTML ; Charset="u\\tf-8"') == ("text/html", {"charset": "utf-8"})


def test_as_utf8_sends_what_it_read() -> None:
    page = "<meta name=\"gateway:groups\" content=\"admin\"><p>Ada</p>"
    assert as_utf8(page.encode(), "text/html") == (page.encode(), "text/html; charset=utf-8")
    assert as_utf8(page.encode(), "application/xhtml+xml; charset=latin1") == (
        page.encode(), "application/xhtml+xml; charset=latin1")
    for codec, label in (("utf-16", "utf-16"), ("utf-16-be", "utf-16be"),
                         ("iso2022_jp", "iso-2022-jp")):
        body = (page + "日本").encode(codec)
        assert as_utf8(body, f"text/html; charset={label}") == (
            (page + "日本").encode(), "text/html; charset=utf-8")


@pytest.mark.parametrize("body", [
    "<p>hi</p><div>x</div>".encode("utf-16-le"),  # labelled utf-8 below
    "<p>\u65e5</p>".encode("iso2022_jp"),
    b"\x00\x00\xfe\xff" + "<p>".encode("utf-32-be"),
])
def test_a_page_read_as_ascii_with_nul_or_escape_bytes_cannot_be_read(body: bytes) -> None:
    with pytest.raises(Undecodable):
        as_utf8(body, "text/html; charset=utf-8")


def test_is_html() -> None:
    assert is_html("text/html; charset=utf-8")
    assert is_html("Application/XHTML+XML")
    assert not is_html("application/json")
    assert not is_html(None)


def test_unclosed_tags_do_not_stall_the_scan() -> None:
    # A page cut off (or garbled) inside a tag: the scan gives up at once instead of
    # retrying from every "<", which would take minutes on input like this.
    for junk in (b"<a" * 100_000, b"<script" * 50_000, b"<a '" * 50_000):
        hostile = b"<html><head>" + junk
        assert not head_complete(hostile)
        # ... and says the head could not be read, so a page judged by it is refused.
        assert read_page_meta(hostile) == PageMeta(unreadable=True)
        assert inject(hostile, TAG).endswith(TAG)


@pytest.mark.parametrize("comment", ["<!-->", "<!--->", "<!-- x --!>"])
def test_metadata_after_a_comment_shortcut_is_read_as_a_browser_does(comment: str) -> None:
    page = (f"<html><head>{comment}<meta name=\"gateway:groups\" content=\"admin\">"
            "<!-- --></head><body></body></html>").encode()
    assert read_page_meta(page).groups == ("admin",)


@pytest.mark.parametrize("before", [
    "<meta name=author content=Ada's>",
    '<meta name=author content=a"b>',
    "<link rel=preload href=/it's.css>",
    "<meta content=l'heure name=x>",
    "<base href=/a'b/>",
    "<meta name=x content='it''s'>",
    '<meta name="a" content=""x"">',
])
def test_quotes_count_only_after_an_equals_sign(before: str) -> None:
    # A browser reads each of these as one complete tag; the gating meta after it is real.
    meta = read_page_meta(page(before + '<meta name="gateway:groups" content="admin">'))
    assert meta.groups == ("admin",) and not meta.unreadable


@pytest.mark.parametrize("meta", [
    "<meta/name=\"gateway:groups\"/content=admin>",
    "<META\tNAME=gateway:groups\nCONTENT=admin>",
    "<meta name=gateway:groups content=admin x='>'>",
])
def test_attribute_separators_as_a_browser_reads_them(meta: str) -> None:
    assert read_page_meta(page(meta)).groups == ("admin",)


@pytest.mark.parametrize("cut", [
    '<html><head><meta name="gateway:groups" content="admin',
    "<html><head><title>x</title><meta name=gateway:groups content=admin",
    "<html><head><meta name=author content='x><meta name=gateway:groups content=admin>",
])
def test_a_head_cut_inside_a_tag_is_unreadable(cut: str) -> None:
    assert read_page_meta(cut.encode()).unreadable


def test_a_label_a_browser_does_not_know_is_passed_over() -> None:
    utf16 = '<meta name="gateway:groups" content="admin">'.encode("utf-16-le")
    # Python knows these labels; a browser does not, so it reads on (here: the NULs).
    for label in ("utf-16-le", "utf-32", "utf-7", "cp037"):
        assert page_codec(utf16, f"text/html; charset={label}")[0] == "utf-16-le", label


@pytest.mark.parametrize("markup", [
    "<head><noscript></head></noscript><meta name=gateway:groups content=admin></head>",
    "<head><template><body></body></template><meta name=gateway:groups content=admin></head>",
    "<head></head><meta name=gateway:groups content=admin><body>",
    "<head></head><body><p>x</p><meta name=gateway:groups content=admin></body>",
])
def test_a_pages_groups_count_wherever_they_stand(markup: str) -> None:
    # A browser may end the head elsewhere than the scan, or move a meta into it.
    assert read_page_meta(markup.encode()).groups == ("admin",)


def test_public_is_read_from_the_head_only() -> None:
    meta = read_page_meta(b"<head></head><body><meta name=gateway:public content=true>")
    assert not meta.public
