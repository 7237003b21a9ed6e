"""What the two sources that speak the serial line protocol share (serial and simulator): the
frame handler's view of the device, the reader thread's start and stop, and the counters both
report. Each subclass runs its own reader loop (``_run``) and adds the counters of its transport.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from edge_agent.sources.base import ReadingSink, SensorSpec, start_source_thread
from edge_agent.sources.frames import FrameHandler

if TYPE_CHECKING:
    from program_support.supervision import Supervisor


class FramedSource:
    name: str

    def __init__(self, handler: FrameHandler) -> None:
        self._handler = handler
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.device_lost = 0
        self.dropped = 0

    @property
    def sensors(self) -> list[SensorSpec]:
        return self._handler.sensors

    @property
    def discovered(self) -> bool:
        return self._handler.discovered

    @property
    def firmware(self) -> str:
        return self._handler.firmware

    def frame_counters(self) -> dict[str, float]:
        c = self._handler.counters
        return {"readings": c.readings, "sensor_errors": c.sensor_errors, "seq_gaps": c.seq_gaps,
                "device_lost": self.device_lost, "dropped": self.dropped}

    def start(self, sink: ReadingSink, supervisor: Supervisor | None = None) -> None:
        self._thread = start_source_thread(self.name, self._run, sink, self._thread, supervisor)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake_reader()
        if self._thread is not None:
            self._thread.join(timeout)

    def _wake_reader(self) -> None:
        """Unblock a reader waiting on its transport (a serial port's read); none by default."""

    def _run(self, sink: ReadingSink) -> None:
        raise NotImplementedError
