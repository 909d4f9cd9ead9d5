"""The benchmark run: bring every row up, load them one at a time, weigh them, stop them.

All rows' servers are started first and sit idle while another row is loaded, so rows
can be measured in rounds (a b c ... i, then again): on a machine whose background load
drifts, the median of interleaved rounds keeps the ratios honest. Only one row is ever
under load. The many-sessions runs come last, each on a fresh gateway.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import configs, cookies, load, procs
from bench.procs import MIB, BenchError
from bench.systems import REPO, SETUPS, Systems, Target

ROWS = {
    "a": "nginx serving the files (ceiling)",
    "b": "nginx proxy_pass -> a",
    "c": "Caddy reverse_proxy -> a",
    "d": "Caddy forward_auth to the gateway + reverse_proxy -> a",
    "e": "bare aiohttp proxy -> a",
    "f": "gateway, public page, anonymous",
    "g": "gateway, reader, cookie store, assertion",
    "h": "gateway, reader, redis store, assertion",
    "i": "gateway, reader, cookie store, workers: 2",
}
PARTS = ("main", "asset", "download", "sessions")
ASSET_ROWS = ("a", "b", "e", "g")
DOWNLOAD_ROWS = ("a", "b", "g")
SESSION_ROWS = ("g", "h", "i")


@dataclass(frozen=True)
class Settings:
    """How hard and how long to push, and what to measure."""

    duration: float = 10.0
    warmup: float = 2.0
    connections: int = 32
    threads: int = 1
    rounds: int = 1
    rows: tuple[str, ...] = tuple(ROWS)
    parts: tuple[str, ...] = PARTS
    # A fixed number of requests per run instead of a duration (the quick mode).
    budget: int | None = None
    warmup_budget: int | None = None
    downloads: int = 3
    download_bytes: int = configs.DOWNLOAD_BYTES
    session_count: int = 10_000
    session_requests: int = 100_000

    def wants(self, part: str, row: str) -> bool:
        """Whether a part is measured for a row."""
        if part == "asset" and row not in ASSET_ROWS:
            return False
        if part == "download" and row not in DOWNLOAD_ROWS:
            return False
        if part == "sessions" and row not in SESSION_ROWS:
            return False
        return part in self.parts and row in self.rows


class Bench:
    """One run: the systems, the measurements so far, and the errors met on the way."""

    def __init__(self, settings: Settings, work: Path, gateway_tree: Path | None = None) -> None:
        self.settings = settings
        self.work = work
        self.site = configs.write_site(work / "site", settings.download_bytes)
        self.systems = Systems(work, self.site, gateway_tree=gateway_tree or REPO)
        self.runs: dict[tuple[str, str], list[load.LoadResult]] = {}
        self.results: dict[str, Any] = {"main": {}, "asset": {}, "download": {}, "sessions": {},
                                        "errors": []}

    def close(self) -> None:
        """Stop every server still running."""
        self.systems.close()

    def failed(self, rows: tuple[str, ...], exc: BaseException, part: str | None = None) -> None:
        """Record a failed step or measurement; the run goes on with the next one."""
        self.results["errors"].append({"rows": list(rows), "part": part, "error": str(exc)})
        _progress(f"error {part or 'setup'} {','.join(rows)}  {exc}")

    def run(self) -> dict[str, Any]:
        """Start the rows, measure them in rounds, then downloads, then the sessions runs."""
        s, sys_ = self.settings, self.systems
        targets: dict[str, Target] = {t.row: t for t in sys_.start_origin()}
        starters: list[tuple[tuple[str, ...], Callable[[], list[Target]]]] = [
            (("b",), sys_.start_nginx_proxy), (("c",), sys_.start_caddy),
            (("d",), sys_.start_forward_auth), (("e",), sys_.start_bare),
            (("f", "g"), sys_.start_gateway), (("h",), sys_.start_redis_gateway),
            (("i",), sys_.start_workers)]
        for rows, starter in starters:
            if any(s.wants(part, row) for row in rows for part in ("main", "asset", "download")):
                try:
                    targets.update((t.row, t) for t in starter())
                except (BenchError, OSError, subprocess.SubprocessError) as exc:
                    self.failed(rows, exc)
        broken: set[tuple[str, str]] = set()
        for round_ in range(s.rounds):
            for part in ("main", "asset"):
                for row, target in targets.items():
                    if s.wants(part, row) and (part, row) not in broken:
                        if not self.measure(part, target, round_):
                            broken.add((part, row))
        for row in DOWNLOAD_ROWS:
            if row in targets and s.wants("download", row):
                self.downloads(targets[row])
        self.systems.stop_rows()
        self.summarize()
        for row in SESSION_ROWS:
            if s.wants("sessions", row):
                try:
                    self.sessions(row)
                except (BenchError, OSError, subprocess.SubprocessError) as exc:
                    self.failed((row,), exc, "sessions")
                finally:
                    self.systems.stop_rows()
        return self.results

    def measure(self, part: str, target: Target, round_: int) -> bool:
        """Check one URL by hand, warm it up, load it; False when it failed."""
        s = self.settings
        url = target.url(configs.ASSET if part == "asset" else None)
        size = self.site.asset_bytes if part == "asset" else self.site.page_bytes
        common: dict[str, Any] = {"work": self.work, "connections": s.connections,
                                  "threads": s.threads, "headers": target.headers}
        try:
            check(url, target.headers, size, target.protected)
            if s.warmup > 0 or s.warmup_budget:
                load.run_wrk(url, duration=max(s.warmup, 1), requests=s.warmup_budget, **common)
            result = load.run_wrk(url, duration=s.duration, requests=s.budget,
                                  watch=target.watch, **common)
        except (BenchError, subprocess.SubprocessError) as exc:
            self.failed((target.row,), exc, part)
            return False
        self.runs.setdefault((part, target.row), []).append(result)
        _progress(f"{part:5} {target.row}  round {round_ + 1}  {result.rps:>9.0f} req/s  "
                  f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms")
        return True

    def summarize(self) -> None:
        """Per row, the round with the median requests per second (and every round's rate)."""
        for (part, row), runs in self.runs.items():
            ordered = sorted(runs, key=lambda r: r.rps)
            median = ordered[(len(ordered) - 1) // 2]
            entry = {"id": row, "label": ROWS[row], **median.to_json()}
            entry["peak_rss_mb"] = max(r.peak_rss_mb or 0.0 for r in runs)
            entry["error_count"] = sum(r.error_count for r in runs)
            entry["rounds_rps"] = [r.rps for r in runs]
            self.results[part][row] = entry

    def downloads(self, target: Target) -> None:
        """A few sequential large downloads: throughput, and the servers' RSS growth."""
        row, watch = target.row, target.watch
        before = procs.tree_rss(watch)
        try:
            with procs.RssSampler(watch, interval=0.01) as sampler:
                runs = [load.download(target.url(configs.DOWNLOAD), target.headers)
                        for _ in range(self.settings.downloads)]
        except (BenchError, subprocess.SubprocessError) as exc:
            self.failed((row,), exc, "download")
            return
        bad = [run for run in runs if run.status != 200 or run.bytes != self.site.download_bytes]
        if bad:
            self.failed((row,), BenchError(
                f"download answered {bad[0].status} with {bad[0].bytes} bytes, expected 200 "
                f"with {self.site.download_bytes}"), "download")
            return
        speed = statistics.median(run.mb_per_s for run in runs)
        growth = max(0, sampler.peak - before)
        self.results["download"][row] = {
            "id": row, "label": ROWS[row], "bytes": self.site.download_bytes,
            "runs_mb_per_s": [run.mb_per_s for run in runs], "mb_per_s": speed,
            "rss_before_mb": _mb(before), "peak_rss_mb": _mb(sampler.peak),
            "rss_growth_mb": _mb(growth), "error_count": 0}
        _progress(f"dl    {row}  {speed:>9.1f} MB/s  RSS +{_mb(growth)} MB")

    def sessions(self, row: str) -> None:
        """Many distinct readers through a fresh gateway; the RSS of each worker afterwards."""
        s = self.settings
        gateway, config, _extra = self.systems.gateway_with_store(f"gateway-sessions-{row}", row)
        headers = cookies.cookie_headers(config, s.session_count)
        cookie_file = cookies.write_cookie_file(self.work / "cookies.txt", headers)
        url = f"http://127.0.0.1:{gateway.ready_port}{configs.PAGE}"
        check(url, {"Cookie": headers[-1]}, self.site.page_bytes, protected=True)
        before = procs.workers_rss(gateway.pid)
        started = time.monotonic()
        result = load.run_wrk(url, work=self.work, duration=3600, connections=s.connections,
                              threads=s.threads, cookie_file=cookie_file,
                              requests=s.session_requests, watch=[gateway.pid])
        after = procs.workers_rss(gateway.pid)
        self.results["sessions"][row] = {
            "id": row, "label": ROWS[row], "workers": SETUPS[row].workers,
            "sessions": s.session_count, "requests": result.requests,
            "seconds": round(time.monotonic() - started, 1), "rps": result.rps,
            "errors": result.errors, "error_count": result.error_count,
            "rss_before_mb": [_mb(x) for x in before], "rss_after_mb": [_mb(x) for x in after],
            "rss_per_worker_mb": _mb(max(after)), "peak_tree_rss_mb": result.peak_rss_mb}
        _progress(f"sess  {row}  {result.requests} requests over {s.session_count} sessions, "
                  f"RSS per worker {' '.join(str(_mb(x)) for x in after)} MB")


def check(url: str, headers: dict[str, str] | None, min_bytes: int, protected: bool) -> None:
    """One request by hand before loading: a 200 of the right size, and, for a protected
    page, no 200 without the cookie (so the row really measures a logged-in reader)."""
    status, body = procs.http_status(url, headers)
    if status != 200 or len(body) < min_bytes:
        raise BenchError(f"GET {_path(url)} answered {status} with {len(body)} bytes "
                         f"(expected 200 and at least {min_bytes})")
    if protected:
        anonymous, _ = procs.http_status(url, {k: v for k, v in (headers or {}).items()
                                               if k.lower() != "cookie"})
        if anonymous == 200:
            raise BenchError(f"GET {_path(url)} answered 200 without a session; the row "
                             "would not measure a logged-in reader")


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[1].partition("/")[2]


def _mb(value: int) -> float:
    return round(value / MIB, 1)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
