"""Every dataclass the agent can load carries a docstring: ``dataclasses`` writes one for a class
without (``inspect.signature``), and that import alone is 0.7 MiB of an agent's resident memory
(``inspect`` with ``ast``, ``dis`` and ``tokenize``; edge_agent/deferred_imports.py, issue 25).
An AST walk over the packages an agent process imports from; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edge_agent", "program_support", "schemas", "firmware_sim")


def undocumented_dataclasses(root: Path, packages: tuple[str, ...]) -> list[str]:
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "micropython" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ClassDef):
                    continue
                names = [ast.unparse(d).split("(")[0] for d in node.decorator_list]
                if {"dataclass", "dataclasses.dataclass"} & set(names) \
                        and ast.get_docstring(node) is None:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    return found


def test_every_dataclass_an_agent_may_load_has_a_docstring() -> None:
    assert undocumented_dataclasses(ROOT, PACKAGES) == []


def test_the_walk_finds_an_undocumented_dataclass(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "m.py").write_text(
        "from dataclasses import dataclass\n"
        "@dataclass(frozen=True)\nclass A:\n    x: int\n"
        "@dataclass\nclass B:\n    '''documented'''\n    x: int\n")
    assert undocumented_dataclasses(tmp_path, ("p",)) == ["p/m.py:3 A"]
