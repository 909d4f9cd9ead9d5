"""A Dockerfile read, and replayed without Docker.

``replay`` runs each stage's instructions in order: ``ARG``, ``ENV`` and ``LABEL`` set what
they set, ``WORKDIR`` and ``COPY`` make folders and copy files (the build context filtered by
the ``.dockerignore`` as BuildKit filters it) into a folder standing in for the image's root,
and each ``RUN`` runs with ``/bin/sh -c`` there, ``PATH`` starting in a fresh virtualenv
that stands in for the image's Python. Absolute paths in a command that lie in the image
(all but the base image's: ``/usr``, ``/bin``, ``/tmp``, ...) are rewritten into the
stand-in root, or to what a ``--mount`` binds there. ``USER``,
``EXPOSE``, ``HEALTHCHECK``, ``ENTRYPOINT`` and ``CMD`` are noted for the test to use.

What stays outside: the base image (the machine's Python and tools stand in for it), the
user database (``groupadd`` and ``useradd`` are recorded, not run), and the network (pip
keeps its download cache: ``--no-cache-dir`` and ``PIP_NO_CACHE_DIR`` are dropped).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import venv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Absolute paths in a shell command: not after a word character, a colon or a slash (so
#: not inside a URL or a relative path).
_ABSOLUTE = re.compile(r"(?<![\w.:/~-])/[^\s'\";&|()<>=]*")
#: What the base image brings (the machine's own stands in for it): paths there stay.
_BASE_IMAGE = frozenset({"bin", "dev", "lib", "lib64", "proc", "sbin", "sys", "tmp", "usr"})
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_ACCOUNT_STUB = '#!/bin/sh\necho "$(basename "$0") $*" >> "{log}"\n'


# ---------------------------------------------------------------------------------------------
# Reading


def logical_lines(text: str) -> list[tuple[str, str]]:
    """The instructions as (KEYWORD, arguments), continuation lines joined, comments (and
    the ``# syntax=`` directive) left out."""
    logical: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not current and not line.strip()):
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, args = current.strip().partition(" ")
            logical.append((keyword.upper(), args.strip()))
            current = ""
    return logical


def stages(text: str) -> tuple[list[tuple[str, str]], list[list[tuple[str, str]]]]:
    """The global ``ARG`` lines before the first ``FROM``, and each stage's instructions (its
    ``FROM`` first)."""
    found: list[list[tuple[str, str]]] = [[]]
    for keyword, args in logical_lines(text):
        if keyword == "FROM":
            found.append([])
        found[-1].append((keyword, args))
    return found[0], found[1:]


def exec_form(args: str) -> list[str]:
    """An exec-form (JSON array) ``CMD``, ``ENTRYPOINT`` or health check command."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def key_values(args: str) -> dict[str, str]:
    """``KEY=value KEY2="more"`` as ``ENV`` and ``LABEL`` write it."""
    pairs = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        assert sep, f"only the KEY=value form is replayed: {args}"
        pairs[key] = value
    return pairs


def substitute(text: str, values: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` in an instruction, as Docker replaces them."""
    return _VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2), ""), text)


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether a ``.dockerignore`` leaves a path of the build context out: the last pattern
    that matches the path or a folder above it decides; ``!`` takes back in."""
    verdict = False
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


def _glob(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


# ---------------------------------------------------------------------------------------------
# Replaying


@dataclass
class Image:
    """One replayed stage: its stand-in root and Python, and what its instructions noted."""

    name: str
    base: str
    root: Path
    python: Path
    stubs: Path
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str | None = None
    exposed: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    mounts: dict[str, Path] = field(default_factory=dict)

    def host(self, path: str) -> Path:
        """Where a path of the image lies in the stand-in (``--mount`` targets included)."""
        for target, source in self.mounts.items():
            if path == target or path.startswith(target + "/"):
                return source / path.removeprefix(target).lstrip("/")
        return self.root / path.lstrip("/")

    def rewrite(self, text: str) -> str:
        """Absolute paths that lie in the image, moved into the stand-in."""
        def move(match: re.Match[str]) -> str:
            path = match.group(0)
            top = path.split("/")[1]
            return path if not top or top in _BASE_IMAGE else str(self.host(path))
        return _ABSOLUTE.sub(move, text)

    def environment(self) -> dict[str, str]:
        """What a process in the image sees: ``ENV`` (and, in ``RUN``, ``ARG``), with the
        stand-in Python first on ``PATH``. This machine's pip settings (how it reaches an
        index) come along; ``PIP_NO_CACHE_DIR`` does not."""
        machine = {k: v for k, v in os.environ.items()
                   if k.startswith("PIP_") and k != "PIP_NO_CACHE_DIR"}
        image = {k: v for k, v in self.env.items() if k != "PIP_NO_CACHE_DIR"}
        return {**machine, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
                **image,
                "PATH": f"{self.python / 'bin'}:{self.stubs}:/usr/local/bin:/usr/bin:/bin"}

    def command(self) -> list[str]:
        """``ENTRYPOINT`` and ``CMD``, with the image's paths moved into the stand-in."""
        return [self.rewrite(arg) for arg in self.entrypoint + self.cmd]

    def accounts(self) -> list[str]:
        """The ``groupadd``/``useradd`` calls the stage's commands made."""
        log = self.stubs / "accounts.log"
        return log.read_text().splitlines() if log.exists() else []

    def distributions(self) -> set[str]:
        """The names of the distributions installed in the stand-in Python."""
        (site,) = self.python.glob("lib/python*/site-packages")
        return {_canonical(p.name.split("-")[0]) for p in site.glob("*.dist-info")}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def replay(dockerfile: Path, context: Path, work: Path, *, build_args: dict[str, str] | None = None,
           timeout: float = 1200) -> dict[str, Image]:
    """Replay every stage of ``dockerfile`` with ``context`` as the build context, in
    ``work``; the stages by name (an unnamed one by its position, "0", "1", ...)."""
    global_lines, stage_lines = stages(dockerfile.read_text())
    ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not ignore_file.exists():
        ignore_file = context / ".dockerignore"
    patterns = [line.strip() for line in ignore_file.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")] \
        if ignore_file.exists() else []
    declared: dict[str, str] = {}
    for keyword, args in global_lines:
        assert keyword == "ARG", f"before FROM only ARG may stand, not {keyword}"
        name, _, default = args.partition("=")
        declared[name] = (build_args or {}).get(name, default)
    images: dict[str, Image] = {}
    for position, lines in enumerate(stage_lines):
        image = _replay_stage(position, lines, declared, build_args or {}, images, context,
                              patterns, work, timeout)
        images[image.name] = image
    return images


class _Ahead:
    """A replay running in a thread of its own, and what it gave or raised."""

    def __init__(self, dockerfile: Path, context: Path, work: Path) -> None:
        self.images: dict[str, Image] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(dockerfile, context, work),
                                       name="replay", daemon=True)
        self.thread.start()

    def _run(self, dockerfile: Path, context: Path, work: Path) -> None:
        try:
            self.images = replay(dockerfile, context, work)
        except BaseException as exc:  # handed to the test that waits for it
            self.error = exc

    def result(self) -> dict[str, Image]:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.images is not None
        return self.images


_AHEAD: dict[Path, _Ahead] = {}


def replay_ahead(dockerfile: Path, context: Path, work: Path) -> None:
    """Start replaying ``dockerfile`` now, in a thread: a stage's compile takes minutes, which
    the machine's other CPU spends while the tests before the ones that need it run.
    ``replayed`` collects it."""
    if dockerfile not in _AHEAD:
        _AHEAD[dockerfile] = _Ahead(dockerfile, context, work)


def replayed(dockerfile: Path, context: Path, work: Path) -> dict[str, Image]:
    """The replay of ``dockerfile`` started ahead (in the folder it was given), or one run
    now in ``work``."""
    ahead = _AHEAD.get(dockerfile)
    return ahead.result() if ahead is not None else replay(dockerfile, context, work)


def _replay_stage(position: int, lines: list[tuple[str, str]], declared: dict[str, str],
                  build_args: dict[str, str], images: dict[str, Image], context: Path,
                  patterns: list[str], work: Path, timeout: float) -> Image:
    (keyword, from_args), *rest = lines
    assert keyword == "FROM"
    words = substitute(from_args, declared).split()
    name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(position)
    folder = work / name
    image = Image(name=name, base=words[0], root=folder / "root", python=folder / "python",
                  stubs=folder / "stubs")
    image.root.mkdir(parents=True)
    venv.EnvBuilder(with_pip=True).create(image.python)
    image.stubs.mkdir()
    for account_tool in ("groupadd", "useradd"):
        stub = image.stubs / account_tool
        stub.write_text(_ACCOUNT_STUB.format(log=image.stubs / "accounts.log"))
        stub.chmod(0o755)
    for keyword, raw in rest:
        values = {**image.args, **image.env}
        if keyword == "ARG":
            # A default here wins over the global one; without one, the global one holds.
            arg, given, default = raw.partition("=")
            image.args[arg] = build_args.get(arg, default if given else declared.get(arg, ""))
        elif keyword == "ENV":
            image.env.update({k: substitute(v, values) for k, v in key_values(raw).items()})
        elif keyword == "LABEL":
            image.labels.update({k: substitute(v, values)
                                 for k, v in key_values(raw).items()})
        elif keyword == "WORKDIR":
            path = substitute(raw, values)
            image.workdir = path if path.startswith("/") else f"{image.workdir}/{path}"
            image.host(image.workdir).mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            _copy(image, raw, images, context, patterns)
        elif keyword == "RUN":
            _run(image, raw, images, timeout)
        elif keyword == "USER":
            image.user = raw
        elif keyword == "EXPOSE":
            image.exposed.extend(raw.split())
        elif keyword == "HEALTHCHECK":
            _options, _, command = raw.partition("CMD ")
            image.healthcheck = exec_form(command)
        elif keyword == "ENTRYPOINT":
            image.entrypoint = exec_form(raw)
        elif keyword == "CMD":
            image.cmd = exec_form(raw)
        else:
            raise AssertionError(f"{keyword} is not replayed; teach tests/dockerfile.py")
    return image


def _copy(image: Image, raw: str, images: dict[str, Image], context: Path,
          patterns: list[str]) -> None:
    words = shlex.split(raw)
    flags = dict(w.removeprefix("--").split("=", 1) for w in words if w.startswith("--"))
    *sources, dest = [w for w in words if not w.startswith("--")]
    assert set(flags) <= {"from", "chown", "chmod"}, raw
    origin = images[flags["from"]].root if "from" in flags else context
    target = image.host(dest if dest.startswith("/") else f"{image.workdir}/{dest}")
    for source in sources:
        assert not set(source) & set("*?["), f"COPY with a wildcard is not replayed: {raw}"
        path = origin / source.lstrip("/")
        assert path.exists(), f"COPY {source}: not in the build context"
        if path.is_dir():
            for file in _files(path, origin, patterns if "from" not in flags else []):
                out = target / file.relative_to(path)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, out)
        else:
            relative = path.relative_to(origin).as_posix()
            assert "from" in flags or not ignored(relative, patterns), \
                f"COPY {source}: the .dockerignore leaves it out of the build context"
            out = target / path.name if dest.endswith("/") or len(sources) > 1 else target
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)


def _files(folder: Path, origin: Path, patterns: list[str]) -> Iterator[Path]:
    for file in sorted(folder.rglob("*")):
        if file.is_file() and not ignored(file.relative_to(origin).as_posix(), patterns):
            yield file


def _run(image: Image, raw: str, images: dict[str, Image], timeout: float) -> None:
    command = raw
    image.mounts = {}
    while command.startswith("--"):
        flag, _, command = command.partition(" ")
        assert flag.startswith("--mount="), f"RUN {flag} is not replayed"
        options = dict(o.split("=", 1) for o in flag.removeprefix("--mount=").split(","))
        assert options.pop("type") == "bind", f"only bind mounts are replayed: {flag}"
        source = images[options["from"]].host(options.get("source", "/"))
        image.mounts[options["target"]] = source
        command = command.lstrip()
    command = re.sub(r"\s--no-cache-dir(?=\s)", "", command)
    env = {**image.args, **image.environment()}
    result = subprocess.run(["/bin/sh", "-c", image.rewrite(command)],
                            cwd=image.host(image.workdir), env=env, capture_output=True,
                            text=True, timeout=timeout)
    image.mounts = {}
    assert result.returncode == 0, \
        f"RUN in stage {image.name} failed ({result.returncode}):\n{command}\n" \
        f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"

