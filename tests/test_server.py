"""`docs-gateway run` as a real process: start, workers, graceful shutdown, start failures."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from tests.helpers import HS_SECRET, SECRET, SLOW_STARTED, echo_app
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, upstream_url: str, port: int, **server: Any) -> Path:
    data = {
        "server": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}",
                   **server},
        "upstream": {"url": upstream_url},
        "mode": "personalize",
        "handshake": {"method": "jwt", "jwt": {
            "secret": HS_SECRET, "login_urls": [{"name": "D", "url": "https://d.test/login"}]}},
        "session": {"secrets": [SECRET]},
        "logging": {"format": "json"},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def run_gateway() -> Iterator[Any]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(config: Path) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(config)],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


async def log_until(process: subprocess.Popen[bytes],
                    done: Callable[[list[dict[str, Any]]], bool],
                    timeout: float = 30) -> list[dict[str, Any]]:
    """Read the gateway's JSON log lines from stderr until ``done`` holds for those read."""
    assert process.stderr is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    lines: list[dict[str, Any]] = []
    while not done(lines):
        line = await asyncio.wait_for(loop.run_in_executor(None, process.stderr.readline),
                                      max(deadline - loop.time(), 0))
        assert line, f"the gateway exited before the line awaited; it logged {lines}"
        lines.append(json.loads(line))
    return lines


async def gateway_process(tmp_path: Path, run_gateway: Any, aiohttp_server: Any,
                          **options: Any) -> tuple[TestServer, int, subprocess.Popen[bytes]]:
    """``docs-gateway run`` in front of the echo upstream on a free port (``options`` go to
    the config): the upstream, the port and the process, not yet waited for."""
    upstream: TestServer = await aiohttp_server(echo_app())
    port = free_port()
    process = run_gateway(write_config(tmp_path, str(upstream.make_url("")).rstrip("/"), port,
                                       **options))
    return upstream, port, process


async def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                async with client.get(f"http://127.0.0.1:{port}/_gateway/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("gateway did not become ready")


async def test_run_serves_and_stops_gracefully_on_sigterm(tmp_path: Path, run_gateway: Any,
                                                          aiohttp_server: Any) -> None:
    upstream, port, process = await gateway_process(tmp_path, run_gateway, aiohttp_server)
    await wait_ready(port, process)
    async with aiohttp.ClientSession() as client:
        slow = asyncio.ensure_future(client.get(f"http://127.0.0.1:{port}/slow?s=1"))
        # SIGTERM only once the slow request has reached the upstream.
        await asyncio.wait_for(upstream.app[SLOW_STARTED].wait(), 20)
        process.send_signal(signal.SIGTERM)
        response = await slow
        assert response.status == 200
        assert await response.text() == "late"
        response.release()
    assert process.wait(timeout=20) == 0
    assert process.stderr is not None
    lines = [json.loads(line) for line in process.stderr.read().decode().splitlines() if line]
    access = [line for line in lines if line["logger"] == "gateway.access"]
    assert any(line["path"] == "/slow" and line["status"] == 200 for line in access)
    assert all("?" not in line["path"] for line in access)


async def test_two_workers_share_the_port(tmp_path: Path, run_gateway: Any,
                                          aiohttp_server: Any) -> None:
    _upstream, port, process = await gateway_process(tmp_path, run_gateway, aiohttp_server,
                                                     workers=2)
    # Each worker logs its own pid once it listens; both must have before the signal.
    lines = await log_until(process, lambda read: sum(
        entry.get("msg") == "listening" for entry in read) == 2)
    listening = [entry for entry in lines if entry.get("msg") == "listening"]
    await wait_ready(port, process)
    async with aiohttp.ClientSession() as client:
        for _ in range(100):
            async with client.get(f"http://127.0.0.1:{port}/x",
                                  headers={"Connection": "close"}) as response:
                assert response.status == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert len({entry["pid"] for entry in listening}) == 2
    # Each worker runs on libuv's loop, not asyncio's own.
    assert {entry["loop"] for entry in listening} == {"uvloop"}


def test_port_in_use_is_one_line_exit_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, "http://127.0.0.1:9", port)
        result = subprocess.run([sys.executable, "-m", "gateway", "run", "-c", str(config)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr


def test_unreachable_upstream_at_start_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"http://127.0.0.1:{free_port()}", free_port())
    data = yaml.safe_load(config.read_text())
    data["upstream"]["connect_timeout"] = "500ms"
    config.write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, "-m", "gateway", "run", "-c", str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "GATEWAY_CONFIG": ""})
    assert result.returncode == 1
    assert "unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_sighup_reloads_a_valid_file_and_refuses_a_bad_one(
        tmp_path: Path, run_gateway: Any, aiohttp_server: Any) -> None:
    upstream: TestServer = await aiohttp_server(echo_app())
    port = free_port()
    config = write_config(tmp_path, str(upstream.make_url("")).rstrip("/"), port)
    process = run_gateway(config)
    await wait_ready(port, process)
    url = f"http://127.0.0.1:{port}/guide"
    async with aiohttp.ClientSession() as client:
        async with client.get(url) as response:
            assert response.status == 200  # personalize: open to all

        data = yaml.safe_load(config.read_text())
        data["mode"] = "authenticate"
        config.write_text(yaml.safe_dump(data))
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        status = 200
        while status == 200 and time.monotonic() < deadline:
            async with client.get(url) as response:
                status = response.status
            await asyncio.sleep(0.05)
        assert status == 401  # the new file applies

        config.write_text("mode: [broken\n")
        process.send_signal(signal.SIGHUP)
        # The refusal shows only in the log: once it is there, the reload is over.
        lines = await log_until(process, lambda read: any(
            line["msg"].startswith("reload refused") for line in read))
        async with client.get(url) as response:
            assert response.status == 401  # the old config stays
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert process.stderr is not None
    lines += [json.loads(line) for line in process.stderr.read().decode().splitlines() if line]
    messages = [line["msg"] for line in lines]
    assert "reloaded" in messages
    refused = [line for line in lines if line["msg"].startswith("reload refused")]
    assert refused and "problems" in refused[0]


def test_without_uvloop_the_gateway_runs_on_asyncios_loop() -> None:
    # uvloop does not install on Windows: the gateway then runs on asyncio's own loop.
    code = ("import asyncio, sys\n"
            "sys.modules['uvloop'] = None\n"
            "from gateway.server import run_loop\n"
            "async def main():\n"
            "    print(type(asyncio.get_running_loop()).__module__)\n"
            "run_loop(main())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parent.parent, check=True)
    assert done.stdout.strip().startswith("asyncio"), done.stdout


async def test_a_reader_who_leaves_mid_download_is_no_failure(tmp_path: Path, run_gateway: Any,
                                                              aiohttp_server: Any) -> None:
    # The reader resets the connection while the answer waits for it to read: the
    # gateway logs the request as the client's going (499), not as a failure of its own.
    _upstream, port, process = await gateway_process(tmp_path, run_gateway, aiohttp_server)
    await wait_ready(port, process)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(
        sock, b"GET /big?size=20000000&chunked=1 HTTP/1.1\r\nHost: docs.test\r\n\r\n")
    assert (await asyncio.wait_for(loop.sock_recv(sock, 64), 10)).startswith(b"HTTP/1.1 200")
    await asyncio.sleep(0.5)
    sock.close()  # a reset: lingering for no time
    lines = await log_until(process, lambda seen: any(
        line.get("path") == "/big" and "status" in line for line in seen))
    access = next(line for line in lines if line.get("path") == "/big" and "status" in line)
    assert access["status"] == 499
    assert not [line for line in lines if line.get("level") == "error"], lines
