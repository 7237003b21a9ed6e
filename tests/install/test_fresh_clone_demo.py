"""The README's first command, as a newcomer runs it: a fresh ``git clone`` (what is committed, not
this working tree) into a temp dir with no ``.venv``, then ``scripts/demo``. It sets itself up,
the dashboard's API serves readings from both simulated devices, it exits 0 by itself, and a
second run started right after the first (same ports: the first run's connections are still in
TIME_WAIT) succeeds too.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench.harness.roles import ROOT
from tests.install.conftest import REPORT
from tests.servers import free_port

pytestmark = pytest.mark.slow

DEVICES = {"pi-freezer", "pi-greenhouse"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    # a newcomer's PATH: the test's own venv must not be what the demo finds
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":")
                           if not p.startswith(str(ROOT / ".venv")))
    return env


def _readings(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2) as resp:
        state: dict[str, Any] = json.loads(resp.read())
    return {f"{s['device_id']}/{s['sensor_id']}": s["value"] for s in state["sensors"]
            if isinstance(s.get("value"), int | float)}


def run_demo(clone: Path, http_port: int, mqtt_port: int, duration: float) -> dict[str, Any]:
    """Run scripts/demo to its end; poll the dashboard's API while it runs."""
    proc = subprocess.Popen(
        ["scripts/demo", "--duration", str(duration), "--http-port", str(http_port),
         "--mqtt-port", str(mqtt_port), "--no-status", "--speed", "600"],
        cwd=clone, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: output.extend(stdout), daemon=True)
    reader.start()
    seen: dict[str, float] = {}
    started = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - started < 600:
            with contextlib.suppress(OSError, ValueError, KeyError):  # not serving yet
                seen.update(_readings(http_port))
            time.sleep(0.5)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    stdout.close()
    return {"code": proc.returncode, "output": "".join(output), "seen": seen,
            "seconds": time.monotonic() - started}


def test_the_readmes_first_command_from_a_fresh_clone_runs_twice(tmp_path: Path) -> None:
    clone = tmp_path / "thermopipe"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    assert not (clone / ".venv").exists()
    assert "scripts/demo" in (clone / "README.md").read_text()
    http_port, mqtt_port = free_port(), free_port()
    for attempt in ("first", "second"):
        result = run_demo(clone, http_port, mqtt_port, duration=25)
        REPORT.append(f"fresh clone, scripts/demo --duration 25, {attempt} run: exit "
                      f"{result['code']} after {result['seconds']:.0f} s (setup included), "
                      f"readings on the dashboard API from {sorted(result['seen'])}")
        assert result["code"] == 0, f"{attempt} run failed:\n{result['output'][-4000:]}"
        devices = {key.split("/")[0] for key in result["seen"]}
        assert devices == DEVICES, (attempt, result["seen"], result["output"][-3000:])
        assert "Traceback" not in result["output"], result["output"][-4000:]
        assert "stopped." in result["output"]
    assert (clone / ".venv" / "bin" / "hub").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                            text=True, check=True)
    assert status.stdout == "", f"the demo left files git does not ignore:\n{status.stdout}"
