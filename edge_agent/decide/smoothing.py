"""Optional smoothing of the good readings: median or moving average over the last N values.

Until N values have arrived the window is shorter (the first value passes through unchanged).
The decider clears the window when the sensor goes stale, so values from before a gap are never
mixed with values after it. Summaries always use raw values; thresholds, rate, reading reports and
state-change values use the smoothed value.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

from edge_agent.decide.rules import Smoothing


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
            return float(statistics.median(self._window))
        return math.fsum(self._window) / len(self._window)

    def clear(self) -> None:
        self._window.clear()

