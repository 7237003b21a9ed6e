"""The agent process as systemd runs it: READY and watchdog pings on a real notify socket, log lines
with journal priorities, and ``edge-agent status`` reading the running agent's state file while
the broker comes and goes."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.agent_pi.helpers import NotifySocket, agent_config, edge_agent, start_agent, wait_until
from tests.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def journal_stream_of(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def status_json(cfg: Path) -> tuple[int, dict[str, Any]]:
    result = edge_agent("status", "-c", str(cfg), "--json")
    return result.returncode, json.loads(result.stdout) if result.stdout else {}


def test_notify_status_and_priorities_of_a_running_agent(
        tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]) -> None:
    broker = mosquitto_factory()
    cfg = agent_config(tmp_path, broker.port, boards=2, sensors_per_board=1)
    notify = NotifySocket(tmp_path / "notify.sock")
    stderr = tmp_path / "agent.stderr"
    stderr.touch()
    proc = start_agent(cfg, stderr, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000",
                       JOURNAL_STREAM=journal_stream_of(stderr))
    try:
        ready = notify.wait_for("READY=1", 60)
        assert any(line.startswith("STATUS=running") for line in ready.splitlines())
        notify.wait_for("WATCHDOG=1", 10)
        notify.wait_for("WATCHDOG=1", 10)

        # the state, without the broker's help: both sensors with a value, the link up
        def sensors_seen() -> bool:
            code, state = status_json(cfg)
            return code == 0 and state["broker"]["connected"] and all(
                s["last_value"] is not None for s in state["sensors"]) and len(
                state["sensors"]) == 2
        wait_until(sensors_seen, 60, "the state file to show both sensors and the broker")
        # connected without TLS: OpenSSL never loaded (edge_agent/deferred_imports.py)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert [lib for lib in ("libcrypto", "libssl") if lib in maps] == []
        code, state = status_json(cfg)
        assert code == 0
        assert state["running"] is True and state["pid"] == proc.pid
        assert (state["site"], state["device_id"]) == ("farm", "pi-test")
        first = {s["sensor_id"]: s for s in state["sensors"]}
        assert first["28-000000000000"]["name"] == "freezer"
        assert abs(first["28-000000000000"]["last_value"] - 20) < 2
        assert abs(first["28-000000000001"]["last_value"] - 21) < 2
        assert all(s["age_s"] < 30 and s["fault"] is None for s in first.values())
        assert {s["name"] for s in state["sources"]} == {"board0", "board1"}
        assert isinstance(state["clock_synchronised"], bool)
        assert state["drops_total"] == 0 and state["outbox"]["depth"] >= 0
        text = edge_agent("status", "-c", str(cfg))
        assert text.returncode == 0, text.stderr
        assert "connected" in text.stdout and "28-000000000000 (freezer)" in text.stdout

        # the broker goes away: the link shows DOWN and the outbox fills, with its oldest age
        broker.stop()

        def backlog() -> bool:
            code, state = status_json(cfg)
            return (code == 0 and not state["broker"]["connected"]
                    and state["outbox"]["depth"] > 0 and state["outbox"]["oldest_age_s"] > 0)
        wait_until(backlog, 60, "the state to show the broker down and a growing outbox")
        text = edge_agent("status", "-c", str(cfg))
        assert "DOWN" in text.stdout and "events (" in text.stdout

        # SIGTERM: STOPPING=1, a clean exit, and the state file is gone
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", 30)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    gone = edge_agent("status", "-c", str(cfg))
    assert gone.returncode == 3 and "not running" in gone.stderr

    # every log line carries the journal priority of its level, so `journalctl -p err` works
    priority = {"debug": "7", "info": "6", "warning": "4", "error": "3", "critical": "2"}
    lines = stderr.read_text().splitlines()
    levels = set()
    for line in lines:
        assert line.startswith("<") and line[2] == ">", line
        record = json.loads(line[3:])
        assert line[1] == priority[record["level"]], line
        levels.add(record["level"])
    assert {"info", "warning"} <= levels  # the broker's absence is a warning


def test_a_state_not_updated_reads_as_not_running(tmp_path: Path) -> None:
    """A state file left by an agent killed with -9 (or hung) is reported as such, exit 3."""
    cfg = agent_config(tmp_path, 9)
    stderr = tmp_path / "agent.stderr"
    proc = start_agent(cfg, stderr)
    state_file = tmp_path / "outbox" / "agent-state.json"
    try:
        wait_until(lambda: edge_agent("status", "-c", str(cfg)).returncode == 0, 60,
                   "the agent's state file")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert state_file.exists()  # killed: nobody removed it
    state = json.loads(state_file.read_text())
    state["written_at"] -= 60  # as if a minute had passed since
    state_file.write_text(json.dumps(state))
    result = edge_agent("status", "-c", str(cfg))
    assert result.returncode == 3 and "NOT UPDATED for 6" in result.stdout, result.stdout
    assert "stopped or hung" in result.stdout


def test_start_up_failures_carry_the_error_priority_under_systemd(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(agent_config(tmp_path, 9).read_text() + "\nintervall_s = 3\n")
    stderr = tmp_path / "stderr"
    stderr.touch()
    with stderr.open("w") as err:
        import subprocess
        import sys

        from tests.agent_pi.helpers import ROOT, agent_env
        code = subprocess.run([sys.executable, "-m", "edge_agent", "run", "-c", str(bad)],
                              cwd=ROOT, stderr=err, stdout=subprocess.DEVNULL, timeout=60,
                              env=agent_env(JOURNAL_STREAM=journal_stream_of(stderr)),
                              check=False).returncode
    assert code == 2
    lines = stderr.read_text().splitlines()
    assert lines and all(line.startswith("<3>") for line in lines), lines
    assert any("intervall_s" in line for line in lines)
    assert "Traceback" not in stderr.read_text()
    # without systemd's stream the same message has no prefix
    plain = edge_agent("run", "-c", str(bad))
    assert plain.returncode == 2 and not plain.stderr.startswith("<")
