"""The machinery under ``gateway.yaml`` validation: safe YAML, ``${VAR}`` interpolation, a
section reader that records every problem and notices unknown keys, and shared checks."""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from gateway import keys as keyfiles
from gateway.config.model import parse_duration
from gateway.errors import ConfigError

T = TypeVar("T")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # header and cookie names (RFC 9110 token)
_DIGITS = re.compile(r"^[0-9]+$")
USER_FIELDS = ("expiresAt", "groups", "content", "apiPlaygroundInputs")
SIGNING_ALGS = ("EdDSA", "ES256", "RS256")
_RSA_ALGS = ("RS256", "RS384", "RS512", "PS256")
JWT_ALGS = ("EdDSA", "ES256", "ES384", *_RSA_ALGS, "HS256", "HS384", "HS512")
OAUTH_RESERVED = ("response_type", "client_id", "redirect_uri", "state", "code_challenge",
                   "code_challenge_method", "nonce", "scope")
MISSING: Any = object()


class Problems:
    """Problems (and warnings) found so far, in file order, one line each."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.warnings: list[str] = []
        self._muted: set[str] = set()

    def add(self, path: str, message: str) -> None:
        if path in self._muted:
            return
        line = f"{path}: {message}" if path else message
        if line not in self.items:
            self.items.append(line)

    def mute(self, path: str) -> None:
        """Report nothing more about a value already known to be broken at its source."""
        self._muted.add(path)

    def muted(self, path: str) -> bool:
        return path in self._muted

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}")


def kind_of(value: Any, reveal: bool = True) -> str:
    """How a wrong value reads in a message; ``reveal=False`` for secrets."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return (f"the boolean {str(value).lower()} "
                "(YAML reads on/off/yes/no as booleans; quote it)")
    if isinstance(value, int | float):
        return f"the number {value}" if reveal else "a number"
    if isinstance(value, str):
        return f"the string {value!r}" if reveal else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, datetime.date):
        return "a date (YAML reads 2024-01-31 as a date; quote it)"
    return type(value).__name__


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """A "did you mean" for one clearly closest choice; none when two are as close."""
    scored = sorted(((difflib.SequenceMatcher(None, word, choice).ratio(), choice)
                     for choice in dict.fromkeys(choices)), reverse=True)
    if not scored or scored[0][0] < 0.6 or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return ""
    return f"; did you mean {scored[0][1]!r}?"


def _to_str(value: Any, reveal: bool = True) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {kind_of(value, reveal)}")
    return value


class Section:
    """Reads one mapping of the file, records problems, and notices unknown keys."""

    def __init__(self, data: Any, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.known: list[str] = []
        if data is None or data is MISSING:
            data = {}
        if not isinstance(data, dict):
            problems.add(path, f"must be a mapping of keys, not {kind_of(data)}")
            data = {}
        self.data: dict[Any, Any] = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def raw(self, name: str) -> Any:
        self.known.append(name)
        return self.data.get(name, MISSING)

    def present(self, name: str) -> bool:
        return self.data.get(name) is not None

    def section(self, name: str) -> Section:
        return Section(self.raw(name), self.key(name), self.problems)

    def _get(self, name: str, default: T, convert: Callable[[Any, str], T]) -> T:
        value = self.raw(name)
        if value is MISSING:
            return default
        try:
            return convert(value, self.key(name))
        except ValueError as exc:
            self.problems.add(self.key(name), str(exc))
            self.problems.mute(self.key(name))
            return default

    def string(self, name: str, default: str, *, secret: bool = False) -> str:
        return self._get(name, default, lambda v, _: _to_str(v, not secret))

    def opt_string(self, name: str, default: str | None = None, *,
                   secret: bool = False) -> str | None:
        return self._get(name, default, lambda v, _: None if v is None else _to_str(v, not secret))

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def convert(value: Any, path: str) -> str:
            if not isinstance(value, str):
                raise ValueError(f"must be one of {', '.join(choices)}, not {kind_of(value)}")
            if value not in choices:
                raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}"
                                 + did_you_mean(value, choices))
            return value

        return self._get(name, default, convert)

    def boolean(self, name: str, default: bool) -> bool:
        def convert(value: Any, path: str) -> bool:
            # "${VAR:-true}" yields a string; accept the two spellings that cannot mislead.
            if value in ("true", "false"):
                return bool(value == "true")
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, not {kind_of(value)}")
            return value

        return self._get(name, default, convert)

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        def convert(value: Any, path: str) -> int:
            return to_int(value, minimum)

        return self._get(name, default, convert)

    def duration(self, name: str, default: float, *, allow_zero: bool = False) -> float:
        def convert(value: Any, path: str) -> float:
            if not isinstance(value, str):
                number = isinstance(value, int | float) and not isinstance(value, bool)
                raise ValueError(f"must be a duration like 30s or 15m, not {kind_of(value)}"
                                 + (f' (write "{value}s" for seconds)' if number else ""))
            seconds = parse_duration(value)
            if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
                raise ValueError("must be longer than zero")
            return seconds

        return self._get(name, default, convert)

    def strings(self, name: str, default: tuple[str, ...], *,
                secret: bool = False) -> tuple[str, ...]:
        def convert(value: Any, path: str) -> tuple[str, ...]:
            if not isinstance(value, list):
                raise ValueError(f"must be a list of strings, not {kind_of(value, not secret)}")
            out = []
            for index, item in enumerate(value):
                try:
                    out.append(_to_str(item, not secret))
                except ValueError as exc:
                    self.problems.add(f"{path}[{index}]", str(exc))
            return tuple(out)

        return self._get(name, default, convert)

    def string_map(self, name: str) -> dict[str, str]:
        def convert(value: Any, path: str) -> dict[str, str]:
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise ValueError(f"must be a mapping of strings, not {kind_of(value)}")
            out = {}
            for key, item in value.items():
                try:
                    out[_to_str(key)] = _to_str(item)
                except ValueError as exc:
                    self.problems.add(f"{path}.{key}", str(exc))
            return out

        return self._get(name, {}, convert)

    def finish(self) -> None:
        """Report every key of this mapping that no reader asked for."""
        for name in self.data:
            if name in self.known:
                continue
            if isinstance(name, bool):
                self.problems.add(self.key(str(name).lower()), "unknown key (YAML reads "
                                  "on/off/yes/no as booleans; quote it)")
                continue
            if not isinstance(name, str):
                self.problems.add(self.key(str(name)), "unknown key (keys are words)")
                continue
            self.problems.add(self.key(name), "unknown key" + did_you_mean(name, self.known))


def to_int(value: Any, minimum: int) -> int:
    # A string of digits comes from "${VAR}"; it is exact, so take it.
    if isinstance(value, str) and _DIGITS.match(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number, not {kind_of(value)}")
    if value < minimum:
        raise ValueError(f"must be at least {minimum}, not {value}")
    return value


def interpolate(node: Any, env: Mapping[str, str], problems: Problems, path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of parsed YAML."""
    if isinstance(node, dict):
        return {k: interpolate(v, env, problems, f"{path}.{k}" if path else str(k))
                for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, problems, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is not None and (value != "" or default is None):
            return value
        if default is not None:
            return default
        missing.append(name)
        return ""

    result = _VAR.sub(substitute, node)
    if "${" in _VAR.sub("", node):
        problems.add(path, "has a malformed ${...}; write ${NAME} or ${NAME:-default}")
        problems.mute(path)
    elif missing:
        problems.add(path, f"environment variable {', '.join(missing)} is not set")
        problems.mute(path)
    return result


def split_host_port(text: str, path: str, problems: Problems) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not _DIGITS.match(port) or not host.strip("[]"):
        problems.add(path, f"must be host:port, like 127.0.0.1:8080, not {text!r}")
        return None
    number = int(port)
    if number > 65535:
        problems.add(path, f"port {number} is out of range 0-65535")
        return None
    return host.strip("[]"), number


def check_url(value: str | None, path: str, problems: Problems,
               schemes: tuple[str, ...] = ("http", "https"), *, reveal: bool = True) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    where = parts.netloc or (parts.scheme == "unix" and parts.path)
    if parts.scheme not in schemes or not where:
        shown = f", not {value!r}" if reveal else ""
        names = f"{', '.join(schemes[:-1])} or {schemes[-1]}" if len(schemes) > 1 else schemes[0]
        problems.add(path, f"must be an absolute {names} URL{shown}")


def resolve_path(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _key_problem(exc: keyfiles.KeyFileError, path: Path, text: str) -> str:
    message = str(exc)
    prefix = f"{path}: "
    return f"file {text!r}: {message.removeprefix(prefix)}"


def check_public_key(text: str, base: Path, where: str, algorithms: tuple[str, ...] | None,
                      problems: Problems) -> Path:
    path = resolve_path(base, text)
    if not path.is_file():
        problems.add(where, f"file {text!r} does not exist")
        return path
    try:
        key = keyfiles.load_public_key(path)
    except keyfiles.KeyFileError as exc:
        problems.add(where, _key_problem(exc, path, text))
        return path
    alg = keyfiles.alg_of(key)
    usable = _RSA_ALGS if alg == "RS256" else (alg,)
    if algorithms is not None and not set(usable) & set(algorithms):
        problems.add(where, f"holds a key for {'/'.join(usable)}, which algorithms "
                            f"({', '.join(algorithms) or 'empty'}) does not allow")
    return path


def check_private_key(text: str, base: Path, where: str, algorithm: str | None,
                       problems: Problems) -> Path:
    path = resolve_path(base, text)
    if not path.is_file():
        command = f"docs-gateway keys generate --alg {algorithm or 'EdDSA'} --out "
        problems.add(where, f"file {text!r} does not exist; create one with: "
                            f"{command}{text.removesuffix('.pem')}")
        return path
    try:
        key = keyfiles.load_private_key(path)
    except keyfiles.KeyFileError as exc:
        problems.add(where, _key_problem(exc, path, text))
        return path
    alg = keyfiles.alg_of(key)
    if algorithm is not None and alg != algorithm:
        problems.add(where, f"file {text!r} holds an {alg} key, but the algorithm is {algorithm}")
    if path.stat().st_mode & 0o077:
        problems.warn(where, f"file {text!r} can be read by other users; chmod 600 it")
    return path


def cpu_count() -> int:
    # Honour a container's CPU set, which os.cpu_count() ignores.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _duplicate_keys(node: yaml.Node, path: str, out: list[str]) -> None:
    """Keys given twice in one mapping: YAML keeps the last silently; we refuse."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            child = f"{path}.{name}" if path else name
            line = key_node.start_mark.line + 1
            if name in seen and name != "<<":
                out.append(f"{child}: is given twice (lines {seen[name]} and {line}); keep one")
            seen.setdefault(name, line)
            _duplicate_keys(value_node, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicate_keys(item, f"{path}[{index}]", out)


def parse_yaml(text: str, file: Path) -> tuple[Any, list[str]]:
    """Parsed data (plain YAML only: no tags that build objects) and duplicate-key problems."""
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ConfigError([f"{file}:{where} {exc.problem or exc.context or 'invalid YAML'}"]) \
            from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file}: invalid YAML ({exc})"]) from None
    duplicates: list[str] = []
    if tree is not None:
        _duplicate_keys(tree, "", duplicates)
    return data, duplicates
