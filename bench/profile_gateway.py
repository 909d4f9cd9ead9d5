"""Where the gateway spends its CPU under row g's load, sampled with py-spy.

    pip install py-spy
    python3 bench/profile_gateway.py [--duration 20] [--top 15] [--row g]
    python3 bench/profile_gateway.py --row m   # the Material page, a new audience per request

Starts the origin and a gateway exactly as bench/run.py does, drives it with wrk, and
records the gateway process with ``py-spy record --format raw`` meanwhile. Prints the
functions with the most cumulative (on-CPU, inclusive) time, each labelled by where it
lives (gateway/, aiohttp, asyncio, crypto, ...), and the self-time share per area.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import configs, cookies, load, material
from bench.procs import BenchError
from bench.systems import Systems, Target

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# py-spy names files relative to their sys.path entry: the first folder tells the package.
AREAS = {"gateway": "gateway", "aiohttp": "aiohttp", "asyncio": "asyncio",
         "cryptography": "crypto", "jwt": "crypto", "multidict": "multidict/yarl",
         "yarl": "multidict/yarl", "redis": "redis", "logging": "logging", "json": "json"}
# Frames on every stack (start-up and the event loop itself): 100% and saying nothing.
SCAFFOLD = re.compile(r"^(_run_module_as_main|_run_code|<module>|main|run_command|serve|run|"
                      r"run_worker|Runner\.run|BaseEventLoop\.(run_until_complete|run_forever|"
                      r"_run_once)|Handle\._run) ")


def area(file: str) -> str:
    """Which part of the stack a source file belongs to."""
    top = file.split("/", 1)[0] if "/" in file else ""
    return AREAS.get(top, "python stdlib" if file.startswith("<") or "/" not in file
                     else "other")


def parse_raw(text: str) -> tuple[Counter[str], Counter[str], dict[str, str], int]:
    """Collapsed stacks to (cumulative samples, self samples, area per function, total)."""
    cumulative: Counter[str] = Counter()
    own: Counter[str] = Counter()
    areas: dict[str, str] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        seen: set[str] = set()
        key = ""
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            if match is None:
                continue
            file = match.group("file")
            key = f"{match.group('name')} ({_short(file)})"
            areas[key] = area(file)
            if key not in seen:
                seen.add(key)
                cumulative[key] += count
        if key:
            own[key] += count
    return cumulative, own, areas, total


def _short(file: str) -> str:
    return file.rsplit("site-packages/", 1)[-1]


def summary(text: str, top: int) -> dict[str, Any]:
    """The report as data: top functions by cumulative time, self time per area."""
    cumulative, own, areas, total = parse_raw(text)
    total = max(total, 1)

    def rows(counter: Counter[str], only: str | None = None) -> list[dict[str, Any]]:
        chosen = [(k, v) for k, v in counter.most_common()
                  if (only is None or areas[k] == only) and not SCAFFOLD.match(k)]
        return [{"function": k, "area": areas[k], "percent": round(100 * v / total, 1)}
                for k, v in chosen[:top]]

    by_area: Counter[str] = Counter()
    for key, count in own.items():
        by_area[areas[key]] += count
    return {"samples": total,
            "top_cumulative": rows(cumulative),
            "top_cumulative_gateway": rows(cumulative, "gateway"),
            "top_self": rows(own),
            "self_by_area": {k: round(100 * v / total, 1) for k, v in by_area.most_common()}}


def render(data: dict[str, Any]) -> str:
    """Text tables for the terminal."""
    out = [f"{data['samples']} samples (on-CPU only)", ""]
    for key, title in (("top_cumulative", "top by cumulative time"),
                       ("top_cumulative_gateway", "gateway/ functions by cumulative time"),
                       ("top_self", "top by self time")):
        out.append(title)
        out += [f"  {r['percent']:5.1f}%  {r['area']:<15} {r['function']}" for r in data[key]]
        out.append("")
    out.append("self time by area")
    out += [f"  {pct:5.1f}%  {name}" for name, pct in data["self_by_area"].items()]
    return "\n".join(out) + "\n"


def main() -> int:
    """Run the profile and print it (and write it as JSON next to the benchmark results)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds to sample")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--row", choices=("g", "h", "e", "j", "k", "m"), default="g",
                        help="g or h: the gateway; e: the bare aiohttp proxy, for comparison; "
                             "j, k, m: the gateway on the Material page as bench/run.py's rows "
                             "(m: every request a reader of a group set not seen before)")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--json", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "profile.json")
    parser.add_argument("--keep-raw", action="store_true",
                        help="also keep py-spy's collapsed stacks next to the JSON")
    args = parser.parse_args()
    spy = shutil.which("py-spy")
    if spy is None:
        print("profile: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    args.json.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="docs-gateway-profile-"))
    site = configs.write_site(work / "site", 1024 * 1024)
    systems = Systems(work, site)
    try:
        systems.start_origin()
        cookie_file = None
        if args.row in ("j", "k", "m"):
            systems.material = material.build(work / "material-src", site.root)
            starter = {"j": systems.start_personal, "k": systems.start_unfiltered,
                       "m": systems.start_cold}[args.row]
            target: Target = starter()[0]
            assert target.material is not None
            pid, cookie, cookie_file = target.watch[0], target.headers, target.cookie_file
            url = target.url(target.material.path)
        else:
            if args.row == "e":
                server, cookie = systems.bare_proxy(), {}
            else:
                server, config, _redis = systems.gateway_with_store("gateway", args.row)
                cookie = {"Cookie": cookies.cookie_headers(config, 1)[0]}
            pid = server.pid
            url = f"http://127.0.0.1:{server.ready_port}{configs.PAGE}"
        raw = work / "profile.txt"
        # Load for longer than the sampling, so every sample is taken under load.
        driver = threading.Thread(target=load.run_wrk, args=(url,), kwargs={
            "work": work, "duration": args.duration + 4, "connections": 32, "threads": 1,
            "headers": cookie, "cookie_file": cookie_file}, daemon=True)
        driver.start()
        subprocess.run([spy, "record", "--pid", str(pid), "--duration",
                        str(args.duration), "--rate", str(args.rate), "--format", "raw",
                        "--function", "--nonblocking", "--output", str(raw)],
                       check=True, capture_output=True, timeout=args.duration + 60)
        driver.join()
        data = summary(raw.read_text(), args.top)
        if args.keep_raw:
            shutil.copy(raw, args.json.with_suffix(".raw.txt"))
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 1
    finally:
        systems.close()
        shutil.rmtree(work, ignore_errors=True)
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    print(render(data), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
