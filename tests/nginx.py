"""A real nginx for tests: one ``server`` block on a loopback address, for one test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port

START_TIMEOUT = 15.0


def nginx_binary() -> str:
    """The nginx executable; fails (does not skip) when it is not installed."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
                                      else None)
    if found is None:
        pytest.fail("nginx is not installed; install it (Debian: apt-get install nginx)",
                    pytrace=False)
    return found


async def _wait_listening(process: subprocess.Popen[bytes], host: str, port: int,
                          log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nginx did not start on {host}:{port}:\n"
                            f"{log.read_text() if log.exists() else ''}", pytrace=False)
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return


@contextlib.asynccontextmanager
async def nginx_serving(tmp: Path, server: str, *, host: str = "127.0.0.1",
                        port: int | None = None) -> AsyncIterator[str]:
    """Run nginx with one ``server`` block (its body; ``listen`` is added) and yield its
    origin, ``http://host:port``; the whole process group is killed afterwards."""
    port = port if port is not None else free_port(host)
    work = tmp / f"nginx-{port}"
    work.mkdir(parents=True, exist_ok=True)
    temp = "".join(f"    {kind}_temp_path {work / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    log = work / "error.log"
    # As root, workers would run as "nobody", who cannot read the test's private folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    (work / "nginx.conf").write_text(
        user + "worker_processes 1;\nevents { worker_connections 64; }\n"
        "http {\n    access_log off;\n    include /etc/nginx/mime.types;\n" + temp
        + f"    server {{\n        listen {host}:{port};\n{server}\n    }}\n}}\n")
    command = [nginx_binary(), "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(log),
               "-g", f"daemon off; pid {work / 'nginx.pid'}; error_log {log} info;"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               cwd=work, start_new_session=True)
    try:
        await _wait_listening(process, host, port, log)
        yield f"http://{host}:{port}"
    finally:
        # The whole group: a SIGKILLed nginx master would leave its workers behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def site_block(root: Path) -> str:
    """A ``server`` block serving a built site as a docs host does (its own 404 page)."""
    return f"        root {root};\n        error_page 404 /404.html;\n"


@contextlib.asynccontextmanager
async def audience_builds(tmp: Path, admin: Path,
                          everyone: Path) -> AsyncIterator[list[dict[str, Any]]]:
    """Two builds of one site, each served by its own nginx, as ``upstream.audiences``:
    ``admins`` (the group admin) and ``everyone``."""
    async with nginx_serving(tmp / "admins", site_block(admin)) as admins, \
            nginx_serving(tmp / "everyone", site_block(everyone)) as rest:
        yield [{"name": "admins", "groups": ["admin"], "url": admins},
               {"name": "everyone", "url": rest}]
