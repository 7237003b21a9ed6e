"""The serial line protocol of schemas/SERIAL_PROTOCOL.md: frames, encoder, parser, stream decoder.

Pure: no I/O. The edge agent's serial source imports ``FrameDecoder``; the simulator, the
MicroPython reference firmware and the tests all speak exactly what this module encodes.

A frame is one ASCII line ``$<TYPE>[,<field>...]*<XX>\\n`` where ``XX`` is the CRC-8/MAXIM
(the DS18B20's own CRC) of the bytes between ``$`` and ``*``, as two upper-case hex digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from schemas.errors import BadChecksum, ProtocolError

__all__ = [
    "MAX_LINE",
    "MAX_SENSORS",
    "PROTOCOL_VERSION",
    "Ack",
    "DeviceFrame",
    "ErrorCode",
    "Frame",
    "FrameDecoder",
    "Hello",
    "HostFrame",
    "Identify",
    "Nak",
    "NakCode",
    "ProtocolError",
    "ReadingFrame",
    "SensorError",
    "SensorInfoFrame",
    "SetInterval",
    "checksum",
    "encode",
    "format_value",
    "parse_line",
]

PROTOCOL_VERSION = 1
MAX_LINE = 256  # bytes from '$' to '\n' inclusive; longer lines are discarded
MAX_SENSORS = 10  # so that a HELLO always fits in MAX_LINE
MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 86_400_000
MAX_COUNTER = 2**32 - 1  # seq and ms are unsigned 32-bit on the device, and wrap

_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,32}\Z")
_UNIT_RE = re.compile(r"[A-Za-z%]{1,8}\Z")
_VALUE_RE = re.compile(r"-?[0-9]{1,6}\.[0-9]{3}\Z")
_UINT_RE = re.compile(r"[0-9]{1,10}\Z")
_HEX = frozenset(b"0123456789ABCDEF")


def _crc8_table() -> bytes:
    table = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x8C if c & 1 else c >> 1
        table[i] = c
    return bytes(table)


_CRC8 = _crc8_table()


def checksum(body: bytes) -> int:
    """CRC-8/MAXIM (poly 0x31 reflected, init 0) of ``body``: the DS18B20 scratchpad CRC."""
    c = 0
    table = _CRC8
    for b in body:
        c = table[c ^ b]
    return c


class ErrorCode(StrEnum):
    """Why a sensor gave no value (the ``E`` frame)."""

    MISSING = "MISSING"  # not found on the bus (unplugged wire, dead sensor)
    READ_FAILED = "READ_FAILED"  # the bus read timed out or returned nothing
    CRC = "CRC"  # the scratchpad CRC did not match: the value is not trusted


class NakCode(StrEnum):
    """Why the device refused a host command (the ``NAK`` frame)."""

    UNKNOWN = "UNKNOWN"  # a frame type the device does not accept from the host
    RANGE = "RANGE"  # a value outside the allowed range
    BAD_FRAME = "BAD_FRAME"  # checksum or syntax error; the type is then "?"


def _check_id(what: str, value: str) -> None:
    if not _ID_RE.match(value):
        raise ProtocolError(f"{what} {value!r} must be 1-32 of [A-Za-z0-9._-]")


def _check_uint(what: str, value: int, low: int = 0, high: int = MAX_COUNTER) -> None:
    if not low <= value <= high:
        raise ProtocolError(f"{what} {value} outside {low}..{high}")


@dataclass(frozen=True, slots=True)
class SensorInfoFrame:
    """One sensor announced in HELLO."""

    id: str
    unit: str = "C"

    def __post_init__(self) -> None:
        _check_id("sensor id", self.id)
        if not _UNIT_RE.match(self.unit):
            raise ProtocolError(f"unit {self.unit!r} must be 1-8 of [A-Za-z%]")


@dataclass(frozen=True, slots=True)
class Hello:
    """Identity: sent at boot and in answer to ``$ID``."""

    fw_version: str
    device_id: str
    interval_ms: int
    sensors: tuple[SensorInfoFrame, ...]
    protocol: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _check_id("firmware version", self.fw_version)
        _check_id("device id", self.device_id)
        _check_uint("interval_ms", self.interval_ms, MIN_INTERVAL_MS, MAX_INTERVAL_MS)
        _check_uint("protocol", self.protocol, 1, 99)
        if len(self.sensors) > MAX_SENSORS:
            raise ProtocolError(f"{len(self.sensors)} sensors, at most {MAX_SENSORS}")


@dataclass(frozen=True, slots=True)
class ReadingFrame:
    """A measured value. ``value`` travels with exactly three decimals (milli-units)."""

    sensor_id: str
    value: float
    seq: int  # per device, counts every R and E frame since boot
    ms: int  # device clock in ms (uptime since boot, unless the clock jumped)

    def __post_init__(self) -> None:
        _check_id("sensor id", self.sensor_id)
        _check_uint("seq", self.seq)
        _check_uint("ms", self.ms)
        if not -999_999 < self.value < 999_999:
            raise ProtocolError(f"value {self.value} out of range")

    @property
    def milli(self) -> int:
        """The value in thousandths (milli-degrees), exactly as sent."""
        return round(self.value * 1000)


@dataclass(frozen=True, slots=True)
class SensorError:
    """A sample that failed: no value for this sensor this time."""

    sensor_id: str
    code: ErrorCode
    seq: int
    ms: int

    def __post_init__(self) -> None:
        _check_id("sensor id", self.sensor_id)
        _check_uint("seq", self.seq)
        _check_uint("ms", self.ms)


@dataclass(frozen=True, slots=True)
class Ack:
    """The device accepted a host command; ``value`` is what it now uses."""

    command: str
    value: str

    def __post_init__(self) -> None:
        _check_id("command", self.command)
        _check_id("value", self.value)


@dataclass(frozen=True, slots=True)
class Nak:
    """The device refused a host command (``command`` is ``?`` for an unreadable frame)."""

    command: str
    code: NakCode

    def __post_init__(self) -> None:
        if self.command != "?":
            _check_id("command", self.command)


@dataclass(frozen=True, slots=True)
class Identify:
    """Host -> device: answer with HELLO."""


@dataclass(frozen=True, slots=True)
class SetInterval:
    """Host -> device: sample every ``interval_ms``; the device answers ACK or NAK."""

    interval_ms: int

    def __post_init__(self) -> None:
        # Out-of-range values are encodable (the device answers NAK,INT,RANGE).
        _check_uint("interval_ms", self.interval_ms)


DeviceFrame = Hello | ReadingFrame | SensorError | Ack | Nak
HostFrame = Identify | SetInterval
Frame = DeviceFrame | HostFrame


def format_value(value: float) -> str:
    """Fixed three decimals, never ``-0.000``."""
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def _fields(frame: Frame) -> list[str]:
    match frame:
        case ReadingFrame(sensor_id, value, seq, ms):
            return ["R", sensor_id, format_value(value), str(seq), str(ms)]
        case SensorError(sensor_id, code, seq, ms):
            return ["E", sensor_id, str(code), str(seq), str(ms)]
        case Hello(fw, device, interval, sensors, proto):
            listing = ";".join(f"{s.id}:{s.unit}" for s in sensors)
            return ["HELLO", str(proto), fw, device, str(interval), listing]
        case Ack(command, value):
            return ["ACK", command, value]
        case Nak(command, code):
            return ["NAK", command, str(code)]
        case Identify():
            return ["ID"]
        case SetInterval(interval):
            return ["INT", str(interval)]
    raise TypeError(f"not a frame: {frame!r}")


def encode(frame: Frame, *, bad_checksum: bool = False) -> bytes:
    """The exact line for ``frame``, ``\\n`` included. ``bad_checksum`` is for fault injection."""
    body = ",".join(_fields(frame)).encode("ascii")
    crc = checksum(body)
    if bad_checksum:
        crc ^= 0x5A  # any non-zero mask gives a wrong, still well-formed, checksum
    return b"$%s*%02X\n" % (body, crc)


def _uint(what: str, text: str) -> int:
    if not _UINT_RE.match(text):
        raise ProtocolError(f"{what} {text!r} is not an unsigned integer")
    return int(text)


def _count(fields: list[str], n: int, kind: str) -> None:
    if len(fields) != n:
        raise ProtocolError(f"{kind} frame has {len(fields) - 1} fields, expected {n - 1}")


def _decode_fields(fields: list[str]) -> Frame:
    kind = fields[0]
    if kind == "R":
        _count(fields, 5, kind)
        if not _VALUE_RE.match(fields[2]):
            raise ProtocolError(f"value {fields[2]!r} is not a number with 3 decimals")
        return ReadingFrame(fields[1], float(fields[2]), _uint("seq", fields[3]),
                       _uint("ms", fields[4]))
    if kind == "E":
        _count(fields, 5, kind)
        try:
            code = ErrorCode(fields[2])
        except ValueError:
            raise ProtocolError(f"unknown error code {fields[2]!r}") from None
        return SensorError(fields[1], code, _uint("seq", fields[3]), _uint("ms", fields[4]))
    if kind == "HELLO":
        _count(fields, 6, kind)
        sensors = []
        for item in fields[5].split(";") if fields[5] else []:
            sid, sep, unit = item.partition(":")
            if not sep:
                raise ProtocolError(f"sensor {item!r} is not <id>:<unit>")
            sensors.append(SensorInfoFrame(sid, unit))
        return Hello(fields[2], fields[3], _uint("interval_ms", fields[4]), tuple(sensors),
                     protocol=_uint("protocol", fields[1]))
    if kind == "ACK":
        _count(fields, 3, kind)
        return Ack(fields[1], fields[2])
    if kind == "NAK":
        _count(fields, 3, kind)
        try:
            return Nak(fields[1], NakCode(fields[2]))
        except ValueError:
            raise ProtocolError(f"unknown NAK code {fields[2]!r}") from None
    if kind == "ID":
        _count(fields, 1, kind)
        return Identify()
    if kind == "INT":
        _count(fields, 2, kind)
        return SetInterval(_uint("interval_ms", fields[1]))
    raise ProtocolError(f"unknown frame type {kind[:16]!r}")


def parse_line(line: bytes) -> Frame:
    """Parse one line (with or without its ``\\n`` / ``\\r\\n``). Raises ProtocolError."""
    raw = line
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        if len(line) + 1 > MAX_LINE:
            raise ProtocolError(f"line of {len(line) + 1} bytes exceeds {MAX_LINE}")
        if not line.startswith(b"$"):
            raise ProtocolError("line does not start with '$'")
        star = line.rfind(b"*")
        if star < 0:
            raise ProtocolError("no '*' checksum separator")
        digits = line[star + 1 :]
        if len(digits) != 2 or not _HEX.issuperset(digits):
            raise ProtocolError(f"checksum {digits[:8]!r} is not two upper-case hex digits")
        body = line[1:star]
        expected = checksum(body)
        if int(digits, 16) != expected:
            raise BadChecksum(f"bad checksum {digits.decode()}, expected {expected:02X}")
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("non-ASCII byte in frame") from None
        if "$" in text or "*" in text or "\n" in text:
            raise ProtocolError("'$', '*' or newline inside a frame")
        return _decode_fields(text.split(","))
    except ProtocolError as exc:
        if exc.line != raw:  # the same kind of error, with the whole line kept
            raise type(exc)(exc.reason, raw) from None
        raise


class FrameDecoder:
    """Incremental decoder: bytes in (any chunking), frames and errors out. Never raises.

    Resynchronisation: outside a frame every byte up to the next ``$`` is garbage. Inside a
    frame a ``$`` means the line was cut (the new frame starts there); a frame that reaches
    ``max_line`` bytes without ``\\n`` is dropped and the decoder hunts for the next ``$``.
    Every problem is counted, and all but plain garbage are also returned as ProtocolError.
    """

    __slots__ = ("_buf", "_in_frame", "bad_checksum", "cut_lines", "frames", "garbage_bytes",
                 "malformed", "max_line", "too_long")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._in_frame = False
        self.frames = 0  # good frames returned
        self.bad_checksum = 0  # complete lines whose checksum did not match
        self.malformed = 0  # complete lines with a good checksum but bad content
        self.cut_lines = 0  # frames interrupted by a new '$'
        self.too_long = 0  # frames longer than max_line
        self.garbage_bytes = 0  # bytes discarded outside any frame (over-long tails included)

    @property
    def errors(self) -> int:
        """All rejected lines (garbage bytes not included)."""
        return self.bad_checksum + self.malformed + self.cut_lines + self.too_long

    def reset(self) -> None:
        """Forget a partial line, e.g. after the port was reopened."""
        self._buf.clear()
        self._in_frame = False

    def feed(self, data: bytes) -> list[Frame | ProtocolError]:
        out: list[Frame | ProtocolError] = []
        buf = self._buf
        pos, end = 0, len(data)
        while pos < end:
            if not self._in_frame:
                start = data.find(b"$", pos)
                if start < 0:
                    self.garbage_bytes += end - pos
                    break
                self.garbage_bytes += start - pos
                buf.clear()
                buf.append(0x24)  # '$'
                self._in_frame = True
                pos = start + 1
                continue
            nl = data.find(b"\n", pos)
            dollar = data.find(b"$", pos)
            cut = dollar >= 0 and (nl < 0 or dollar < nl)
            stop = dollar if cut else nl
            seg_end = end if stop < 0 else stop
            if len(buf) + (seg_end - pos) + 1 > self.max_line:
                # Even a '\n' now would make it too long: drop it, hunt for the next '$'.
                self.too_long += 1
                head = (bytes(buf) + data[pos : pos + 64])[:64]
                out.append(ProtocolError(f"line exceeds {self.max_line} bytes", head))
                buf.clear()
                self._in_frame = False
                pos = stop + 1 if stop >= 0 and not cut else seg_end
                continue
            buf += data[pos:seg_end]
            if stop < 0:
                break
            if cut:
                self.cut_lines += 1
                out.append(ProtocolError("cut line: '$' before the end of the line", bytes(buf)))
                self._in_frame = False
                pos = stop
                continue
            self._in_frame = False
            pos = stop + 1
            try:
                frame = parse_line(bytes(buf))
            except ProtocolError as exc:
                if isinstance(exc, BadChecksum):
                    self.bad_checksum += 1
                else:
                    self.malformed += 1
                out.append(exc)
            else:
                self.frames += 1
                out.append(frame)
        return out
