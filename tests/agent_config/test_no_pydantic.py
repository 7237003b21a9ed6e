"""Loading the agent's config, and ``edge-agent check-config``, import neither pydantic nor paho
(pydantic-core has no armv6l wheel: a Pi Zero must be able to run the agent without it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "agent.example.toml"
HEAVY = ("pydantic", "pydantic_core", "paho")

_REPORT = f"""
import sys
loaded = sorted({{m.split(".")[0] for m, module in sys.modules.items() if module}}
                & set({HEAVY!r}))
print("LOADED", ",".join(loaded))
"""


def _fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code + _REPORT], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)


def _loaded(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("LOADED")]
    assert lines, proc.stdout + proc.stderr
    return lines[-1].removeprefix("LOADED").strip()


def test_loading_the_agent_config_imports_no_pydantic(tmp_path: Path) -> None:
    proc = _fresh(f"""
from program_support.config_loading import secrets_unresolved
from edge_agent.config import load
with secrets_unresolved():
    cfg = load({str(EXAMPLE)!r})
assert [s.kind for s in cfg.sources] == ["serial", "onewire"], cfg.sources
assert cfg.rules_for("28-0000056c3d4e").thresholds
""")
    assert proc.returncode == 0, proc.stderr
    assert _loaded(proc) == "", proc.stdout


def test_a_bad_config_is_reported_without_pydantic(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('site = "a/b"\ndevice_id = "d"\n[mqtt]\nport = 0\nhots = "x"\n'
                   '[[sources]]\nkind = "onewre"\n')
    proc = _fresh(f"""
from edge_agent.config import load
from schemas.errors import ConfigError
try:
    load({str(bad)!r})
except ConfigError as exc:
    print(len(exc.errors), "problems")
""")
    assert "4 problems" in proc.stdout, proc.stdout + proc.stderr
    assert _loaded(proc) == "", proc.stdout


def test_edge_agent_check_config_imports_no_pydantic() -> None:
    # the console script's path (edge_agent.entry), in a fresh interpreter
    proc = _fresh(f"""
from edge_agent.entry import main
sys_argv = ["edge-agent", "check-config", "--no-secrets", {str(EXAMPLE)!r}]
import sys
sys.argv = sys_argv
code = main()
print("EXIT", code)
""")
    assert "EXIT 0" in proc.stdout, proc.stdout + proc.stderr
    assert f"OK {EXAMPLE}" in proc.stdout
    assert _loaded(proc) == "", proc.stdout


def test_a_full_check_reading_secrets_and_files_imports_no_pydantic(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config = tmp_path / "agent.toml"
    config.write_text(EXAMPLE.read_text()
                      .replace("file:/run/credentials/edge-agent.service/mqtt-password",
                               "env:PLAIN_CONFIG_PW")
                      .replace("/etc/thermopipe/ca.pem", str(tmp_path / "ca.pem"))
                      .replace("/var/lib/thermopipe/outbox.db", str(tmp_path / "outbox.db")))
    proc = _fresh(f"""
import os, sys
os.environ["PLAIN_CONFIG_PW"] = "s3cret"
sys.argv = ["edge-agent", "check-config", {str(config)!r}]
from edge_agent.entry import main
print("EXIT", main())
""")
    assert "EXIT 0" in proc.stdout, proc.stdout + proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr
    assert _loaded(proc) == "", proc.stdout


def test_the_reporter_sees_pydantic_when_it_is_loaded() -> None:
    # the check above can fail: importing the event models does load pydantic
    proc = _fresh("import schemas.models\n")
    assert _loaded(proc) == "pydantic,pydantic_core", proc.stdout


#: a bare install: pydantic cannot be imported at all (``import pydantic`` raises ImportError)
_NO_PYDANTIC = 'import sys\nsys.modules["pydantic"] = sys.modules["pydantic_core"] = None\n'


def test_check_config_with_simulator_sources_imports_no_pydantic(tmp_path: Path) -> None:
    """A simulator source's scenario is read when the config is (firmware_sim/scenario.py, plain
    sections): a shipped one, a file, and a file with mistakes reported with their key paths."""
    good = tmp_path / "board.toml"
    good.write_text('duration = "1h"\n[[sensors]]\nid = "28-0000075a1b2c"\n'
                    'profile = { kind = "sine", mean = 4, amplitude = 1 }\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('duration = "1h"\nintervall = "1m"\n[[sensors]]\nid = "28-0000075a1b2c"\n'
                   'profile = { kind = "sawtooth" }\n')
    config = tmp_path / "agent.toml"
    head = f'site = "s"\ndevice_id = "d"\n[mqtt]\n[outbox]\npath = "{tmp_path}/outbox.db"\n'
    sources = "".join(f'[[sources]]\nkind = "simulator"\nscenario = "{s}"\n'
                      for s in ("greenhouse_day", good))
    config.write_text(head + sources)
    proc = _fresh(_NO_PYDANTIC + f"""
sys.argv = ["edge-agent", "check-config", {str(config)!r}]
from edge_agent.entry import main
print("EXIT", main())
""")
    assert "EXIT 0" in proc.stdout, proc.stdout + proc.stderr
    assert _loaded(proc) == "", proc.stdout

    config.write_text(head + sources + f'[[sources]]\nkind = "simulator"\nscenario = "{bad}"\n')
    proc = _fresh(_NO_PYDANTIC + f"""
sys.argv = ["edge-agent", "check-config", {str(config)!r}]
from edge_agent.entry import main
print("EXIT", main())
""")
    assert "EXIT 2" in proc.stdout, proc.stdout + proc.stderr
    assert "sources[2].scenario:" in proc.stderr, proc.stderr
    assert f"{bad}: intervall: unknown key (did you mean 'interval'?)" in proc.stderr
    assert "sensors[0].profile.kind: unknown profile 'sawtooth' (expected one of" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _loaded(proc) == "", proc.stdout
