"""The hub's own health, stored: a ``hub_health`` point every ``[storage] health_interval_s``.

A timer thread takes a sample (``Hub.health_point``) and appends it to the hub journal as a local
record; the storage consumer writes it like any event, so a database outage delays health points
instead of losing them, and ingest never waits on the database for them (an append is one small
SQLite commit). The layout is in ``hub/storage/points.py``.

The timer thread is the ``health-recorder`` component of the hub's supervisor: a sample that
raises unexpectedly is a crash (logged once with its traceback, counted, restarted with backoff);
a journal that cannot be written is logged and tried again at the next interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from hub.records import Point
from program_support.supervision import Supervisor
from schemas.errors import ThermopipeError

log = structlog.get_logger("hub.storage.health")


class HealthRecorder:
    """Calls ``record(sample())`` every ``interval_s`` on its own thread until stopped."""

    def __init__(self, interval_s: float, sample: Callable[[], Point],
                 record: Callable[[Point], object], *,
                 supervisor: Supervisor | None = None) -> None:
        self.interval_s = interval_s
        self.recorded = 0
        self._sample = sample
        self._record = record
        self._stop = threading.Event()
        self.supervisor = supervisor or Supervisor()

    def start(self) -> None:
        self.supervisor.spawn("health-recorder", self._run)

    def stop(self, timeout: float = 10.0) -> None:
        self.supervisor.retire("health-recorder")
        self._stop.set()
        self.supervisor.join("health-recorder", timeout)

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval_s
            if next_at < time.monotonic():  # stalled (suspended laptop): no burst to catch up
                next_at = time.monotonic() + self.interval_s
            try:
                self._record(self._sample())
                self.recorded += 1
            except ThermopipeError as exc:  # journal unwritable: ingest reports it too; retry
                log.error("storage.health_not_recorded", error=str(exc))
