"""Sphinx's ``objects.inv``: every documented object, label, term and page of a build, with
the page it is on (intersphinx reads it). Filtered per reader like the search index: what
is on a page the reader may not open goes."""

from __future__ import annotations

import re
import zlib

from gateway.indexes.formats import BARE, HIDDEN, Judge, Unreadable, site_path

_VERSION_2 = b"# Sphinx inventory version 2"
_HEADER_LINES = 4
# name, domain:role, priority, location, display name (as Sphinx reads a line).
_LINE = re.compile(r"(.+?)\s+(\S+)\s+(-?\d+)\s+?(\S*)\s+(.*)")


async def filter_inventory(body: bytes, judge: Judge, base: str, limit: int) -> bytes:
    """An ``objects.inv`` with only the entries on pages the judge shows. A page whose
    gated elements the reader may not see keeps its own entry (its name and title) and
    loses the rest, which may be inside them. Anything but a version 2 inventory, or one
    that unpacks past ``limit``, is refused."""
    lines = body.split(b"\n", _HEADER_LINES)
    if len(lines) <= _HEADER_LINES or lines[0].rstrip() != _VERSION_2 or not all(
            line.startswith(b"#") for line in lines[1:_HEADER_LINES]):
        raise Unreadable("the docs server sent an objects.inv that is not a Sphinx "
                         "inventory of version 2")
    unpack = zlib.decompressobj()
    try:
        text = unpack.decompress(lines[_HEADER_LINES], limit)
        if unpack.unconsumed_tail or not unpack.eof:
            raise Unreadable("the docs server sent an objects.inv that is cut short or "
                             "too large to filter")
        entries_text = text.decode("utf-8")
    except (zlib.error, UnicodeDecodeError):
        raise Unreadable("the docs server sent an objects.inv that does not unpack") from None
    entries: list[tuple[str, str, str]] = []
    for line in entries_text.splitlines():
        found = _LINE.fullmatch(line.rstrip())
        if found is None:
            continue  # not read as Sphinx reads it: nothing to judge it by, so it goes
        _name, role, _priority, location, _title = found.groups()
        entries.append((line, role, location))
    verdicts = await judge.verdicts([[site_path(location.split("#", 1)[0], base)]
                                     for _line, _role, location in entries], objects=True)
    kept = [line for (line, role, location), verdict in zip(entries, verdicts, strict=True)
            if verdict != HIDDEN and (verdict != BARE or role == "std:doc")]
    packed = zlib.compress("".join(f"{line}\n" for line in kept).encode("utf-8"), 9)
    return b"\n".join(lines[:_HEADER_LINES]) + b"\n" + packed
