"""The product's import graph has no cycles.

An AST walk over schemas, program_support, edge_agent, hub, firmware_sim and demo (no module is
imported). Every import statement counts: module-level ones, those under ``if TYPE_CHECKING:``, and
deferred ones inside functions, because a circle closed by a lazy import is still a circle a reader
has to untangle (the notifiers' base <-> email/webhook circle was one). An edge ``a -> b`` is ``a``
naming ``b`` (or a name inside ``b``); package ``__init__`` modules run on the way in are not
counted as edges, as Python's own parent-package imports are not a design choice.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "program_support", "edge_agent", "hub", "firmware_sim", "demo")


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield from (f"{target}.{alias.name}" for alias in node.names)


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    mods = modules(root, packages)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for imported in _imported_names(tree, module, path.name == "__init__.py"):
            target = imported
            while target and target not in mods:  # `from a.b import C`: the module is a.b
                target = target.rpartition(".")[0]
            if target and target != module:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_product_has_no_import_cycles() -> None:
    graph = import_graph(ROOT)
    assert len(graph) > 100  # the walk found the packages
    assert cycles(graph) == []


def test_the_walk_finds_each_kind_of_circle(tmp_path: Path) -> None:
    # the three shapes the product had: a TYPE_CHECKING import, a deferred import in a function,
    # and a relative import; plus a chain that is not a circle
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from p.b import B\n")
    (pkg / "b.py").write_text("from p.a import A\n")
    (pkg / "c.py").write_text("def f():\n    from p.d import D\n")
    (pkg / "d.py").write_text("from .c import C\n")
    (pkg / "e.py").write_text("import p.a\n")
    graph = import_graph(tmp_path, ("p",))
    assert graph["p.d"] == {"p.c"}
    assert sorted(cycles(graph)) == [["p.a", "p.b"], ["p.c", "p.d"]]


#: which first-party packages each package may import: the arrows run one way, from the programs
#: down to the contract (schemas knows nothing of the programs or of their support code)
MAY_IMPORT = {
    "schemas": {"schemas"},
    "program_support": {"program_support", "schemas"},
    "firmware_sim": {"firmware_sim", "program_support", "schemas"},
    "edge_agent": {"edge_agent", "firmware_sim", "program_support", "schemas"},  # simulator
    "hub": {"hub", "program_support", "schemas"},
    "demo": {"demo", "edge_agent", "hub", "firmware_sim", "program_support", "schemas"},
}


def test_the_arrows_between_packages_run_one_way() -> None:
    graph = import_graph(ROOT)
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if target.split(".")[0] not in MAY_IMPORT[module.split(".")[0]]
    )
    assert wrong == []
