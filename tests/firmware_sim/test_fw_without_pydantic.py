"""firmware-sim runs from the bare install: no pydantic (its scenario files are read by
program_support/plain_config.py, like the agent's config).

Each check runs in a fresh interpreter where ``import pydantic`` fails, as it does where the
``models`` extra is not installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_BARE = """
import sys
sys.modules["pydantic"] = sys.modules["pydantic_core"] = None  # as if not installed
from firmware_sim.cli import main
code = main(sys.argv[1:])
held = sorted(m for m, module in sys.modules.items() if module and m.startswith("pydantic"))
print("EXIT", code, "PYDANTIC", held)
"""


def _bare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BARE, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)


def test_check_and_list_without_pydantic(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('duration = "1h"\n[[sensors]]\nid = "x"\nprofile = { kind = "sawtooth" }\n')
    proc = _bare("check", "greenhouse_day", "freezer_failing", "flaky_sensor", str(bad))
    assert "EXIT 2 PYDANTIC []" in proc.stdout, proc.stdout + proc.stderr
    assert "flaky_sensor: ok (2 sensors, 9 faults)" in proc.stdout
    assert f"{bad}: sensors[0].profile.kind: unknown profile 'sawtooth'" in proc.stdout
    listed = _bare("list")
    assert "EXIT 0 PYDANTIC []" in listed.stdout, listed.stdout + listed.stderr
    assert "INVALID" not in listed.stdout


def test_serve_a_scenario_without_pydantic(tmp_path: Path) -> None:
    scenario = tmp_path / "ramp.toml"
    scenario.write_text('duration = "2m"\ninterval = "10s"\n[[sensors]]\nid = "28-0000075a1b2c"\n'
                        'profile = { kind = "ramp", start = 1, end = 5, duration = "2m" }\n')
    w1 = tmp_path / "w1"
    proc = _bare("serve", "--scenario", str(scenario), "--w1-dir", str(w1), "--speed", "240")
    assert "EXIT 0 PYDANTIC []" in proc.stdout, proc.stdout + proc.stderr
    slave = (w1 / "28-0000075a1b2c" / "w1_slave").read_text()
    assert "YES" in slave and "t=" in slave
