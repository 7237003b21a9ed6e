"""firmware-sim's scenario files as pydantic models: the oracle of the plain loader.

These are ``firmware_sim/scenario.py``'s models and error translation as they were before the
loader moved to ``program_support/plain_config.py`` (so that firmware-sim and the agent's
simulator source import no pydantic), kept unchanged but for their imports: durations are read by
the live ``parse_duration`` (plain string parsing, not what was ported; it now refuses ``inf``,
``nan`` and seconds past a float's range in milliseconds, where ``round`` raised OverflowError
through pydantic, a crash), and the scenario kinds come from the live module.
``test_scenario_equals_reference.py`` checks that the plain loader refuses what these refuse and
reads what they accept to equal values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from firmware_sim import signals
from firmware_sim.scenario import FAULT_KINDS, PROFILE_KINDS, parse_duration
from schemas.errors import ConfigError
from schemas.serial_protocol import MAX_SENSORS

Duration = Annotated[int, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Point(_Model):
    at: Duration = Field(ge=0)
    value: float


class Constant(_Model):
    kind: Literal["constant"]
    value: float

    def at(self, t_ms: int) -> float:
        return signals.constant(self.value)


class Ramp(_Model):
    kind: Literal["ramp"]
    start: float
    end: float
    begin: Duration = Field(default=0, ge=0)
    duration: Duration = Field(gt=0)

    def at(self, t_ms: int) -> float:
        return signals.ramp(t_ms, self.start, self.end, self.begin, self.duration)


class Sine(_Model):
    kind: Literal["sine"]
    mean: float
    amplitude: float
    period: Duration = Field(default=86_400_000, gt=0)
    peak_at: Duration = 0

    def at(self, t_ms: int) -> float:
        return signals.sine(t_ms, self.mean, self.amplitude, self.period, self.peak_at)


class Steps(_Model):
    kind: Literal["steps"]
    points: list[Point] = Field(min_length=1)

    def at(self, t_ms: int) -> float:
        return signals.steps(t_ms, [(p.at, p.value) for p in self.points])


class Piecewise(_Model):
    kind: Literal["piecewise"]
    points: list[Point] = Field(min_length=1)

    def at(self, t_ms: int) -> float:
        return signals.piecewise(t_ms, [(p.at, p.value) for p in self.points])


Profile = Annotated[Constant | Ramp | Sine | Steps | Piecewise, Field(discriminator="kind")]


class Spikes(_Model):
    probability: float = Field(ge=0, le=1)  # per sample
    magnitude: float  # degC, added or subtracted (random sign)


class Sensor(_Model):
    id: str = Field(pattern=r"^28-[0-9a-f]{12}$")
    unit: Literal["C"] = "C"
    resolution: int = Field(default=12, ge=9, le=12)
    profile: Profile
    noise: float = Field(default=0.0, ge=0)
    spikes: Spikes | None = None


class _Fault(_Model):
    at: Duration = Field(ge=0)


class SensorFault(_Fault):
    """Per-sensor: affects ``count`` samples from ``at`` (default 1), or all within ``duration``."""

    kind: Literal["power_on", "disconnected", "missing", "crc_error", "read_failed"]
    sensor: str
    count: int | None = Field(default=None, ge=1)
    duration: Duration | None = Field(default=None, gt=0)


class Garbage(_Fault):
    """Random bytes (never ``$`` or newline) before each of the next ``count`` frames."""

    kind: Literal["garbage"]
    count: int = Field(default=1, ge=1)
    bytes: int = Field(default=32, ge=1, le=4096)


class CutLine(_Fault):
    """The next ``count`` data frames stop mid-line (no checksum, no newline)."""

    kind: Literal["cut_line"]
    count: int = Field(default=1, ge=1)


class BadChecksum(_Fault):
    """The next ``count`` data frames (of ``sensor`` if given) carry a wrong checksum."""

    kind: Literal["bad_checksum"]
    count: int = Field(default=1, ge=1)
    sensor: str | None = None


class Stall(_Fault):
    """The firmware hangs: no samples, no answers, for ``duration``."""

    kind: Literal["stall"]
    duration: Duration = Field(gt=0)


class Unplug(_Fault):
    """USB unplugged for ``duration``; the device then reboots (HELLO, seq 0) at a new tty."""

    kind: Literal["unplug"]
    duration: Duration = Field(gt=0)


class ClockJump(_Fault):
    """The device clock (the ``ms`` field) jumps by ``by`` (may be negative)."""

    kind: Literal["clock_jump"]
    by: Duration


Fault = Annotated[
    SensorFault | Garbage | CutLine | BadChecksum | Stall | Unplug | ClockJump,
    Field(discriminator="kind"),
]


class Scenario(_Model):
    name: str = ""
    description: str = ""
    duration: Duration = Field(gt=0)
    interval: Duration = Field(default=60_000, ge=100, le=86_400_000)
    seed: int = 0
    device_id: str = Field(default="sim-0001", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    fw_version: str = Field(default="sim-1.0.0", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    sensors: list[Sensor] = Field(min_length=1, max_length=MAX_SENSORS)
    faults: list[Fault] = []


# --- loading and error reporting ---------------------------------------------------------------


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        prev = loc[i - 1] if i else None
        prev2 = loc[i - 2] if i > 1 else None
        # pydantic puts the union tag into the location; users never wrote it.
        if prev == "profile" and item in PROFILE_KINDS:
            continue
        if prev2 == "faults" and isinstance(prev, int) and item in FAULT_KINDS:
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts)


def _reason(error: Any) -> tuple[str, str]:
    path = _key_path(tuple(error["loc"]))
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "union_tag_invalid":
        what = "profile" if path.endswith("profile") else "fault"
        expected = ", ".join(PROFILE_KINDS if what == "profile" else FAULT_KINDS)
        return f"{path}.kind", f"unknown {what} {ctx.get('tag')!r} (expected one of {expected})"
    if kind == "union_tag_not_found":
        return f"{path}.kind", "missing"
    if kind == "missing":
        return path, "missing"
    if kind == "extra_forbidden":
        return path, "unknown key"
    return path, str(error["msg"])


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
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_reason(e) for e in exc.errors()]) from exc
    problems = list(_cross_checks(scenario))
    if problems:
        raise ConfigError(source, problems)
    return scenario
