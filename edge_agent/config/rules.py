"""Per-sensor decision rules: one TOML table per sensor, loaded into :class:`SensorRules`.

Every field has a default, so ``SensorRules()`` is a working DS18B20 setup: range -55..125 degC,
85.0 power-on and -127 disconnected readings rejected, stale after 30 s, a summary every 60 s,
no thresholds, no reading reports. Example (TOML)::

    [sensors.t1.rules]
    deadband = 0.25            # report a reading when it moved 0.25 from the last report
    report_every_s = 300       # ...or at least every 5 minutes
    max_jump_per_s = 5.0       # faster changes are glitches (implausible_jump fault)
    smoothing = { kind = "median", window = 3 }
    rate_limit_per_min = 2.0   # alarm when warming/cooling faster than 2 degrees a minute

    [[sensors.t1.rules.thresholds]]
    name = "low"
    below = 5.0
    hysteresis = 0.5
    dwell_s = 60

    [[sensors.t1.rules.thresholds]]
    name = "high"
    above = 30.0
    dwell_s = 60               # hysteresis defaults to 0.5, severity to "warning"

    [[sensors.t1.rules.thresholds]]
    name = "high_critical"
    above = 40.0
    hysteresis = 1.0
    dwell_s = 10
    severity = "critical"

Units: ``min_c``/``max_c`` and the DS18B20 glitch values (85.0, -127.0) are Celsius whatever the
sensor's unit (a degF value is converted before they are checked). Every other number
(thresholds, hysteresis, deadband, rates, ``max_jump_per_s``) is in the sensor's own unit.

Cross-field checks (each reported with its key path by ``program_support.plain_config``):
``min_c < max_c``; a threshold has exactly one of ``above``/``below``; names are unique identifiers
and not the reserved ``normal``/``unknown``; values are distinct within a direction; every
``above`` threshold minus its hysteresis lies above every ``below`` threshold plus its hysteresis
(so the value can never be in a high and a low band at once).

The decisions (``edge_agent/decide``) read these; they live beside the config loader so that
loading a config needs neither the deciders nor the event models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

from program_support.plain_config import Check, Length, Range
from schemas.ids import check_identifier
from schemas.vocabulary import THRESHOLDS_MAX, Severity

#: State names the decider uses itself; a threshold cannot be called this.
NORMAL = "normal"
UNKNOWN = "unknown"
RESERVED_STATES = frozenset({NORMAL, UNKNOWN})


def _state_name(value: str) -> str:
    check_identifier(value, "state name")
    if value in RESERVED_STATES:
        raise ValueError(f"{value!r} is reserved (the state when no threshold holds / "
                         "before the first reading); pick another name")
    return value


# Every section here sets FINITE_ONLY (TOML has inf and nan): the thresholds go into the birth
# status, and the contract refuses a non-finite float.

@dataclass(frozen=True, slots=True, kw_only=True)
class Smoothing:
    """Median or moving average over the last ``window`` good readings."""

    FINITE_ONLY: ClassVar[bool] = True

    kind: Literal["median", "mean"] = "median"
    window: Annotated[int, Range(ge=1, le=1000)] = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Threshold:
    """One band boundary: the band ``name`` holds while the value is above/below ``value``.

    Entering needs the value strictly past the threshold for ``dwell_s`` seconds; leaving needs it
    back at or past ``threshold -/+ hysteresis`` for ``dwell_s`` seconds.
    """

    FINITE_ONLY: ClassVar[bool] = True

    name: Annotated[str, Check(_state_name)]
    above: float | None = None
    below: float | None = None
    hysteresis: Annotated[float, Range(ge=0.0)] = 0.5
    dwell_s: Annotated[float, Range(ge=0.0)] = 0.0
    severity: Severity = "warning"

    def __post_init__(self) -> None:
        if (self.above is None) == (self.below is None):
            raise ValueError(f"threshold {self.name!r} needs exactly one of 'above' or 'below'")

    @property
    def direction(self) -> Literal["above", "below"]:
        return "above" if self.above is not None else "below"

    @property
    def value(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorRules:
    """Everything the edge decides for one sensor. See the module docstring for units."""

    FINITE_ONLY: ClassVar[bool] = True

    # validation
    min_c: float = -55.0
    max_c: float = 125.0
    reject_power_on_value: bool = True
    disconnected_value: float | None = -127.0
    max_jump_per_s: Annotated[float, Range(gt=0.0)] | None = None
    # smoothing (None = raw values)
    smoothing: Smoothing | None = None
    # threshold bands
    thresholds: Annotated[list[Threshold], Length(max=THRESHOLDS_MAX)] = field(
        default_factory=list)
    # rate of change alarm (None = off)
    rate_limit_per_min: Annotated[float, Range(gt=0.0)] | None = None
    rate_window_s: Annotated[float, Range(gt=0.0)] = 60.0
    #: the alarm clears at ``limit - rate_hysteresis_per_min``; None = 10 % of the limit
    rate_hysteresis_per_min: Annotated[float, Range(ge=0.0)] | None = None
    rate_severity: Severity = "warning"
    # report by exception
    deadband: Annotated[float, Range(ge=0.0)] | None = None
    report_every_s: Annotated[float, Range(gt=0.0)] | None = None
    # periodic summary (None = off)
    summary_interval_s: Annotated[float, Range(gt=0.0)] | None = 60.0
    # faults
    stale_after_s: Annotated[float, Range(gt=0.0)] | None = 30.0
    fault_severity: Severity = "warning"

    def __post_init__(self) -> None:
        if self.min_c >= self.max_c:
            raise ValueError(f"min_c ({self.min_c}) must be below max_c ({self.max_c})")
        names = [t.name for t in self.thresholds]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"threshold names must be unique: {', '.join(dupes)} repeated")
        for direction in ("above", "below"):
            values = [t.value for t in self.thresholds if t.direction == direction]
            if len(set(values)) != len(values):
                raise ValueError(f"two '{direction}' thresholds share one value: "
                                 f"{sorted(values)}; each band needs its own boundary")
        for hi in self.thresholds:
            for lo in self.thresholds:
                if hi.direction == "above" and lo.direction == "below" and (
                        hi.value - hi.hysteresis <= lo.value + lo.hysteresis):
                    raise ValueError(
                        f"threshold {hi.name!r} (above {hi.value}, hysteresis {hi.hysteresis}) "
                        f"must lie above {lo.name!r} (below {lo.value}, hysteresis "
                        f"{lo.hysteresis}) including both hysteresis bands")
        if (self.rate_limit_per_min is not None and self.rate_hysteresis_per_min is not None
                and self.rate_hysteresis_per_min >= self.rate_limit_per_min):
            raise ValueError(f"rate_hysteresis_per_min ({self.rate_hysteresis_per_min}) must be "
                             f"below rate_limit_per_min ({self.rate_limit_per_min})")

    @property
    def rate_clear_per_min(self) -> float | None:
        """The rate at or under which an active rate alarm clears."""
        if self.rate_limit_per_min is None:
            return None
        hyst = self.rate_hysteresis_per_min
        if hyst is None:
            hyst = 0.1 * self.rate_limit_per_min
        return self.rate_limit_per_min - hyst
