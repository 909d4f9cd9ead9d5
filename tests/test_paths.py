from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequest
from gateway.paths import (
    MAX_PATH_BYTES,
    Glob,
    GlobSet,
    compile_glob,
    copy_of_pages,
    decoded,
    link_targets,
    normalize_path,
)

# --- normalization ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/docs/intro", "/docs/intro"),
        ("/docs/intro/", "/docs/intro/"),
        ("//", "/"),
        ("///docs////intro", "/docs/intro"),
        ("/docs/./intro", "/docs/intro"),
        ("/docs/../admin", "/admin"),
        ("/docs/a/b/../../c", "/docs/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/../../../etc/passwd", "/etc/passwd"),
        ("/a/..//../b", "/b"),
        ("/a//../b", "/b"),
        ("/%2e%2e/admin", "/admin"),
        ("/docs/%2E%2e/admin", "/admin"),
        ("/docs/.%2e/admin", "/admin"),
        ("/docs/%2e/intro", "/docs/intro"),
        ("/%61dmin/", "/admin/"),
        ("/%41%42%43", "/ABC"),
        ("/a%2Db%5Fc%7E", "/a-b_c~"),
        ("/a%20b", "/a%20b"),
        ("/a%3fb", "/a%3Fb"),
        ("/a%23b", "/a%23b"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/café", "/caf%C3%A9"),
        ("/a b", "/a%20b"),
        ('/a"<>`{}', "/a%22%3C%3E%60%7B%7D"),
        ("/100%25", "/100%25"),
        ("/a%2520b", "/a%2520b"),
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
        ("/...", "/..."),
        ("/.hidden/..config", "/.hidden/..config"),
        ("/a.", "/a."),
        ("/Docs/Intro", "/Docs/Intro"),
    ],
)
def test_normalize_gives_the_one_canonical_spelling(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "/admin%2Fsecret",
        "/admin%2fsecret",
        "/..%2fadmin",
        "/a%5Cb",
        "/a%5cb",
        "/a\\b",
        "/..\\admin",
        "/a%00",
        "/a\x00b",
        "/a%0A",
        "/a%0d%0aSet-Cookie:x",
        "/a\nb",
        "/a\tb",
        "/a%09",
        "/a%1f",
        "/a%7F",
        "/a\x7f",
        "/a%C2%85b",
        "/a\x85b",
        "/admin;jsessionid=1",
        "/admin/..;/secret",
        "/a%3Bb",
        "/a%3bb",
        "/a%zz",
        "/a%4",
        "/a%",
        "/a%%41",
        "/%252e%252e/admin",
        "/a%252Fb",
        "/a%255cb",
        "/a%2500",
        "/%25%32%65",
        "/%C0%AF",
        "/%C0%AE%C0%AE/admin",
        "/%E0%80%AF",
        "/%ED%A0%80",
        "/%FF",
        "/caf%E9",
        "/\udcc0",
        "admin",
        "",
        "*",
        "http://evil.example/admin",
        "a/../admin",
        "/a?b",
        "/a#b",
    ],
)
def test_ambiguous_paths_are_refused_with_400(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        normalize_path(raw)
    assert caught.value.status == 400
    assert caught.value.code == "bad_path"
    assert caught.value.message


def test_refusal_message_names_the_problem() -> None:
    with pytest.raises(BadRequest, match=r"%2F"):
        normalize_path("/a%2Fb")
    with pytest.raises(BadRequest, match="double"):
        normalize_path("/a%252e")
    with pytest.raises(BadRequest, match="UTF-8"):
        normalize_path("/%C0%AF")


def test_path_length_limit() -> None:
    at_limit = "/" + "a" * (MAX_PATH_BYTES - 1)
    assert normalize_path(at_limit) == at_limit
    with pytest.raises(BadRequest, match="longer"):
        normalize_path(at_limit + "a")
    # Raw characters that must be encoded grow the result; the limit applies to it too.
    with pytest.raises(BadRequest, match="longer"):
        normalize_path("/" + "é" * 3000)


def test_decoded_path_is_what_rules_see() -> None:
    assert decoded(normalize_path("/caf%C3%A9/a%20b")) == "/café/a b"
    assert decoded(normalize_path("/100%25")) == "/100%"
    assert decoded(normalize_path("/a%3Fb")) == "/a?b"


# --- real requests ---------------------------------------------------------------------


async def _raw_get(port: int, target: bytes) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: docs\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


async def test_paths_sent_on_the_wire_are_normalized_as_received(aiohttp_server: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        try:
            path = normalize_path(request.raw_path.partition("?")[0])
        except BadRequest as exc:
            return web.Response(status=exc.status, text=exc.code)
        return web.Response(text=path)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    server = await aiohttp_server(app, host="127.0.0.1", port=0)
    port = server.port
    assert await _raw_get(port, b"/docs/%2e%2e/admin/?q=1") == (200, "/admin/")
    assert await _raw_get(port, b"//docs//%61pi") == (200, "/docs/api")
    assert await _raw_get(port, b"/admin%2Fsecret") == (400, "bad_path")
    assert await _raw_get(port, b"/admin;x=1") == (400, "bad_path")
    assert await _raw_get(port, b"/a\\..\\admin") == (400, "bad_path")
    assert await _raw_get(port, b"/%252e%252e/admin") == (400, "bad_path")


# --- normalization properties ----------------------------------------------------------

_TOKENS = st.sampled_from(
    ["/", "//", ".", "..", "/./", "/../", "%2e", "%2E", "%2e%2e", "%25", "%2f", "%5C", "\\",
     ";", "%", "a", "B", "~", "-", "%41", "%7e", "%20", "%C3%A9", "é", "%C0%AE", "%00", "\n",
     "?", "#", "%3b", "2e", "2F", "5c", "%32", "%65", " ", "@", ":"]
)
_TRICKY = st.lists(_TOKENS, max_size=24).map(lambda parts: "/" + "".join(parts))


def _check_normalized(result: str) -> None:
    assert result.startswith("/")
    assert "//" not in result
    segments = result.split("/")
    assert "." not in segments and ".." not in segments
    assert "." not in decoded(result).split("/") and ".." not in decoded(result).split("/")
    assert re.fullmatch(r"[\x21-\x7e]*", result)
    assert normalize_path(result) == result


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.text(max_size=60).map(lambda s: "/" + s), _TRICKY))
def test_normalize_refuses_or_returns_a_stable_clean_path(raw: str) -> None:
    try:
        result = normalize_path(raw)
    except BadRequest:
        return
    _check_normalized(result)


_PLAIN = st.lists(
    st.sampled_from(["a", "Z", "0", "-", "_", "~", ".", "..", "/", "adm", "in"]), max_size=16
).map(lambda parts: "/" + "".join(parts))


@settings(max_examples=150, deadline=None)
@given(_PLAIN, st.data())
def test_encoding_unreserved_characters_changes_nothing(plain: str, data: st.DataObject) -> None:
    # A rule on /admin cannot be dodged by spelling it /%61dmin or /%2e%2e/admin.
    out = []
    for ch in plain:
        if ch != "/" and data.draw(st.booleans()):
            hexed = f"{ord(ch):02x}"
            out.append("%" + (hexed.upper() if data.draw(st.booleans()) else hexed))
        else:
            out.append(ch)
    assert normalize_path("".join(out)) == normalize_path(plain)


# --- globs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/admin/**", "/admin", True),
        ("/admin/**", "/admin/", True),
        ("/admin/**", "/admin/users", True),
        ("/admin/**", "/admin/users/1/edit", True),
        ("/admin/**", "/administrator", False),
        ("/admin/**", "/Admin/users", False),
        ("/admin/**", "/public/admin/x", False),
        ("/docs/*", "/docs/a", True),
        ("/docs/*", "/docs/", True),
        ("/docs/*", "/docs/a/b", False),
        ("/docs/*", "/docs", False),
        ("/docs/*.md", "/docs/intro.md", True),
        ("/docs/*.md", "/docs/intro.mdx", False),
        ("/docs/*.md", "/docs/sub/intro.md", False),
        ("/a/**/b", "/a/b", True),
        ("/a/**/b", "/a/x/b", True),
        ("/a/**/b", "/a/x/y/b", True),
        ("/a/**/b", "/a/xb", False),
        ("/**/*.png", "/logo.png", True),
        ("/**/*.png", "/img/deep/logo.png", True),
        ("/**/*.png", "/img/logo.jpg", False),
        ("/**", "/", True),
        ("/**", "/anything/at/all", True),
        ("/assets/**.js", "/assets/a/b.js", True),
        ("/v?/api", "/v1/api", True),
        ("/v?/api", "/v10/api", False),
        ("/v?/api", "/v//api", False),
        ("/favicon.ico", "/favicon.ico", True),
        ("/favicon.ico", "/faviconXico", False),
        ("/favicon.ico", "/favicon.ico/", False),
        ("/a+b/(x)", "/a+b/(x)", True),
        ("/a+b/(x)", "/aab/x", False),
        ("/caf%C3%A9/**", "/café/menu", True),
        ("/my docs/*", "/my docs/a", True),
        ("/blog/*/draft", "/blog/2024/draft", True),
        ("/blog/*/draft", "/blog/2024/05/draft", False),
    ],
)
def test_every_glob_behaves_as_documented(pattern: str, path: str, expected: bool) -> None:
    assert Glob(pattern).match(path) is expected
    assert compile_glob(pattern)(path) is expected
    assert GlobSet([pattern]).match(path) is expected


def test_globs_see_the_decoded_normalized_path() -> None:
    rule = Glob("/admin/**")
    for spelling in ["/%61dmin/x", "/docs/../admin", "//admin//x", "/public/%2e%2e/admin"]:
        assert rule.match(decoded(normalize_path(spelling)))


def test_globset_reports_the_first_matching_pattern_in_order() -> None:
    rules = GlobSet(["/admin/**", "/docs/secret/*", "/docs/**", "/**"])
    assert rules.first("/admin/x") == 0
    assert rules.first("/docs/secret/a") == 1
    assert rules.first("/docs/secret/a/b") == 2
    assert rules.first("/docs") == 2
    assert rules.first("/blog") == 3
    assert len(rules) == 4
    narrower = GlobSet(["/docs/*", "/docs/a"])
    assert narrower.first("/docs/a") == 0
    assert GlobSet(["/docs/a/b", "/docs/*"]).first("/docs/a") == 1


def test_empty_globset_matches_nothing() -> None:
    empty = GlobSet([])
    assert not empty.match("/")
    assert empty.first("/") is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["/a", "/b", "/*", "/**", "/?", "/a*", "/**/b", "/x.y"]),
                min_size=1, max_size=5),
       st.lists(st.sampled_from(["a", "b", "x.y", "ab", ""]), max_size=5))
def test_globset_agrees_with_each_glob(patterns: list[str], segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    singles = [Glob(p).match(path) for p in patterns]
    combined = GlobSet(patterns)
    assert combined.match(path) is any(singles)
    assert combined.first(path) == (singles.index(True) if any(singles) else None)


def _plain_glob(pattern: str) -> re.Pattern[str]:
    """The obvious translation of the documented glob rules, used as the reference."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            j = i
            while j < len(pattern) and pattern[j] == "*":
                j += 1
            after_slash = bool(out) and out[-1] == "/"
            if after_slash and j < len(pattern) and pattern[j] == "/":
                out[-1] = "/(?:.*/)?"
                j += 1
            elif after_slash and j == len(pattern):
                out[-1] = "(?:/.*)?"
            else:
                out.append(".*")
            i = j
        else:
            ch = pattern[i]
            out.append({"*": "[^/]*", "?": "[^/]"}.get(ch, re.escape(ch)))
            i += 1
    return re.compile("".join(out), re.DOTALL)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "ab", "/", "*", "**", "?", "/**/", "/**"]), max_size=10)
    .map(lambda parts: "/" + "".join(parts)),
    st.lists(st.sampled_from(["a", "b", "/", "ab", "ba"]), max_size=12)
    .map(lambda parts: "/" + "".join(parts)),
)
def test_glob_matches_exactly_what_the_rules_describe(pattern: str, path: str) -> None:
    assert Glob(pattern).match(path) is (_plain_glob(pattern).fullmatch(path) is not None)


@pytest.mark.parametrize(
    "pattern", ["/**/a/**/a/**/b", "/**a**a**b", "/**/*a*a*b", "/**a*b", "/docs/*-x-*-y"]
)
def test_long_hostile_paths_do_not_stall_matching(pattern: str) -> None:
    # These patterns backtrack polynomially when translated naively; a visitor controls
    # the path (up to 8 KB), so each must still answer promptly.
    rule = Glob(pattern)
    for path in ["/" + "a/" * 4000 + "c", "/" + "a" * 8000, "/docs/" + "-x-" * 2700]:
        assert not rule.match(path)
    assert not GlobSet([pattern, "/nothing"]).match("/" + "a/" * 4000 + "c")


@pytest.mark.parametrize(("path", "pages"), [
    ("/_sources/admin/keys.rst.txt", {"/admin/keys.html", "/admin/keys/", "/admin/keys"}),
    # html_sourcelink_suffix = ""
    ("/_sources/admin/keys.rst", {"/admin/keys.html", "/admin/keys/", "/admin/keys"}),
    # MyST's Markdown source, without the .txt suffix: Sphinx's copy, not a Markdown copy
    ("/_sources/admin/keys.md", {"/admin/keys.html", "/admin/keys/", "/admin/keys"}),
    ("/v2/_sources/index.md.txt", {"/v2/index.html", "/v2/"}),
    # older Sphinx: the source's suffix replaced by .txt
    ("/_sources/admin/keys.txt", {"/admin/keys.html", "/admin/keys/"}),
    ("/_SOURCES/Admin/Keys.rst.txt", {"/Admin/Keys.html", "/Admin/Keys/"}),
    ("/guide/index.md", {"/guide/"}),
    ("/guide.md", {"/guide.html", "/guide/", "/guide"}),
    ("/guide/other.html.md", {"/guide/other.html"}),
    ("/notes.txt", set()),
    ("/_sources/", set()),
    ("/admin/keys.html", set()),
])
def test_a_copy_of_a_pages_source_is_judged_with_the_page(path: str, pages: set[str]) -> None:
    assert pages <= set(copy_of_pages(path))
    assert bool(copy_of_pages(path)) == bool(pages)


@pytest.mark.parametrize(("location", "expected"), [
    ("http://docs.test/admin/", "/admin/"),
    ("http://DOCS.test./admin/", "/admin/"),
    ("http://\uff44ocs.test/admin/", "/admin/"),
    ("http://docs%2Etest/admin/", "/admin/"),
    ("http://elsewhere.test/admin/", None),
    ("http://docs.test:81/admin/", None),
    # Hosts that could not be read, or only slowly: judged as the public host's, to be safe.
    ("http://" + "1" * 5000 + "/admin/", "/admin/"),
    ("http://1" + "\ufdfa" * 300 + "/admin/", "/admin/"),
])
def test_a_link_to_the_public_host_in_any_spelling_is_a_docs_page(location: str,
                                                                   expected: str | None) -> None:
    assert link_targets("http://docs.test", "/_gateway", "").target("/", location) == expected


@pytest.mark.parametrize(("public_url", "location", "expected"), [
    # The user info ends at the last "@", whatever it holds.
    ("http://docs.test", "http://a[b@docs.test/admin/", "/admin/"),
    ("http://docs.test", "http://a\uff20b@docs.test/admin/", "/admin/"),
    # Dot segments as browsers resolve them: ".." takes off an empty segment too, and a
    # percent-encoded dot is a dot.
    ("http://docs.test", "http://docs.test/admin//../", "/admin/"),
    ("http://docs.test", "/admin//%2e%2E/", "/admin/"),
    ("http://docs.test", "../admin//../", "/admin/"),
    # The public host beyond ASCII or in IPv6, in another spelling.
    ("http://b\u00fccher.test", "http://xn--bcher-kva.test/admin/", "/admin/"),
    ("http://[0:0::1]", "http://[::1]/admin/", "/admin/"),
    # A port with leading zeros, however many.
    ("http://docs.test", "http://docs.test:000080/admin/", "/admin/"),
    ("http://docs.test:8080", "//docs.test:00000008080/admin/", "/admin/"),
    ("http://docs.test", "http://docs.test:0000065616/admin/", None),
])
def test_a_link_is_followed_as_browsers_follow_it(public_url: str, location: str,
                                                  expected: str) -> None:
    assert link_targets(public_url, "/_gateway", "").target("/r/x", location) == expected


@pytest.mark.parametrize("location", [
    "http://docs.test../admin/", "http://docs.test.%2e/admin/", "//DOCS.test.../admin/",
])
def test_the_public_host_with_more_final_dots_cannot_be_read_for_sure(location: str) -> None:
    # No browser reaches such a host; read as a host of its own, a redirect there would
    # pass unjudged, so it is none that can be read.
    follow = link_targets("http://docs.test", "/_gateway", "")
    assert follow.readings("http://docs.test/r/x", location) is None
    assert follow.readings("http://docs.test/r/x", "http://docs.test./admin/") == ("/admin/",)
