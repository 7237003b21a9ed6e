"""Periodic summaries so graphs have data between state changes.

Windows are ``[k * interval, (k + 1) * interval)`` in epoch seconds (aligned, so every sensor of
every device closes its windows at the same instants). The first window opens at the first time
the decider sees (reading or tick). Only good readings are counted, with their raw (unsmoothed)
values. A window is closed by the first reading or tick at or after its end, and its summary
carries the window end as its time.

- An empty window is still emitted, with ``count = 0`` and ``None`` statistics, so a graph shows a
  gap honestly instead of a line drawn across it.
- Ticks that come late (suspend, a busy CPU, a clock jumping forward) never produce a burst: the
  open window is emitted, then at most ONE empty summary covers all the whole windows skipped
  since (``window_start`` = end of the open window, time = start of the window containing now).
- :meth:`SummaryWindows.restart` (the clock stepped back) emits the open window at once and opens
  the window containing the new time.
- :meth:`SummaryWindows.flush` (the agent stops) emits the open window cut short at the stop time,
  so the good readings in it are not lost with the process. After a restart within the same
  aligned window, the next window's ``window_start`` is earlier than that cut: the time ranges
  overlap, the readings counted never do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    """One sensor's readings over a summary interval: count, min, max, mean."""

    start: float
    end: float
    count: int
    min: float | None
    max: float | None
    mean: float | None
    last: float | None


class SummaryWindows:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.start: float | None = None
        self._values: list[float] = []

    def _align(self, t: float) -> float:
        return math.floor(t / self.interval_s) * self.interval_s

    def _take(self, end: float) -> Summary:
        assert self.start is not None
        vals = self._values
        self._values = []
        if not vals:
            return Summary(self.start, end, 0, None, None, None, None)
        return Summary(self.start, end, len(vals), min(vals), max(vals),
                       math.fsum(vals) / len(vals), vals[-1])

    def close_due(self, now: float) -> list[Summary]:
        """Close the open window if ``now`` is at or past its end; open the one containing now."""
        if self.start is None:
            self.start = self._align(now)
            return []
        end = self.start + self.interval_s
        if now < end:
            return []
        out = [self._take(end)]
        current = self._align(now)
        if current > end:
            self.start = end
            out.append(self._take(current))
        self.start = current
        return out

    def add(self, t: float, value: float) -> None:
        """A good raw value at ``t`` (call :meth:`close_due` with ``t`` first)."""
        if self.start is None:
            self.start = self._align(t)
        self._values.append(value)

    def flush(self, now: float) -> list[Summary]:
        """Stopping: close the windows due by ``now``, then emit the open one as ``[start, now)``
        if it holds readings or has a length; no window stays open."""
        if self.start is None:
            return []
        out = self.close_due(now)
        assert self.start is not None
        if self._values or now > self.start:
            out.append(self._take(max(now, self.start)))
        self.start = None
        return out

    def restart(self, t: float) -> list[Summary]:
        """The clock stepped back to ``t``: emit the open window, open the one containing ``t``."""
        out = [self._take(self.start + self.interval_s)] if self.start is not None else []
        self.start = self._align(t)
        return out
