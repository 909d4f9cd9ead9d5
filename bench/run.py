"""Side-by-side benchmark: nginx, Caddy, a bare aiohttp proxy and the gateway, one command.

    python3 bench/run.py                  # the full run (about ten minutes)
    python3 bench/run.py --quick          # a few hundred requests per row: does it all work?
    python3 bench/run.py --only a,b,g     # some rows; parts: main, asset, material,
                                          # download, wire, sessions
    python3 bench/run.py --sessions       # only the many-sessions memory run

Prints a table and the ratios against their targets, and writes everything as JSON
(default bench/results/latest.json). Exit status 1 when any request or step failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository importable (bench.* and gateway.*).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import build, report, tools
from bench.harness import PARTS, ROWS, Bench, Settings
from bench.procs import BenchError

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=(__doc__ or "").split("\n\n")[0],
        epilog="rows: " + "; ".join(f"{k}: {v}" for k, v in ROWS.items()))
    parser.add_argument("--duration", type=float, default=10.0, metavar="SECONDS",
                        help="length of each measured run (default: 10)")
    parser.add_argument("--warmup", type=float, default=2.0, metavar="SECONDS",
                        help="unrecorded warm-up before each run (default: 2)")
    parser.add_argument("--connections", type=int, default=32,
                        help="wrk connections (default: 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default: 1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every row this many times, interleaved; report the "
                             "median (use 3 on a busy machine)")
    parser.add_argument("--quick", action="store_true",
                        help="a few hundred requests per row, a 5 MB download, 200 sessions")
    parser.add_argument("--only", default="", metavar="LIST",
                        help="comma-separated rows (a-o) and/or parts "
                             f"({', '.join(PARTS)}); default: everything")
    parser.add_argument("--sessions", action="store_true",
                        help="only the many-sessions run (same as --only sessions)")
    parser.add_argument("--session-count", type=int, default=None, metavar="N",
                        help="distinct sessions in the sessions run (default: 10000)")
    parser.add_argument("--session-requests", type=int, default=None, metavar="N",
                        help="requests in the sessions run (default: 100000)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                        help="where to write the results (default: bench/results/latest.json)")
    parser.add_argument("--no-build", action="store_true",
                        help="run the gateway from the source tree as it is, instead of the "
                             "compiled build (DOCS_GATEWAY_COMPILE=1) the Docker image ships")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (configs, server logs) and print it")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the command line; BenchError for a bad ``--only``."""
    rows: list[str] = []
    parts: list[str] = []
    for token in (t.strip().lower() for t in args.only.split(",")):
        if not token:
            continue
        if token in ROWS:
            rows.append(token)
        elif token in PARTS:
            parts.append(token)
        else:
            raise BenchError(f"--only: unknown row or part {token!r}; rows are a-o, parts are "
                             f"{', '.join(PARTS)}")
    if args.sessions:
        parts = ["sessions"]
    base = Settings(duration=args.duration, warmup=args.warmup, connections=args.connections,
                    threads=args.threads, rounds=max(1, args.rounds),
                    rows=tuple(rows) or tuple(ROWS), parts=tuple(parts) or PARTS)
    if args.quick:
        base = Settings(**{**asdict(base), "budget": 300, "warmup_budget": 50, "warmup": 0.0,
                           "downloads": 1, "download_bytes": 5 * 1024 * 1024,
                           "session_count": 200, "session_requests": 2000,
                           "cold_pool": 1000})
    changes = {}
    if args.session_count is not None:
        changes["session_count"] = args.session_count
    if args.session_requests is not None:
        changes["session_requests"] = args.session_requests
    return Settings(**{**asdict(base), **changes}) if changes else base


def needed_programs(settings: Settings) -> list[str]:
    """The external programs this selection of rows uses."""
    programs = ["nginx", "wrk", "curl"]
    if any(row in settings.rows for row in "cd"):
        programs.append("caddy")
    if "h" in settings.rows:
        programs.append("redis-server")
    return programs


def wants_gateway(settings: Settings) -> bool:
    """Whether any selected row runs the compiled gateway (d, f to k, m; l never does)."""
    return any(row in settings.rows for row in "dfghijkm")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every request and step succeeded."""
    args = parse_args(argv)
    try:
        settings = settings_from(args)
        tools.ensure(needed_programs(settings))
        tree = None if args.no_build or not wants_gateway(settings) else build.compiled_tree()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    started = time.time()
    meta = {"version": 1, "started": _iso(started), "settings": asdict(settings),
            "quick": args.quick, "machine": tools.machine(), "versions": tools.versions(),
            "source": tools.source_state(Path(__file__).resolve().parent.parent),
            "gateway_build": "source tree" if tree is None else "compiled (mypyc)"}
    folder = tempfile.mkdtemp(prefix="docs-gateway-bench-")
    work = Path(folder)
    bench: Bench | None = None
    try:
        bench = Bench(settings, work, tree)
        results = bench.run()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    finally:
        if bench is not None:
            bench.close()
        if args.keep:
            print(f"bench: kept {work}", file=sys.stderr)
        else:
            _remove(work)
    meta["finished"] = _iso(time.time())
    meta["load_average_after"] = tools.machine()["load_average"]
    doc = report.document(results, meta)
    report.write(doc, args.json)
    print(report.render(doc), end="")
    print(f"results: {args.json}")
    return 0 if doc["ok"] else 1


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
