"""The simulated firmware: a state machine driven by scenario time, no I/O, no clock.

``SimulatedDevice.step_until(t_ms)`` returns every Emission due up to ``t_ms``: the exact bytes
for the serial line (scripted garbage, cut lines and bad checksums included), the intended frame,
and for sensor frames the Sample behind it (which the 1-Wire tree renders). ``script(scenario)``
runs a fresh device to the end (``samples(scenario)`` is its per-sensor view), so tests know the
expected output without running anything. The arrow runs one way: device imports scenario (the
data), scenario knows nothing of the device.

Randomness (noise, spikes, garbage, cut positions) comes from generators seeded with the seed,
one per sensor and one for the stream, drawn the same way whether or not a fault is active, so
a fault never shifts the values of the samples after it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from firmware_sim import signals
from firmware_sim.scenario import (
    BadChecksum,
    ClockJump,
    CutLine,
    Garbage,
    Scenario,
    SensorFault,
    Stall,
    Unplug,
)
from schemas.serial_protocol import (
    MAX_COUNTER,
    MAX_INTERVAL_MS,
    MIN_INTERVAL_MS,
    Ack,
    DeviceFrame,
    ErrorCode,
    FrameDecoder,
    Hello,
    Identify,
    Nak,
    NakCode,
    ProtocolError,
    ReadingFrame,
    SensorError,
    SensorInfoFrame,
    SetInterval,
    encode,
)

# Garbage never holds '$' or '\n': its only effect is then "bytes a reader discards", which
# keeps the expected decoder counters exact. The property tests cover arbitrary bytes.
_GARBAGE_ALPHABET = bytes(b for b in range(256) if b not in b"$\n")


class Condition(StrEnum):
    """What a sensor's sample turned out to be."""

    OK = "ok"
    POWER_ON = "power_on"  # reads 85.000: the scratchpad reset value
    DISCONNECTED = "disconnected"  # reads -127.000 over serial; gone from the 1-Wire bus
    MISSING = "missing"  # E MISSING over serial; gone from the 1-Wire bus
    CRC_ERROR = "crc_error"  # E CRC over serial; "crc=.. NO" in w1_slave
    READ_FAILED = "read_failed"  # E READ_FAILED over serial; all-ones scratchpad in w1_slave


class Kind(StrEnum):
    HELLO = "hello"
    READING = "reading"
    ERROR = "error"
    REPLY = "reply"  # ACK/NAK, or HELLO answering $ID
    GARBAGE = "garbage"
    UNPLUG = "unplug"
    REPLUG = "replug"
    CLOCK_JUMP = "clock_jump"


class Damage(StrEnum):
    CUT = "cut"
    BAD_CHECKSUM = "bad_checksum"


@dataclass(frozen=True, slots=True)
class Sample:
    """One sensor at one sample time. ``milli`` is the value the device reports (None for E)."""

    t_ms: int
    sensor_id: str
    condition: Condition
    milli: int | None  # thousandths of degC, as sent over serial and as w1 't='
    true_milli: int  # the profile's value, quantised like the sensor would (crc_error uses it)
    resolution: int = 12

    @property
    def value(self) -> float | None:
        return None if self.milli is None else self.milli / 1000


@dataclass(frozen=True, slots=True)
class Emission:
    """One thing the device did at scenario time ``t_ms``."""

    t_ms: int
    kind: Kind
    data: bytes = b""  # the exact bytes on the line (empty for UNPLUG/REPLUG/CLOCK_JUMP)
    frame: DeviceFrame | None = None  # the frame as intended (before any damage)
    damage: Damage | None = None
    sample: Sample | None = None

    @property
    def t(self) -> float:
        return self.t_ms / 1000

    @property
    def received(self) -> DeviceFrame | None:
        """The frame a correct reader decodes from ``data``, or None."""
        return self.frame if self.damage is None else None


@dataclass(slots=True)
class _Counter:
    """A stream fault with a number of uses left, active from ``at``."""

    at: int
    left: int
    fault: Garbage | CutLine | BadChecksum


@dataclass(slots=True)
class _State:
    """The simulated firmware's mutable state between commands and samples."""

    boot_ms: int = 0
    seq: int = 0
    clock_offset: int = 0
    interval_ms: int = 0
    next_sample_ms: int = 0
    last_sample_ms: int | None = None
    plugged: bool = True


class SimulatedDevice:
    """The firmware of schemas/SERIAL_PROTOCOL.md with the scenario's sensors and faults."""

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self._stream_rng = random.Random(f"{self.seed}/stream")
        self._sensor_rngs = [random.Random(f"{self.seed}/sensor/{s.id}")
                             for s in scenario.sensors]
        self._host = FrameDecoder()
        self.now_ms = -1  # nothing processed yet; boot happens at 0
        self._s = _State(interval_ms=scenario.interval)
        self._events = self._device_events()
        # Fault bookkeeping belongs to the script, not to the device's RAM: kept across reboots.
        self._uses: dict[int, int] = {}
        self._counters = [_Counter(f.at, f.count, f) for f in scenario.faults
                          if isinstance(f, Garbage | CutLine | BadChecksum)]

    # --- schedule ---------------------------------------------------------------------------

    def _device_events(self) -> list[tuple[int, int, Unplug | ClockJump | None]]:
        """(time, order, fault) of boot, clock jumps, unplugs and replugs, sorted."""
        events: list[tuple[int, int, Unplug | ClockJump | None]] = [(0, 2, None)]  # boot
        for fault in self.scenario.faults:
            if isinstance(fault, ClockJump):
                events.append((fault.at, 0, fault))
            elif isinstance(fault, Unplug):
                events.append((fault.at, 1, fault))
                events.append((fault.at + fault.duration, 2, None))  # replug = boot
        events.sort(key=lambda e: (e[0], e[1]))
        return events

    @property
    def duration_ms(self) -> int:
        return self.scenario.duration

    @property
    def finished(self) -> bool:
        return self.next_event_ms() is None

    @property
    def interval_ms(self) -> int:
        return self._s.interval_ms

    def next_event_ms(self) -> int | None:
        """When the device next has something to do (None: the scenario is over)."""
        candidates = [t for t, _, _ in self._events if t < self.duration_ms]
        if self._s.plugged and self._s.next_sample_ms < self.duration_ms:
            candidates.append(self._s.next_sample_ms)
        return min(candidates) if candidates else None

    def _stalled(self, t_ms: int) -> bool:
        return any(isinstance(f, Stall) and f.at <= t_ms < f.at + f.duration
                   for f in self.scenario.faults)

    # --- running ----------------------------------------------------------------------------

    def step_until(self, t_ms: int) -> list[Emission]:
        """Everything due at scenario times <= ``t_ms`` (and before the end), in order."""
        out: list[Emission] = []
        while True:
            nxt = self.next_event_ms()
            if nxt is None or nxt > t_ms:
                break
            if self._events and self._events[0][0] == nxt:
                at, order, fault = self._events.pop(0)
                out += self._device_event(at, order, fault)
            else:
                out += self._sample(nxt)
        self.now_ms = max(self.now_ms, min(t_ms, self.duration_ms))
        return out

    def _device_event(self, at: int, order: int, fault: Unplug | ClockJump | None) -> list[
            Emission]:
        s = self._s
        if isinstance(fault, ClockJump):
            s.clock_offset += fault.by
            return [Emission(at, Kind.CLOCK_JUMP)]
        if isinstance(fault, Unplug):
            s.plugged = False
            return [Emission(at, Kind.UNPLUG)]
        # Boot (at 0) or replug: RAM is fresh, HELLO first, then sample at once.
        out = [] if at == 0 else [Emission(at, Kind.REPLUG)]
        s.plugged = True
        s.boot_ms, s.seq, s.clock_offset = at, 0, 0
        s.interval_ms = self.scenario.interval
        s.next_sample_ms, s.last_sample_ms = at, None
        self._host.reset()
        if not self._stalled(at):
            hello = self.hello()
            out.append(Emission(at, Kind.HELLO, encode(hello), hello))
        return out

    def hello(self) -> Hello:
        return Hello(self.scenario.fw_version, self.scenario.device_id, self._s.interval_ms,
                     tuple(SensorInfoFrame(s.id, s.unit) for s in self.scenario.sensors))

    def _device_ms(self, t_ms: int) -> int:
        return (t_ms - self._s.boot_ms + self._s.clock_offset) % (MAX_COUNTER + 1)

    def _sample(self, t_ms: int) -> list[Emission]:
        s = self._s
        s.last_sample_ms = t_ms
        s.next_sample_ms = t_ms + s.interval_ms
        samples = [self._read_sensor(i, t_ms) for i in range(len(self.scenario.sensors))]
        if self._stalled(t_ms):
            return []  # the firmware is hung: the values were never read or sent
        out: list[Emission] = []
        for sample in samples:
            frame: DeviceFrame
            if sample.milli is not None:
                frame = ReadingFrame(sample.sensor_id, sample.milli / 1000, s.seq,
                                self._device_ms(t_ms))
            else:
                frame = SensorError(sample.sensor_id, _ERROR_CODES[sample.condition], s.seq,
                                    self._device_ms(t_ms))
            s.seq = (s.seq + 1) % (MAX_COUNTER + 1)
            out += self._damaged(t_ms, frame, sample)
        return out

    def _read_sensor(self, index: int, t_ms: int) -> Sample:
        sensor = self.scenario.sensors[index]
        rng = self._sensor_rngs[index]
        value = sensor.profile.at(t_ms)
        noise = rng.gauss(0.0, 1.0)
        spike_roll, spike_sign = rng.random(), rng.random()
        value += noise * sensor.noise
        if sensor.spikes is not None and spike_roll < sensor.spikes.probability:
            value += sensor.spikes.magnitude * (1 if spike_sign < 0.5 else -1)
        true_milli = signals.raw_to_milli(signals.quantize(value, sensor.resolution))
        condition = self._condition(sensor.id, t_ms)
        milli: int | None = {
            Condition.OK: true_milli,
            Condition.POWER_ON: signals.POWER_ON_MILLI,
            Condition.DISCONNECTED: signals.DISCONNECTED_MILLI,
        }.get(condition)
        return Sample(t_ms, sensor.id, condition, milli, true_milli, sensor.resolution)

    def _condition(self, sensor_id: str, t_ms: int) -> Condition:
        for fault in self.scenario.faults:
            if not isinstance(fault, SensorFault) or fault.sensor != sensor_id or t_ms < fault.at:
                continue
            if fault.duration is not None:
                if t_ms < fault.at + fault.duration:
                    return Condition(fault.kind)
            elif self._uses.get(id(fault), 0) < (fault.count or 1):
                self._uses[id(fault)] = self._uses.get(id(fault), 0) + 1
                return Condition(fault.kind)
        return Condition.OK

    def _damaged(self, t_ms: int, frame: DeviceFrame, sample: Sample) -> list[Emission]:
        """The frame's emission, preceded by garbage and cut or corrupted when scripted."""
        out: list[Emission] = []
        kind = Kind.READING if isinstance(frame, ReadingFrame) else Kind.ERROR
        garbage = self._use(t_ms, Garbage, sample.sensor_id)
        if isinstance(garbage, Garbage):
            data = bytes(self._stream_rng.choices(_GARBAGE_ALPHABET, k=garbage.bytes))
            out.append(Emission(t_ms, Kind.GARBAGE, data))
        line = encode(frame)
        if self._use(t_ms, CutLine, sample.sensor_id) is not None:
            cut = self._stream_rng.randrange(1, len(line) - 1)
            out.append(Emission(t_ms, kind, line[:cut], frame, Damage.CUT, sample))
        elif self._use(t_ms, BadChecksum, sample.sensor_id) is not None:
            out.append(Emission(t_ms, kind, encode(frame, bad_checksum=True), frame,
                                Damage.BAD_CHECKSUM, sample))
        else:
            out.append(Emission(t_ms, kind, line, frame, None, sample))
        return out

    def _use(self, t_ms: int, kind: type, sensor_id: str) -> Garbage | CutLine | BadChecksum | None:
        """Consume one use of the earliest active stream fault of ``kind``, if any."""
        for counter in self._counters:
            fault = counter.fault
            if not isinstance(fault, kind) or counter.at > t_ms or counter.left <= 0:
                continue
            if isinstance(fault, BadChecksum) and fault.sensor not in (None, sensor_id):
                continue
            counter.left -= 1
            return fault
        return None

    # --- host commands ----------------------------------------------------------------------

    def handle_command(self, data: bytes) -> bytes:
        """Bytes from the host (any chunking) -> the device's answers (possibly empty).

        Call ``step_until(now)`` first so that the answer and a new interval apply at ``now``.
        A hung (stalled) or unplugged device answers nothing.
        """
        items = self._host.feed(data)
        if not self._s.plugged or self._stalled(max(self.now_ms, 0)):
            return b""
        out = bytearray()
        for item in items:
            reply = self.handle_frame(item)
            if reply is not None:
                out += encode(reply)
        return bytes(out)

    def handle_frame(self, item: object) -> DeviceFrame | None:
        s = self._s
        if isinstance(item, ProtocolError):
            return Nak("?", NakCode.BAD_FRAME)
        if isinstance(item, Identify):
            return self.hello()
        if isinstance(item, SetInterval):
            if not MIN_INTERVAL_MS <= item.interval_ms <= MAX_INTERVAL_MS:
                return Nak("INT", NakCode.RANGE)
            s.interval_ms = item.interval_ms
            base = s.last_sample_ms if s.last_sample_ms is not None else s.boot_ms
            s.next_sample_ms = max(base + s.interval_ms, self.now_ms)
            return Ack("INT", str(item.interval_ms))
        kind = type(item).__name__
        names = {"Hello": "HELLO", "ReadingFrame": "R", "SensorError": "E", "Ack": "ACK",
                 "Nak": "NAK"}
        return Nak(names.get(kind, "?"), NakCode.UNKNOWN)


_ERROR_CODES = {
    Condition.MISSING: ErrorCode.MISSING,
    Condition.CRC_ERROR: ErrorCode.CRC,
    Condition.READ_FAILED: ErrorCode.READ_FAILED,
}


def script(scenario: Scenario, seed: int | None = None) -> list[Emission]:
    """Everything a device emits over the whole scenario when no host command arrives."""
    return SimulatedDevice(scenario, seed).step_until(scenario.duration)


def samples(scenario: Scenario, seed: int | None = None) -> list[Sample]:
    """The per-sensor view of ``script()``: one Sample per sensor per sample time."""
    return [e.sample for e in script(scenario, seed) if e.sample is not None]


@dataclass(frozen=True, slots=True)
class Expected:
    """What a FrameDecoder reading the whole stream must find."""

    frames: list[DeviceFrame]
    bad_checksum: int
    cut_lines: int
    garbage_bytes: int


def expected(emissions: list[Emission]) -> Expected:
    """The frames and decoder counters that ``emissions`` produce on one unbroken line.

    Garbage right after a cut line is swallowed by the cut partial frame, not counted; a cut
    line shows only when a later frame starts (the reader resets on UNPLUG).
    """
    frames: list[DeviceFrame] = []
    bad = cut = garbage = 0
    pending_cut = False
    for e in emissions:
        if e.kind is Kind.UNPLUG:
            pending_cut = False
        if e.kind is Kind.GARBAGE:
            garbage += 0 if pending_cut else len(e.data)
            continue
        if not e.data:
            continue
        cut += pending_cut
        pending_cut = e.damage is Damage.CUT
        if e.damage is Damage.BAD_CHECKSUM:
            bad += 1
        elif e.damage is None and e.frame is not None:
            frames.append(e.frame)
    return Expected(frames, bad, cut, garbage)
