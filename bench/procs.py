"""Server processes for the benchmark: start, wait until they answer, stop, and weigh them.

Memory is read from ``/proc``: the resident set (VmRSS) of a process and all of its
descendants, sampled on a background thread so a peak during a load run is caught.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024


class BenchError(Exception):
    """A benchmark step failed; the message says which server or tool and why."""


def free_port() -> int:
    """A loopback port the OS has just handed out (closed again for the server to take)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(port: int) -> bool:
    """Whether something accepts TCP connections on a loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url: str, headers: Mapping[str, str] | None = None,
                timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET without following redirects: the status and the body."""
    status, _headers, body = http_get(url, headers, timeout)
    return status, body


def http_get(url: str, headers: Mapping[str, str] | None = None,
             timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One GET without following redirects: the status, the response headers (names in
    lower case) and the body as it came on the wire (not decompressed)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return (int(response.status), {k.lower(): v for k, v in response.headers.items()},
                    response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@dataclass
class Server:
    """One server under the harness's control: a command, its log file, its readiness probe."""

    name: str
    argv: Sequence[str]
    log: Path
    ready_url: str | None = None
    ready_port: int | None = None
    # Sockets that must be listening on ready_port (the gateway's workers each open one).
    ready_listeners: int = 1
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """The root process id (the tree under it is what gets weighed)."""
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Launch in its own session (so the whole tree can be stopped) and wait until ready."""
        environ = dict(os.environ)
        environ.update(self.env or {})
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                list(self.argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=environ, cwd=self.cwd, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise BenchError(f"{self.name} exited with {code} at start; see {self.log}: "
                                 f"{tail(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"{self.name} did not answer within {timeout:.0f}s; "
                                 f"see {self.log}: {tail(self.log)}")
            time.sleep(0.02)

    def _ready(self) -> bool:
        if self.ready_port is not None and listeners(self.ready_port) < self.ready_listeners:
            return False
        if self.ready_url is not None:
            try:
                status, _ = http_status(self.ready_url, timeout=1.0)
            except OSError:
                return False
            return status < 500
        if self.ready_port is not None:
            return port_answers(self.ready_port)
        return True

    def stop(self) -> None:
        """SIGTERM to the process group, then SIGKILL if it lingers."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        self.process = None


def tail(path: Path, lines: int = 3) -> str:
    """The last lines of a log file, on one line, for an error message."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def children(pid: int) -> list[int]:
    """Direct children of a process, from ``/proc/<pid>/task/*/children``."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(part) for part in handle.read().split())
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """A process and all of its descendants."""
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children(current))
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) one process has used so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            # The fields after the name, which is in parentheses and may hold spaces.
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(roots: Sequence[int]) -> dict[int, float]:
    """CPU time of every process in the trees of ``roots``, by pid."""
    return {pid: cpu_seconds(pid) for root in roots for pid in tree(root)}


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU time the processes seen at both points used between them."""
    return sum(after[pid] - before[pid] for pid in after.keys() & before.keys())


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    """A process's command line, spaces between arguments."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def tree_rss(pids: Sequence[int]) -> int:
    """Summed RSS of several process trees."""
    return sum(rss_bytes(p) for root in pids for p in tree(root))


class RssSampler:
    """Samples the summed RSS of process trees on a thread; ``peak`` once stopped."""

    def __init__(self, roots: Sequence[int], interval: float = 0.05) -> None:
        self.roots = list(roots)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss(self.roots))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.roots))


def workers_rss(root: int) -> list[int]:
    """RSS of each serving process under a gateway: its spawned workers, or the root itself."""
    spawned = [pid for pid in tree(root)[1:] if "spawn_main" in cmdline(pid)]
    return [rss_bytes(pid) for pid in (spawned or [root])]


def listeners(port: int) -> int:
    """How many sockets listen on a loopback TCP port (one per worker with SO_REUSEPORT)."""
    wanted = f":{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "0A":
                        count += 1
        except OSError:
            continue
    return count
