"""Serve an app: the low-level docs server, sockets, workers sharing the port, signals,
graceful shutdown and reload."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Coroutine
from typing import Any, cast
from urllib.parse import urlsplit

from aiohttp import web

from gateway.app import ENTRY, MAX_BODY, build_app
from gateway.config.load import load_config
from gateway.config.model import Config
from gateway.docsport import MAX_FIELD, MAX_LINE, DocsServer, Handler, request_factory
from gateway.errors import ConfigError
from gateway.logs import AccessLogger, setup_logging
from gateway.services import GATEWAY

# Allocations (minus deallocations) between two young-generation collections.
GC_THRESHOLD = 5_000
log = logging.getLogger("gateway")
# How long in-flight requests may take to finish after SIGTERM.
SHUTDOWN_GRACE = 30.0


class StartupError(Exception):
    """The gateway cannot start; the message is one line for the user."""



def docs_server(app: web.Application, **kwargs: Any) -> DocsServer:
    """The docs port's server for an app from ``build_app``: each request goes straight to
    the app's ``ENTRY``, which tells the gateway's own routes from the docs itself.

    ``kwargs`` go to ``web.Server`` (access log, keep-alive, ...). Must run in the loop.
    """
    loop = asyncio.get_running_loop()
    make_request = request_factory(app, loop, MAX_BODY)
    # The factory makes every request a web.Request, which is what the entry takes.
    entry = cast(Handler, app[ENTRY])
    return DocsServer(entry, request_factory=make_request, loop=loop,
                      max_field_size=MAX_FIELD, max_line_size=MAX_LINE, **kwargs)


class DocsRunner(web.BaseRunner):
    """Runs an app from ``build_app`` on its sites: start-up and clean-up of the app, and
    ``docs_server`` in between."""

    __slots__ = ("_app",)

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._app = app

    @property
    def app(self) -> web.Application:
        return self._app

    async def shutdown(self) -> None:
        await self._app.shutdown()

    async def _make_server(self) -> web.Server:
        self._app.freeze()
        await self._app.startup()
        return docs_server(self._app, **self._kwargs)

    async def _cleanup_server(self) -> None:
        await self._app.cleanup()


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
    """Fail early when an upstream cannot be reached at all."""
    urls = [a.url for a in config.upstream.audiences] or [config.upstream.url]
    for url in urls:
        if url is not None:
            _check_url(config, url)


def _check_url(config: Config, url: str) -> None:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    # A sidecar's docs container may start a moment later: keep trying for connect_timeout.
    deadline = time.monotonic() + config.upstream.connect_timeout
    while True:
        try:
            with socket.create_connection((parts.hostname or "", port),
                                          timeout=config.upstream.connect_timeout):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise StartupError(
                    f"upstream {url} is unreachable "
                    f"({exc.strerror or exc.__class__.__name__}); start the docs server first "
                    "or fix upstream.url") from None
            time.sleep(0.25)


def admin_app(main: web.Application) -> web.Application:
    """Health and metrics (unless ``server.metrics: off``) on their own port, sharing the
    main app's state."""
    from gateway import routes

    app = web.Application()
    app[GATEWAY] = main[GATEWAY]
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/readyz", routes.readyz)
    if main[GATEWAY].config.server.metrics != "off":
        app.router.add_get("/metrics", routes.metrics)
    return app


class Serving:
    """The runners serving one config: the main site and the optional admin site."""

    def __init__(self, runners: list[web.BaseRunner]) -> None:
        self.runners = runners

    @classmethod
    async def start(cls, config: Config) -> Serving:
        """Build the app and listen. SO_REUSEPORT lets a reload bind beside the old one."""
        app = await build_app(config)
        runner = DocsRunner(app, access_log_class=AccessLogger,
                            access_log=logging.getLogger("gateway.access"),
                            shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        server = config.server
        runners: list[web.BaseRunner] = [runner]
        try:
            await web.TCPSite(runner, server.host, server.port, reuse_port=True).start()
            if server.admin_port is not None:
                admin_runner = web.AppRunner(admin_app(app), access_log=None)
                await admin_runner.setup()
                runners.append(admin_runner)
                await web.TCPSite(admin_runner, server.admin_host, server.admin_port,
                                  reuse_port=True).start()
        except BaseException:
            for started in runners:
                await started.cleanup()
            raise
        return cls(runners)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, release everything."""
        for runner in reversed(self.runners):
            await runner.cleanup()


async def reload(current: Serving, config: Config) -> tuple[Serving, Config]:
    """Apply the file again (SIGHUP): a valid file takes over, an invalid one is refused."""
    if config.source is None:
        log.warning("reload refused: the config did not come from a file")
        return current, config
    try:
        new_config = load_config(config.source)
        new = await Serving.start(new_config)
    except ConfigError as exc:
        log.error("reload refused: the new config has problems; the old one stays",
                  extra={"problems": exc.problems})
        return current, config
    except Exception as exc:
        log.error("reload refused: the new config could not start; the old one stays",
                  extra={"error": str(exc)})
        return current, config
    await current.stop()
    log.info("reloaded", extra={"source": str(config.source), "pid": os.getpid()})
    return new, new_config


def settle_memory() -> None:
    """Move what start-up built out of the collector's sight, and collect less often.

    Every request allocates a few hundred short-lived objects; with the default threshold
    the collector runs every few requests and walks the loaded modules and caches each
    time a full pass comes up. Frozen objects are never walked again.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


async def run_worker(config: Config) -> None:
    """Serve until SIGTERM/SIGINT, then let in-flight requests finish; SIGHUP reloads."""
    serving = await Serving.start(config)
    settle_memory()
    stop = asyncio.Event()
    hup = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    server = config.server
    log.info("listening", extra={"listen": f"{server.host}:{server.port}",
                                 "public_url": server.public_url, "pid": os.getpid(),
                                 "loop": type(loop).__module__.split(".")[0]})
    while not stop.is_set():
        stopping = asyncio.ensure_future(stop.wait())
        hupping = asyncio.ensure_future(hup.wait())
        await asyncio.wait({stopping, hupping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        hupping.cancel()
        if hup.is_set() and not stop.is_set():
            hup.clear()
            serving, config = await reload(serving, config)
    log.info("shutting down", extra={"pid": os.getpid()})
    await serving.stop()


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (not on Windows), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _worker_main(config: Config) -> None:
    setup_logging(config.logging)
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(run_worker(config))


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
            run_loop(run_worker(config))
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
        # SIGINT/SIGTERM stop every worker; SIGHUP makes each reload the file.
        sent = signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM
        for process in workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, sent)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    code = 0
    for process in workers:
        process.join()
        code = code or (process.exitcode or 0)
    return 0 if code in (0, -signal.SIGTERM) else 1
