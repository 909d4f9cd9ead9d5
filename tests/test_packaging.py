"""What `pip install .` brings must be enough to run every module of the package."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Import name -> distribution name, where they differ.
DISTRIBUTION = {"yaml": "pyyaml", "jwt": "pyjwt", "prometheus_client": "prometheus-client"}
# Installed by aiohttp itself, which the package depends on.
WITH_AIOHTTP = {"multidict", "yarl"}


def third_party_imports(*, demo: bool = False) -> set[str]:
    """What ``gateway/`` imports from outside the standard library: its runtime part, or
    (``demo``) the embedded demo."""
    names: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        if (path.parent.name == "demo") != demo:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {name for name in names
            if name != "gateway" and name not in sys.stdlib_module_names}


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = project["dependencies"] if extra is None \
        else project["optional-dependencies"][extra]
    return {re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower() for spec in specs}


def test_every_imported_library_is_a_declared_dependency() -> None:
    missing = {name for name in third_party_imports() - WITH_AIOHTTP
               if DISTRIBUTION.get(name, name).lower() not in declared()}
    assert not missing, f"imported by gateway/ but not in [project.dependencies]: {missing}"


def test_what_only_the_demo_needs_is_in_the_demo_extra() -> None:
    runtime = declared()
    demo_only = {name for name in third_party_imports(demo=True) - WITH_AIOHTTP
                 if DISTRIBUTION.get(name, name).lower() not in runtime}
    assert demo_only <= declared("demo"), "add these to the demo extra"
    assert declared("demo").isdisjoint(runtime), "a demo extra is only what the demo adds"
    assert declared("demo") <= declared("test"), "the tests run the demo"
