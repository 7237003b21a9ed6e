"""The running agent's state as a JSON file, for ``edge-agent status`` (no broker needed).

The agent rewrites the file every ``state_interval_s`` (2 s by default) atomically: a new file
beside it, then ``rename(2)``, so a reader sees the old state or the new one, never half of one.
Where it goes (:func:`state_path`): ``state_file`` in the config if set; else
``$RUNTIME_DIRECTORY`` (``/run/thermopipe`` under the systemd unit: RAM, so the SD card does not
see these writes, and gone when the service stops); else beside the outbox. It is never fsynced:
it describes the present, and a reboot makes it meaningless anyway.

The file is mode 0644: sensor values and counters, no secrets. ``edge-agent status`` reads it
(:func:`read_state`) and :func:`render` turns it into lines for people. Building and rendering
are pure (the time is an argument).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.status import age_text

__all__ = ["DEFAULT_RUNTIME_DIR", "FORMAT", "STATE_NAME", "SensorState", "build_state",
           "candidate_paths", "freshness", "read_state", "render", "state_path", "write_atomic"]

FORMAT = 1
STATE_NAME = "agent-state.json"
#: RuntimeDirectory=thermopipe in deploy/systemd/edge-agent.service
DEFAULT_RUNTIME_DIR = Path("/run/thermopipe")
#: a state older than this many write intervals means the agent is stopped or hung
STALE_INTERVALS = 3


def state_path(configured: Path | None, outbox_path: Path,
               env: Mapping[str, str] | None = None) -> Path:
    """Where the running agent writes its state (see the module docstring). Pure."""
    if configured is not None:
        return configured
    env = os.environ if env is None else env
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime) / STATE_NAME
    return outbox_path.parent / STATE_NAME


def candidate_paths(configured: Path | None, outbox_path: Path) -> list[Path]:
    """Where ``edge-agent status`` looks, from a shell that lacks the unit's environment."""
    if configured is not None:
        return [configured]
    return [DEFAULT_RUNTIME_DIR / STATE_NAME, outbox_path.parent / STATE_NAME]


@dataclass(frozen=True, slots=True)
class SensorState:
    """One sensor as the state file shows it."""

    sensor_id: str
    name: str
    unit: str
    source: str
    state: str                      # band: unknown, normal or a threshold's name
    fault: str | None               # the active sample fault, "stale" when stale
    last_value: float | None        # the last accepted (good) reading
    last_time: float | None         # its time (unix seconds)


def build_state(*, now: float, pid: int, started_at: float, site: str, device_id: str,
                agent_version: str, broker: str, connected: bool, clock_synced: bool,
                counters: Mapping[str, float], sources: Sequence[Mapping[str, Any]],
                sensors: Sequence[SensorState], interval_s: float,
                last_error: str | None = None) -> dict[str, Any]:
    """The state document. Pure: every input is an argument."""
    def n(key: str) -> float:
        return float(counters.get(key, 0.0))

    drops = {k: int(v) for k, v in sorted(counters.items())
             if k.startswith("dropped_") or k == "dropped_readings_queue"}
    return {
        "format": FORMAT,
        "pid": pid,
        "written_at": round(now, 3),
        "interval_s": interval_s,
        "started_at": round(started_at, 3),
        "site": site,
        "device_id": device_id,
        "agent_version": agent_version,
        "clock_synchronised": clock_synced,
        "broker": {"address": broker, "connected": connected,
                   "reconnects": int(n("reconnects")),
                   "connect_failures": int(n("connect_failures")),
                   "inflight": int(n("inflight")), "last_error": last_error},
        "outbox": {"depth": int(n("outbox_depth")), "bytes": int(n("outbox_bytes")),
                   "oldest_age_s": n("outbox_oldest_age_s"),
                   "backlog": int(n("backlog_depth")), "commits": int(n("outbox_commits"))},
        "drops": drops,
        "drops_total": int(n("dropped_readings_queue")) + sum(
            v for k, v in drops.items() if k.startswith("dropped_by_")),
        "readings": int(n("readings")),
        "events": int(n("events")),
        "faults_active": int(n("faults_active")),
        "sources": [dict(s) for s in sources],
        "sensors": [
            {"sensor_id": s.sensor_id, "name": s.name, "unit": s.unit, "source": s.source,
             "state": s.state, "fault": s.fault, "last_value": s.last_value,
             "last_time": None if s.last_time is None else round(s.last_time, 3),
             "age_s": None if s.last_time is None else round(max(0.0, now - s.last_time), 1)}
            for s in sensors],
        "counters": {k: counters[k] for k in sorted(counters)},
    }


def write_atomic(path: Path, state: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``state`` as JSON in one rename (readers never see a partial file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(state, separators=(",", ":")).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any]:
    """The state a running agent wrote; raises OSError or ValueError (unreadable, not ours)."""
    state = json.loads(path.read_bytes())
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an edge-agent state file (format {FORMAT})")
    return state


def freshness(state: Mapping[str, Any], now: float) -> tuple[float, bool]:
    """(seconds since it was written, fresh?). Fresh: written within a few intervals."""
    age = max(0.0, now - float(state["written_at"]))
    return age, age <= STALE_INTERVALS * float(state.get("interval_s", 2.0)) + 1.0


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else age_text(seconds)


def render(state: Mapping[str, Any], now: float) -> list[str]:
    """The state as lines for a person (``edge-agent status``). Pure."""
    age, fresh = freshness(state, now)
    late = max(0.0, now - float(state["written_at"]))
    broker = state["broker"]
    outbox = state["outbox"]
    running = (f"running (pid {state['pid']}, up {_age(now - float(state['started_at']))})"
               if fresh else f"NOT UPDATED for {_age(age)}: stopped or hung (pid {state['pid']})")
    lines = [
        f"{state['site']}/{state['device_id']}  edge-agent {state['agent_version']}  {running}",
        f"  broker   {broker['address']} {'connected' if broker['connected'] else 'DOWN'}"
        f"  reconnects {broker['reconnects']:,}  connect failures {broker['connect_failures']:,}"
        + (f"  last error: {broker['last_error']}" if broker.get("last_error") else ""),
        f"  outbox   {outbox['depth']:,} events ({outbox['bytes'] / 1024:,.0f} KiB), oldest "
        f"{_age(outbox['oldest_age_s'] + late if outbox['depth'] else None)}",
        f"  drops    {state['drops_total']:,}"
        + "".join(f"  {k} {v:,}" for k, v in state["drops"].items() if v),
        f"  clock    {'synchronised' if state['clock_synchronised'] else 'NOT synchronised'}",
        f"  totals   {state['readings']:,} readings, {state['events']:,} events, "
        f"{state['faults_active']} fault(s) active",
    ]
    for source in state["sources"]:
        firmware = f" firmware {source['firmware']}" if source.get("firmware") else ""
        lines.append(f"  source   {source['name']} ({source['kind']}){firmware}")
    labels = [s["sensor_id"] + (f" ({s['name']})" if s["name"] else "") for s in state["sensors"]]
    width = max([len("sensor"), *map(len, labels)])
    if state["sensors"]:
        lines.append(f"  {'sensor':<{width}} {'value':>12}  {'age':>7}  {'band':<10} fault")
    for label, s in zip(labels, state["sensors"], strict=True):
        value = "-" if s["last_value"] is None else f"{s['last_value']:.2f} {s['unit']}"
        shown_age = None if s["age_s"] is None else s["age_s"] + late
        lines.append(f"  {label:<{width}} {value:>12}  {_age(shown_age):>7}  {s['state']:<10} "
                     f"{s['fault'] or '-'}")
    return lines
