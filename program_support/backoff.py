"""Pacing, as pure functions of time, for both programs: exponential backoff (plain, and with full
jitter for reconnects) and a token bucket. Every retry loop in the agent and the hub takes its
delay from here (serial reopen, MQTT reconnect and client-id clash, consumer retries, alert
notifications, webhook retries)."""

from __future__ import annotations

import math
import random


def exponential_delay(attempt: int, initial_s: float, max_s: float = math.inf) -> float:
    """``initial_s`` doubled per earlier attempt (``attempt`` 0 = the first retry), capped."""
    return min(max_s, initial_s * float(2 ** min(max(attempt, 0), 60)))


def backoff_delay(attempt: int, min_s: float, max_s: float,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0 = first retry).

    Exponential growth capped at ``max_s`` with *full jitter* (uniform in ``[0, cap]``), so a fleet
    of devices that lost the broker together does not come back in lock-step; floored at a tenth
    of ``min_s`` so a client never spins.
    """
    cap = exponential_delay(attempt, min_s, max_s)
    delay = (rng or random).uniform(0.0, cap)
    return max(delay, min_s / 10.0)


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``rate <= 0`` means unlimited.

    Time is an argument (monotonic seconds), so the bucket is tested without a clock.
    """

    def __init__(self, rate: float, burst: float | None = None, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10.0)
        self._tokens = self.burst
        self._at = now

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def available(self, now: float) -> int:
        """Whole tokens available at ``now``."""
        if self.unlimited:
            return 1 << 30
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return int(self._tokens)

    def take(self, n: int, now: float) -> None:
        if self.unlimited:
            return
        self.available(now)
        self._tokens -= n

    def wait_time(self, now: float) -> float:
        """Seconds until one whole token is available (0 if one is)."""
        if self.unlimited or self.available(now) >= 1:
            return 0.0
        return (1.0 - self._tokens) / self.rate
