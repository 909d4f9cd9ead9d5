"""The load generator: wrk with a small Lua script, and curl for the large download.

Every wrk run uses the same script. Its ``done`` hook prints one JSON line with wrk's own
summary and latency percentiles; a ``response`` hook (which makes wrk read bodies, so
it is added only when needed) counts non-200 answers and stops after a request budget;
a ``request`` hook rotates Cookie headers read from a file.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import BenchError, RssSampler, cpu_between, tree_cpu

_MARK = "WRK_JSON "

_SCRIPT = r"""-- Written by bench/load.py for one run.
local cookie_file = %(cookie_file)s
local limit = %(limit)d
local count_status = %(count_status)s
local marker = %(marker)s
local start = %(start)d
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("offset", (#threads - 1) * 7919)
end

function init(args)
  bad = 0
  seen = 0
  cookies = {}
  if cookie_file ~= "" then
    for line in io.lines(cookie_file) do cookies[#cookies + 1] = line end
  end
  -- Each thread starts at its own place in the rotation.
  position = ((wrk.thread:get("offset") or 0) + start) %% math.max(#cookies, 1)
end

if cookie_file ~= "" then
  -- The headers table replaces any -H headers: a rotating run sends Host and Cookie only.
  request = function()
    position = position %% #cookies + 1
    return wrk.format(nil, nil, {["Cookie"] = cookies[position]})
  end
end

if count_status then
  response = function(status, headers, body)
    seen = seen + 1
    if status ~= 200 then bad = bad + 1 end
    if limit > 0 and seen == limit then
      wrk.thread:stop()
      -- wrk's main thread sleeps for the whole duration: the harness sees this file
      -- and interrupts it, which makes wrk report at once.
      local flag = io.open(marker, "a")
      flag:write("done\n")
      flag:close()
    end
  end
end

function done(summary, latency, requests)
  local non200 = 0
  for _, thread in ipairs(threads) do non200 = non200 + (thread:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"status":%%d,"timeout":%%d,"non200":%%d,"counted":%%s,"p50_us":%%d,' ..
    '"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, non200, tostring(count_status), latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


@dataclass
class LoadResult:
    """One wrk run: throughput, latency percentiles, errors, the servers' peak RSS, and the
    CPU time (user and system) they used per request."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mb_read: float
    errors: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    cpu_us: float | None = None

    @property
    def error_count(self) -> int:
        """Every failed request wrk saw (connect, read, write, timeout, status)."""
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        """A plain dict for the results file."""
        return {**asdict(self), "error_count": self.error_count}


def require(tool: str) -> str:
    """The path of a tool, or a clear BenchError."""
    path = shutil.which(tool)
    if path is None:
        raise BenchError(f"{tool} is not installed (Debian: apt-get install {tool})")
    return path


def write_script(path: Path, *, cookie_file: Path | None, limit: int, count_status: bool,
                 marker: Path, start: int = 0) -> Path:
    """The Lua script for one run; the cookie rotation begins after the first ``start``."""
    path.write_text(_SCRIPT % {"cookie_file": _lua_string(cookie_file),
                               "marker": _lua_string(marker), "limit": limit, "start": start,
                               "count_status": "true" if count_status else "false",
                               "mark": _MARK})
    return path


def _lua_string(path: Path | None) -> str:
    # A JSON string literal is a valid Lua one for the paths used here.
    return json.dumps(str(path) if path else "")


def parse_output(text: str) -> dict[str, Any]:
    """The JSON line the script's ``done`` hook printed."""
    for line in text.splitlines():
        if line.startswith(_MARK):
            data: dict[str, Any] = json.loads(line[len(_MARK):])
            return data
    raise BenchError(f"wrk printed no summary: {text.strip()[-400:]}")


def to_result(data: Mapping[str, Any]) -> LoadResult:
    """wrk's numbers in the units the report uses (ms, MB, requests per second)."""
    seconds = max(int(data["duration_us"]), 1) / 1e6
    errors = {name: int(data[name]) for name in ("connect", "read", "write", "timeout", "status")}
    if data.get("counted"):
        # Counted by the script: any status but 200 (wrk itself only counts >= 400).
        errors["status"] = int(data["non200"])
    return LoadResult(
        requests=int(data["requests"]), seconds=round(seconds, 3),
        rps=round(int(data["requests"]) / seconds, 1),
        p50_ms=round(int(data["p50_us"]) / 1000, 3), p90_ms=round(int(data["p90_us"]) / 1000, 3),
        p99_ms=round(int(data["p99_us"]) / 1000, 3), max_ms=round(int(data["max_us"]) / 1000, 3),
        mb_read=round(int(data["bytes"]) / 1e6, 2), errors=errors)


def run_wrk(url: str, *, work: Path, duration: float, connections: int, threads: int,
            headers: Mapping[str, str] | None = None, cookie_file: Path | None = None,
            requests: int | None = None, watch: Sequence[int] = (),
            cookie_start: int = 0) -> LoadResult:
    """One wrk run against ``url``; ``requests`` turns it into a fixed request budget.

    ``watch`` names server processes whose trees' RSS is sampled for the peak, and whose
    CPU time is read before and after (divided by the requests answered, ``cpu_us``);
    ``cookie_file`` rotates a Cookie header per request, from line ``cookie_start`` on.
    """
    wrk = require("wrk")
    threads = max(1, min(threads, connections))
    limit = 0 if requests is None else math.ceil(requests / threads)
    count_status = requests is not None or cookie_file is not None
    marker = work / "budget.done"
    marker.unlink(missing_ok=True)
    script = write_script(work / "load.lua", cookie_file=cookie_file, limit=limit,
                          count_status=count_status, marker=marker, start=cookie_start)
    # With a budget the script stops wrk; the duration is only a safety net then.
    seconds = max(1, math.ceil(duration))
    argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
            "--latency", "--timeout", "10s", "-s", str(script)]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    cpu_before = tree_cpu(watch)
    with RssSampler(watch) as sampler:
        stdout, stderr, code = _run_until_budget(argv, marker, threads, seconds + 60)
    cpu_after = tree_cpu(watch)
    if code != 0:
        raise BenchError(f"wrk failed ({code}): {stderr.strip()[-400:]}")
    marker.unlink(missing_ok=True)
    result = to_result(parse_output(stdout))
    if result.requests == 0:
        # wrk counts a timeout only once it is older than --timeout: a server that takes
        # connections and never answers would otherwise look like an empty, error-free run.
        raise BenchError(f"no response at all from {url} in {result.seconds:.0f}s")
    if watch:
        result.peak_rss_mb = round(sampler.peak / (1024 * 1024), 1)
        result.cpu_us = round(cpu_between(cpu_before, cpu_after) * 1e6 / result.requests, 1)
    return result


def _run_until_budget(argv: Sequence[str], marker: Path, threads: int,
                      timeout: float) -> tuple[str, str, int]:
    """Run wrk; once every thread has spent its budget, SIGINT makes it report early."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if _lines(marker) >= threads:
                process.send_signal(signal.SIGINT)
                break
            if time.monotonic() > deadline:
                process.kill()
                break
            time.sleep(0.02)
        stdout, stderr = process.communicate()
    return stdout, stderr, process.returncode


def _lines(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except OSError:
        return 0


@dataclass
class Download:
    """One large download with a fast reader."""

    status: int
    bytes: int
    mb_per_s: float


def download(url: str, headers: Mapping[str, str] | None = None) -> Download:
    """Fetch ``url`` with curl into /dev/null; MB here is 10^6 bytes."""
    curl = require("curl")
    argv = [curl, "-s", "-o", "/dev/null", "--max-time", "120", "-w",
            "%{http_code} %{size_download} %{speed_download}"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"curl did not finish downloading {url}") from None
    if done.returncode != 0:
        raise BenchError(f"curl failed ({done.returncode}"
                         f"{', timed out' if done.returncode == 28 else ''}) on {url}")
    status, size, speed = done.stdout.split()
    return Download(status=int(status), bytes=int(size), mb_per_s=round(float(speed) / 1e6, 1))
