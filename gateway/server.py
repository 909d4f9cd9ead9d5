"""Serve an app: sockets, workers sharing the port, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
from urllib.parse import urlsplit

from aiohttp import web

from gateway.app import build_app
from gateway.config import Config
from gateway.logs import AccessLogger, setup_logging
from gateway.state import GATEWAY

log = logging.getLogger("gateway")
# How long in-flight requests may take to finish after SIGTERM.
SHUTDOWN_GRACE = 30.0


class StartupError(Exception):
    """The gateway cannot start; the message is one line for the user."""


def check_port(host: str, port: int) -> None:
    """Fail early, with one clear line, when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def check_upstream(config: Config) -> None:
    """Fail early when the upstream cannot be reached at all."""
    if config.upstream.url is None:
        return
    parts = urlsplit(config.upstream.url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port),
                                      timeout=config.upstream.connect_timeout):
            pass
    except OSError as exc:
        raise StartupError(f"upstream {config.upstream.url} is unreachable "
                           f"({exc.strerror or exc.__class__.__name__}); start the docs server "
                           "first or fix upstream.url") from None


def admin_app(main: web.Application) -> web.Application:
    """Health and metrics on their own port, sharing the main app's state."""
    from gateway import routes

    app = web.Application()
    app[GATEWAY] = main[GATEWAY]
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/readyz", routes.readyz)
    app.router.add_get("/metrics", routes.metrics)
    return app


async def run_worker(config: Config, reuse_port: bool, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then let in-flight requests finish."""
    app = await build_app(config)
    runner = web.AppRunner(app, access_log_class=AccessLogger,
                           access_log=logging.getLogger("gateway.access"), handle_signals=False)
    await runner.setup()
    server = config.server
    site = web.TCPSite(runner, server.host, server.port, reuse_port=reuse_port or None,
                       shutdown_timeout=SHUTDOWN_GRACE)
    await site.start()
    admin_runner = None
    if server.admin_port is not None:
        admin_runner = web.AppRunner(admin_app(app), access_log=None)
        await admin_runner.setup()
        await web.TCPSite(admin_runner, server.admin_host, server.admin_port,
                          reuse_port=reuse_port or None).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening", extra={"listen": f"{server.host}:{server.port}",
                                 "public_url": server.public_url, "pid": os.getpid()})
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting down", extra={"pid": os.getpid()})
    if admin_runner is not None:
        await admin_runner.cleanup()
    await runner.cleanup()


def _worker_main(config: Config) -> None:
    setup_logging(config.logging)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker(config, reuse_port=True))


def serve(config: Config, verbose: bool = False) -> int:
    """Run the gateway in the foreground; returns the exit code."""
    setup_logging(config.logging)
    check_port(config.server.host, config.server.port)
    if config.server.admin_port is not None:
        check_port(config.server.admin_host or "127.0.0.1", config.server.admin_port)
    check_upstream(config)
    for warning in config.warnings:
        # The signer says this one itself when it makes the ephemeral key.
        if not warning.startswith("identity.assertion.private_key"):
            log.warning(warning)
    if config.server.workers <= 1:
        try:
            asyncio.run(run_worker(config, reuse_port=False))
        except KeyboardInterrupt:
            pass
        return 0
    return _supervise(config)


def _supervise(config: Config) -> int:
    """N worker processes share the port through SO_REUSEPORT; SIGTERM reaches them all."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(config,), daemon=False)
               for _ in range(config.server.workers)]
    for process in workers:
        process.start()

    def forward(signum: int, _frame: object) -> None:
        for process in workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for process in workers:
        process.join()
        code = code or (process.exitcode or 0)
    return 0 if code in (0, -signal.SIGTERM) else 1
