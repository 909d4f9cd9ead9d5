"""The package's build backend: setuptools', plus what the compiled build needs.

With ``DOCS_GATEWAY_COMPILE=1`` (see ``setup.py``) mypyc type-checks the modules it compiles,
so the build environment must hold mypy, the YAML stubs and every dependency of the
package. Asked for its requirements, this backend names them, so pip and ``python -m build``
install them into the isolated build environment: ``DOCS_GATEWAY_COMPILE=1 pip wheel .``
works in a fresh virtualenv. Describing the package (its metadata, the sdist) compiles
nothing, so the compile runs once per wheel.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import build_editable, build_wheel

from setup import COMPILE_REQUIRES, compile_requested

__all__ = [
    "build_editable", "build_sdist", "build_wheel", "get_requires_for_build_editable",
    "get_requires_for_build_sdist", "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable", "prepare_metadata_for_build_wheel",
]

ROOT = Path(__file__).resolve().parent
Settings = dict[str, Any] | None


def _compile_requires() -> list[str]:
    """mypy, the stubs, and the package's dependencies, which mypyc checks the code against."""
    if not compile_requested():
        return []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [*COMPILE_REQUIRES, *project["dependencies"]]


@contextlib.contextmanager
def _describing() -> Iterator[None]:
    """Run setup.py for metadata or an sdist only: the compiled build's are the plain
    package's, and the compile's requirements may not be installed yet."""
    saved = os.environ.pop("DOCS_GATEWAY_COMPILE", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["DOCS_GATEWAY_COMPILE"] = saved


def get_requires_for_build_wheel(config_settings: Settings = None) -> list[str]:
    with _describing():
        requires: list[str] = _setuptools.get_requires_for_build_wheel(config_settings)
    return requires + _compile_requires()


def get_requires_for_build_editable(config_settings: Settings = None) -> list[str]:
    with _describing():
        requires: list[str] = _setuptools.get_requires_for_build_editable(config_settings)
    return requires + _compile_requires()


def get_requires_for_build_sdist(config_settings: Settings = None) -> list[str]:
    with _describing():
        requires: list[str] = _setuptools.get_requires_for_build_sdist(config_settings)
    return requires


def prepare_metadata_for_build_wheel(metadata_directory: str,
                                     config_settings: Settings = None) -> str:
    with _describing():
        name: str = _setuptools.prepare_metadata_for_build_wheel(metadata_directory,
                                                                  config_settings)
    return name


def prepare_metadata_for_build_editable(metadata_directory: str,
                                        config_settings: Settings = None) -> str:
    with _describing():
        name: str = _setuptools.prepare_metadata_for_build_editable(metadata_directory,
                                                                     config_settings)
    return name


def build_sdist(sdist_directory: str, config_settings: Settings = None) -> str:
    with _describing():
        name: str = _setuptools.build_sdist(sdist_directory, config_settings)
    return name
