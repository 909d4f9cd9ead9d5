"""What `pip install .` brings must be enough to run every module of the package, and
`python -m build` gives a release: a wheel and an sdist that pass `twine check`, one version."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests import dockerfile

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


# ---------------------------------------------------------------------------------------------
# Release: the wheel and sdist, their metadata, the version


def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data["project"]


def test_the_version_is_written_once_and_the_image_labels_agree() -> None:
    version = project()["version"]
    global_args, stages = dockerfile.stages((ROOT / "deploy" / "Dockerfile").read_text())
    # The Dockerfile names it for its label; the runtime stage installs exactly that version
    # from the builder's wheels (docs-gateway==${VERSION}), so a stale label fails the build.
    assert f"VERSION={version}" in [args for _kw, args in global_args]
    runtime = stages[-1]
    (install,) = [args for kw, args in runtime if kw == "RUN" and "pip install" in args]
    assert '"docs-gateway==${VERSION}"' in install
    labels = dockerfile.key_values(" ".join(args for kw, args in runtime if kw == "LABEL"))
    prefix = "org.opencontainers.image."
    assert labels == {f"{prefix}title": project()["name"],
                      f"{prefix}description": project()["description"],
                      f"{prefix}version": "${VERSION}",
                      f"{prefix}licenses": project()["license"]}
    # The command line asks the installed package (docs-gateway --version); no module of
    # the package carries a version of its own.
    for path in (ROOT / "gateway").rglob("*.py"):
        assert version not in path.read_text(encoding="utf-8"), path


@pytest.mark.slow
@pytest.mark.builds_package
def test_build_gives_a_wheel_and_sdist_that_pass_twine_check(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", "results", ".*_cache"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("DOCS_GATEWAY_COMPILE", "PYTHONDONTWRITEBYTECODE")}
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"),
                            str(tree)], env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    # Warning-free: no deprecated setting, no file the build expected and did not find.
    warnings = [line for line in (built.stdout + built.stderr).splitlines()
                if re.search(r"warning|deprecat", line, re.I)
                and not line.startswith("WARNING: Location")]
    assert warnings == []
    version = project()["version"]
    sdist = tmp_path / "dist" / f"docs_gateway-{version}.tar.gz"
    wheel = tmp_path / "dist" / f"docs_gateway-{version}-py3-none-any.whl"
    assert sorted((tmp_path / "dist").iterdir()) == [wheel, sdist]
    twine = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(sdist),
                            str(wheel)], capture_output=True, text=True, timeout=120)
    assert twine.returncode == 0, twine.stdout + twine.stderr
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = archive.read(f"docs_gateway-{version}.dist-info/METADATA").decode()
        entry_points = archive.read(f"docs_gateway-{version}.dist-info/entry_points.txt")
    assert f"docs_gateway-{version}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: Apache-2.0" in meta.splitlines()
    assert f"Version: {version}" in meta.splitlines()
    assert b"docs-gateway = gateway.cli:main" in entry_points
    assert {name.split("/")[0] for name in names} == {"gateway",
                                                      f"docs_gateway-{version}.dist-info"}
    with tarfile.open(sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    # What building from the sdist needs (pip builds the wheel above from it), no tests.
    assert {"pyproject.toml", "setup.py", "build_backend.py", "LICENSE", "README.md",
            "gateway/cli.py"} <= members
    assert not any(name.startswith("tests/") for name in members)
