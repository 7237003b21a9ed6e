"""Optional smoothing of the good readings: median or moving average over the last N values.

Until N values have arrived the window is shorter (the first value passes through unchanged).
The decider clears the window when the sensor goes stale, so values from before a gap are never
mixed with values after it. Summaries always use raw values; thresholds, rate, reading reports and
state-change values use the smoothed value.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from edge_agent.config.rules import Smoothing


class Smoother:
    def __init__(self, config: Smoothing | None) -> None:
        self._config = config
        self._window: deque[float] = deque(maxlen=config.window if config else 1)

    def add(self, value: float) -> float:
        """Add a good raw value; return the smoothed value to act on."""
        if self._config is None:
            return value
        self._window.append(value)
        if self._config.kind == "median":
            return median(self._window)
        return math.fsum(self._window) / len(self._window)

    def clear(self) -> None:
        self._window.clear()


def median(values: Iterable[float]) -> float:
    """The median (the mean of the middle two for an even count), as ``statistics.median``;
    written here because that module and what it imports (random, fractions, decimal) cost a
    Pi's agent 0.2 MB of memory for a sort of at most a few dozen values."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2
