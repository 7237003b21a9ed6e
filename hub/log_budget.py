"""A log line budget: at most ``per_s`` lines of one kind per second, the rest suppressed and
counted, so a flood (10,000 hostile payloads a second) leaves the log readable and still says how
much it hid. Pure: the caller passes the time.

    budget = LogBudget(per_s=10)
    allowed, hidden = budget.take(now)   # hidden: lines suppressed since the last one allowed
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class LogBudget:
    per_s: int = 10
    _window: float = float("-inf")  # start of the current one-second window
    _used: int = 0
    _hidden: int = 0                # suppressed since the last line allowed

    def take(self, now: float) -> tuple[bool, int]:
        """May a line be logged at ``now``? With it, how many were suppressed before it (to
        say so on that line); when not, the line is counted as suppressed."""
        if now - self._window >= 1.0 or now < self._window:  # a new window (or a clock step)
            self._window, self._used = now, 0
        if self._used >= self.per_s:
            self._hidden += 1
            return False, 0
        self._used += 1
        hidden, self._hidden = self._hidden, 0
        return True, hidden
