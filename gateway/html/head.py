"""A page's head: its metadata and where the client script goes; pure functions over bytes.

The head scanner reads the page with the project's one tokenizer (``html.tokens``), the
way a browser does: comments and the contents of raw-text elements (script, style,
title, textarea...) are skipped, so text that merely looks like a tag there neither
declares metadata nor ends the head. A head the scan cannot finish (the page ends inside
a tag) is reported as such, and a page judged by its metadata is then refused.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.html.tokens import (
    END,
    RAW_TEXT,
    START,
    UNFINISHED,
    Tag,
    attr_value,
    raw_end,
    script_end,
    token_at,
)


@dataclass(frozen=True)
class PageMeta:
    """What a page declares about itself: public, or the groups that may read it.

    ``unreadable``: the head could not be read to its end, so what it declares is unknown.
    """

    public: bool = False
    groups: tuple[str, ...] | None = None
    unreadable: bool = False

    @property
    def declared(self) -> bool:
        """Whether the page said anything at all."""
        return self.public or self.groups is not None


@dataclass(frozen=True)
class _Head:
    metas: tuple[dict[bytes, list[bytes]], ...]
    end: int | None  # offset of </head> or <body>; None while the head is still open
    closed_by_head: bool  # True for an explicit </head>, False for <body>
    finished: bool  # False when the buffer ends inside a tag


class UnfinishedTag(Exception):
    """The buffer ends inside a tag: what follows cannot be read."""


def _tags(buffer: bytes, pos: int = 0) -> Iterator[tuple[int, int, bool, Tag]]:
    """(offset, end, closing, tag) in document order from ``pos``, skipping comments and
    raw text; ends early, with ``UnfinishedTag`` raised, where the buffer ends inside a
    tag."""
    while True:
        lt = buffer.find(b"<", pos)
        if lt < 0:
            return
        kind, pos, tag = token_at(buffer, lt)
        if kind == UNFINISHED:
            raise UnfinishedTag
        if tag is None:
            continue
        yield lt, pos, kind == END, tag
        if kind == START and tag.name in RAW_TEXT:
            pos = script_end(buffer, pos) if tag.name == b"script" else \
                raw_end(buffer, tag.name, pos)


def _scan_head(buffer: bytes) -> _Head:
    metas: list[dict[bytes, list[bytes]]] = []
    try:
        for start, _, closing, tag in _tags(buffer):
            if closing and tag.name == b"head":
                return _Head(tuple(metas), start, True, True)
            if not closing and tag.name == b"body":
                return _Head(tuple(metas), start, False, True)
            if not closing and tag.name == b"meta":
                metas.append(tag.attrs)
    except UnfinishedTag:
        return _Head(tuple(metas), None, False, False)
    return _Head(tuple(metas), None, False, True)



def read_page_meta(head: bytes) -> PageMeta:
    """The ``gateway:public`` / ``gateway:groups`` metas of a page's head (first of each wins).

    An empty ``gateway:groups`` content admits nobody, like ``groups: []`` in a rule. A
    head that ends inside a tag is ``unreadable``.
    """
    public = False
    groups: tuple[str, ...] | None = None
    seen_public = False
    scanned = _scan_head(head)
    metas = scanned.metas
    unreadable = scanned.end is None and not scanned.finished
    if scanned.end is not None and b"gateway" in head[scanned.end:].lower():
        # A browser may not end the head where the scan did (</head> inside a noscript or
        # a template, a meta after </head> that it moves into the head): a page's groups
        # count wherever they stand, so reading on can only close it further.
        later, finished = _metas(head, scanned.end)
        metas += tuple(attrs for attrs in later
                       if attr_value(attrs, b"name").lower() == "gateway:groups")
        unreadable = not finished
    for attrs in metas:
        name = attr_value(attrs, b"name").lower()
        if name == "gateway:public" and not seen_public:
            seen_public = True
            public = attr_value(attrs, b"content").lower() == "true"
        elif name == "gateway:groups" and groups is None:
            parts = (part.strip() for part in attr_value(attrs, b"content").split(","))
            groups = tuple(dict.fromkeys(part for part in parts if part))
    return PageMeta(public=public, groups=groups, unreadable=unreadable)


def _metas(page: bytes, start: int) -> tuple[tuple[dict[bytes, list[bytes]], ...], bool]:
    """The attributes of every meta from ``start`` on, and whether the page was read to its
    end (False: it ends inside a tag)."""
    found: list[dict[bytes, list[bytes]]] = []
    try:
        for _, _, closing, tag in _tags(page, start):
            if not closing and tag.name == b"meta":
                found.append(tag.attrs)
    except UnfinishedTag:
        return tuple(found), False
    return tuple(found), True


def head_complete(buffer: bytes) -> bool:
    """Whether ``buffer`` already holds the end of the head (``</head>`` or ``<body>``)."""
    return _scan_head(buffer).end is not None


def script_offset(page: bytes, tag: bytes) -> int | None:
    """Where ``tag`` goes in ``page``: before ``</head>``, else before ``</body>``, else at
    the end; None when the page already loads a script with the same ``src``."""
    src = _src_of(tag)
    # Most pages never mention the script, so the full scan is only for those that might.
    if src and (src.encode() in page or html.escape(src).encode() in page) \
            and own_scripts(page, tag):
        return None
    head = _scan_head(page)
    if head.end is not None and head.closed_by_head:
        return head.end
    found = page.lower().rfind(b"</body")
    return found if found >= 0 else len(page)


def _src_of(tag: bytes) -> str:
    return next((attr_value(t.attrs, b"src") for _, _, _, t in _tags(tag)), "")


def own_scripts(page: bytes, tag: bytes) -> list[tuple[int, int]]:
    """Where the page's own start tags that load the script of ``tag`` stand: (offset,
    end) of each (none when the page cannot be read to its end)."""
    src = _src_of(tag)
    try:
        return [(start, end) for start, end, closing, found in _tags(page)
                if found.name == b"script" and not closing
                and attr_value(found.attrs, b"src") == src]
    except UnfinishedTag:
        return []


def insert_at(page: bytes, tag: bytes, at: int | None) -> bytes:
    """``page`` with ``tag`` inserted at ``at`` (as ``script_offset`` tells; None: as is)."""
    return page if at is None else page[:at] + tag + page[at:]


def script_tag(src: str, *, compat: str | None = None) -> bytes:
    """``<script src="..." defer></script>``; ``compat`` adds ``data-compat`` for the client."""
    extra = f' data-compat="{html.escape(compat, quote=True)}"' if compat else ""
    return f'<script src="{html.escape(src, quote=True)}"{extra} defer></script>'.encode()

