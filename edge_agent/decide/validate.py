"""Is a sample a believable temperature? Rejected samples become faults, never threshold events.

Checks, in this order (the first that fails names the fault):

1. ``out_of_range``: not a finite number (NaN, inf).
2. ``power_on_value``: exactly 85.0 degC when ``reject_power_on_value`` (the DS18B20 answers 85.0
   before its first conversion; a real 85.0 is as rare as its neighbours 84.9375 and 85.0625, and
   sensors that really measure near 85 degC should turn this off).
3. ``disconnected``: exactly ``disconnected_value`` degC (-127.0: DS18B20 missing on the bus).
4. ``out_of_range``: outside ``[min_c, max_c]`` degC (bounds included as good).
5. ``implausible_jump``: ``|value - last good value| > max_jump_per_s * (t - last good time)``.
   The allowance grows with the time since the last good reading, so a real step change is
   accepted once enough time has passed for it to be physically possible: a sensor never gets
   stuck behind its own jump check. Without a previous good reading the check is skipped.

Values are compared in Celsius (degF samples converted first); the glitch values are matched with a
1e-6 tolerance to absorb that conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_agent.config.rules import SensorRules
from schemas.vocabulary import FaultCode, Unit

POWER_ON_C = 85.0
_GLITCH_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a reading was refused: the fault it counts as, and the detail for the log."""

    fault: FaultCode
    detail: str


def to_celsius(value: float, unit: Unit) -> float:
    return (value - 32.0) * 5.0 / 9.0 if unit == "degF" else value


def check_value(value: float, unit: Unit, t: float, rules: SensorRules,
                last_good: tuple[float, float] | None) -> Rejection | None:
    """Return why ``value`` (at time ``t``) is rejected, or None if it is good.

    ``last_good`` is ``(time, value)`` of the previous accepted sample, in the sensor's unit.
    """
    if not math.isfinite(value):
        return Rejection("out_of_range", f"not a finite number: {value}")
    celsius = to_celsius(value, unit)
    if rules.reject_power_on_value and abs(celsius - POWER_ON_C) <= _GLITCH_TOLERANCE:
        return Rejection("power_on_value",
                         "85.0 degC is the DS18B20 power-on value, not a measurement")
    if (rules.disconnected_value is not None
            and abs(celsius - rules.disconnected_value) <= _GLITCH_TOLERANCE):
        return Rejection("disconnected",
                         f"{rules.disconnected_value} degC means the sensor is disconnected")
    if not rules.min_c <= celsius <= rules.max_c:
        return Rejection("out_of_range",
                         f"{celsius:.4g} degC outside the physical range "
                         f"[{rules.min_c}, {rules.max_c}] degC")
    if rules.max_jump_per_s is not None and last_good is not None:
        last_t, last_v = last_good
        allowed = rules.max_jump_per_s * max(t - last_t, 0.0)
        jump = abs(value - last_v)
        if jump > allowed:
            return Rejection("implausible_jump",
                             f"moved {jump:.4g} in {max(t - last_t, 0.0):.3g} s from {last_v:.4g}; "
                             f"at most {rules.max_jump_per_s}/s is plausible")
    return None
