"""DS18B20 sensors on the Linux 1-Wire bus (``w1-gpio`` + ``w1_therm``).

Each sensor is ``<w1_dir>/28-xxxxxxxxxxxx/w1_slave``. Reading that file makes the kernel run a
conversion, which takes about 750 ms at 12-bit resolution: reads run in a small thread pool
(:mod:`edge_agent.sources.read_pool`), one in flight per sensor at most, so a slow or hung sensor
never delays the others or the agent.

What a read becomes (the decider owns the policy for values: 85.0 and -127.0 are passed on):

    crc=.. YES, t=23125          Reading(value=23.125)
    crc=.. NO, all bytes ff      fault read_failed   (nobody answered on the bus)
    crc=.. NO                    fault crc_error
    the directory vanished       fault disconnected  (gone from the bus)
    unreadable / unparsable      fault read_failed
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from edge_agent.config.agent import DEFAULT_W1_DIR
from edge_agent.decide.types import Reading
from edge_agent.sources.base import ReadingSink, SensorSpec, start_source_thread
from edge_agent.sources.read_pool import ReadPool
from schemas.errors import SourceError

if TYPE_CHECKING:
    from program_support.supervision import Supervisor

log = structlog.get_logger("edge_agent.sources.onewire")

DS18B20_FAMILY = "28-"


def parse_w1_slave(sensor_id: str, text: str, now: float) -> Reading:
    """One ``w1_slave`` file -> a Reading (a value, or a fault with the reason). Pure."""
    lines = text.splitlines()
    if len(lines) < 2 or "crc=" not in lines[0] or "t=" not in lines[1]:
        return Reading(sensor_id, now, None, "read_failed",
                       f"unexpected w1_slave content {text[:80]!r}")
    first = lines[0].strip()
    if not first.endswith("YES"):
        hexes = first.split(":", 1)[0].split()
        if hexes and all(h.lower() == "ff" for h in hexes):
            return Reading(sensor_id, now, None, "read_failed", "no answer on the bus (all ones)")
        return Reading(sensor_id, now, None, "crc_error", f"w1_slave says {first!r}")
    try:
        milli = int(lines[1].rsplit("t=", 1)[1].strip())
    except ValueError:
        return Reading(sensor_id, now, None, "read_failed", f"bad t= in {lines[1]!r}")
    return Reading(sensor_id, now, milli / 1000)


class OneWireSource:
    kind = "onewire"

    def __init__(self, w1_dir: str | Path = DEFAULT_W1_DIR, *, name: str | None = None,
                 interval_s: float = 10.0, sensor_ids: list[str] | None = None,
                 max_workers: int = 4, clock: Callable[[], float] = time.time) -> None:
        self.w1_dir = Path(w1_dir)
        self.name = name or f"onewire:{self.w1_dir}"
        self.interval_s = interval_s
        self.only = set(sensor_ids) if sensor_ids else None
        self._clock = clock
        self._pool = ReadPool(max_workers, f"w1-read {self.w1_dir.name}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._known: dict[str, SensorSpec] = {s: SensorSpec(s) for s in sensor_ids or []}
        self._present: set[str] = set()
        self._scanned = False  # a scan of the bus succeeded: _known is whole
        self._lock = threading.Lock()
        self._counts = {"scans": 0, "reads": 0, "readings": 0, "crc_errors": 0,
                        "read_failures": 0, "disconnects": 0, "busy_skips": 0, "dropped": 0,
                        "scan_errors": 0}

    @property
    def sensors(self) -> list[SensorSpec]:
        return list(self._known.values())

    @property
    def discovered(self) -> bool:
        return self._scanned

    @property
    def firmware(self) -> str:
        return "linux w1_therm"

    def counters(self) -> dict[str, float]:
        with self._lock:
            return dict(self._counts)

    def start(self, sink: ReadingSink, supervisor: Supervisor | None = None) -> None:
        self._thread = start_source_thread(self.name, self._run, sink, self._thread, supervisor)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        # A read blocked in the kernel cannot be interrupted; do not wait for it.
        self._pool.shutdown()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def scan(self) -> list[str]:
        """The DS18B20 ids on the bus now."""
        try:
            found = sorted(p.name for p in self.w1_dir.glob(f"{DS18B20_FAMILY}*")
                           if (p / "w1_slave").exists())
        except OSError as exc:
            raise SourceError(f"cannot list {self.w1_dir}: {exc}") from exc
        return [s for s in found if self.only is None or s in self.only]

    def _run(self, sink: ReadingSink) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.poll_once(sink)
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a slow bus): skip, never burst
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def poll_once(self, sink: ReadingSink) -> None:
        """One round: report vanished sensors, start a read of every present one."""
        self._count("scans")
        try:
            present = set(self.scan())
        except SourceError as exc:
            self._count("scan_errors")
            log.warning("onewire.scan_failed", source=self.name, error=str(exc))
            return
        now = self._clock()
        for sid in sorted(present - self._known.keys()):
            log.info("onewire.sensor_found", source=self.name, sensor=sid)
            self._known[sid] = SensorSpec(sid)
        # a bus directory that is not there yet (w1-gpio still loading at boot) lists nothing
        # and says nothing about the sensors
        self._scanned = self._scanned or self.w1_dir.is_dir()
        for sid in sorted(self._known.keys() - present):
            if sid in self._present or self._counts["scans"] == 1:
                log.warning("onewire.sensor_gone", source=self.name, sensor=sid)
                self._count("disconnects")
            self._put(sink, Reading(sid, now, None, "disconnected",
                                    f"{sid} is not on the 1-Wire bus ({self.w1_dir})"))
        self._present = present
        for sid in sorted(present):
            try:
                queued = self._pool.submit(sid, partial(self._read, sid, sink))
            except RuntimeError:  # the pool was shut down: we are stopping
                return
            if not queued:
                self._count("busy_skips")  # the previous read is still in the kernel

    def _read(self, sensor_id: str, sink: ReadingSink) -> None:
        path = self.w1_dir / sensor_id / "w1_slave"
        self._count("reads")
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            reading = Reading(sensor_id, self._clock(), None, "disconnected",
                              f"{sensor_id} left the 1-Wire bus during the read")
        except OSError as exc:
            reading = Reading(sensor_id, self._clock(), None, "read_failed",
                              f"cannot read {path}: {exc.strerror or exc}")
        else:
            reading = parse_w1_slave(sensor_id, text, self._clock())
        if reading.fault == "crc_error":
            self._count("crc_errors")
        elif reading.fault is not None:
            self._count("read_failures")
        else:
            self._count("readings")
        self._put(sink, reading)

    def _put(self, sink: ReadingSink, reading: Reading) -> None:
        if not sink(reading):
            self._count("dropped")
