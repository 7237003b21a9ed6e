"""Scenario files: TOML describing a device, its sensors' temperatures and the faults to inject.

    name = "freezer_failing"
    duration = "6h"            # seconds as a number, or "750ms", "90s", "10m", "1h30m", "2d"
    interval = "30s"           # default sampling interval of the device
    seed = 7                   # default seed (firmware-sim --seed overrides it)

    [[sensors]]
    id = "28-0000075a1b2c"     # DS18B20 ROM id in sysfs form
    profile = { kind = "piecewise", points = [{ at = 0, value = -18.0 }, { at = "6h", value = 4 }] }
    noise = 0.05               # gaussian standard deviation, degC
    spikes = { probability = 0.01, magnitude = 3.0 }

    [[faults]]
    kind = "crc_error"         # see FAULT_KINDS
    sensor = "28-0000075a1b2c"
    at = "2h"
    count = 3                  # or duration = "10m"

A bad file raises ``ConfigError(file, [(key_path, reason), ...])`` listing every problem.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from firmware_sim import signals
from program_support import plain_config
from program_support.plain_config import Before, Length, Pattern, Range, Tagged, Wording
from schemas.errors import ConfigError
from schemas.serial_protocol import MAX_SENSORS

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(value: object) -> int:
    """Milliseconds from ``90`` (seconds), ``"1h30m"``, ``"-3h"``, ``"750ms"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(value, int | float):
        return _whole_ms(value * 1000, value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like '90s' or '1h30m', got {value!r}")
    text = value.strip().replace(" ", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"expected a duration like '90s' or '1h30m', got {value!r}")
    return sign * _whole_ms(total, value)


def _whole_ms(ms: float, value: object) -> int:
    # TOML has inf and nan, and 1e308 seconds is inf ms: round() would raise OverflowError
    if not math.isfinite(ms):
        raise ValueError(f"expected a finite duration, got {value!r}")
    return round(ms)


# The sections are read by program_support/plain_config.py (stdlib only, like the agent's config):
# firmware-sim and the agent's simulator source run where pydantic is not installed.
# tests/firmware_sim/test_scenario_equals_reference.py holds them to the pydantic models they
# replaced (the same files refused, the same values read).
Duration = Annotated[int, Before(parse_duration)]
_SECTION = dataclass(frozen=True, slots=True, kw_only=True)


@_SECTION
class Point:
    at: Annotated[Duration, Range(ge=0)]
    value: float


@_SECTION
class Constant:
    kind: Literal["constant"]
    value: float

    def at(self, t_ms: int) -> float:
        return signals.constant(self.value)


@_SECTION
class Ramp:
    kind: Literal["ramp"]
    start: float
    end: float
    begin: Annotated[Duration, Range(ge=0)] = 0
    duration: Annotated[Duration, Range(gt=0)]

    def at(self, t_ms: int) -> float:
        return signals.ramp(t_ms, self.start, self.end, self.begin, self.duration)


@_SECTION
class Sine:
    kind: Literal["sine"]
    mean: float
    amplitude: float
    period: Annotated[Duration, Range(gt=0)] = 86_400_000
    peak_at: Duration = 0

    def at(self, t_ms: int) -> float:
        return signals.sine(t_ms, self.mean, self.amplitude, self.period, self.peak_at)


@_SECTION
class Steps:
    kind: Literal["steps"]
    points: Annotated[list[Point], Length(min=1)]

    def at(self, t_ms: int) -> float:
        return signals.steps(t_ms, [(p.at, p.value) for p in self.points])


@_SECTION
class Piecewise:
    kind: Literal["piecewise"]
    points: Annotated[list[Point], Length(min=1)]

    def at(self, t_ms: int) -> float:
        return signals.piecewise(t_ms, [(p.at, p.value) for p in self.points])


Profile = Annotated[Constant | Ramp | Sine | Steps | Piecewise, Tagged("kind", "profile")]
PROFILE_KINDS = ("constant", "ramp", "sine", "steps", "piecewise")


@_SECTION
class Spikes:
    probability: Annotated[float, Range(ge=0, le=1)]  # per sample
    magnitude: float  # degC, added or subtracted (random sign)


@_SECTION
class Sensor:
    id: Annotated[str, Pattern(r"^28-[0-9a-f]{12}$")]
    unit: Literal["C"] = "C"
    resolution: Annotated[int, Range(ge=9, le=12)] = 12
    profile: Profile
    noise: Annotated[float, Range(ge=0)] = 0.0
    spikes: Spikes | None = None


@_SECTION
class _Fault:
    at: Annotated[Duration, Range(ge=0)]


@_SECTION
class SensorFault(_Fault):
    """Per-sensor: affects ``count`` samples from ``at`` (default 1), or all within ``duration``."""

    kind: Literal["power_on", "disconnected", "missing", "crc_error", "read_failed"]
    sensor: str
    count: Annotated[int, Range(ge=1)] | None = None
    duration: Annotated[Duration, Range(gt=0)] | None = None


@_SECTION
class Garbage(_Fault):
    """Random bytes (never ``$`` or newline) before each of the next ``count`` frames."""

    kind: Literal["garbage"]
    count: Annotated[int, Range(ge=1)] = 1
    bytes: Annotated[int, Range(ge=1, le=4096)] = 32


@_SECTION
class CutLine(_Fault):
    """The next ``count`` data frames stop mid-line (no checksum, no newline)."""

    kind: Literal["cut_line"]
    count: Annotated[int, Range(ge=1)] = 1


@_SECTION
class BadChecksum(_Fault):
    """The next ``count`` data frames (of ``sensor`` if given) carry a wrong checksum."""

    kind: Literal["bad_checksum"]
    count: Annotated[int, Range(ge=1)] = 1
    sensor: str | None = None


@_SECTION
class Stall(_Fault):
    """The firmware hangs: no samples, no answers, for ``duration``."""

    kind: Literal["stall"]
    duration: Annotated[Duration, Range(gt=0)]


@_SECTION
class Unplug(_Fault):
    """USB unplugged for ``duration``; the device then reboots (HELLO, seq 0) at a new tty."""

    kind: Literal["unplug"]
    duration: Annotated[Duration, Range(gt=0)]


@_SECTION
class ClockJump(_Fault):
    """The device clock (the ``ms`` field) jumps by ``by`` (may be negative)."""

    kind: Literal["clock_jump"]
    by: Duration


Fault = Annotated[SensorFault | Garbage | CutLine | BadChecksum | Stall | Unplug | ClockJump,
                  Tagged("kind", "fault")]
SENSOR_FAULT_KINDS = ("power_on", "disconnected", "missing", "crc_error", "read_failed")
FAULT_KINDS = (*SENSOR_FAULT_KINDS, "garbage", "cut_line", "bad_checksum", "stall", "unplug",
               "clock_jump")

_NAME = Pattern(r"^[A-Za-z0-9._-]{1,32}$")


@_SECTION
class Scenario:
    name: str = ""
    description: str = ""
    duration: Annotated[Duration, Range(gt=0)]
    interval: Annotated[Duration, Range(ge=100, le=86_400_000)] = 60_000
    seed: int = 0
    device_id: Annotated[str, _NAME] = "sim-0001"
    fw_version: Annotated[str, _NAME] = "sim-1.0.0"
    sensors: Annotated[list[Sensor], Length(min=1, max=MAX_SENSORS)]
    faults: list[Fault] = field(default_factory=list)


# --- loading and error reporting ---------------------------------------------------------------

#: a scenario's problems in firmware-sim's words since its first release: ``colour: unknown key``,
#: ``sensors[0].profile.amplitude: missing``, ``unknown profile 'x' (expected one of ...)``; a
#: close known name is suggested
WORDING = Wording(missing="missing", unknown_key="unknown key{hint}", unknown_key_at_key=True,
                  unknown_tag="unknown {what} {name!r}{hint} (expected one of {known})")


def _cross_checks(scenario: Scenario) -> Iterator[tuple[str, str]]:
    ids = [s.id for s in scenario.sensors]
    for i, sid in enumerate(ids):
        if sid in ids[:i]:
            yield f"sensors[{i}].id", f"duplicate sensor id {sid!r}"
    for i, sensor in enumerate(scenario.sensors):
        profile = sensor.profile
        if isinstance(profile, Steps | Piecewise):
            times = [p.at for p in profile.points]
            if times != sorted(set(times)):
                yield f"sensors[{i}].profile.points", "'at' must be strictly increasing"
    for i, fault in enumerate(scenario.faults):
        if fault.at >= scenario.duration:
            yield f"faults[{i}].at", "at or after the end of the scenario"
        target: str | None = getattr(fault, "sensor", None)
        if target is not None and target not in ids:
            yield f"faults[{i}].sensor", f"unknown sensor {target!r} (expected one of {ids})"
        if isinstance(fault, SensorFault) and fault.count and fault.duration:
            yield f"faults[{i}]", "give 'count' or 'duration', not both"


def validate(data: dict[str, Any], source: str) -> Scenario:
    """A Scenario from parsed TOML, or ConfigError listing every problem with its key path."""
    scenario = plain_config.parse(data, Scenario, source, WORDING)
    problems = list(_cross_checks(scenario))
    if problems:
        raise ConfigError(source, problems)
    return scenario


def loads(text: str, source: str = "<string>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [("", f"not valid TOML: {exc}")]) from exc
    return validate(data, source)


def shipped() -> dict[str, Path]:
    """The scenarios that ship with firmware_sim, by name."""
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.toml"))}


def resolve(name_or_path: str | Path) -> Path:
    """A path as given if it exists, else a shipped scenario name (with or without .toml)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    found = shipped().get(path.stem) if path.parent == Path(".") else None
    return found if found is not None else path


def load(name_or_path: str | Path) -> Scenario:
    path = resolve(name_or_path)
    source = str(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        known = ", ".join(shipped())
        raise ConfigError(source, [("", f"no such file or shipped scenario ({known})")]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [("", f"cannot read: {exc}")]) from exc
    return loads(text, source)
