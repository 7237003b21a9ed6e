"""A sensor's recent values for the page's trend chart: a fixed-size ring, pure (no I/O).

The window (``trend_window_s``, an hour by default) is cut into ``trend_points`` buckets of
``window / points`` seconds; a bucket keeps the last accepted value that fell in it (the chart
is a trend, not an archive: a spike shorter than a bucket can be hidden by the value after it).
Points are placed by the event's own ``time`` (so a replayed backlog lands where it happened),
kept in arrival order and sorted when read; a clock step back leaves points "ahead" that age
out as the ring turns.

Memory, exactly: two preallocated arrays per sensor (``float64`` times, ``float32`` values),
12 bytes a point, allocated at the sensor's first value. With the defaults (360 points) that is
4.3 KB a sensor; the hub's ``[limits] max_sensors`` (10,000 by default) bounds the sensors, so
43 MB at most. Fault episodes: the last ``FAULT_MARKS`` per sensor.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from typing import Any

FAULT_MARKS = 16  # fault episodes remembered per sensor for the chart (older ones drop off)


class Trend:
    __slots__ = ("_last_bucket", "_next", "_size", "_times", "_values", "faults", "step_s")

    def __init__(self, points: int, step_s: float) -> None:
        self._times = array("d", bytes(8 * points))
        self._values = array("f", bytes(4 * points))
        self._next = 0   # where the next point goes
        self._size = 0   # how many slots hold a point
        self._last_bucket = -1.0  # the bucket of the newest point written (none yet)
        self.step_s = step_s
        #: [start, end or None, fault code] per episode, newest last
        self.faults: deque[list[Any]] = deque(maxlen=FAULT_MARKS)

    @property
    def capacity(self) -> int:
        return len(self._times)

    def __len__(self) -> int:
        return self._size

    def add(self, t: float, value: float) -> None:
        """An accepted value at epoch seconds ``t``: replaces the newest point when both fall
        in the same bucket (unless it is older than that point), else takes the next slot (the
        oldest point goes when full). On the hub's hot path: one call per reading."""
        if not math.isfinite(value):
            return
        bucket = t // self.step_s
        if bucket == self._last_bucket:
            last = self._next - 1  # -1 is the array's last slot: the ring wrapped there
            if t >= self._times[last]:  # else a late value: the bucket keeps its newer one
                self._times[last] = t
                self._values[last] = value
            return
        self._last_bucket = bucket
        i = self._next
        self._times[i] = t
        self._values[i] = value
        self._next = i + 1 if i + 1 < len(self._times) else 0
        if self._size < len(self._times):
            self._size += 1

    def fault(self, t: float, code: str, active: bool) -> None:
        """A fault episode begins (``active``) or ends: the chart marks its span."""
        if active:
            if not any(f[2] == code and f[1] is None for f in self.faults):
                self.faults.append([t, None, code])
            return
        for episode in reversed(self.faults):
            if episode[2] == code and episode[1] is None:
                episode[1] = t
                return

    def points(self) -> list[list[float]]:
        """``[[t, value], ...]`` sorted by time (epoch seconds, 3 decimals; value 3 decimals)."""
        start = (self._next - self._size) % self.capacity
        out = [[round(self._times[(start + i) % self.capacity], 3),
                round(self._values[(start + i) % self.capacity], 3)] for i in range(self._size)]
        out.sort(key=lambda p: p[0])
        return out

    def as_json(self) -> dict[str, Any]:
        return {"step_s": self.step_s, "points": self.points(),
                "faults": [list(f) for f in self.faults]}
