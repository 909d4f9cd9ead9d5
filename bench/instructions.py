"""CPU instructions per request for the Python rows, counted by callgrind.

    apt-get install valgrind
    python3 bench/instructions.py [--rows e,f,g,h,j,k] [--duration 8] [--no-build]

Requests per second on a shared machine move by 15% from run to run; the instructions a
server executes per request move by about 2%, so this is the figure to compare commits
with. Each row's server runs under ``valgrind --tool=callgrind`` (about 50 times slower),
is warmed up, has its counters zeroed, and serves ``wrk -c4`` for the given time; the
count covers the server process only (its user-space instructions, not the kernel's).
The ratios are speed ratios like the benchmark's, taken from the inverse (fewer
instructions is faster): g/e here is e's count over g's, what g/e >= 1.4 asks of the
gateway's CPU alone. Like the benchmark, it measures the compiled build unless
``--no-build`` asks for the source tree as it is.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import build, configs, cookies, load, material
from bench.procs import BenchError, Server
from bench.systems import Systems

ROWS = ("e", "f", "g", "h", "j", "k")
# The rows on the Material for MkDocs page (built once when one of them is asked for).
MATERIAL = ("j", "k")


#: A function's self cost in ``callgrind_annotate``'s list: count, share, file:function.
_LISTED = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*:(\S+)")
_COPIES = re.compile(r"mem(cpy|move|cmp|set)")


def copies(annotated: str) -> int:
    """The instructions of memcpy, memmove, memcmp and memset in ``callgrind_annotate``'s
    list of functions by self cost. Valgrind counts a ``rep movsb`` once a byte, so a copy
    of a page weighs as many instructions as it has bytes, where it takes the CPU about a
    microsecond: comparing two versions, the count without them is the one to trust."""
    total = 0
    for line in annotated.splitlines():
        listed = _LISTED.match(line)
        if listed and _COPIES.search(listed.group(2)):
            total += int(listed.group(1).replace(",", ""))
    return total


def count_instructions(server: Server, url: str, headers: dict[str, str], work: Path,
                       duration: float) -> tuple[int, int, int]:
    """(instructions, of which copies, requests) of one measured wrk run against a
    callgrind'ed server."""
    control = shutil.which("callgrind_control") or "callgrind_control"
    load.run_wrk(url, work=work, duration=3, connections=4, threads=1, headers=headers)
    subprocess.run([control, "--zero", str(server.pid)], check=True, capture_output=True)
    result = load.run_wrk(url, work=work, duration=duration, connections=4, threads=1,
                          headers=headers)
    before = set(work.glob("callgrind.*"))
    subprocess.run([control, "--dump", str(server.pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while not (dumps := set(work.glob("callgrind.*")) - before):
        if time.monotonic() > deadline:
            raise BenchError("callgrind wrote no profile")
        time.sleep(0.2)
    dump = max(dumps, key=lambda p: p.stat().st_mtime)
    text = dump.read_text(errors="replace")
    total = next(int(line.split()[1]) for line in text.splitlines()
                 if line.startswith(("summary:", "totals:")))
    annotate = shutil.which("callgrind_annotate") or "callgrind_annotate"
    listed = subprocess.run([annotate, "--threshold=100", "--auto=no", str(dump)],
                            check=True, capture_output=True, text=True).stdout
    return total, copies(listed), result.requests


def measure(rows: tuple[str, ...], duration: float,
            gateway_tree: Path = build.REPO) -> dict[str, dict[str, float]]:
    """Instructions per request for each row."""
    work = Path(tempfile.mkdtemp(prefix="docs-gateway-instructions-"))
    wrap = ("valgrind", "--tool=callgrind", "--dump-instr=no",
            f"--callgrind-out-file={work}/callgrind.%p")
    systems = Systems(work, configs.write_site(work / "site", 1024 * 1024), wrap=wrap,
                      start_timeout=300, gateway_tree=gateway_tree)
    out: dict[str, dict[str, float]] = {}
    try:
        systems.start_origin()
        if any(row in MATERIAL for row in rows):
            systems.material = material.build(work / "material-src", systems.site.root)
        for row in rows:
            if row in MATERIAL:
                starter = {"j": systems.start_personal, "k": systems.start_unfiltered}[row]
                target = starter()[0]
                assert target.material is not None
                server = systems.servers[-1]
                headers, page = target.headers, target.material.path
            elif row == "e":
                server, headers, page = systems.bare_proxy(), {}, configs.PAGE
            else:
                setup_row = "g" if row == "f" else row
                server, config, _extra = systems.gateway_with_store(f"gateway-{row}", setup_row)
                headers = {} if row == "f" else {
                    "Cookie": cookies.cookie_headers(config, 1)[0]}
                page = configs.PUBLIC_PAGE if row == "f" else configs.PAGE
            url = f"http://127.0.0.1:{server.ready_port}{page}"
            total, copied, requests = count_instructions(server, url, headers, work, duration)
            out[row] = {"instructions_per_request": round(total / requests),
                        "without_copies_per_request": round((total - copied) / requests),
                        "requests": requests}
            print(f"{row}  {total / requests / 1000:8.1f}k instructions/request, "
                  f"{(total - copied) / requests / 1000:.1f}k without memcpy, memmove, "
                  f"memcmp and memset ({requests} requests)", flush=True)
            systems.stop_rows()
    finally:
        systems.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> int:
    """Measure, print the ratios, write JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS),
                        help="comma-separated rows among e, f, g, h, j, k (default: all)")
    parser.add_argument("--duration", type=float, default=8.0,
                        help="seconds of measured load per row")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent
                        / "results" / "instructions.json")
    parser.add_argument("--no-build", action="store_true",
                        help="the gateway from the source tree as it is, not the compiled build")
    args = parser.parse_args()
    rows = tuple(r.strip() for r in args.rows.split(",") if r.strip())
    if unknown := [r for r in rows if r not in ROWS]:
        print(f"instructions: unknown rows {unknown}; choose among {ROWS}", file=sys.stderr)
        return 2
    for tool in ("valgrind", "callgrind_control", "wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"instructions: {tool} is not installed (apt-get install valgrind wrk nginx)",
                  file=sys.stderr)
            return 2
    try:
        tree = build.REPO if args.no_build or rows == ("e",) else build.compiled_tree()
        data = measure(rows, args.duration, tree)
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"instructions: {exc}", file=sys.stderr)
        return 1
    per = {row: values["instructions_per_request"] for row, values in data.items()}
    # A speed ratio x/y is y's instructions over x's.
    ratios = {f"{x}/{y}": round(per[y] / per[x], 2)
              for x, y in (("g", "e"), ("h", "g")) if x in per and y in per}
    for name, value in ratios.items():
        print(f"{name} by instructions: {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": data, "ratios": ratios}, indent=2) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
