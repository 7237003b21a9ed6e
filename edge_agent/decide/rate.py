"""Rate-of-change alarm: degrees per minute over a sliding time window.

The rate is the least-squares slope of the (smoothed) values whose time lies in
``[t - rate_window_s, t]``, times 60. It is only computed once the window holds at least two
samples spanning at least half of ``rate_window_s`` (two samples a second apart are noise, not a
trend). The alarm becomes active when ``|rate| > rate_limit_per_min`` and clears when
``|rate| <= limit - hysteresis`` (default hysteresis 10 % of the limit), so it reports transitions
only and does not flap around the limit. The decider clears the window when the sensor goes stale
or the clock steps back, so no rate is ever computed across a gap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateChange:
    """The rate-of-change alarm of one sensor began (``active``) or ended."""

    rate_per_min: float
    active: bool


def slope_per_min(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(t, v)`` samples, in units per minute (needs two distinct t)."""
    t0 = samples[0][0]  # relative times keep precision with epoch-sized t
    n = len(samples)
    mean_t = sum(t - t0 for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    num = sum((t - t0 - mean_t) * (v - mean_v) for t, v in samples)
    den = sum((t - t0 - mean_t) ** 2 for t, _ in samples)
    return 60.0 * num / den


class RateTracker:
    def __init__(self, limit_per_min: float, clear_per_min: float, window_s: float) -> None:
        self.limit = limit_per_min
        self.clear_at = clear_per_min
        self.window_s = window_s
        self.active = False
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, t: float, value: float) -> RateChange | None:
        self._samples.append((t, value))
        while self._samples[0][0] < t - self.window_s:
            self._samples.popleft()
        if len(self._samples) < 2 or t - self._samples[0][0] < self.window_s / 2:
            return None
        rate = slope_per_min(self._samples)
        if not self.active and abs(rate) > self.limit:
            self.active = True
            return RateChange(rate, True)
        if self.active and abs(rate) <= self.clear_at:
            self.active = False
            return RateChange(rate, False)
        return None

    def clear(self) -> None:
        self._samples.clear()
