"""The benchmark run: bring every row up, load them one at a time, weigh them, stop them.

All rows' servers are started first and sit idle while another row is loaded, so rows
can be measured in rounds, every other one backwards, with the rows a ratio compares
measured one after the other: on a machine whose speed drifts, the median of the rounds'
own ratios keeps the ratios honest. Only one row is ever under load. The many-sessions
runs come last, each on a fresh gateway.
"""

from __future__ import annotations

import gzip
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import configs, cookies, load, material, procs
from bench.material import Expect
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
    "j": "gateway, reader, Material page, navigation filtered + gated element + field",
    "k": "gateway, reader, the same page unmarked, no filtering",
    "l": "gateway, unmarked Material page, plain package (no compiled build)",
    "m": "gateway, as j, cold: every request a reader of a group set not seen before",
    "n": "floor: a lean asyncio server (llhttp) + the gateway's upstream client, no auth",
    "o": "floor: aiohttp's low-level server + the gateway's upstream client, no auth",
}
PARTS = ("main", "asset", "material", "download", "wire", "sessions")
# Each part's rows in the order they are measured in a round: the rows a target compares
# (g with c and e; l with c, c with k, k with j, j with m) are measured one after the other.
MAIN_ROWS = tuple("abdcgehfi")
ASSET_ROWS = ("a", "b", "e", "g")
# a, c, k, l, n and o serve the unmarked page, j and m the marked one through the gateway.
MATERIAL_ROWS = ("a", "n", "o", "l", "c", "k", "j", "m")
DOWNLOAD_ROWS = ("a", "b", "g")
WIRE_ROWS = ("j",)
SESSION_ROWS = ("g", "h", "i", "j")
# The sessions run of row j spreads its readers over this many group sets.
MEMORY_GROUP_SETS = 20


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
    # Row j's sessions run: each reader opens the page this many times (every request
    # renders anew, so the run is kept shorter than the others').
    personal_visits: int = 2
    # Readers in the cold row's pool (each of a group set of its own).
    cold_pool: int = 20_000

    def wants(self, part: str, row: str) -> bool:
        """Whether a part is measured for a row."""
        if part == "main" and row not in MAIN_ROWS:
            return False
        if part == "asset" and row not in ASSET_ROWS:
            return False
        if part == "material" and row not in MATERIAL_ROWS:
            return False
        if part == "wire" and row not in WIRE_ROWS:
            return False
        if part == "download" and row not in DOWNLOAD_ROWS:
            return False
        if part == "sessions" and row not in SESSION_ROWS:
            return False
        return part in self.parts and row in self.rows

    def needs_material(self) -> bool:
        """Whether anything measured uses the Material for MkDocs site."""
        return (any(self.wants("material", row) for row in MATERIAL_ROWS)
                or self.wants("wire", "j") or self.wants("sessions", "j"))


class Bench:
    """One run: the systems, the measurements so far, and the errors met on the way."""

    def __init__(self, settings: Settings, work: Path, gateway_tree: Path | None = None) -> None:
        self.settings = settings
        self.work = work
        self.site = configs.write_site(work / "site", settings.download_bytes)
        built = None
        if settings.needs_material():
            _progress("building the Material for MkDocs site")
            built = material.build(work / "material-src", self.site.root)
        self.systems = Systems(work, self.site, gateway_tree=gateway_tree or REPO,
                               material_site=built, cold_pool=settings.cold_pool)
        self.runs: dict[tuple[str, str], list[load.LoadResult]] = {}
        self.results: dict[str, Any] = {"main": {}, "asset": {}, "material": {}, "download": {},
                                        "wire": None, "sessions": {}, "errors": []}
        # How far the cold row's rotation has gone: every run starts with readers not sent yet.
        self.cold_sent = 0

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
            (("i",), sys_.start_workers), (("j",), sys_.start_personal),
            (("k",), sys_.start_unfiltered), (("l",), sys_.start_plain_package),
            (("m",), sys_.start_cold), (("n",), sys_.start_lean_floor),
            (("o",), sys_.start_aiohttp_floor)]
        for rows, starter in starters:
            if any(s.wants(part, row) for row in rows
                   for part in ("main", "asset", "material", "download", "wire")):
                try:
                    targets.update((t.row, t) for t in starter())
                except (BenchError, OSError, subprocess.SubprocessError) as exc:
                    self.failed(rows, exc)
        broken: set[tuple[str, str]] = set()
        for round_ in range(s.rounds):
            for part, rows in (("main", MAIN_ROWS), ("asset", ASSET_ROWS),
                               ("material", MATERIAL_ROWS)):
                # Every other round goes backwards: a machine that slows or speeds up
                # through a round favours neither the rows measured first nor last.
                for row in rows[::-1] if round_ % 2 else rows:
                    target = targets.get(row)
                    if target is not None and s.wants(part, row) and (part, row) not in broken:
                        if not self.measure(part, target, round_):
                            broken.add((part, row))
        for row in DOWNLOAD_ROWS:
            if row in targets and s.wants("download", row):
                self.downloads(targets[row])
        if "j" in targets and s.wants("wire", "j"):
            self.wire(targets["j"])
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
        expect = target.material if part == "material" else None
        if part == "material" and expect is None:
            self.failed((target.row,), BenchError("no Material page for this row"), part)
            return False
        url = target.url(configs.ASSET if part == "asset" else expect.path if expect else None)
        size = self.site.asset_bytes if part == "asset" else self.site.page_bytes
        common: dict[str, Any] = {"work": self.work, "connections": s.connections,
                                  "threads": s.threads, "headers": target.headers,
                                  "cookie_file": target.cookie_file}
        try:
            check(url, target.headers, size, target.protected, expect)
            if s.warmup > 0 or s.warmup_budget:
                warm = load.run_wrk(url, duration=max(s.warmup, 1), requests=s.warmup_budget,
                                    cookie_start=self.cold_start(target), **common)
                self.sent(target, warm)
            result = load.run_wrk(url, duration=s.duration, requests=s.budget,
                                  watch=target.watch, cookie_start=self.cold_start(target),
                                  **common)
            self.sent(target, result)
        except (BenchError, subprocess.SubprocessError) as exc:
            self.failed((target.row,), exc, part)
            return False
        self.runs.setdefault((part, target.row), []).append(result)
        cpu = f"  cpu {result.cpu_us:.0f} us/req" if result.cpu_us is not None else ""
        _progress(f"{part:5} {target.row}  round {round_ + 1}  {result.rps:>9.0f} req/s  "
                  f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms{cpu}")
        return True

    def cold_start(self, target: Target) -> int:
        """Where a rotating run starts in its pool of readers: after those already sent."""
        return self.cold_sent % target.cookie_pool if target.cookie_pool else 0

    def sent(self, target: Target, result: load.LoadResult) -> None:
        """Count the readers a rotating run used (and those still in flight when it stopped)."""
        if target.cookie_file is not None:
            self.cold_sent += result.requests + self.settings.connections

    def summarize(self) -> None:
        """Per row, the round with the median requests per second (and every round's rate),
        and the median of the rounds' CPU time per request."""
        for (part, row), runs in self.runs.items():
            ordered = sorted(runs, key=lambda r: r.rps)
            median = ordered[(len(ordered) - 1) // 2]
            entry = {"id": row, "label": ROWS[row], **median.to_json()}
            entry["peak_rss_mb"] = max(r.peak_rss_mb or 0.0 for r in runs)
            entry["error_count"] = sum(r.error_count for r in runs)
            entry["rounds_rps"] = [r.rps for r in runs]
            entry["rounds_cpu_us"] = [r.cpu_us for r in runs]
            cpus = [r.cpu_us for r in runs if r.cpu_us is not None]
            entry["cpu_us"] = statistics.median(cpus) if cpus else None
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

    def wire(self, target: Target) -> None:
        """The marked page once with gzip through the gateway and straight from nginx (its
        gzip server): the bytes each sends; then the gateway again with the ETag it gave
        (a 304 expected)."""
        expect = target.material
        assert expect is not None
        gzip_ok = {"Accept-Encoding": "gzip"}
        try:
            status, headers, body = procs.http_get(target.url(expect.path),
                                                   {**target.headers, **gzip_ok})
            n_status, n_headers, n_body = procs.http_get(
                f"http://127.0.0.1:{self.systems.origin_gzip_port}{expect.path}", gzip_ok)
            if status != 200 or n_status != 200:
                raise BenchError(f"GET {expect.path} with gzip answered {status} through the "
                                 f"gateway, {n_status} from nginx")
            if n_headers.get("content-encoding") != "gzip":
                raise BenchError("nginx sent the page uncompressed: its gzip is off")
            n_plain = gzip.decompress(n_body)
            plain = (gzip.decompress(body) if headers.get("content-encoding") == "gzip"
                     else body)
            problem = expect.problem(plain)
            if problem:
                raise BenchError(f"GET {expect.path} through the gateway with gzip: {problem}")
            etag = headers.get("etag")
            revisit = None
            if etag:
                revisit, _h, _b = procs.http_get(target.url(expect.path),
                                                 {**target.headers, **gzip_ok,
                                                  "If-None-Match": etag})
            cdn = self.shared_cache(target)
        except (BenchError, OSError, zlib.error) as exc:
            self.failed((target.row, "a"), exc, "wire")
            return
        self.results["wire"] = {
            "id": target.row, "page": expect.path, "gateway_bytes": len(body),
            "gateway_encoding": headers.get("content-encoding"), "nginx_bytes": len(n_body),
            "nginx_encoding": n_headers.get("content-encoding"),
            "gateway_page_bytes": len(plain), "nginx_page_bytes": len(n_plain),
            "ratio": round(len(body) / len(n_body), 3), "etag": etag,
            "revisit_status": revisit, "cdn": cdn, "error_count": 0}
        _progress(f"wire  {target.row}  gzip {len(body)} bytes, nginx {len(n_body)} bytes; "
                  f"revisit with its ETag: {revisit}; a shared cache: page "
                  f"{'kept apart' if cdn['page_ok'] else 'NOT kept apart'}, public asset "
                  f"{'cacheable' if cdn['asset_ok'] else 'NOT cacheable'}")

    def shared_cache(self, target: Target) -> dict[str, Any]:
        """What a CDN in front learns from the headers: the public page, which the gateway
        rewrites for every reader (the client script's tag), and a public asset, each asked
        for without a session. The page must tell a shared cache that a logged-in reader's
        copy differs (``Vary: Cookie``, or not shared at all); the asset must stay
        cacheable (no ``Vary: Cookie``, nothing private, its validators kept)."""
        anonymous = {k: v for k, v in target.headers.items() if k.lower() != "cookie"}
        page_status, page, _b = procs.http_get(target.url(configs.PUBLIC_PAGE), anonymous)
        asset_status, asset, _b = procs.http_get(target.url(configs.PUBLIC_ASSET), anonymous)
        if page_status != 200 or asset_status != 200:
            raise BenchError(f"without a session, {configs.PUBLIC_PAGE} answered {page_status} "
                             f"and {configs.PUBLIC_ASSET} {asset_status}")

        def varies_on_cookie(headers: dict[str, str]) -> bool:
            return any(name.strip().lower() in ("cookie", "*")
                       for name in headers.get("vary", "").split(","))

        def unshared(headers: dict[str, str]) -> bool:
            control = headers.get("cache-control", "").lower()
            return "private" in control or "no-store" in control

        return {"page": configs.PUBLIC_PAGE, "page_vary": page.get("vary"),
                "page_cache_control": page.get("cache-control"),
                "page_ok": varies_on_cookie(page) or unshared(page),
                "asset": configs.PUBLIC_ASSET, "asset_vary": asset.get("vary"),
                "asset_cache_control": asset.get("cache-control"),
                "asset_ok": not varies_on_cookie(asset) and not unshared(asset)
                and bool(asset.get("etag") or asset.get("last-modified"))}

    def sessions(self, row: str) -> None:
        """Many distinct readers through a fresh gateway; the RSS of each worker afterwards.

        Row j's readers open the marked Material page, in a few group sets: every reader
        gets a rendering of their own (the page has a field), kept within the page cache.
        """
        s = self.settings
        gateway, config, _extra = self.systems.gateway_with_store(f"gateway-sessions-{row}", row)
        personal = row == "j"
        groups = cookies.group_sets(MEMORY_GROUP_SETS) if personal else None
        headers = cookies.cookie_headers(config, s.session_count, groups)
        cookie_file = cookies.write_cookie_file(self.work / "cookies.txt", headers)
        expect = self.systems.rewritten() if personal else None
        url = f"http://127.0.0.1:{gateway.ready_port}{expect.path if expect else configs.PAGE}"
        check(url, {"Cookie": headers[-1]}, self.site.page_bytes, True, expect)
        before = procs.workers_rss(gateway.pid)
        started = time.monotonic()
        result = load.run_wrk(url, work=self.work, duration=3600, connections=s.connections,
                              threads=s.threads, cookie_file=cookie_file,
                              requests=s.session_count * s.personal_visits if personal
                              else s.session_requests, watch=[gateway.pid])
        after = procs.workers_rss(gateway.pid)
        self.results["sessions"][row] = {
            "id": row, "label": ROWS[row], "workers": SETUPS[row].workers,
            "sessions": s.session_count, "requests": result.requests,
            "group_sets": MEMORY_GROUP_SETS if personal else 1,
            "page": expect.path if expect else configs.PAGE,
            "seconds": round(time.monotonic() - started, 1), "rps": result.rps,
            "errors": result.errors, "error_count": result.error_count,
            "rss_before_mb": [_mb(x) for x in before], "rss_after_mb": [_mb(x) for x in after],
            "rss_per_worker_mb": _mb(max(after)),
            "rss_growth_mb": _mb(max(0, *(a - b for a, b in zip(after, before, strict=False)))),
            "peak_tree_rss_mb": result.peak_rss_mb}
        _progress(f"sess  {row}  {result.requests} requests over {s.session_count} sessions, "
                  f"RSS per worker {' '.join(str(_mb(x)) for x in after)} MB")


def check(url: str, headers: dict[str, str] | None, min_bytes: int, protected: bool,
          expect: Expect | None = None) -> None:
    """One request by hand before loading: a 200 of the right size (for a Material page,
    with what the row must show and without what it must take out), and, for a protected
    page, no 200 without the cookie (so the row really measures a logged-in reader)."""
    status, body = procs.http_status(url, headers)
    if expect is not None:
        problem = expect.problem(body) if status == 200 else f"status {status}"
        if problem:
            raise BenchError(f"GET {_path(url)}: {problem}")
    elif status != 200 or len(body) < min_bytes:
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
