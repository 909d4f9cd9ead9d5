"""The layers of the package, written as import contracts: no circles, no import from a
lower layer to a higher one, and no module taking another module's underscore names.

Every import counts, at module level or inside a function (a deferred import is still a
tie). ARCHITECTURE.md draws the same layers in words.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"

#: From the top down: a module may import its own layer and the layers below it. A module
#: is placed by the longest prefix that names it ("gateway.html" holds html/ but the page).
LAYERS: list[tuple[str, ...]] = [
    ("gateway.__main__", "gateway.cli", "gateway.demo", "gateway.audit", "gateway.init"),
    ("gateway.server",),
    ("gateway.app",),
    ("gateway.routes", "gateway.denial"),
    ("gateway.pipeline",),
    ("gateway.services",),
    ("gateway.html.page", "gateway.handshakes", "gateway.boundary"),
    ("gateway.indexes", "gateway.proxy", "gateway.sessions", "gateway.identity",
     "gateway.limits", "gateway.policy", "gateway.logs", "gateway.scope", "gateway.responses"),
    ("gateway.html", "gateway.config", "gateway.user", "gateway.paths", "gateway.keys",
     "gateway.crypto", "gateway.bounded", "gateway.metrics", "gateway.redirects",
     "gateway.errors", "gateway.types", "gateway.shared", "gateway.brand", "gateway"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@cache
def imports() -> dict[str, set[tuple[str, str]]]:
    """Module -> (imported module, name or "") for every import of a gateway module."""
    known = modules()
    found: dict[str, set[tuple[str, str]]] = {}
    for name, path in known.items():
        edges: set[tuple[str, str]] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {(alias.name, "") for alias in node.names
                          if alias.name.split(".")[0] == "gateway"}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level \
                    and node.module.split(".")[0] == "gateway":
                for alias in node.names:
                    # "from gateway.handshakes import oauth_flow" imports a module.
                    sub = f"{node.module}.{alias.name}"
                    edges.add((sub, "") if sub in known else (node.module, alias.name))
        found[name] = {edge for edge in edges if edge[0] != name}
    return found


def layer_of(name: str) -> int:
    best, found = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found is not None, f"{name} is in no layer: add it to LAYERS (and ARCHITECTURE.md)"
    return found


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_no_module_imports_a_higher_layer() -> None:
    upward = [f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
              for name, edges in imports().items() for target, _ in edges
              if layer_of(target) < layer_of(name)]
    assert upward == []


def test_no_circles() -> None:
    graph = {name: {target for target, _ in edges if target in modules()}
             for name, edges in imports().items()}
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert circles == []


def test_no_module_takes_another_modules_private_names() -> None:
    private = [f"{name} takes {target}.{taken}" for name, edges in imports().items()
               for target, taken in edges if taken.startswith("_")]
    assert private == []


def test_the_contracts_see_the_imports() -> None:
    # The checks above are only as good as the reading: it must find known imports.
    assert any(target == "gateway.pipeline" for target, _ in imports()["gateway.app"])
    assert ("gateway.handshakes.oauth_flow", "") in imports()["gateway.handshakes.oauth"]
    assert layer_of("gateway.html.page") < layer_of("gateway.html.head")
