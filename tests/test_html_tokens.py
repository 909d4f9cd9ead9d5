from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.html import tokens as tokens


def test_read_tag_reads_names_and_attributes_like_a_browser() -> None:
    page = b"""<DIV Class="a b" data-x='1' hidden title=x"y data-x=2>rest"""
    tag = tokens.read_tag(page, 0)
    assert tag is not None
    assert page[tag.end:] == b"rest"
    assert tag.name == b"div"
    # Every value of a repeated attribute is kept, in order; a quote only opens a value
    # right after "=".
    assert tag.attrs == {b"class": [b"a b"], b"data-x": [b"1", b"2"], b"hidden": [b""],
                         b"title": [b'x"y']}
    assert not tag.self_closing


def test_read_tag_end_tags_and_self_closing() -> None:
    end = tokens.read_tag(b"</P >", 0)
    assert end is not None and end.name == b"p" and end.end == 5
    closed = tokens.read_tag(b"<br/>", 0)
    assert closed is not None and closed.self_closing


def test_read_tag_gives_none_when_the_page_ends_inside_the_tag() -> None:
    assert tokens.read_tag(b'<div class="never closes>', 0) is None
    assert tokens.read_tag(b"<div a=b", 0) is None
    assert tokens.read_tag(b"<div title=>", 0) is not None


def test_a_quoted_gt_does_not_end_a_tag() -> None:
    tag = tokens.read_tag(b'<a title="a > b" href=/x>', 0)
    assert tag is not None and tag.attrs[b"href"] == [b"/x"]


def test_bare_tag_reads_a_simple_tag_without_its_attributes() -> None:
    tag = tokens.bare_tag(b"<Section id=x data-a='>'>text", 0)
    assert tag is not None
    assert (tag.name, tag.end, tag.attrs) == (b"section", 25, {})
    assert tokens.bare_tag(b"<p class='open", 0) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<", "</", "a", "B", "div", " ", "\t", "/", "=", '"', "'",
                                 ">", "x", "-", "&amp;"]), max_size=20))
def test_bare_tag_agrees_with_read_tag(parts: list[str]) -> None:
    page = ("<div" + "".join(parts)).encode()
    quick = tokens.bare_tag(page, 0)
    if quick is not None:
        full = tokens.read_tag(page, 0)
        assert full is not None
        assert (quick.end, quick.name, quick.self_closing) == (
            full.end, full.name, full.self_closing)


def test_comments_end_with_the_html_shortcuts() -> None:
    assert tokens.comment_end(b"<!-->after", 0) == 5
    assert tokens.comment_end(b"<!--->after", 0) == 6
    assert tokens.comment_end(b"<!-- x --!>after", 0) == 11
    assert tokens.comment_end(b"<!-- never closed", 0) == 17


def test_raw_text_ends_at_its_own_end_tag_only() -> None:
    page = b"<title>a </titles> b </TITLE >after"
    assert page[tokens.raw_end(page, b"title", 7):] == b"</TITLE >after"
    assert tokens.raw_end(b"<style>never", b"style", 7) == 12


def test_script_text_follows_the_escape_rules() -> None:
    page = b"<script><!-- <script></script> still script --></script>after"
    assert page[tokens.script_end(page, 8):] == b"</script>after"
    plain = b"<script>if (a<b) x()</script>"
    assert plain[tokens.script_end(plain, 8):] == b"</script>"


def test_attribute_text_resolves_character_references() -> None:
    assert tokens.attr_text(b"r&amp;d &lt;3 &#x41;") == "r&d <3 A"
