"""How a body is encoded: its Content-Encoding undone, and the charset a browser would
read a page in (byte-order mark, Content-Type, ``<meta charset>``), so the gateway reads
the same characters the browser shows."""

from __future__ import annotations

import zlib
from functools import lru_cache

from gateway.html.tokens import (
    START,
    UNFINISHED,
    attr_value,
    token_at,
)

#: Largest decoded body ``decode_body`` returns; anything bigger is treated as a bomb.
MAX_DECODED = 20 * 1024 * 1024


def _inflate(data: bytes, wbits: int, limit: int) -> bytes | None:
    out = bytearray()
    while True:
        engine = zlib.decompressobj(wbits)
        out += engine.decompress(data, limit + 1 - len(out))
        if len(out) > limit:
            return None
        if not engine.eof:
            # Within the limit yet unfinished: the input was cut short.
            return None
        data = engine.unused_data
        # gzip allows several members back to back; zlib and raw deflate do not.
        if not data or wbits != zlib.MAX_WBITS | 16:
            return bytes(out)


def decode_body(body: bytes, content_encoding: str | None, *,
                limit: int = MAX_DECODED) -> bytes | None:
    """The body with its Content-Encoding undone, or None when it cannot be (unknown
    encoding such as br or zstd, corrupt or truncated data, or more than ``limit`` bytes)."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    data = body
    try:
        # Codings are listed in the order they were applied, so undo them from the last.
        for coding in reversed(codings):
            decoded: bytes | None
            if coding == "identity":
                decoded = data
            elif coding in ("gzip", "x-gzip"):
                decoded = _inflate(data, zlib.MAX_WBITS | 16, limit)
            elif coding == "deflate":
                # Servers disagree on "deflate": RFC 9110 says zlib-wrapped, some send raw.
                try:
                    decoded = _inflate(data, zlib.MAX_WBITS, limit)
                except zlib.error:
                    decoded = _inflate(data, -zlib.MAX_WBITS, limit)
            else:
                return None
            if decoded is None:
                return None
            data = decoded
    except zlib.error:
        return None
    return data if len(data) <= limit else None


# Labels (WHATWG Encoding Standard) of the encodings whose bytes do not keep ASCII markup
# as ASCII: a page in one of them is read, and sent, as UTF-8.
_UTF16BE = frozenset({"unicodefffe", "utf-16be"})


_UTF16LE = frozenset({"csunicode", "iso-10646-ucs-2", "ucs-2", "unicode", "unicodefeff",
                      "utf-16", "utf-16le"})


_ISO2022JP = frozenset({"csiso2022jp", "iso-2022-jp"})


# A browser shows a page in one of these as a single replacement character.
_REPLACEMENT = frozenset({"csiso2022kr", "hz-gb-2312", "iso-2022-cn", "iso-2022-cn-ext",
                          "iso-2022-kr", "replacement"})


# Every other label a browser knows: encodings that keep ASCII as it is. A label outside
# these lists (even one Python knows, such as "utf-16-le" or "utf-32") is passed over, as
# a browser passes it over.
_ASCII_LABELS = frozenset(f"""
    unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8
    866 cp866 csibm866 ibm866
    csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 latin2
    csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 latin3
    csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 latin4
    csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5
    iso_8859-5:1988 arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114
    iso-8859-6 iso-8859-6-e iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6
    iso_8859-6:1987 csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126
    iso8859-7 iso88597 iso_8859-7 iso_8859-7:1987 sun_eu_greek csiso88598e csisolatinhebrew
    hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 iso88598 iso_8859-8 iso_8859-8:1988
    visual csiso88598i iso-8859-8-i logical csisolatin6 iso-8859-10 iso-ir-157 iso8859-10
    iso885910 l6 latin6 iso-8859-13 iso8859-13 iso885913 iso-8859-14 iso8859-14 iso885914
    csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9 iso-8859-16
    cskoi8r koi koi8 koi8-r koi8_r koi8-ru koi8-u csmacintosh mac macintosh x-mac-roman
    dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874
    {" ".join(f"cp125{n} windows-125{n} x-cp125{n}" for n in range(9))}
    ansi_x3.4-1968 ascii cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 iso88591
    iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii csisolatin5 iso-8859-9 iso-ir-148
    iso8859-9 iso88599 iso_8859-9 iso_8859-9:1989 l5 latin5 x-mac-cyrillic x-mac-ukrainian
    chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk gb18030
    big5 big5-hkscs cn-big5 csbig5 x-x-big5 cseucpkdfmtjapanese euc-jp x-euc-jp
    csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis
    cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601
    ksc_5601 windows-949 x-user-defined
""".split())


#: ``page_codec``'s answer for a page whose bytes are read as they are (ASCII-compatible).
AS_IS = ""


#: How far into a page a browser looks for ``<meta charset>``.
PRESCAN = 1024


class Undecodable(Exception):
    """A page in an encoding the gateway cannot read as a browser would."""


def _label(value: str) -> str | None:
    """The codec a charset label names, as ``page_codec`` answers; None when a browser
    would not know the label (it then looks further)."""
    label = value.strip().lower()
    if label in _UTF16LE:
        return "utf-16-le"
    if label in _UTF16BE:
        return "utf-16-be"
    if label in _ISO2022JP:
        return "iso2022_jp"
    if label in _REPLACEMENT:
        raise Undecodable(label)
    return AS_IS if label in _ASCII_LABELS else None


def mime_parts(content_type: str) -> tuple[str, dict[str, str]]:
    """A Content-Type's essence (lower case) and parameters, read as the MIME Sniffing
    Standard reads them: ``;`` inside a quoted value separates nothing, a quoted value
    loses its quotes and backslashes, and the first of a name wins."""
    essence, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    pos, size = 0, len(rest)
    while pos < size:
        name_end = pos
        while name_end < size and rest[name_end] not in ";=":
            name_end += 1
        name = rest[pos:name_end].strip(" \t\r\n").lower()
        pos = name_end
        if pos < size and rest[pos] == ";":
            pos += 1
            continue
        pos += 1  # past "="
        if pos < size and rest[pos] == '"':
            pos += 1
            value = []
            while pos < size and rest[pos] != '"':
                if rest[pos] == "\\" and pos + 1 < size:
                    pos += 1
                value.append(rest[pos])
                pos += 1
            text = "".join(value)
            close = rest.find(";", pos)
            pos = size if close < 0 else close + 1
        else:
            close = rest.find(";", pos)
            end = size if close < 0 else close
            text = rest[pos:end].strip(" \t\r\n")
            pos = end + 1
        if name and name not in params:
            params[name] = text
    return essence.strip(" \t\r\n").lower(), params


def _prescan(page: bytes) -> tuple[str, str] | None:
    """The codec and label a ``<meta charset>`` (or ``http-equiv`` Content-Type) in the
    first ``PRESCAN`` bytes names, read with the tokenizer as a browser's prescan reads it."""
    head = page[:PRESCAN]
    if b"charset" not in head.lower():
        return None
    pos = 0
    while True:
        lt = head.find(b"<", pos)
        if lt < 0:
            return None
        kind, pos, tag = token_at(head, lt)
        if kind == UNFINISHED:
            return None
        if kind != START or tag is None or tag.name != b"meta":
            continue
        found = attr_value(tag.attrs, b"charset")
        if not found and attr_value(tag.attrs, b"http-equiv").lower() == "content-type":
            found = mime_parts(";" + attr_value(tag.attrs, b"content"))[1].get("charset", "")
        if found:
            codec = _label(found)
            if codec is None:
                continue
            # A prescan in ASCII cannot have found a UTF-16 page: it is read as UTF-8.
            if codec.startswith("utf-16"):
                return AS_IS, "utf-8"
            return codec, found.strip().lower()


def page_codec(page: bytes, content_type: str | None) -> tuple[str, str]:
    """How a browser decodes ``page``: the codec (``AS_IS`` for encodings that keep ASCII
    markup as ASCII: UTF-8, windows-1252, Shift_JIS...) and the label the gateway then
    sends the page with (pages it decodes go out as UTF-8).

    The byte-order mark wins, then the Content-Type's charset, then ``<meta charset>``;
    UTF-16 markup without a mark or a label is read as UTF-16 too, and a page with
    nothing to say is UTF-8. Raises Undecodable for an encoding a browser replaces whole
    (ISO-2022-KR and the like).
    """
    # All of it is decided by the page's first bytes and the header: the same pages come
    # back again and again, so the answer is remembered for them.
    return _codec_of(page[:PRESCAN], content_type)


@lru_cache(maxsize=1024)
def _codec_of(page: bytes, content_type: str | None) -> tuple[str, str]:
    if page.startswith(b"\xef\xbb\xbf"):
        return AS_IS, "utf-8"
    if page.startswith(b"\xff\xfe"):
        return "utf-16-le", "utf-8"
    if page.startswith(b"\xfe\xff"):
        return "utf-16-be", "utf-8"
    param = mime_parts(content_type)[1].get("charset") if content_type else None
    codec = _label(param) if param is not None else None
    if codec is not None:
        assert param is not None
        return codec, "utf-8" if codec != AS_IS else param.strip().lower()
    found = _prescan(page)
    if found is not None:
        return found if found[0] == AS_IS else (found[0], "utf-8")
    sample = page[:64]
    # ASCII markup with a NUL in every other byte: UTF-16 without its mark.
    if len(sample) >= 16 and len(sample) % 2 == 0 and sample.count(0) == len(sample) // 2:
        if not any(sample[1::2]):
            return "utf-16-le", "utf-8"
        if not any(sample[0::2]):
            return "utf-16-be", "utf-8"
    return AS_IS, "utf-8"


def as_utf8(page: bytes, content_type: str | None) -> tuple[bytes, str]:
    """The page in bytes the gateway's tokenizer reads as a browser would, and the
    Content-Type to send it with, whose charset says how it was read (so no later
    ``<meta charset>`` or guess of the browser's can read it otherwise).

    A page in an encoding that does not keep ASCII markup as ASCII is decoded (errors
    replaced, as a browser does) and sent as UTF-8. Raises Undecodable for one that
    cannot be read, and for one read as it is that holds NUL or escape bytes (UTF-16 or
    ISO-2022-JP under another label: a browser's reading of it cannot be foreseen).
    """
    codec, retyped = _reading(page[:PRESCAN], content_type)
    if codec == AS_IS:
        if b"\x00" in page or b"\x1b" in page:
            raise Undecodable("control bytes in a page read as ASCII")
        return page, retyped
    return page.decode(codec, errors="replace").removeprefix("\ufeff").encode("utf-8"), retyped


def is_html(content_type: str | None) -> bool:
    """Whether a Content-Type is an HTML page (``text/html`` or XHTML)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime in ("text/html", "application/xhtml+xml")


@lru_cache(maxsize=1024)
def _reading(head: bytes, content_type: str | None) -> tuple[str, str]:
    """The codec of a page that begins with ``head``, and the Content-Type it goes out with
    (remembered: the same pages and headers come back again and again)."""
    codec, label = _codec_of(head, content_type)
    essence = mime_parts(content_type)[0] if content_type else ""
    return codec, f"{essence or 'text/html'}; charset={label}"
