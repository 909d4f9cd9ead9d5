"""The gateway's gating rewriter beside Lexbor (selectolax), a conformant HTML5 parser in C:
speed on a real Material for MkDocs page, and agreement with Chromium on malformed pages.

    pip install selectolax playwright      # apt-get install chromium
    python3 bench/parsers.py [--pages 2000] [--runs 200] [--no-build]

Speed: milliseconds to take the gated element out of the benchmark's marked Material page
(``bench/material.py``, about 23 KB) and fill its field, for an anonymous reader and for
one outside the element's group: the gateway's ``gating.rewrite`` (the compiled build
unless ``--no-build``) against Lexbor's parse, removal of the gated elements and
serialisation of the document.

Agreement: the tests' tricky pages plus ``--pages`` random ones, made of tags a browser
reads in surprising ways (tables, select, foreign content, template, noscript, raw text,
unclosed and misnested elements) with marked text between them. Chromium reads each page
with scripting off (DOMParser) and on (a loaded page), and says which marked text it puts
inside a gated element. A parser *leaks* on a page when text Chromium gates is still in
its output for an anonymous reader, and *over-removes* when text Chromium shows to
everyone is gone from it. A parser the gateway could use must leak on no page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import build, material
from bench.procs import BenchError
from tests.html_corpus import DOM_GATED, MARK, TRICKY, VISIBLE, random_pages

CHROMIUM = Path("/usr/bin/chromium")
def lexbor_rewrite(page: bytes, groups: tuple[str, ...] | None,
                   fields: dict[str, str]) -> bytes:
    """The page as Lexbor reads it, without the elements ``groups`` (None: anonymous) may
    not see and with its fields filled, serialised again."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(page)
    for node in tree.css("[data-gateway-groups],[data-gateway-authenticated],"
                         "[data-gateway-anonymous]"):
        attrs = node.attributes
        visible = True
        if "data-gateway-groups" in attrs:
            wanted = {g.strip() for g in (attrs["data-gateway-groups"] or "").split(",")}
            visible = groups is not None and bool(wanted & set(groups))
        if "data-gateway-authenticated" in attrs:
            visible = visible and groups is not None
        if "data-gateway-anonymous" in attrs:
            visible = visible and groups is None
        if not visible:
            node.decompose()
    for node in tree.css("[data-gateway-field]"):
        path = node.attributes.get("data-gateway-field") or ""
        if path in fields:
            node.inner_html = fields[path].replace("&", "&amp;").replace("<", "&lt;")
    return (tree.html or "").encode()


def per_page_ms(work: Callable[[], object], runs: int) -> float:
    """Median milliseconds of ``runs`` calls."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def speed(page: bytes, runs: int) -> dict[str, dict[str, float]]:
    """Milliseconds per page for each parser, anonymous and a reader outside the group."""
    from gateway.html.gating import rewrite
    from gateway.user import User

    reader = User(sub="bob", expires_at=time.time() + 3600, groups=("beta",),
                  content={"firstName": "Bob"})
    fields = {"content.firstName": "Bob"}
    return {
        "gateway": {"anonymous": per_page_ms(lambda: rewrite(page, None), runs),
                    "reader": per_page_ms(lambda: rewrite(page, reader), runs)},
        "lexbor": {"anonymous": per_page_ms(lambda: lexbor_rewrite(page, None, {}), runs),
                   "reader": per_page_ms(lambda: lexbor_rewrite(page, ("beta",), fields),
                                         runs)},
    }


async def chromium_views(pages: list[str]) -> list[tuple[set[str], set[str]]]:
    """For each page: the marked text Chromium gates (scripting off or on), and the marked
    text anywhere in its document."""
    from playwright.async_api import async_playwright

    from tests.helpers import CHROMIUM_ARGS

    views = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        try:
            tab = await browser.new_page()
            for doc in pages:
                gated = set(await tab.evaluate(DOM_GATED, doc))
                await tab.set_content(doc)
                gated |= set(await tab.evaluate(DOM_GATED, None))
                views.append((gated, set(await tab.evaluate(VISIBLE, doc))))
        finally:
            await browser.close()
    return views


def agreement(pages: list[str], views: list[tuple[set[str], set[str]]]
              ) -> dict[str, dict[str, Any]]:
    """Pages on which each parser leaks or over-removes, for an anonymous reader."""
    from gateway.html.gating import rewrite

    parsers: dict[str, Callable[[bytes], bytes]] = {
        "gateway": lambda page: rewrite(page, None),
        "lexbor": lambda page: lexbor_rewrite(page, None, {}),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, parse in parsers.items():
        leaks: list[str] = []
        over = 0
        for doc, (gated, seen) in zip(pages, views, strict=True):
            result = parse(doc.encode()).decode("utf-8", "replace")
            left = set(MARK.findall(result))
            if gated & left:
                leaks.append(doc)
            if (seen - gated) - left:
                over += 1
        out[name] = {"pages": len(pages), "leaking": len(leaks), "over_removing": over,
                     "first_leaks": leaks[:3]}
    return out


def main() -> int:
    """Measure and print both tables; JSON with ``--json``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=2000,
                        help="random malformed pages beside the tests' tricky ones")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per parser")
    parser.add_argument("--no-build", action="store_true",
                        help="the gateway from the source tree, not the compiled build")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args()
    try:
        import selectolax  # noqa: F401
    except ImportError:
        print("parsers: selectolax is not installed (pip install selectolax)", file=sys.stderr)
        return 2
    if not CHROMIUM.exists():
        print(f"parsers: Chromium is not at {CHROMIUM} (apt-get install chromium)",
              file=sys.stderr)
        return 2
    try:
        tree = build.REPO if args.no_build else build.compiled_tree()
    except BenchError as exc:
        print(f"parsers: {exc}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(tree))
    from gateway.html import gating

    with tempfile.TemporaryDirectory(prefix="docs-gateway-parsers-") as work:
        site = material.build(Path(work) / "src", Path(work) / "site")
        page = (site.root.parent / material.WORKSPACE.strip("/") / "index.html").read_bytes()
    timing = speed(page, args.runs)

    pages = [*TRICKY, *random_pages(args.pages)]
    views = asyncio.run(chromium_views(pages))
    agreed = agreement(pages, views)
    build_name = "plain" if args.no_build else "compiled"
    print(f"gateway: {Path(gating.__file__).name} ({build_name}); page: {len(page):,} bytes")
    print(f"{'parser':8}  {'ms anonymous':>12}  {'ms reader':>9}  {'pages':>5}  "
          f"{'leaking':>7}  {'over-removing':>13}")
    for name in ("gateway", "lexbor"):
        row = agreed[name]
        print(f"{name:8}  {timing[name]['anonymous']:12.3f}  {timing[name]['reader']:9.3f}  "
              f"{row['pages']:5}  {row['leaking']:7}  {row['over_removing']:13}")
    for name in ("gateway", "lexbor"):
        for doc in agreed[name]["first_leaks"]:
            print(f"  {name} leaks on: {doc[:140]!r}")
    if args.json is not None:
        args.json.write_text(json.dumps({"build": build_name, "page_bytes": len(page),
                                         "speed_ms": timing, "agreement": agreed}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
