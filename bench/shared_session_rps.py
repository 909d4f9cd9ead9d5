"""Requests per second for a logged-in reader: shared session (warm cache) beside JWT.

Run from the repository root: ``python bench/shared_session_rps.py [--duration 10s]``.
A child process serves the docs upstream and the dashboard (with its Info API); this
process serves the gateway, once per handshake, on a real port; ``wrk -t1 -c32`` loads
each with the reader's cookie and both numbers are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import re
import shutil
import statistics
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.app import build_app
from gateway.config.model import Config
from gateway.server import DocsRunner
from tests.dashboard import INFO_API_PATH, Dashboard
from tests.helpers import echo_app, make_config, make_user, session_cookies

PATH = "/guide/intro"
SHARED = "shared_session (warm cache)"
JWT = "jwt (cookie session)"


def _serve_backends(conn: Connection) -> None:
    """The child: upstream and dashboard on free ports until the parent closes the pipe."""

    async def main() -> None:
        upstream = web.AppRunner(echo_app(), access_log=None)
        await upstream.setup()
        await web.TCPSite(upstream, "127.0.0.1", 0).start()
        dashboard = Dashboard()
        runner = await dashboard.serve()
        conn.send((upstream.addresses[0][1], dashboard.url))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until "stop"
        await runner.cleanup()
        await upstream.cleanup()

    asyncio.run(main())


async def _start(config: Config) -> tuple[web.BaseRunner, web.Application, str]:
    app = await build_app(config)
    runner = DocsRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, app, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _check(url: str, cookie: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(url + PATH,
                                                         headers={"Cookie": cookie}) as r:
        body: Any = await r.json()
        names = [name.lower() for name, _ in body["headers"]]
        if r.status != 200 or "x-gateway-assertion" not in names:
            raise SystemExit(f"the reader is not identified on {url} ({r.status})")


async def _wrk(url: str, cookie: str, duration: str) -> float:
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t1", "-c32", f"-d{duration}", "-H", f"Cookie: {cookie}", url + PATH,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    text = out.decode()
    if "Non-2xx" in text:
        raise SystemExit("some responses were not 2xx:\n" + text)
    match = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if match is None:
        raise SystemExit("no result from wrk:\n" + text)
    return float(match.group(1))


async def _measure(upstream_url: str, dashboard_url: str, duration: str,
                   rounds: int) -> dict[str, list[float]]:
    """Alternate the two gateways ``rounds`` times, so load from elsewhere hits both alike."""
    shared = make_config(upstream_url, handshake={"method": "shared_session", "shared_session": {
        "info_api_url": dashboard_url + INFO_API_PATH, "cookies": ["session"],
        "login_url": dashboard_url + "/login", "cache_ttl": "10m"}})
    async with aiohttp.ClientSession() as http, http.post(
            dashboard_url + "/login", allow_redirects=False,
            data={"username": "ada", "password": "ada-password"}) as response:
        dashboard_cookie = f"session={response.cookies['session'].value}"
    results: dict[str, list[float]] = {SHARED: [], JWT: []}
    for _ in range(rounds):
        runner, _app, url = await _start(shared)
        try:
            await _check(url, dashboard_cookie)  # warms the cache
            results[SHARED].append(await _wrk(url, dashboard_cookie, duration))
        finally:
            await runner.cleanup()
        runner, app, url = await _start(make_config(upstream_url))
        try:
            cookies = await session_cookies(app, make_user("ada", groups=("admin",)))
            cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
            await _check(url, cookie)
            results[JWT].append(await _wrk(url, cookie, duration))
        finally:
            await runner.cleanup()
    return results


def main() -> None:
    """Start the backends, measure both handshakes, print requests per second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="10s", help="wrk duration per run (default 10s)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs per handshake, alternating; the median is printed")
    args = parser.parse_args()
    # wrk drops its connections mid-request when its time is up; those are not failures.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed")
    parent, child = multiprocessing.Pipe()
    backends = multiprocessing.Process(target=_serve_backends, args=(child,), daemon=True)
    backends.start()
    try:
        upstream_port, dashboard_url = parent.recv()
        results = asyncio.run(_measure(f"http://127.0.0.1:{upstream_port}", dashboard_url,
                                       args.duration, args.rounds))
    finally:
        parent.send("stop")
        backends.join(5)
        if backends.is_alive():
            backends.terminate()
    print(f"wrk -t1 -c32 -d{args.duration} GET {PATH}, logged-in reader")
    for name, runs in results.items():
        each = ", ".join(f"{rps:.0f}" for rps in runs)
        print(f"  {name:28} {statistics.median(runs):8.0f} req/s   (runs: {each})")


if __name__ == "__main__":
    main()
