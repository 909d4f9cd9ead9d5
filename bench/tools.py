"""Finding (or installing) the programs the benchmark runs, and naming their versions."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from bench.procs import BenchError

# Program -> Debian package that provides it.
PACKAGES = {"nginx": "nginx", "caddy": "caddy", "wrk": "wrk", "redis-server": "redis-server",
            "curl": "curl"}


def missing(programs: Iterable[str]) -> list[str]:
    """The programs not on PATH (nginx is also looked for in /usr/sbin)."""
    return [name for name in programs if find(name) is None]


def find(program: str) -> str | None:
    """The path of a program, looking in the sbin folders too."""
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin:/usr/local/sbin")


def ensure(programs: Iterable[str]) -> None:
    """Install what is missing with apt-get when running as root; else say what to install."""
    absent = missing(programs)
    if not absent:
        return
    packages = sorted({PACKAGES[name] for name in absent})
    command = "apt-get install -y " + " ".join(packages)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(f"missing {', '.join(absent)}; install them first, for example: "
                         f"sudo {command}")
    print(f"installing {', '.join(packages)} with apt-get ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed: {done.stderr.strip()[-300:]}")
    still = missing(programs)
    if still:
        raise BenchError(f"still missing after apt-get: {', '.join(still)}")


def _version(argv: list[str], pattern: str) -> str | None:
    path = find(argv[0])
    if path is None:
        return None
    try:
        done = subprocess.run([path, *argv[1:]], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else None


def versions() -> dict[str, str | None]:
    """Versions of everything measured, for the results file."""
    import aiohttp

    return {
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": _version(["nginx", "-v"], r"nginx/(\S+)"),
        "caddy": _version(["caddy", "version"], r"v?(\d+\.\d+\.\d+\S*)"),
        "wrk": _version(["wrk", "-v"], r"wrk (\S+)"),
        "redis": _version(["redis-server", "--version"], r"v=(\S+)"),
        "curl": _version(["curl", "--version"], r"curl (\S+)"),
    }


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {"cpus": os.cpu_count(), "kernel": platform.release(),
            "machine": platform.machine(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def source_state(repo: Path) -> dict[str, object]:
    """The commit measured, and whether gateway/ had uncommitted changes then."""
    def git(*argv: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(repo), *argv], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        # Only the trailing newline goes: porcelain lines start with a significant space.
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "gateway").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "gateway_changes": changed}
