"""The README stays true: its quickstart, config reference, routes and commands match the code."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import ROUTES, build_app
from gateway.config import reader as configread
from gateway.config.load import build_config
from gateway.errors import ConfigError
from tests.helpers import make_config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
QUICKSTART = ["pip install . && docs-gateway demo", "scripts/test"]
# Maps whose keys are the user's own (header names, request parameters), not config keys.
FREE_FORM = frozenset({"handshake.oauth.extra_params", "identity.headers"})
_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)
SHELL = frozenset({"", "sh", "bash", "shell", "console"})
_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_COMMAND = re.compile(r"(?<![\w/.:-])docs-gateway\s+([a-z][a-z-]*)(?:\s+([a-z][a-z-]*))?")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")

Client = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@functools.cache
def readme() -> str:
    return README.read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text under ``## title`` up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", readme(), re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def tables(text: str, first_header: str) -> Iterator[list[str]]:
    """Body rows (cells stripped) of every Markdown table whose first header is ``first_header``."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].startswith("|") and _cells(lines[index])[0] == first_header \
                and index + 1 < len(lines) and set(lines[index + 1]) <= set("|-: "):
            index += 2
            while index < len(lines) and lines[index].startswith("|"):
                yield _cells(lines[index])
                index += 1
        else:
            index += 1


def _cells(line: str) -> list[str]:
    # A "\|" inside a cell is a literal pipe, not a column break.
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [part.strip().replace("\\|", "|") for part in parts]


def code(cell: str) -> str:
    """The one code span a cell must consist of."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"expected a single `code` cell, got {cell!r}"
    return match.group(1)


def yaml_keys(node: Any, prefix: str = "") -> set[str]:
    """Dotted paths of a mapping's leaves; lists and free-form maps are leaves."""
    keys: set[str] = set()
    for name, value in node.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and value and path not in FREE_FORM:
            keys |= yaml_keys(value, path + ".")
        else:
            keys.add(path)
    return keys


def reference_keys() -> list[str]:
    return [code(row[0]) for row in tables(section("Configuration reference"), "key")]


def test_quickstart_is_exactly_the_two_commands() -> None:
    blocks = _FENCE.findall(section("Quickstart"))
    assert len(blocks) == 1, "the quickstart has exactly one code block"
    assert blocks[0][1].splitlines() == QUICKSTART


def test_the_quickstart_test_command_is_what_ci_runs() -> None:
    script, ci = ROOT / "scripts" / "test", ROOT / ".ci" / "run"
    for path in (script, ci):
        assert path.is_file() and os.access(path, os.X_OK), f"{path} is not an executable file"
    commands = [line.strip() for line in ci.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert any(re.search(r"(^|[\s/])scripts/test\b", line) for line in commands)


def test_config_reference_lists_each_key_once() -> None:
    keys = reference_keys()
    assert keys, "the configuration reference has no key tables"
    assert len(keys) == len(set(keys)), sorted({k for k in keys if keys.count(k) > 1})


def test_config_reference_matches_gateway_yaml() -> None:
    example = yaml.safe_load((ROOT / "gateway.yaml").read_text(encoding="utf-8"))
    documented, named = set(reference_keys()), yaml_keys(example)
    assert not documented - named, f"in README.md but not in gateway.yaml: " \
                                   f"{sorted(documented - named)}"
    assert not named - documented, f"in gateway.yaml but not in README.md: " \
                                   f"{sorted(named - documented)}"


def test_config_reference_matches_the_keys_the_validator_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    read: set[str] = set()
    original = configread.Section.raw

    def recording(self: configread.Section, name: str) -> Any:
        if "[" not in self.path:  # keys inside list items are documented with their list
            read.add(self.key(name))
        return original(self, name)

    monkeypatch.setattr(configread.Section, "raw", recording)
    example = yaml.safe_load((ROOT / "gateway.yaml").read_text(encoding="utf-8"))
    try:
        build_config(example, base=ROOT, env={"GATEWAY_SESSION_SECRET": "s" * 40})
    except ConfigError as exc:  # the example's key files need not exist here
        unknown = [problem for problem in exc.problems if "unknown key" in problem]
        assert not unknown, unknown
    leaves = {key for key in read if not any(other.startswith(key + ".") for other in read)}
    documented = set(reference_keys())
    assert not documented - leaves, f"documented but not read by the validator: " \
                                    f"{sorted(documented - leaves)}"
    assert not leaves - documented, f"read by the validator but not documented: " \
                                    f"{sorted(leaves - documented)}"


def documented_routes() -> list[tuple[str, list[str]]]:
    rows = tables(readme(), "route")
    return [(code(row[0]), [m.strip() for m in row[1].split(",")]) for row in rows]


def route_configs(root: Path) -> list[dict[str, Any]]:
    """One app per handshake, each with every optional route switched on."""
    base = {"mode": "personalize", "upstream": {"url": None, "root": str(root)},
            "server": {"compat": ["mintlify"], "trusted_proxies": ["127.0.0.1/32"],
                       "forward_auth": "nginx", "metrics": "public"}}
    oauth = {"authorization_url": "https://id.example.com/authorize",
             "token_url": "https://id.example.com/token",
             "jwks_url": "https://id.example.com/jwks"}
    return [base,
            {**base, "handshake": {"method": "shared_session", "shared_session": {
                "info_api_url": "http://127.0.0.1:9/user-info"}}},
            {**base, "handshake": {"method": "oauth", "oauth": oauth}}]


async def test_every_documented_route_is_served(aiohttp_client: Client, tmp_path: Path) -> None:
    routes = documented_routes()
    assert routes, "README.md has no route tables"
    clients = [await aiohttp_client(await build_app(make_config(None, **sections)))
               for sections in route_configs(tmp_path)]
    headers = {"Accept": "application/json"}

    async def statuses(method: str, path: str) -> list[int]:
        found = []
        for client in clients:
            async with client.request(method, path, headers=headers,
                                      allow_redirects=False) as response:
                found.append(response.status)
        return found

    # An unknown name answers 404 from every app, so a 404 below really means "missing".
    assert set(await statuses("GET", "/_gateway/no-such-route")) == {404}
    for path, methods in routes:
        for method in methods:
            found = await statuses(method, path)
            assert any(status not in (404, 405) for status in found), (method, path, found)


async def test_every_served_route_is_documented(aiohttp_client: Client, tmp_path: Path) -> None:
    documented = {path for path, _ in documented_routes()}
    for sections in route_configs(tmp_path):
        app = await build_app(make_config(None, **sections))
        await aiohttp_client(app)
        served = set(app[ROUTES].routes)
        assert served, "the route table is empty"
        assert not served - documented, f"not in README.md: {sorted(served - documented)}"


@functools.cache
def cli_help(*words: str) -> str:
    result = subprocess.run([sys.executable, "-m", "gateway", *words, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"docs-gateway {' '.join(words)} --help: {result.stderr}"
    return result.stdout


def command_lines() -> Iterator[str]:
    """Every code span, and every shell block line (continuations joined), in the README."""
    text = readme()
    for language, block in _FENCE.findall(text):
        if language.strip() in SHELL:
            yield from block.replace("\\\n", " ").splitlines()
    yield from _SPAN.findall(_FENCE.sub("", text))


def test_every_documented_command_and_flag_exists() -> None:
    mentioned: list[tuple[list[str], list[str]]] = []
    for line in command_lines():
        for match in _COMMAND.finditer(line):
            words = [match.group(1)]
            if match.group(1) == "keys" and match.group(2):
                words.append(match.group(2))
            rest = re.split(r"\s(?:&&|\||#|;)\s", line[match.end(1):])[0]
            mentioned.append((words, _FLAG.findall(rest)))
    assert {words[0] for words, _ in mentioned} >= {"run", "check", "keys", "token", "demo"}
    for words, flags in mentioned:
        parent = cli_help(*words[:-1])
        assert re.search(rf"^\s+{re.escape(words[-1])}\s", parent, re.M), \
            f"docs-gateway {' '.join(words)} is not a command"
        usage = cli_help(*words)
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}\b", usage), \
                f"docs-gateway {' '.join(words)} has no {flag}"
