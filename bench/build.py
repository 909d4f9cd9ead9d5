"""The compiled build the benchmark measures (``DOCS_GATEWAY_COMPILE=1``, as the Docker image
ships it), made once per version of the sources and kept under ``bench/results/``."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.procs import BenchError

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / "results"


def sources_digest(repo: Path = REPO) -> str:
    """A digest of everything the compiled build is made from (and the compiler's version)."""
    digest = hashlib.sha256()
    files = [repo / "setup.py", repo / "pyproject.toml", *sorted((repo / "gateway").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".so":
            digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    try:
        from mypy.version import __version__ as mypy_version
    except ImportError:
        mypy_version = "none"
    digest.update(f"{sys.version}\0{mypy_version}".encode())
    return digest.hexdigest()[:16]


def compiled_tree(repo: Path = REPO, cache: Path = CACHE) -> Path:
    """A folder whose ``gateway`` package is the compiled build of ``repo``'s sources.

    Built on first use (a minute or two) and reused while the sources stay the same.
    """
    tree = cache / f"build-{sources_digest(repo)}"
    done = tree / ".built"
    if done.exists():
        return tree
    try:
        import mypyc  # noqa: F401
    except ImportError:
        raise BenchError("the compiled build needs mypy (pip install mypy), or pass --no-build "
                         "to measure the source tree as it is") from None
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(repo / name, tree / name)
    shutil.copytree(repo / "gateway", tree / "gateway",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    print("bench: compiling the gateway (DOCS_GATEWAY_COMPILE=1), once per source version",
          file=sys.stderr)
    env = {**os.environ, "DOCS_GATEWAY_COMPILE": "1"}
    done_build = subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"], cwd=tree, env=env,
        capture_output=True, text=True, timeout=1800, check=False)
    if done_build.returncode != 0:
        tail = (done_build.stderr or done_build.stdout).strip().splitlines()[-5:]
        raise BenchError("compiling the gateway failed (pass --no-build to measure the source "
                         "tree as it is):\n  " + "\n  ".join(tail))
    shutil.rmtree(tree / "build", ignore_errors=True)
    done.write_text("ok\n")
    return tree
