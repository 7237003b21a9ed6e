"""The agent's keeper thread: the state file for ``edge-agent status`` and systemd's watchdog.

Every ``state_interval_s`` (and at least twice per watchdog timeout) it

1. writes the state file (:mod:`edge_agent.state_file`);
2. pings systemd's watchdog (``WATCHDOG=1``) only if the agent is alive: its run loop turned
   within :data:`LOOP_STALL_S` and every component of the agent's supervisor
   (``program_support/supervision.py``: sources, delivery, the MQTT link, this keeper) is well: none
   restarting after a crash, failed past its budget, or stalled. A loop stuck in a read, a
   component down, or a keeper stuck behind a hung outbox (the state reads the outbox's counters
   under its lock) all stop the pings, and systemd restarts the service if it lasts.

The keeper's own thread is the ``keeper`` component of that supervisor. ``READY=1`` is sent once
the sources and the delivery have started.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from edge_agent.state_file import SensorState, build_state, write_atomic
from edge_agent.systemd_notify import Notifier

log = structlog.get_logger("edge_agent.supervisor")

#: the run loop waits at most 0.5 s per turn; a loop this late is stuck
LOOP_STALL_S = 10.0


def agent_alive(last_turn: float, components_well: bool, now: float,
                stall_s: float = LOOP_STALL_S) -> bool:
    """Should the watchdog be pinged? Pure. ``components_well``: every supervised thread is up
    (``Supervisor.healthy``)."""
    return components_well and now - last_turn <= stall_s


class Supervisor:
    def __init__(self, agent: Any, state_file: Path, interval_s: float,  # noqa: PLR0917
                 notifier: Notifier | None = None,
                 clock_synced: Callable[[], bool] | None = None, version: str = "",
                 stall_s: float = LOOP_STALL_S) -> None:
        self.agent = agent  # an edge_agent.agent.Agent
        self.version = version
        self.stall_s = stall_s
        self.path = state_file
        self.notifier = notifier or Notifier(None)
        self.interval_s = interval_s
        if self.notifier.watchdog_s is not None:
            self.interval_s = min(interval_s, self.notifier.watchdog_s)
        self._clock_synced = clock_synced
        self.started_at = time.time()
        self._stop = threading.Event()
        self._started = False
        self._ready_sent = False
        self._down_logged = ""
        self._write_failed = False
        self.pings = 0
        self.writes = 0

    def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("supervisor.state_dir_failed", path=str(self.path.parent),
                        error=exc.strerror or str(exc))
        self.agent.supervisor.spawn("keeper", self._run)
        self._started = True

    def stop(self) -> None:
        self.agent.supervisor.retire("keeper")
        self._stop.set()
        if self._started:
            self.agent.supervisor.join("keeper", 5)
        self.notifier.stopping()
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("supervisor.state_remove_failed", path=str(self.path),
                        error=exc.strerror or str(exc))

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._ready_sent and self.agent.started.is_set():
                self._ready_sent = True
                sensors = len(self.agent.sensor_infos())
                self.notifier.ready(f"running: {sensors} sensors")
                log.info("supervisor.ready", systemd=self.notifier.enabled,
                         watchdog_s=self.notifier.watchdog_s, state_file=str(self.path))
            self.tick()
            self._stop.wait(self.interval_s)

    def tick(self) -> None:
        """One turn: write the state, then ping the watchdog if the agent is alive."""
        now = time.monotonic()
        try:
            state = self.state()
            write_atomic(self.path, state)
            self.writes += 1
            if self._write_failed:
                self._write_failed = False
                log.info("supervisor.state_written_again", path=str(self.path))
        except OSError as exc:
            if not self._write_failed:  # once per failure episode, not every 2 s
                self._write_failed = True
                log.warning("supervisor.state_write_failed", path=str(self.path),
                            error=exc.strerror or str(exc))
        problems = self.agent.supervisor.problems()
        well = not problems and not self.agent.supervisor.fatal.is_set() \
            and not self._stop.is_set()
        alive = self._ready_sent and agent_alive(self.agent.last_turn, well, now, self.stall_s)
        down = "; ".join(f"{name}: {why}" for name, why in sorted(problems.items()))
        if down != self._down_logged:  # once per change, not every tick
            self._down_logged = down
            if down:
                log.warning("supervisor.watchdog_withheld", problems=down)
        if alive and self.notifier.watchdog():
            self.pings += 1

    def state(self) -> dict[str, Any]:
        agent = self.agent
        cfg = agent.config
        counters = agent.snapshot()
        infos = {i.sensor_id: i for i in agent.sensor_infos()}
        deciders = agent.deciders()
        sensors = []
        for sid in sorted(set(infos) | set(deciders)):
            dec = deciders.get(sid)
            info = infos.get(sid)
            last = dec.last_good if dec is not None else None
            fault = None
            if dec is not None:
                fault = dec.fault or ("stale" if dec.stale else None)
            sensors.append(SensorState(
                sensor_id=sid, name=info.name if info else "",
                unit=str(info.unit if info else dec.unit if dec else "degC"),
                source=info.source if info else "", state=dec.state if dec else "unknown",
                fault=fault, last_value=None if last is None else last[1],
                last_time=None if last is None else last[0]))
        sources = [{"name": s.name, "kind": s.kind, "firmware": s.firmware,
                    "sensors": [spec.sensor_id for spec in s.sensors],
                    "counters": s.counters()} for s in agent.sources]
        error = agent.delivery.link.last_error
        synced = self._clock_synced() if self._clock_synced is not None else False
        return build_state(
            now=time.time(), pid=os.getpid(), started_at=self.started_at, site=cfg.site,
            device_id=cfg.device_id, agent_version=self.version,
            broker=f"{cfg.mqtt.host}:{cfg.mqtt.port}", connected=agent.delivery.connected,
            clock_synced=synced, counters=counters, sources=sources, sensors=sensors,
            interval_s=self.interval_s, last_error=None if error is None else str(error))
