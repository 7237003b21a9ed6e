"""Where the state file goes, and reading back what was written (pure parts, no agent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.state_file import (
    DEFAULT_RUNTIME_DIR,
    SensorState,
    build_state,
    candidate_paths,
    freshness,
    read_state,
    render,
    state_path,
    write_atomic,
)

OUTBOX = Path("/var/lib/thermopipe/outbox.db")


def test_the_state_goes_to_the_config_then_the_runtime_dir_then_beside_the_outbox() -> None:
    mine = Path("/srv/state.json")
    assert state_path(mine, OUTBOX, {"RUNTIME_DIRECTORY": "/run/x"}) == mine
    assert state_path(None, OUTBOX, {"RUNTIME_DIRECTORY": "/run/thermopipe"}) == \
        Path("/run/thermopipe/agent-state.json")
    assert state_path(None, OUTBOX, {}) == Path("/var/lib/thermopipe/agent-state.json")
    assert candidate_paths(None, OUTBOX) == [DEFAULT_RUNTIME_DIR / "agent-state.json",
                                             Path("/var/lib/thermopipe/agent-state.json")]


def state(now: float) -> dict[str, object]:
    return build_state(
        now=now, pid=7, started_at=now - 90, site="farm", device_id="pi-01", agent_version="1",
        broker="b:1883", connected=False, clock_synced=False,
        counters={"outbox_depth": 3, "outbox_oldest_age_s": 12.0, "dropped_by_size": 2,
                  "dropped_readings_queue": 1, "readings": 10},
        sources=[], interval_s=2.0, last_error="broker b:1883 unreachable",
        sensors=[SensorState("t1", "", "degC", "onewire", "unknown", "stale", None, None),
                 SensorState("t2", "air", "degF", "serial", "hot", None, 80.5, now - 3)])


def test_written_atomically_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "agent-state.json"
    write_atomic(path, state(1000.0))
    back = read_state(path)
    assert back["drops_total"] == 3 and back["outbox"]["depth"] == 3
    assert [s["age_s"] for s in back["sensors"]] == [None, 3.0]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert freshness(back, 1005.0) == (5.0, True)
    assert freshness(back, 1060.0)[1] is False
    text = "\n".join(render(back, 1001.0))
    assert "DOWN" in text and "last error: broker b:1883 unreachable" in text
    assert "NOT synchronised" in text and "t2 (air)" in text and "80.50 degF" in text
    assert "oldest 13 s" in text  # 12 s when written, 1 s before it was read
    path.write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="not an edge-agent state file"):
        read_state(path)
