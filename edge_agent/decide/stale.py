"""Stale detection: no good reading for ``stale_after_s`` seconds.

The clock starts at the first time the decider sees (a sensor that never answers goes stale too)
and restarts at every good reading. Rejected readings do not restart it: a sensor that answers
only with glitches is stale as well as faulty. Stale begins once (``check`` returns True once per
stale period) and ends at the next good reading (``good`` returns True).
"""

from __future__ import annotations


class StaleWatch:
    def __init__(self, after_s: float | None) -> None:
        self.after_s = after_s
        self.anchor: float | None = None
        self.stale = False

    def seen(self, t: float) -> None:
        """Any time the decider sees; starts the clock the first time."""
        if self.anchor is None:
            self.anchor = t

    def rebase(self, t: float) -> None:
        """The clock stepped back: count from ``t``."""
        self.anchor = t

    def good(self, t: float) -> bool:
        """A good reading at ``t``; True if it ends a stale period."""
        self.anchor = t
        was_stale = self.stale
        self.stale = False
        return was_stale

    def check(self, now: float) -> bool:
        """True when the sensor becomes stale at ``now`` (once per stale period)."""
        if self.after_s is None or self.anchor is None or self.stale:
            return False
        if now - self.anchor >= self.after_s:
            self.stale = True
            return True
        return False

    def age(self, now: float) -> float:
        return now - self.anchor if self.anchor is not None else 0.0
