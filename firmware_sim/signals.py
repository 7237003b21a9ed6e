"""Temperature profiles as pure functions of scenario time, and DS18B20 quantisation.

Times are integer milliseconds since the scenario started, so that every run computes exactly
the same values (no float drift from adding up intervals).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

DS18B20_MIN = -55.0
DS18B20_MAX = 125.0
POWER_ON_MILLI = 85_000  # the scratchpad's reset value, read when "convert T" never ran
DISCONNECTED_MILLI = -127_000  # what Arduino's DallasTemperature returns for a lost sensor


def constant(value: float) -> float:
    return value


def ramp(t_ms: int, start: float, end: float, begin_ms: int, duration_ms: int) -> float:
    """``start`` until ``begin``, then linear to ``end`` over ``duration``, then ``end``."""
    if t_ms <= begin_ms:
        return start
    if t_ms >= begin_ms + duration_ms:
        return end
    return start + (end - start) * (t_ms - begin_ms) / duration_ms


def sine(t_ms: int, mean: float, amplitude: float, period_ms: int, peak_at_ms: int) -> float:
    """Day and night: ``mean + amplitude`` at ``peak_at`` (and every period after it)."""
    return mean + amplitude * math.cos(2 * math.pi * (t_ms - peak_at_ms) / period_ms)


def steps(t_ms: int, points: Sequence[tuple[int, float]]) -> float:
    """The value of the last point at or before ``t`` (the first point's value before it)."""
    times = [p[0] for p in points]
    i = bisect.bisect_right(times, t_ms) - 1
    return points[max(i, 0)][1]


def piecewise(t_ms: int, points: Sequence[tuple[int, float]]) -> float:
    """Linear interpolation between points, flat before the first and after the last."""
    times = [p[0] for p in points]
    i = bisect.bisect_right(times, t_ms)
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (t0, v0), (t1, v1) = points[i - 1], points[i]
    return v0 + (v1 - v0) * (t_ms - t0) / (t1 - t0)


def quantize(value: float, resolution: int = 12) -> int:
    """The DS18B20 raw register (1/16 degC units, low bits zero below 12-bit resolution)."""
    value = min(max(value, DS18B20_MIN), DS18B20_MAX)
    step = 1 << (12 - resolution)
    return round(value * 16 / step) * step


def raw_to_milli(raw: int) -> int:
    """What Linux ``w1_therm`` prints as ``t=``: ``raw * 1000 / 16`` truncated like C does."""
    return int(raw * 1000 / 16)


def milli_to_raw(milli: int) -> int:
    """Inverse of ``raw_to_milli`` for values it produced (used to rebuild a scratchpad)."""
    return round(milli * 16 / 1000)
