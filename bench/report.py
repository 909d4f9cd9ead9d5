"""Turning the measurements into ratios against the targets, a printed table, and JSON."""

from __future__ import annotations

import json
import operator
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

# "x/y": requests/s of row x over row y, with the target (None: reported only).
RPS_RATIOS: tuple[tuple[str, str | None, float | None], ...] = (
    ("g/e", ">=", 1.4),
    ("g/d", ">=", 2.0),
    ("g/c", ">=", 0.8),
    ("g/b", None, None),
    ("h/g", ">=", 0.8),
)
# The same on the Material for MkDocs page (the material part).
MATERIAL_RATIOS: tuple[tuple[str, str | None, float | None], ...] = (
    ("j/k", ">=", 0.7),
    ("k/c", ">=", 1.0),
    ("l/c", ">=", 0.8),
    ("m/j", None, None),
    # The floors: serving alone, on a lean server and on aiohttp's, and the gateway's
    # work on top of aiohttp's.
    ("n/c", None, None),
    ("o/c", None, None),
    ("k/o", None, None),
)
# The same rows' CPU time per request, "x/y" as y's over x's (so that, as for requests/s,
# above 1 means row x does better): what the proxies themselves spend, whatever else the
# machine does meanwhile. Reported beside the requests/s ratios, which the targets hold.
CPU_RATIOS: tuple[str, ...] = ("k/c", "l/c", "j/k")
DOWNLOAD_SHARE = 0.7
RSS_GROWTH_MB = 30.0
RSS_PER_WORKER_MB = 80.0
# Row j's sessions run: the page cache (access.page_cache_mb, 32 MB) and little else.
PAGE_CACHE_GROWTH_MB = 40.0
GZIP_SHARE = 1.10
# The rows whose sessions run is held to the memory per worker (j: to its growth).
PER_WORKER_ROWS = ("g", "h", "i")
_COMPARE: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<": operator.lt,
                                                       "<=": operator.le}


def target(name: str, what: str, value: float | None, op: str | None,
           limit: float | None) -> dict[str, Any]:
    """One line of the scorecard; ``met`` is None when there is no target or no value."""
    met = None
    if value is not None and op is not None and limit is not None:
        met = _COMPARE[op](value, limit)
    return {"name": name, "what": what, "value": value,
            "target": f"{op} {limit:g}" if op and limit is not None else None, "met": met}


def _paired(results: dict[str, Any], top: str, bottom: str, part: str,
            field: str) -> tuple[float | None, list[float]]:
    """``field`` (rps, cpu_us) of row ``top`` over row ``bottom``: the median of the
    rounds' own ratios, each of two rows measured in the same round, when both rows have
    every round; else the ratio of the two rows' medians. Also each round's ratio."""
    upper, lower = results[part].get(top), results[part].get(bottom)
    if not upper or not lower:
        return None, []
    tops, bottoms = upper.get(f"rounds_{field}") or [], lower.get(f"rounds_{field}") or []
    if len(tops) == len(bottoms) and tops and all(tops) and all(bottoms):
        pairs = list(zip(tops, bottoms, strict=True))
        return (round(statistics.median(t / b for t, b in pairs), 2),
                [round(t / b, 2) for t, b in pairs])
    mine, theirs = upper.get(field), lower.get(field)
    return (round(float(mine) / float(theirs), 2) if mine and theirs else None), []


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratios the issue asks for, each marked met, not met, or not measured."""
    out = []
    for part, table, what in (("main", RPS_RATIOS, "requests/s on the 10 KB page"),
                              ("material", MATERIAL_RATIOS, "requests/s on the Material page")):
        for name, op, limit in table:
            value, each = _paired(results, name[0], name[2], part, "rps")
            out.append({**target(name, what, value, op, limit), "rounds": each})
    for name in CPU_RATIOS:
        value, each = _paired(results, name[2], name[0], "material", "cpu_us")
        out.append({**target(f"{name} CPU", f"CPU per request on the Material page: "
                             f"{name[2]}'s over {name[0]}'s", value, None, None),
                    "rounds": each})
    downloads = results["download"]
    if "g" in downloads and "b" in downloads and downloads["b"]["mb_per_s"]:
        share = round(downloads["g"]["mb_per_s"] / downloads["b"]["mb_per_s"], 2)
    else:
        share = None
    out.append(target("download g/b", "50 MB download throughput", share, ">=", DOWNLOAD_SHARE))
    growth = downloads.get("g", {}).get("rss_growth_mb")
    out.append(target("download RSS growth (g)", "gateway peak RSS growth, MB", growth, "<",
                      RSS_GROWTH_MB))
    wire = results.get("wire")
    out.append(target("gzip bytes j/a", "the marked page with gzip: gateway bytes / nginx's",
                      wire["ratio"] if wire else None, "<=", GZIP_SHARE))
    revisit = wire["revisit_status"] if wire else None
    out.append({"name": "revisit 304 (j)", "what": "If-None-Match with the ETag it got",
                "value": None if wire is None else "yes" if revisit == 304 else f"no ({revisit})",
                "target": "yes", "met": None if wire is None else revisit == 304})
    cdn = wire.get("cdn") if wire else None
    out.append({"name": "CDN: anonymous page (j)",
                "what": "a page rewritten for readers, without a session: Vary: Cookie",
                "value": None if cdn is None else "yes" if cdn["page_ok"] else
                f"no (Vary {cdn['page_vary']!r}, Cache-Control {cdn['page_cache_control']!r})",
                "target": "yes", "met": None if cdn is None else cdn["page_ok"]})
    out.append({"name": "CDN: public asset (j)",
                "what": "cacheable: no Vary: Cookie, not private, validators kept",
                "value": None if cdn is None else "yes" if cdn["asset_ok"] else
                f"no (Vary {cdn['asset_vary']!r}, Cache-Control {cdn['asset_cache_control']!r})",
                "target": "yes", "met": None if cdn is None else cdn["asset_ok"]})
    for row, entry in sorted(results["sessions"].items()):
        if row in PER_WORKER_ROWS:
            out.append(target(f"RSS per worker ({row})",
                              f"MB after {entry['requests']} requests over {entry['sessions']} "
                              "sessions", entry["rss_per_worker_mb"], "<", RSS_PER_WORKER_MB))
        else:
            out.append(target(f"RSS growth ({row})",
                              f"MB over {entry['requests']} requests, {entry['sessions']} "
                              f"sessions in {entry['group_sets']} group sets",
                              entry["rss_growth_mb"], "<", PAGE_CACHE_GROWTH_MB))
    return out


def error_total(results: dict[str, Any]) -> int:
    """Failed requests plus failed steps, over the whole run."""
    count = len(results["errors"])
    for part in ("main", "asset", "material", "download", "sessions"):
        count += sum(int(entry.get("error_count", 0)) for entry in results[part].values())
    return count


def document(results: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The results file: settings and machine first, then every measurement and the ratios."""
    return {
        **meta,
        "main": [results["main"][row] for row in sorted(results["main"])],
        "asset": [results["asset"][row] for row in sorted(results["asset"])],
        "material": [results["material"][row] for row in sorted(results["material"])],
        "download": [results["download"][row] for row in sorted(results["download"])],
        "wire": results.get("wire"),
        "sessions": [results["sessions"][row] for row in sorted(results["sessions"])],
        "ratios": ratios(results),
        "errors": results["errors"],
        "ok": error_total(results) == 0,
    }


def write(doc: dict[str, Any], path: Path) -> None:
    """Write the results file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _cell(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """Text columns: the first two left-aligned, numbers right-aligned."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(widths[i]) if i <= 1 else c.rjust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    head = line(header)
    return [title, head, "-" * len(head), *(line(r) for r in rows), ""]


def render(doc: dict[str, Any]) -> str:
    """The human-readable report: the tables, then the scorecard."""
    lines: list[str] = []
    load_header = ["row", "what", "req/s", "p50 ms", "p99 ms", "CPU us/req", "peak RSS MB",
                   "errors"]
    for part, title in (("main", "10 KB HTML page"), ("asset", "200 KB asset"),
                        ("material", "Material for MkDocs page (a, c, k, l: unmarked; j, m: "
                                     "marked, rewritten)")):
        rows = [[e["id"], e["label"], _cell(e["rps"]), _cell(e["p50_ms"], 2),
                 _cell(e["p99_ms"], 2), _cell(e.get("cpu_us"), 1), _cell(e["peak_rss_mb"], 1),
                 str(e["error_count"])]
                for e in doc[part]]
        if rows:
            lines += _table(title, load_header, rows)
    rows = [[e["id"], e["label"], _cell(e["mb_per_s"], 1), _cell(e["rss_before_mb"], 1),
             _cell(e["rss_growth_mb"], 1)] for e in doc["download"]]
    if rows:
        lines += _table("large download (MB/s = 10^6 bytes/s, median of runs)",
                        ["row", "what", "MB/s", "RSS MB", "RSS growth MB"], rows)
    wire = doc.get("wire")
    if wire:
        lines += _table("bytes on the wire (the marked page, Accept-Encoding: gzip)",
                        ["from", "encoding", "bytes", "page bytes"],
                        [["gateway (j)", wire["gateway_encoding"] or "none",
                          str(wire["gateway_bytes"]), str(wire["gateway_page_bytes"])],
                         ["nginx (a)", wire["nginx_encoding"] or "none",
                          str(wire["nginx_bytes"]), str(wire["nginx_page_bytes"])]])
    rows = [[e["id"], e["label"], str(e["requests"]), str(e["sessions"]),
             " ".join(_cell(x, 1) for x in e["rss_before_mb"]),
             " ".join(_cell(x, 1) for x in e["rss_after_mb"]), _cell(e.get("rss_growth_mb"), 1),
             str(e["error_count"])]
            for e in doc["sessions"]]
    if rows:
        lines += _table("many sessions (RSS of each worker, MB)",
                        ["row", "what", "requests", "sessions", "before", "after", "growth",
                         "errors"], rows)
    rows = [[r["name"], r["what"], _cell(r["value"], 2), r["target"] or "-",
             {True: "met", False: "NOT MET", None: "-"}[r["met"]],
             " ".join(_cell(x, 2) for x in r.get("rounds") or [])] for r in doc["ratios"]]
    lines += _table("ratios and targets", ["ratio", "of", "value", "target", "",
                                           "by round"], rows)
    for error in doc["errors"]:
        lines.append(f"error in {','.join(error['rows'])}: {error['error']}")
    return "\n".join(lines).rstrip() + "\n"
