"""When to try the broker again: the one reconnect pacing of every MQTT connection (the agent's
link, the hub's ingest, the Home Assistant consumer). Pure: time is an argument.

- Each wait is :func:`program_support.backoff.backoff_delay` of the attempts so far: exponential
  from ``min_s`` to ``max_s`` with full jitter, so a fleet that lost the broker together does not
  come back in lock-step. paho's own ``reconnect_delay_set`` pacing is not used.
- A connection that lasted restarts the count; one dropped right after it was accepted does
  not, and is counted by the :class:`ClashDetector`: two clients with one client id throw each
  other off in a loop, and restarting the backoff each time would make that a reconnect storm.

A single client (the hub, or a few of its workers) need not spread itself like a fleet:
:func:`hub_pacing` caps its waits at 5 s, so it is back within seconds of a broker restart
(each second away delays every alert), and grows them to 30 s only once its connections keep
dropping right after they were accepted (``flap_max_s``, from the third such drop in a row: a
client-id clash or a broker that throws it off, where trying faster helps nobody).

The owner tells it :meth:`~ReconnectPacing.accepted` from its CONNACK callback and asks
:meth:`~ReconnectPacing.next_delay` when a connection (or an attempt) has ended.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from program_support.backoff import backoff_delay
from program_support.client_id_clash import ClashDetector


@dataclass
class ReconnectPacing:
    """The wait before each reconnect, and whether the connection drops look like a clash."""

    min_s: float = 1.0
    max_s: float = 30.0
    #: the cap while connections keep dropping right after they were accepted (a likely clash:
    #: ``clashes``); None: ``max_s``
    flap_max_s: float | None = None
    clashes: ClashDetector = field(default_factory=ClashDetector)
    rng: random.Random | None = None
    attempt: int = 0  # waits since the last connection that lasted (0: the next is the first)
    _up_since: float | None = None  # when the broker accepted the current connection

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError(f"reconnect pacing needs 0 < min_s <= max_s "
                             f"(min_s={self.min_s}, max_s={self.max_s})")
        if self.flap_max_s is not None and self.flap_max_s < self.max_s:
            raise ValueError(f"reconnect pacing needs flap_max_s >= max_s "
                             f"(max_s={self.max_s}, flap_max_s={self.flap_max_s})")

    def accepted(self, now: float) -> None:
        """The broker accepted a connection at ``now`` (monotonic seconds)."""
        self._up_since = now

    def ended(self, now: float) -> int:
        """The accepted connection ended at ``now``: judged once (later calls, or calls with no
        accepted connection, change nothing). Returns the flaps in a row (0: it lasted)."""
        if self._up_since is not None:
            if self.clashes.dropped(now - self._up_since) == 0:
                self.attempt = 0
            self._up_since = None
        return self.clashes.flaps

    @property
    def clash(self) -> bool:
        """Connections keep dropping right after they are accepted: a likely client-id clash."""
        return self.clashes.clash

    def next_delay(self, now: float) -> float:
        """Seconds to wait before the next attempt (the connection, if one was up, ended)."""
        self.ended(now)
        cap = self.flap_max_s if self.clash and self.flap_max_s is not None else self.max_s
        delay = backoff_delay(self.attempt, self.min_s, cap, self.rng)
        self.attempt += 1
        return delay


def hub_pacing() -> ReconnectPacing:
    """The hub's (ingest, each worker, the Home Assistant consumer): 1 s doubling to 5 s, and to
    30 s in a likely client-id clash (the module says why)."""
    return ReconnectPacing(1.0, 5.0, flap_max_s=30.0)
