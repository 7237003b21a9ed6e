"""``edge-agent run`` builds, stores, publishes and reads its messages without pydantic.

The agent's role installs no pydantic (issue 25: pydantic-core has no armv6l wheel): every
message it sends is built by ``schemas/plain_messages.py``, the generated twin of the contract,
and receipts are read with it. This runs the real run path (``python -m edge_agent run``, a
simulated board, a private Mosquitto), lets the hub's own validation (``schemas.decode``, in this
test process) read what the agent published, and then looks at every module the agent's process
had loaded when it stopped.

The config is read by ``program_support/plain_config.py`` (stdlib dataclasses), and so are the
scenario files of the simulator source this test runs (``firmware_sim/scenario.py``): the agent's
process must hold no pydantic at all, and no module of ours that it loaded may import pydantic
anywhere in its source (not even in a function the run did not call).
"""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import schemas
from tests.agent_e2e.e2e_helpers import Subscriber
from tests.agent_pi.helpers import ROOT, agent_config, agent_env, wait_until
from tests.servers import Mosquitto

#: what the agent's process must not load: pydantic, and the contract's pydantic half
FORBIDDEN = ("pydantic", "pydantic_core", "schemas.models", "schemas.codec",
             "schemas.generate_plain")

#: runs the agent as ``python -m edge_agent run`` does, and writes its modules at exit
DRIVER = textwrap.dedent("""
    import atexit, json, sys
    out = sys.argv.pop(1)
    atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
    sys.argv[0] = "edge-agent"
    from edge_agent.entry import main
    raise SystemExit(main())
""")


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def _imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The imports that can run: not under ``if TYPE_CHECKING``, nor in a pydantic hook
    (``__get_pydantic_core_schema__`` runs only once pydantic builds a model)."""
    if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
            and node.test.id == "TYPE_CHECKING":
        return [i for child in node.orelse for i in _imports(child)]
    if isinstance(node, ast.FunctionDef) and node.name.startswith("__get_pydantic"):
        return []
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [node]
    return [i for child in ast.iter_child_nodes(node) for i in _imports(child)]


def forbidden_imports(module: str) -> list[str]:
    """What ``module``'s source imports (anywhere in it) of :data:`FORBIDDEN`, including names
    the ``schemas`` package loads from its pydantic half on first use."""
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    if not path.exists():
        path = ROOT.joinpath(*module.split("."), "__init__.py")
    found = []
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _forbidden(a.name)]
        elif node.level == 0 and node.module:
            if _forbidden(node.module):
                found.append(node.module)
            elif node.module == "schemas":
                found += [f"schemas.{a.name} ({schemas._LAZY[a.name]})" for a in node.names
                          if _forbidden(schemas._LAZY.get(a.name, ""))]
    return found


def first_party(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in (
        "edge_agent", "schemas", "program_support", "firmware_sim") and not _forbidden(m)]


@pytest.mark.servers
@pytest.mark.slow
def test_the_agent_runs_and_publishes_without_the_contracts_pydantic_half(
        tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]) -> None:
    broker = mosquitto_factory()
    cfg = agent_config(tmp_path, broker.port, boards=1, sensors_per_board=2)
    listener = Subscriber("127.0.0.1", broker.port, "thermopipe")  # validates with pydantic
    modules_file = tmp_path / "modules.json"
    stderr = tmp_path / "agent.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(modules_file), "run", "-c",
                                 str(cfg)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                env=agent_env())
    try:
        # a birth can go out before the simulator has said which sensors it has: the whole
        # list follows in an update as soon as it has
        wait_until(lambda: len(listener.events()) >= 4 and any(
            s.online and s.sensors_complete for s in listener.statuses()), 60,
            "a status with the whole sensor list and four events the hub's validation accepts")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, stderr.read_text()[-3000:]
    whole = next(s for s in listener.statuses() if s.online and s.sensors_complete)
    assert {i.sensor_id for i in whole.sensors} == {"28-000000000000", "28-000000000001"}
    assert all(e.site == "farm" and e.device_id == "pi-test" for e in listener.events())

    loaded: list[str] = json.loads(modules_file.read_text())
    assert {"schemas.plain_messages", "edge_agent.stamping", "edge_agent.delivery",
            "edge_agent.sources.simulator", "firmware_sim.scenario",
            "program_support.plain_config"} <= set(loaded)
    why = {m: found for m in first_party(loaded) if (found := forbidden_imports(m))}
    assert not why, f"modules the agent loaded import pydantic: {why}"
    assert [m for m in loaded if _forbidden(m)] == []


def test_the_static_check_sees_a_pydantic_import() -> None:
    """The check above can fail: the hub's half of config loading imports pydantic."""
    assert forbidden_imports("program_support.pydantic_loading") == ["pydantic"]
    assert forbidden_imports("firmware_sim.scenario") == []
