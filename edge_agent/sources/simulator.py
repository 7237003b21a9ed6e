"""firmware_sim in-process: the simulated device's frames, with no tty, for demos and tests.

The bytes still go through the protocol's FrameDecoder (inside ``SimulatedSensors``), so line
faults are counted exactly as on a real serial line, and a scripted unplug reports
``device_lost`` for every sensor, like the serial source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from edge_agent.decide.types import Reading
from edge_agent.sources.base import ReadingSink
from edge_agent.sources.framed_source import FramedSource
from edge_agent.sources.frames import FrameHandler, decoder_counters
from firmware_sim import scenario as scenarios
from firmware_sim.inprocess import SimulatedSensors
from schemas.serial_protocol import ProtocolError

if TYPE_CHECKING:
    pass

log = structlog.get_logger("edge_agent.sources.simulator")


class SimulatorSource(FramedSource):
    kind = "simulator"

    def __init__(self, scenario: str | Path, *, name: str | None = None, speed: float = 1.0,
                 seed: int | None = None, loop: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.scenario = scenarios.load(scenario)  # ConfigError with key paths if broken
        self.name = name or f"simulator:{self.scenario.name or scenario}"
        self.speed = speed
        self.seed = seed
        self.loop = loop
        self._clock = clock
        super().__init__(FrameHandler(self.name))
        self._sim: SimulatedSensors | None = None
        self.finished = threading.Event()
        self.runs = 0

    def counters(self) -> dict[str, float]:
        out = {**self.frame_counters(), "runs": float(self.runs)}
        sim = self._sim
        if sim is not None:
            out.update(decoder_counters(sim.decoder))
        return out

    def _run(self, sink: ReadingSink) -> None:
        while not self._stop.is_set():
            self.runs += 1
            self._play(sink)
            if not self.loop:
                break
        self.finished.set()
        log.info("simulator.finished", source=self.name, runs=self.runs)

    def _play(self, sink: ReadingSink) -> None:
        sim = SimulatedSensors(self.scenario, seed=self.seed, speed=self.speed,
                               start=time.monotonic())
        self._sim = sim
        self._handler.restart_line()
        plugged = True
        while not self._stop.is_set():
            items = sim.poll(time.monotonic())
            now = self._clock()
            for item in items:
                if isinstance(item, ProtocolError):
                    log.info("source.line_rejected", source=self.name, reason=item.reason)
                    continue
                reading = self._handler.handle(item, now)
                if reading is not None and not sink(reading):
                    self.dropped += 1
            if plugged and not sim.plugged:
                self.device_lost += 1
                log.warning("simulator.unplugged", source=self.name)
                for sid in self._handler.known_ids():
                    if not sink(Reading(sid, now, None, "device_lost",
                                        "simulated device unplugged")):
                        self.dropped += 1
            elif not plugged and sim.plugged:
                self._handler.restart_line()
            plugged = sim.plugged
            due = sim.next_due()
            if due is None or sim.finished:
                return
            self._stop.wait(max(0.0, due - time.monotonic()))
