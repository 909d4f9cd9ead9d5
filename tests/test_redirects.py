from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.redirects import (
    MAX_RETURN_PATH,
    absolute_url,
    is_same_origin,
    safe_return_path,
)

# --- return paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/", "/"),
        ("/docs/intro", "/docs/intro"),
        ("/docs/intro/", "/docs/intro/"),
        ("/docs/intro?tab=python&x=1", "/docs/intro?tab=python&x=1"),
        ("/docs/intro#install", "/docs/intro#install"),
        ("/docs/intro?next=//evil.example#a", "/docs/intro?next=//evil.example#a"),
        ("/search?q=a%20b", "/search?q=a%20b"),
        ("/a b", "/a%20b"),
        ("/café", "/caf%C3%A9"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ('/a"<>', "/a%22%3C%3E"),
        ("/@evil.example", "/@evil.example"),
        ("/100%25", "/100%25"),
        ("/a/b:c", "/a/b:c"),
    ],
)
def test_same_origin_paths_are_kept(value: str, expected: str) -> None:
    assert safe_return_path(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        42,
        b"/docs",
        ["/docs"],
        "docs/intro",
        "//evil.example",
        "//evil.example/docs",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "\\/evil.example",
        "/docs\\..\\..\\x",
        "/docs?q=a\\b",
        "https://evil.example/",
        "http://evil.example",
        "HTTPS://evil.example",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "\x01javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "DATA:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox",
        "https://docs.example.com@evil.example/",
        "//user:pass@evil.example",
        " /docs",
        "\t/docs",
        "/\t/evil.example",
        "/\n/evil.example",
        "/docs\r\nSet-Cookie: a=b",
        "/docs%0d%0aSet-Cookie:%20a=b",
        "/docs%0aX",
        "/docs%09",
        "/docs%00",
        "/docs%7f",
        "/docs\x00",
        "/docs\x85",
        "/%2f/evil.example",
        "/%2F%2Fevil.example",
        "/%5c/evil.example",
        "/%5Cevil.example",
        "/%09/evil.example",
        "/%252f%252fevil.example",
        "/%25252f%25252fevil.example",
        "/docs/../admin",
        "/docs/%2e%2e/admin",
        "/./docs",
        "/%C0%AF",
        "/" + "a" * MAX_RETURN_PATH,
        "/\udcc0",
    ],
)
def test_anything_else_returns_to_the_root(value: object) -> None:
    assert safe_return_path(value) == "/"


def test_long_but_acceptable_path_is_kept() -> None:
    value = "/" + "a" * (MAX_RETURN_PATH - 1)
    assert safe_return_path(value) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/docs", "/docs"),
        ("/docs/", "/docs/"),
        ("/docs/guide/intro?x=1#y", "/docs/guide/intro?x=1#y"),
        ("/", "/docs/"),
        ("/admin", "/docs/"),
        ("/docsx/secret", "/docs/"),
        ("/documents", "/docs/"),
        ("/docs/../admin", "/docs/"),
        ("/docs?x=1", "/docs?x=1"),
        ("//evil.example/docs/", "/docs/"),
        ("https://docs.example.com/docs/a", "/docs/"),
        (None, "/docs/"),
    ],
)
def test_with_a_base_path_only_paths_under_it_are_kept(value: str | None, expected: str) -> None:
    assert safe_return_path(value, base_path="/docs") == expected
    assert safe_return_path(value, base_path="/docs/") == expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=80),
    st.text(max_size=80).map(lambda s: "/" + s),
    st.lists(st.sampled_from(["/", "\\", "%2f", "%5c", "%09", "%0a", "%25", "2f", "\t", " ",
                              "evil.example", "@", ":", "javascript:", "http:", "?", "#",
                              "..", ".", "%2e", "a"]), max_size=12).map("".join),
))
def test_result_never_leaves_the_docs_host(value: str) -> None:
    for base in ("", "/docs"):
        result = safe_return_path(value, base_path=base)
        assert result.startswith("/")
        assert not result.startswith("//") and not result.startswith("/\\")
        assert re.fullmatch(r"[\x21-\x7e]+", result)
        assert not re.search(r"%(?:[01][0-9a-f]|7f)", result, re.IGNORECASE)
        joined = urlsplit(urljoin("https://docs.example.com/", result))
        assert joined.hostname == "docs.example.com"
        assert joined.scheme == "https"
        if base:
            path = urlsplit(result).path
            assert path == base or path.startswith(base + "/")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80).map(lambda s: "/" + s))
def test_result_is_stable(value: str) -> None:
    once = safe_return_path(value)
    assert safe_return_path(once) == once


# --- origins ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("https://docs.example.com", True),
        ("https://docs.example.com/", True),
        ("https://docs.example.com/docs/page?x=1", True),
        ("https://docs.example.com:443", True),
        ("HTTPS://DOCS.EXAMPLE.COM", True),
        ("http://docs.example.com", False),
        ("https://docs.example.com:8443", False),
        ("https://evil.example", False),
        ("https://docs.example.com.evil.example", False),
        ("https://evil.example/https://docs.example.com", False),
        ("https://docs.example.com@evil.example", False),
        ("https://evil@docs.example.com", False),
        ("https://docs.example.com\\@evil.example", False),
        ("null", False),
        ("", False),
        ("//docs.example.com", False),
        ("javascript://docs.example.com", False),
        ("https://docs.example.com:bad", False),
        (" https://docs.example.com", False),
        ("https://docs.example.com\r\n", False),
    ],
)
def test_origin_and_referer_checks(candidate: str, expected: bool) -> None:
    assert is_same_origin(candidate, "https://docs.example.com") is expected


@pytest.mark.parametrize(
    ("candidate", "public", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", True),
        ("http://127.0.0.1", "http://127.0.0.1:80", True),
        ("http://127.0.0.1:8081", "http://127.0.0.1:8080", False),
        ("http://localhost:8080", "http://127.0.0.1:8080", False),
        ("https://docs.example.com/docs/x", "https://docs.example.com/docs", True),
        ("http://[::1]:8080/", "http://[::1]:8080", True),
        ("https://docs.example.com", "not a url", False),
    ],
)
def test_default_ports_and_hosts(candidate: str, public: str, expected: bool) -> None:
    assert is_same_origin(candidate, public) is expected


# --- absolute URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "path", "expected"),
    [
        ("https://docs.example.com", "/", "https://docs.example.com/"),
        ("https://docs.example.com", "/a?b=1#c", "https://docs.example.com/a?b=1#c"),
        ("https://example.com/docs", "/docs/intro", "https://example.com/docs/intro"),
        ("https://example.com/docs/", "/docs/", "https://example.com/docs/"),
        ("http://127.0.0.1:8080", "/x", "http://127.0.0.1:8080/x"),
    ],
)
def test_absolute_url_joins_origin_and_path(public_url: str, path: str, expected: str) -> None:
    assert absolute_url(public_url, path) == expected


def test_absolute_url_of_a_validated_return_path_stays_on_the_docs() -> None:
    for hostile in ["//evil.example", "https://evil.example", "/\\evil.example"]:
        url = absolute_url("https://example.com/docs",
                           safe_return_path(hostile, base_path="/docs"))
        assert url == "https://example.com/docs/"


@pytest.mark.parametrize("path", ["", "docs", "//evil.example", "https://evil.example"])
def test_absolute_url_refuses_unvalidated_paths(path: str) -> None:
    with pytest.raises(ValueError):
        absolute_url("https://docs.example.com", path)
