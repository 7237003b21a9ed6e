"""Decoded serial protocol frames -> Readings: shared by the serial and the simulator source.

Pure apart from the clock value passed in: tracks the device's identity (HELLO), the sensors it
announced, and sequence gaps (frames lost on the line), and maps ``E`` codes to fault codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from edge_agent.decide.types import Reading
from edge_agent.sources.base import SensorSpec, unit_from_device
from schemas.serial_protocol import (
    PROTOCOL_VERSION,
    Ack,
    ErrorCode,
    Frame,
    FrameDecoder,
    Hello,
    Nak,
    ProtocolError,
    ReadingFrame,
    SensorError,
)
from schemas.vocabulary import FaultCode

log = structlog.get_logger("edge_agent.sources")

_FAULTS: dict[ErrorCode, FaultCode] = {
    ErrorCode.MISSING: "disconnected",
    ErrorCode.READ_FAILED: "read_failed",
    ErrorCode.CRC: "crc_error",
}


def decoder_counters(d: FrameDecoder) -> dict[str, float]:
    """The stream decoder's counters, as every serial-protocol source reports them."""
    return {"frames": d.frames, "bad_checksum": d.bad_checksum, "malformed": d.malformed,
            "cut_lines": d.cut_lines, "too_long": d.too_long, "garbage_bytes": d.garbage_bytes}


@dataclass
class FrameCounters:
    """What a serial or simulated board sent, counted per source."""

    frames: int = 0
    readings: int = 0
    sensor_errors: int = 0
    hellos: int = 0
    seq_gaps: int = 0  # frames missing according to the device's seq numbers
    unknown_unit: int = 0
    foreign_protocol: int = 0


@dataclass
class FrameHandler:
    """Turns frames into Readings and keeps what the device said about itself."""

    source: str
    configured: dict[str, SensorSpec] = field(default_factory=dict)
    firmware: str = ""
    device_id: str = ""
    counters: FrameCounters = field(default_factory=FrameCounters)
    _announced: dict[str, SensorSpec] = field(default_factory=dict)
    _seen: dict[str, None] = field(default_factory=dict)  # ids from R/E frames, in order
    _last_seq: int | None = None
    _hello_accepted: bool = False

    @property
    def sensors(self) -> list[SensorSpec]:
        merged = dict(self._announced)
        merged.update(self.configured)  # the config's unit wins over the device's
        return list(merged.values())

    @property
    def discovered(self) -> bool:
        """The device said which sensors it has (a HELLO was accepted)."""
        return self._hello_accepted

    def known_ids(self) -> list[str]:
        """Every sensor announced, configured or heard from (device_lost goes to all)."""
        ids = dict.fromkeys(s.sensor_id for s in self.sensors)
        ids.update(self._seen)
        return list(ids)

    def restart_line(self) -> None:
        """After a reopen the seq may start over; a gap across the outage is not a line error."""
        self._last_seq = None

    def handle(self, item: Frame | ProtocolError, now: float) -> Reading | None:
        if isinstance(item, ProtocolError):
            return None  # counted by the decoder; logged by the caller
        self.counters.frames += 1
        if isinstance(item, ReadingFrame | SensorError):
            self._seen.setdefault(item.sensor_id, None)
        if isinstance(item, ReadingFrame):
            self._seq(item.seq)
            self.counters.readings += 1
            return Reading(item.sensor_id, now, item.value)
        if isinstance(item, SensorError):
            self._seq(item.seq)
            self.counters.sensor_errors += 1
            return Reading(item.sensor_id, now, None, _FAULTS[item.code],
                           f"device reported {item.code.value}")
        if isinstance(item, Hello):
            self._hello(item)
        elif isinstance(item, Ack | Nak):
            log.info("source.command_answered", source=self.source, answer=repr(item))
        return None

    def _seq(self, seq: int) -> None:
        last = self._last_seq
        if last is not None and seq != (last + 1) % 2**32:
            missing = (seq - last - 1) % 2**32
            if missing < 2**31:  # a backwards jump is a reboot without HELLO: not a gap
                self.counters.seq_gaps += missing
                log.warning("source.frames_lost", source=self.source, missing=missing,
                            last_seq=last, seq=seq)
        self._last_seq = seq

    def _hello(self, hello: Hello) -> None:
        self.counters.hellos += 1
        if hello.protocol != PROTOCOL_VERSION:
            self.counters.foreign_protocol += 1
            log.error("source.protocol_version_mismatch",
                      source=self.source, protocol=hello.protocol)
            return
        self._last_seq = None  # seq restarts at 0 after a boot HELLO
        self.firmware = f"{hello.fw_version} ({hello.device_id})"
        self.device_id = hello.device_id
        announced: dict[str, SensorSpec] = {}
        for info in hello.sensors:
            unit = unit_from_device(info.unit)
            if unit is None:
                self.counters.unknown_unit += 1
                log.error("source.unit_not_supported", source=self.source, sensor=info.id,
                          unit=info.unit,
                          detail="its readings are kept as degC only if the config names the "
                                 "sensor")
                continue
            announced[info.id] = SensorSpec(info.id, unit)
        if announced.keys() != self._announced.keys():
            log.info("source.sensors_announced", source=self.source,
                     firmware=self.firmware, sensors=sorted(announced))
        self._announced = announced
        # only now: a status built meanwhile (another thread) reads this flag before the list,
        # and a list said to be whole while it is still empty withdraws every sensor's entities
        self._hello_accepted = True
