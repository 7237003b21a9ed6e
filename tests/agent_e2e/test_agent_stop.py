"""The agent stopping mid-window: the readings of the open summary window are not lost.

A real Agent (in-process) with a real private Mosquitto; the source is a small in-test list
source. The summary interval is an hour, so no window closes while the test runs: every good
reading reaches a summary only through the window the agent emits, cut short, when it stops.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.decide import Reading
from edge_agent.sources.base import ReadingSink, SensorSpec
from program_support.plain_config import parse
from tests.agent_e2e.e2e_helpers import Subscriber, unique, wait_until
from tests.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.timeout(60)]
SID = "28-0000075a1b2c"


class ListSource:
    """Puts a fixed list of readings, stamped with the wall clock, then idles."""

    kind = "simulator"
    name = "list"

    def __init__(self, values: list[float | None]) -> None:
        self.values = values
        self._thread: threading.Thread | None = None

    def start(self, sink: ReadingSink, supervisor: object = None) -> None:
        def put_all() -> None:
            for v in self.values:
                reading = (Reading(SID, time.time(), v) if v is not None
                           else Reading(SID, time.time(), None, "crc_error", "test"))
                while not sink(reading):
                    time.sleep(0.01)
        self._thread = threading.Thread(target=put_all, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def sensors(self) -> list[SensorSpec]:
        return [SensorSpec(SID)]

    discovered = True

    @property
    def firmware(self) -> str:
        return ""

    def counters(self) -> dict[str, float]:
        return {}


def test_stopping_emits_the_open_summary_window_with_every_good_reading(
        mosquitto: Mosquitto, topic_root: str, tmp_path: Path) -> None:
    values: list[float | None] = [20.0 + i / 10 for i in range(40)]
    values[10] = values[11] = None  # two bad samples: not in the summary
    config = parse({
        "site": "e2e", "device_id": "pi-stop", "tick_s": 0.2,
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "topic_root": topic_root},
        "outbox": {"path": str(tmp_path / "outbox.db"), "flush_interval_s": 0.2,
                   "min_free_bytes": 0},
        "sources": [{"kind": "simulator", "scenario": "greenhouse_day"}],  # replaced below
        "defaults": {"summary_interval_s": 3600.0, "stale_after_s": 3600.0}}, AgentConfig)
    sub = Subscriber(mosquitto.host, mosquitto.port, topic_root)
    agent = Agent(config, sources=[ListSource(values)], clock_synced=lambda: True)
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    runner.start()
    try:
        wait_until(lambda: agent.agent_counters()["readings"] == len(values), 20,
                   "the agent to take every reading")
    finally:
        stop.set()
        runner.join(30)
    try:
        assert not runner.is_alive()

        def summaries() -> list[Any]:
            return [e for e in unique(sub.events()) if e.kind == "summary"]

        wait_until(lambda: sum(e.count for e in summaries()) == 38, 10,
                   "the stop's summary with every good reading")
        [summary] = summaries()
        assert summary.last == values[-1]
        assert summary.min == values[0] and summary.max == values[-1]
        # cut short at the stop, not at the end of the hour
        assert (summary.time - summary.window_start).total_seconds() < 3600
        wait_until(lambda: any(s.reason == "shutdown" for s in sub.statuses()), 10,
                   "the shutdown status")
    finally:
        sub.close()
