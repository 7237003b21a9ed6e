"""Every package a production module imports is a runtime dependency of the role that runs it.

Read from the source (every ``import``, at module level or inside a function) and from
pyproject.toml, so it needs no install: the fast twin of test_role_installs.py. Before the
per-role extras, hub/alerting/notifiers/webhook.py imported httpx, which only the ``dev`` extra
installed, and this test failed on it.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from program_support.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"edge_agent", "hub", "firmware_sim", "schemas", "program_support", "demo", "tests"}

#: which role runs a file: the first matching prefix wins. "base" is the package without extras.
OWNERS: list[tuple[str, str]] = [
    ("demo/", "demo"),
    ("hub/", "hub"),
    ("edge_agent/", "agent"),
    ("firmware_sim/", "base"),  # its scenario files are read by program_support/plain_config
    ("schemas/registry.py", "avro"),
    ("schemas/avro_codec.py", "avro"),  # fastavro imported on first use
    ("schemas/models.py", "models"),
    ("schemas/codec.py", "models"),  # and fastavro on its Avro path, from avro_codec
    ("schemas/generate_plain.py", "models"),  # a development tool: writes plain_messages.py
    ("schemas/", "base"),  # the plain half: the agent's messages, errors, ids, topics
    ("program_support/pydantic_loading.py", "models"),  # the hub's configs into pydantic models
    ("program_support/mqtt_settings.py", "models"),  # the hub's [mqtt], a pydantic model
    ("program_support/", "base"),
]


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def _name(requirement: str) -> tuple[str, list[str]]:
    found = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", requirement)
    assert found, requirement
    extras = [e.strip() for e in (found[2] or "").split(",") if e.strip()]
    return found[1].lower().replace("_", "-"), extras


def role_distributions(role: str) -> set[str]:
    """Distributions ``pip install 'thermopipe[role]'`` brings (self-references followed)."""
    project = pyproject()
    optional: dict[str, list[str]] = project["optional-dependencies"]  # type: ignore[assignment]
    wanted = list(project["dependencies"])  # type: ignore[call-overload]
    if role != "base":
        wanted += optional[role]
    out: set[str] = set()
    for requirement in wanted:
        name, extras = _name(requirement)
        if name == "thermopipe":
            for extra in extras:
                out |= role_distributions(extra)
        else:
            out.add(name)
    return out


def owner(path: Path) -> str:
    rel = path.relative_to(ROOT).as_posix()
    return next(role for prefix, role in OWNERS if rel.startswith(prefix))


def _runnable(tree: ast.AST) -> list[ast.AST]:
    """Every node but those of a pydantic hook (``__get_pydantic_core_schema__``: only pydantic
    calls it, so pydantic is there; schemas/ids.py's plain identifiers carry one)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef) and node.name.startswith("__get_pydantic"):
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in _runnable(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def distribution_of(module: str) -> str | None:
    """The distribution that provides an import name; None for stdlib and first-party."""
    if module in sys.stdlib_module_names or module in FIRST_PARTY or module == "__future__":
        return None
    dists = packages_distributions().get(module)
    assert dists, f"no installed distribution provides {module!r}: add it to pyproject.toml"
    return dists[0].lower().replace("_", "-")


def production_files() -> list[Path]:
    files = []
    for package in ("edge_agent", "hub", "firmware_sim", "schemas", "program_support", "demo"):
        files += [p for p in (ROOT / package).rglob("*.py") if "micropython" not in p.parts]
    return sorted(files)


def test_every_production_import_is_a_dependency_of_its_role() -> None:
    problems = []
    for path in production_files():
        role = owner(path)
        allowed = role_distributions(role)
        for module in sorted(imported_top_levels(path)):
            dist = distribution_of(module)
            if dist is not None and dist not in allowed:
                problems.append(f"{path.relative_to(ROOT)} ({role}) imports {module} from {dist}, "
                                f"which 'thermopipe[{role}]' does not install")
    assert not problems, "\n".join(problems)


def test_the_agent_role_installs_no_pydantic() -> None:
    """pydantic-core is compiled and has no armv6l wheel (Pi Zero, Pi 1): issue 25. The agent's
    and firmware-sim's files import none (``edge_agent/`` is the agent role's, ``firmware_sim/``
    the bare package's: the check above holds both)."""
    assert not {"pydantic", "pydantic-core"} & role_distributions("agent")
    assert "pydantic" in role_distributions("hub") and "pydantic" in role_distributions("models")
    assert owner(ROOT / "firmware_sim" / "scenario.py") == "base"
    assert "pydantic" in imported_top_levels(ROOT / "program_support" / "pydantic_loading.py")


def test_the_dev_extra_adds_only_test_tools() -> None:
    """Whatever a program needs comes with its role; dev adds what only the tests use."""
    dev = role_distributions("dev") - role_distributions("demo")
    used_by_programs = {distribution_of(m) for p in production_files()
                        for m in imported_top_levels(p)} - {None}
    assert not dev & used_by_programs, dev & used_by_programs


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_the_start_up_checks_name_what_the_extra_installs(extra: str) -> None:
    """program_support/extras.py (checked) matches pyproject.toml (what pip installs)."""
    checked = {distribution_of(module) for module in EXTRAS[extra]}
    installed = role_distributions(extra) - role_distributions("base")
    if extra == "demo":  # demo = agent + hub + amqtt; the table lists only what demo adds
        installed -= role_distributions("agent") | role_distributions("hub")
    assert checked == installed, (extra, checked, installed)
