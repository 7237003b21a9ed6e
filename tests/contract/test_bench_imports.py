"""bench/ imports only the installed product and bench's own modules: never ``tests`` and no
``sys.path`` edits (a benchmark run as ``python bench/x.py`` finds its own ``harness`` beside
it, and thermopipe where pip installed it). An AST walk: nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def _bench_files() -> list[Path]:
    files = sorted(BENCH.rglob("*.py"))
    assert files, "no bench files found"
    return files


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.append((node.lineno, node.module or ""))
    return out


def test_no_bench_file_imports_tests() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}: imports {name}"
             for path in _bench_files()
             for line, name in _imports(ast.parse(path.read_text(encoding="utf-8")))
             if name == "tests" or name.startswith("tests.")]
    assert found == []


def test_no_bench_file_edits_sys_path() -> None:
    found = []
    for path in _bench_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr == "path"
                    and isinstance(node.value, ast.Name) and node.value.id == "sys"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: sys.path")
    assert found == []


def test_bench_imports_of_its_own_modules_name_files_beside_the_scripts() -> None:
    wrong = []
    for path in _bench_files():
        for line, name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            parts = name.split(".")
            if parts[0] == "harness":
                if not BENCH.joinpath(*parts).with_suffix(".py").exists() and \
                        not BENCH.joinpath(*parts, "__init__.py").exists():
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: {name} is not in bench/")
            elif parts[0] == "bench":  # the scripts run with bench/ on the path, not the root
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {name} (import harness.*)")
    assert wrong == []


def test_the_walk_sees_an_import_of_tests() -> None:
    tree = ast.parse("import os\nfrom tests.servers import free_port\nimport tests.e2e.tls\n")
    assert [n for _, n in _imports(tree) if n.startswith("tests")] == ["tests.servers",
                                                                       "tests.e2e.tls"]
