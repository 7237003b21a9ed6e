"""Report by exception: a ``reading`` draft when the value moved, or as a heartbeat.

A good (smoothed) value is reported when reporting is on (``deadband`` or ``report_every_s`` set)
and one of these is true:

- nothing was reported yet, or :meth:`Reporter.force_next` was called (the decider does so after a
  fault episode, a stale period or a clock step, so graphs resume at once);
- ``deadband`` is set and ``|value - last reported value| >= deadband`` (0 reports every value);
- ``report_every_s`` is set and ``t - last report time >= report_every_s`` (heartbeat; checked on
  good readings only, since a heartbeat carries a value).
"""

from __future__ import annotations


class Reporter:
    def __init__(self, deadband: float | None, every_s: float | None) -> None:
        self.deadband = deadband
        self.every_s = every_s
        self._last: tuple[float, float] | None = None

    @property
    def enabled(self) -> bool:
        return self.deadband is not None or self.every_s is not None

    def check(self, t: float, value: float) -> bool:
        """Should ``value`` at ``t`` be reported? Remembers it as the last report if so."""
        if not self.enabled:
            return False
        last = self._last
        report = (last is None
                  or (self.deadband is not None and abs(value - last[1]) >= self.deadband)
                  or (self.every_s is not None and t - last[0] >= self.every_s))
        if report:
            self._last = (t, value)
        return report

    def force_next(self) -> None:
        self._last = None
