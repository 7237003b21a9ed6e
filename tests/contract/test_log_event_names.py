"""Every log event the programs emit is named ``component.event`` in lowercase, so operators can
filter and alert on names (hub/README.md "Logs", edge_agent/README.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+")
LEVELS = {"debug", "info", "warning", "error", "critical", "exception"}


def log_event_names() -> list[tuple[str, int, str]]:
    found = []
    for package in ("edge_agent", "hub", "schemas", "program_support", "firmware_sim", "demo"):
        for path in (ROOT / package).rglob("*.py"):
            if "micropython" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in LEVELS and node.args
                        and isinstance(node.args[0], ast.Constant)
                        and isinstance(node.args[0].value, str)):
                    found.append((str(path.relative_to(ROOT)), node.lineno, node.args[0].value))
    return found


def test_every_log_event_is_component_dot_event() -> None:
    names = log_event_names()
    assert len(names) > 100  # the scan sees the programs' log calls
    bad = [f"{path}:{line}: {name!r}" for path, line, name in names if not NAME.fullmatch(name)]
    assert not bad, "\n".join(bad)
