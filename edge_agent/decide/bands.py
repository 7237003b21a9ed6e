"""Threshold bands with hysteresis and dwell time: which band is the sensor in?

States are ``unknown`` (before the first good value), ``normal`` (no threshold holds) or the name
of a threshold. Thresholds of one direction are ranked by extremity (``above``: higher is more
extreme; ``below``: lower is more extreme), so ``low_critical < low < normal < high <
high_critical`` falls out of two ``below`` and two ``above`` thresholds.

A threshold T is *engaged* while the state is T or a more extreme threshold of T's direction.
T *holds* for a value v when:

- not engaged: ``v > T.above`` (or ``v < T.below``), strictly past the threshold;
- engaged: ``v > T.above - hysteresis`` (or ``v < T.below + hysteresis``).

For every threshold the tracker remembers since when its "holds" has been continuously true or
false (the *run*). A threshold is *confirmed* when

- not engaged: it holds and its run is at least ``dwell_s`` long (entering needs the dwell);
- engaged: it holds, or it stopped holding less than ``dwell_s`` ago (leaving needs the dwell).

The state is the most extreme confirmed threshold, or ``normal`` when none is confirmed. When
thresholds of both directions are confirmed (the value jumped from high to low) the ones that hold
now win. Rules guarantee the two directions can never hold at once.

- The first value sets the band immediately (no dwell): ``unknown -> band``.
- :meth:`BandTracker.interrupt` (a fault, a stale period, a clock step) restarts every run at the
  next value: a dwell is never completed across a gap in good data.
- :meth:`BandTracker.expire` lets time pass with the last value assumed unchanged, so a dwell ends
  on time between samples (the decider calls it from ``on_tick`` only while data is fresh).

A change reports the new band's threshold value and severity (``None`` / ``info`` for normal) and
the configured dwell that decided it: the new threshold's when entering a band or switching
direction, the left threshold's when moving towards normal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.config.rules import NORMAL, UNKNOWN, Threshold
from schemas.vocabulary import Severity


@dataclass(frozen=True, slots=True)
class BandChange:
    """A sensor moved from one band to another, after its dwell time."""

    previous: str
    new: str
    threshold: float | None
    severity: Severity
    dwell_s: float


class BandTracker:
    def __init__(self, thresholds: Sequence[Threshold]) -> None:
        above = sorted((t for t in thresholds if t.direction == "above"), key=lambda t: t.value)
        below = sorted((t for t in thresholds if t.direction == "below"), key=lambda t: -t.value)
        self._thresholds: tuple[Threshold, ...] = (*above, *below)
        # rank: 0 is the mildest threshold of its direction
        self._rank = {t.name: i for group in (above, below) for i, t in enumerate(group)}
        self._by_name = {t.name: t for t in self._thresholds}
        self.state = UNKNOWN
        self._holds: dict[str, bool] = {}
        self._run_start: dict[str, float] = {}
        self._interrupted = False

    # -- queries -------------------------------------------------------------------------------

    def _engaged(self, t: Threshold) -> bool:
        current = self._by_name.get(self.state)
        return (current is not None and current.direction == t.direction
                and self._rank[current.name] >= self._rank[t.name])

    def _holds_for(self, t: Threshold, value: float, engaged: bool) -> bool:
        slack = t.hysteresis if engaged else 0.0
        if t.direction == "above":
            return value > t.value - slack
        return value < t.value + slack

    def _more_extreme(self, a: Threshold, b: Threshold) -> bool:
        return self._rank[a.name] > self._rank[b.name]

    # -- updates -------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """A gap in good data: running dwells restart at the next value."""
        self._interrupted = True

    def update(self, t: float, value: float) -> BandChange | None:
        """A good (smoothed) value at time ``t``; returns the band change it causes, if any."""
        if self.state == UNKNOWN:
            return self._initial(t, value)
        for th in self._thresholds:
            holds = self._holds_for(th, value, self._engaged(th))
            if self._interrupted or holds != self._holds[th.name]:
                self._holds[th.name] = holds
                self._run_start[th.name] = t
        self._interrupted = False
        return self._decide(t)

    def expire(self, now: float) -> BandChange | None:
        """Time passes with the last value unchanged: completes dwells that are due."""
        if self.state == UNKNOWN or self._interrupted:
            return None
        return self._decide(now)

    def _initial(self, t: float, value: float) -> BandChange:
        holding = [th for th in self._thresholds if self._holds_for(th, value, engaged=False)]
        new = self._most_extreme(holding)
        self.state = new.name if new else NORMAL
        for th in self._thresholds:
            self._holds[th.name] = self._holds_for(th, value, self._engaged(th))
            self._run_start[th.name] = t
        self._interrupted = False
        return BandChange(UNKNOWN, self.state, new.value if new else None,
                          new.severity if new else "info", 0.0)

    def _most_extreme(self, candidates: Sequence[Threshold]) -> Threshold | None:
        best: Threshold | None = None
        for th in candidates:
            if best is None or self._more_extreme(th, best):
                best = th
        return best

    def _decide(self, now: float) -> BandChange | None:
        confirmed = []
        for th in self._thresholds:
            holds = self._holds[th.name]
            long_enough = now - self._run_start[th.name] >= th.dwell_s
            if self._engaged(th):
                if holds or not long_enough:
                    confirmed.append(th)
            elif holds and long_enough:
                confirmed.append(th)
        if len({th.direction for th in confirmed}) > 1:
            confirmed = [th for th in confirmed if self._holds[th.name]]
        new = self._most_extreme(confirmed)
        new_name = new.name if new else NORMAL
        if new_name == self.state:
            return None
        old = self._by_name.get(self.state)
        towards_normal = new is None or (
            old is not None and old.direction == new.direction and self._more_extreme(old, new))
        decided_by = old if towards_normal else new
        change = BandChange(self.state, new_name, new.value if new else None,
                            new.severity if new else "info",
                            decided_by.dwell_s if decided_by else 0.0)
        # Engagement changed, yet no "holds" flag needs re-evaluating: a threshold that becomes
        # engaged was holding without hysteresis, so it holds with it too; one that is released
        # did not hold even with hysteresis, so it does not hold without it either.
        self.state = new_name
        return change
