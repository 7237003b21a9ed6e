"""A microcontroller on USB serial speaking schemas/SERIAL_PROTOCOL.md.

The port is a device path (``/dev/ttyACM0``), a stable udev path (``/dev/serial/by-id/...``, a
symlink) or a pyserial URL (``socket://host:port``, ``rfc2217://...``). When the device
disappears (unplugged, renumbered) the source reports ``device_lost`` for every sensor it knows
and keeps reopening the *configured* path with backoff: the symlink is resolved again at every
attempt, so the device is found again wherever the kernel put it, without a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import serial
import structlog
from serial.urlhandler import protocol_socket

from edge_agent.decide.types import Reading
from edge_agent.sources.base import ReadingSink, SensorSpec
from edge_agent.sources.framed_source import FramedSource
from edge_agent.sources.frames import FrameHandler, decoder_counters
from program_support.backoff import exponential_delay
from schemas.errors import SourceError
from schemas.serial_protocol import FrameDecoder, Identify, ProtocolError, encode

if TYPE_CHECKING:
    pass

log = structlog.get_logger("edge_agent.sources.serial")

READ_SIZE = 4096
IDENTIFY_RETRY_S = 2.0
RETRY_LOG_EVERY_S = 30.0


def open_port(port: str, baudrate: int, timeout: float) -> serial.SerialBase:
    """Open a path or a pyserial URL; pyserial and OS errors become :class:`SourceError`."""
    try:
        if "://" in port:
            return serial.serial_for_url(port, baudrate=baudrate, timeout=timeout)
        return serial.Serial(port, baudrate=baudrate, timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SourceError(f"cannot open {port}: {exc}") from exc


def read_available(port: serial.SerialBase) -> bytes:
    """What the port has now, waiting up to its timeout for the first byte only.

    Never ``port.read(4096)``: pyserial's ``read(n)`` keeps collecting until it has n bytes or
    the timeout ends, and when the port fails meanwhile (an unplug: EIO or EOF) it raises and
    throws away every byte it had collected, i.e. the last frames before each unplug.
    """
    data: bytes = port.read(min(port.in_waiting, READ_SIZE) or 1)
    if data and isinstance(port, protocol_socket.Serial):
        # socket:// says only 0 or 1 for in_waiting: take the rest without waiting (timeout 0
        # costs nothing there), and keep what we have if the peer closed right after it
        timeout = port.timeout
        port.timeout = 0
        try:
            data += port.read(READ_SIZE)
        except serial.SerialException:
            pass  # the next read raises it again, after these bytes are handled
        finally:
            port.timeout = timeout
    return data


class SerialSource(FramedSource):
    kind = "serial"

    def __init__(self, port: str, *, name: str | None = None, baudrate: int = 115200,
                 sensors: list[SensorSpec] | None = None, read_timeout_s: float = 0.2,
                 reopen_min_s: float = 0.1, reopen_max_s: float = 5.0,
                 identify: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.port = port
        self.name = name or f"serial:{port}"
        self.baudrate = baudrate
        self.read_timeout_s = read_timeout_s
        self.reopen_min_s = reopen_min_s
        self.reopen_max_s = reopen_max_s
        self.identify = identify
        self._clock = clock
        super().__init__(FrameHandler(self.name, {s.sensor_id: s for s in sensors or []}))
        self._decoder = FrameDecoder()
        self._port: serial.SerialBase | None = None
        self._lock = threading.Lock()
        self.connected = False
        self.opens = 0
        self.open_failures = 0

    # --- SensorSource ----------------------------------------------------------------------
    def counters(self) -> dict[str, float]:
        return {
            **decoder_counters(self._decoder), **self.frame_counters(),
            "hellos": self._handler.counters.hellos, "reconnects": max(0, self.opens - 1),
            "open_failures": self.open_failures, "connected": float(self.connected),
        }

    def _wake_reader(self) -> None:
        with self._lock:
            port = self._port
        cancel = getattr(port, "cancel_read", None)  # POSIX ports: wake a blocked read()
        if cancel is not None:
            cancel()

    # --- the reader thread -------------------------------------------------------------------
    def _run(self, sink: ReadingSink) -> None:
        failed_in_row = 0
        last_warned = -RETRY_LOG_EVERY_S
        while not self._stop.is_set():
            try:
                port = open_port(self.port, self.baudrate, self.read_timeout_s)
            except SourceError as exc:
                self.open_failures += 1
                if self.opens == 0 and self.open_failures == 1:
                    # Absent from the start: configured sensors are lost until it shows up.
                    self._report_lost(sink, str(exc))
                backoff = exponential_delay(failed_in_row, self.reopen_min_s, self.reopen_max_s)
                failed_in_row += 1
                now = time.monotonic()
                if now - last_warned >= RETRY_LOG_EVERY_S:  # not one line per attempt
                    last_warned = now
                    log.warning("serial.unavailable", source=self.name,
                                error=str(exc), retry_in_s=round(backoff, 2),
                                failures=self.open_failures)
                self._stop.wait(backoff)
                continue
            failed_in_row = 0
            self.opens += 1
            with self._lock:
                self._port = port
            self.connected = True
            log.info("serial.opened", source=self.name, port=self.port, opens=self.opens)
            try:
                error = self._read(port, sink)
            finally:
                self.connected = False
                with self._lock:
                    self._port = None
                port.close()
            if self._stop.is_set():
                break
            log.warning("serial.device_lost", source=self.name, error=error)
            self._report_lost(sink, error)

    def _read(self, port: serial.SerialBase, sink: ReadingSink) -> str:
        """Read until the device goes away; returns why."""
        self._decoder.reset()
        self._handler.restart_line()
        try:
            asked = 0.0
            hellos = self._handler.counters.hellos
            while not self._stop.is_set():
                # Ask who is there at open, and again while no HELLO came (a hung firmware
                # ignores the first one; the boot HELLO was flushed by the open).
                if (self.identify and self._handler.counters.hellos == hellos
                        and time.monotonic() - asked >= IDENTIFY_RETRY_S):
                    port.write(encode(Identify()))
                    asked = time.monotonic()
                data = read_available(port)
                if not data:
                    continue
                now = self._clock()
                for item in self._decoder.feed(data):
                    if isinstance(item, ProtocolError):
                        log.info("source.line_rejected", source=self.name, reason=item.reason,
                                 line=bytes(item.line[:64]).decode("ascii", "replace")
                                 if isinstance(item.line, bytes) else item.line[:64])
                        continue
                    reading = self._handler.handle(item, now)
                    if reading is not None:
                        self._put(sink, reading)
        except (serial.SerialException, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return "stopped"

    def _report_lost(self, sink: ReadingSink, error: str) -> None:
        self.device_lost += 1
        now = self._clock()
        for sid in self._handler.known_ids():
            self._put(sink, Reading(sid, now, None, "device_lost",
                                    f"serial device {self.port} disappeared ({error})"))

    def _put(self, sink: ReadingSink, reading: Reading) -> None:
        if not sink(reading):
            self.dropped += 1
