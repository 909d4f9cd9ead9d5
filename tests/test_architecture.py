"""ARCHITECTURE.md and the compiled set, kept in step with the package."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_layers import PACKAGE, imports, modules

ROOT = PACKAGE.parent
ROOMS = ROOT / "ARCHITECTURE.md"

#: Where every docs request starts: the docs port's connection, the boundary, the pipeline,
#: and the default handshake, session store and origins that the factories pick at start.
REQUEST_ROOTS = ("gateway.docsport", "gateway.boundary", "gateway.pipeline",
                 "gateway.handshakes.jwt", "gateway.sessions.cookie", "gateway.proxy.upstream",
                 "gateway.proxy.static")
#: Modules on the request path that stay plain Python, and why.
NOT_COMPILED = {
    "gateway.brand": "draws the gateway's own pages (errors, login) with Jinja2, not docs pages",
    "gateway.bounded": "generic containers shared with plain modules; not measured as worth it",
    "gateway.config.model": "frozen dataclasses built at start; requests only read them",
    "gateway.config.redisurl": "reads the Redis URL at start, when the client is made",
    "gateway.errors": "exception classes that override class attributes stay plain",
    "gateway.types": "type aliases only",
    "gateway.keys": "key files are read at start and at a reload",
    "gateway.handshakes.jwks": "runs per login or key fetch, not per request",
    "gateway.handshakes.jwt_verify": "runs per login, not per request",
    "gateway.handshakes.jws": "runs per login, not per request",
    "gateway.handshakes.replay": "runs per login, not per request",
    "gateway.indexes.filter": "runs for index files only; filtered copies are cached per reader",
    "gateway.indexes.formats": "runs for index files only; filtered copies are cached per reader",
    "gateway.indexes.inventory": "runs for index files only; filtered copies are cached per reader",
    "gateway.proxy.websocket": "runs once per upgrade; frames are aiohttp's",
    "gateway.redirects": "same-site checks of login routes and upgrades, not per request",
    "gateway.shared": "used per login, cache miss or refresh, not per request",
}


#: Rooms tested in files not named after them (``test_<room>.py``, ``test_<package>.py``),
#: mostly through a running gateway; every room with behaviour is tested somewhere here.
TESTED_IN = {
    "__main__": ("test_cli",),
    "boundary": ("test_pipeline", "test_app"),
    "denial": ("test_attack_denied",),
    "errors": ("test_app",),
    "handshakes/__init__": ("test_app",),
    "handshakes/base": ("test_app",),
    "handshakes/infocache": ("test_shared_session",),
    "handshakes/jwks": ("test_jwks",),
    "handshakes/jws": ("test_attack_jwt", "test_attack_oauth"),
    "handshakes/jwt": ("test_jwt_handshake", "test_jwt_browser"),
    "handshakes/jwt_token": ("test_jwt_handshake",),
    "handshakes/jwt_verify": ("test_attack_jwt",),
    "handshakes/oauth": ("test_oauth", "test_attack_oauth"),
    "handshakes/oauth_flow": ("test_oauth",),
    "handshakes/replay": ("test_jwt_handshake",),
    "handshakes/shared_session": ("test_shared_session",),
    "indexes/formats": ("test_indexes_filter", "test_mkdocs_site"),
    "indexes/inventory": ("test_indexes_filter", "test_navigation_sites"),
    "keys": ("test_identity", "test_cli"),
    "limits": ("test_app", "test_faults"),
    "metrics": ("test_app",),
    "proxy/origin": ("test_proxy_static", "test_proxy_upstream", "test_mkdocs_site"),
    "proxy/location": ("test_attack_location", "test_proxy_upstream"),
    "proxy/websocket": ("test_proxy_upstream", "test_attack_identity"),
    "responses": ("test_app",),
    "routes": ("test_app", "test_readme"),
    "scope": ("test_attack_headers", "test_attack_paths"),
    "services": ("test_app",),
}
#: Rooms with no behaviour of their own.
NO_BEHAVIOUR = frozenset({"types", "config/__init__", "html/__init__", "indexes/__init__",
                          "proxy/__init__"})


def rooms_block() -> list[str]:
    text = ROOMS.read_text()
    section = text.split("## The rooms", 1)[1]
    return section.split("```text", 1)[1].split("```", 1)[0].splitlines()


def entries() -> dict[str, str]:
    """Each room line's name (``cli.py``, ``html/``, ``html/page.py``) -> its text, with the
    continuation lines below it."""
    found: dict[str, str] = {}
    current = ""
    for line in rooms_block()[1:]:
        if line.startswith("  ") and not line.startswith("    "):
            names = re.split(r"\s{2,}", line.strip())[0].split(", ")
            current = names[0]
            for name in names:
                found[name] = line
        elif current:
            found[current] += " " + line.strip()
    return found


def request_path() -> set[str]:
    graph = {name: {target for target, _ in edges if target in modules()}
             for name, edges in imports().items()}
    seen: set[str] = set()
    stack = list(REQUEST_ROOTS)
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(graph[name])
    return seen


def compiled() -> set[str]:
    listed = re.findall(r'"(gateway/[\w/]+\.py)"', (ROOT / "setup.py").read_text())
    return {path[:-3].replace("/", ".") for path in listed}


def test_every_room_is_on_the_page() -> None:
    named = entries()
    missing = []
    for name, path in modules().items():
        relative = path.relative_to(PACKAGE).as_posix()
        top = relative.split("/")[0]
        if top == "demo" or relative == "__init__.py":
            continue
        if "/" not in relative:
            ok = relative in named
        else:
            folder = top + "/"
            stem = Path(relative).stem
            ok = relative in named or (folder in named and (
                stem == "__init__" or re.search(rf"\b{stem}\b", named[folder]) is not None))
        if not ok:
            missing.append(relative)
    assert missing == [], "name these in ARCHITECTURE.md's rooms"


def test_every_room_on_the_page_exists() -> None:
    for name in entries():
        assert (PACKAGE / name).exists(), f"ARCHITECTURE.md names {name}, which is gone"


def test_the_compiled_set_is_the_request_path() -> None:
    on_path = request_path()
    listed = compiled()
    assert sorted(listed - on_path) == [], "compiled, yet off the request path"
    assert sorted(on_path - listed - set(NOT_COMPILED)) == [], \
        "on the request path: compile it (setup.py COMPILED) or say why not (NOT_COMPILED)"
    assert sorted(set(NOT_COMPILED) - on_path) == [], "NOT_COMPILED names a module off the path"
    for name in listed:
        assert (ROOT / (name.replace(".", "/") + ".py")).exists(), name


def test_every_room_has_its_tests() -> None:
    tests = {path.stem for path in (ROOT / "tests").glob("test_*.py")}
    untested = []
    for path in modules().values():
        room = path.relative_to(PACKAGE).with_suffix("").as_posix()
        if room.startswith("demo") or room == "__init__" or room in NO_BEHAVIOUR:
            continue
        mirrored = {"test_" + room.replace("/__init__", "").replace("/", "_"),
                    "test_" + room.split("/")[0]}
        if not (mirrored & tests or set(TESTED_IN.get(room, ())) & tests):
            untested.append(room)
    assert untested == [], "give each a test_<room>.py, or say in TESTED_IN where it is tested"
    assert all(set(files) <= tests for files in TESTED_IN.values()), "TESTED_IN names a gone file"
