"""Build hook: a plain Python package by default.

With ``DOCS_GATEWAY_COMPILE=1`` the modules every proxied request runs through are compiled
to C extensions with mypyc (needs a C compiler and the Python headers at build time; nothing
more at run time). mypyc type-checks what it compiles, so the build also needs mypy, the YAML
stubs and the package's own dependencies: ``build_backend.py`` asks pip or ``python -m build``
for them (``COMPILE_REQUIRES`` and ``[project.dependencies]``), so
``DOCS_GATEWAY_COMPILE=1 pip wheel .`` works in a fresh environment. The compiled build
behaves the same and serves more requests per CPU second; the Docker image and the benchmark
use it.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import setup

#: The request path: compiled together, so calls between them are direct C calls.
COMPILED = [
    "gateway/boundary.py",
    "gateway/crypto.py",
    "gateway/docsport.py",
    "gateway/handshakes/base.py",
    "gateway/handshakes/jwt.py",
    "gateway/html/encoding.py",
    "gateway/html/gating.py",
    "gateway/html/head.py",
    "gateway/html/navigation.py",
    "gateway/html/page.py",
    "gateway/html/tokens.py",
    "gateway/html/tree.py",
    "gateway/identity.py",
    "gateway/limits.py",
    "gateway/metrics.py",
    "gateway/paths.py",
    "gateway/pipeline.py",
    "gateway/policy.py",
    "gateway/proxy/http1.py",
    "gateway/proxy/location.py",
    "gateway/proxy/origin.py",
    "gateway/proxy/static.py",
    "gateway/proxy/upstream.py",
    "gateway/responses.py",
    "gateway/scope.py",
    "gateway/services.py",
    "gateway/sessions/base.py",
    "gateway/sessions/codec.py",
    "gateway/sessions/cookie.py",
    "gateway/user.py",
]

#: What the compile needs besides the package's dependencies (mypy brings mypyc).
COMPILE_REQUIRES = ["mypy>=1.8", "types-PyYAML"]


def compile_requested() -> bool:
    """Whether this build is the compiled one (``DOCS_GATEWAY_COMPILE=1``)."""
    return os.environ.get("DOCS_GATEWAY_COMPILE", "").lower() in ("1", "true", "yes")


def extensions() -> list[Any]:
    """The compiled modules, when asked for; none for the plain package."""
    if not compile_requested():
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit("DOCS_GATEWAY_COMPILE=1 needs mypy where the package is built: "
                         "build with pip wheel . or pip install . (which install what the "
                         "compile needs), or install " + " ".join(COMPILE_REQUIRES)
                         + " and the package's dependencies first") from None
    return mypycify(COMPILED, opt_level="3")


# Run as a script (python setup.py, or by setuptools' build backend); build_backend.py
# imports it for COMPILE_REQUIRES and compile_requested.
if __name__ == "__main__":
    setup(ext_modules=extensions())
