"""One sensor's edge decisions: :class:`SensorDecider` composes the small state machines.

Readings and ticks in, :class:`Draft` lists out; time is always an argument (UTC epoch seconds).

What each call does, in this order (so the drafts of one call are in time order):

``on_reading(r)``
  1. Summary windows that ended at or before ``r.time`` are emitted (:mod:`.summary`).
  2. A sample with ``r.fault`` set (or no value: ``read_failed``) or rejected by
     :mod:`.validate` (``out_of_range``, ``power_on_value``, ``disconnected``,
     ``implausible_jump``) is a fault: ``fault`` drafts only as episodes begin or change
     (:mod:`.faults`), and the running dwells restart at the next good value. If no good reading
     came for ``stale_after_s`` a ``stale`` fault begins as well. Nothing else happens: a bad
     sample never feeds thresholds, smoothing, rate, reports or the summary.
  3. A good sample: recovery drafts first (``fault`` active=False for the sample fault episode,
     then for ``stale``), then the raw value enters the summary, the smoothed value
     (:mod:`.smoothing`) goes to the bands (``state_change``), the rate (``rate_alarm``) and the
     reporter (``reading``), in that order.

``on_stop(now)``
  Summary windows due by ``now`` are emitted, then the open one, cut short at ``now``.

``on_tick(now)``
  1. Summary windows that ended at or before ``now`` are emitted.
  2. ``stale`` fault when no good reading came for ``stale_after_s``.
  3. Otherwise, while data is fresh and no sample fault is active, dwells that ended by ``now``
     complete (the last value is assumed to hold until the next sample).

States: ``unknown`` until the first good reading, which sets the band at once and emits
``state_change`` from ``unknown`` (after an agent restart the hub learns the current band). A fault
or stale period keeps the band, and no state change fires until fresh readings complete a whole
dwell again. Rate alarms need a window of fresh samples, so nothing fires from an unknown or stale
state except that first ``unknown -> band`` change.

Fields: ``state_change.value``, ``rate_alarm.value`` and ``reading.value`` are smoothed values;
fault drafts carry the rejected value (``None`` if absent or not finite); a recovery carries the
good value that ended the fault, or ``None`` when another fault superseded it (its rejected value
belongs to the new fault, never to the recovery); stale drafts begin with ``value`` None. So a
``fault`` event's ``value`` is never a temperature to show as the sensor's current one.

Time: the decider's clock is the newest time it has seen; an older reading or tick (a reading
timestamped before the last tick) is handled, and its drafts stamped, at that newest time. A step
back of more than :data:`CLOCK_STEP_BACK_S` is a clock step (NTP correcting a Raspberry Pi without
a real-time clock): the open summary window is emitted at once (the one draft that can carry a later
time than the drafts after it), and every timer restarts at the new time: dwells, the rate window,
the jump check, the stale clock and the heartbeat. A step forward longer than ``stale_after_s``
makes the sensor stale at the next tick, so it never completes a dwell either.

A source reporting ``fault="stale"`` itself is recorded as ``read_failed`` (with the source's
detail): ``stale`` belongs to the decider's own clock, so alerting sees one stale episode
at a time.
"""

from __future__ import annotations

import math

from edge_agent.config.rules import SensorRules
from edge_agent.decide.bands import BandChange, BandTracker
from edge_agent.decide.deadband import Reporter
from edge_agent.decide.events import epoch_to_utc
from edge_agent.decide.faults import FaultEpisodes, FaultTransition
from edge_agent.decide.rate import RateChange, RateTracker
from edge_agent.decide.smoothing import Smoother
from edge_agent.decide.stale import StaleWatch
from edge_agent.decide.summary import Summary, SummaryWindows
from edge_agent.decide.types import Draft, Reading
from edge_agent.decide.validate import check_value
from schemas.errors import ConfigError
from schemas.ids import check_identifier
from schemas.plain_messages import ThresholdInfo
from schemas.vocabulary import FaultCode, Unit

#: A reading or tick this much older than the newest time seen is a clock step, not jitter.
CLOCK_STEP_BACK_S = 5.0


class SensorDecider:
    """Edge decisions for one sensor. Not thread-safe: call it from one place."""

    def __init__(self, sensor_id: str, unit: Unit, rules: SensorRules) -> None:
        self.sensor_id = check_identifier(sensor_id, "sensor id")
        if unit not in ("degC", "degF"):
            raise ConfigError(f"sensor {sensor_id}", [("unit", f"unknown unit {unit!r}: "
                                                       "use 'degC' or 'degF'")])
        self.unit: Unit = unit
        self.rules = rules
        self._now: float | None = None
        self._last_good: tuple[float, float] | None = None  # (time, raw value) for the jump check
        self._faults = FaultEpisodes()
        self._stale = StaleWatch(rules.stale_after_s)
        self._smoother = Smoother(rules.smoothing)
        self._bands = BandTracker(rules.thresholds)
        self._bands_value = math.nan  # the last smoothed value given to the bands
        clear = rules.rate_clear_per_min
        self._rate = (RateTracker(rules.rate_limit_per_min, clear, rules.rate_window_s)
                      if rules.rate_limit_per_min is not None and clear is not None else None)
        self._reporter = Reporter(rules.deadband, rules.report_every_s)
        self._summary = (SummaryWindows(rules.summary_interval_s)
                         if rules.summary_interval_s is not None else None)

    @property
    def state(self) -> str:
        """The current band: ``unknown`` before the first good reading, ``normal`` or a name."""
        return self._bands.state

    @property
    def fault(self) -> FaultCode | None:
        """The active sample fault, if any (``stale`` is reported by :attr:`stale`)."""
        return self._faults.current

    @property
    def stale(self) -> bool:
        return self._stale.stale

    @property
    def last_good(self) -> tuple[float, float] | None:
        """(time, value) of the last accepted reading; None before one or after a clock step."""
        return self._last_good

    def thresholds_info(self) -> list[ThresholdInfo]:
        """The thresholds as the device's birth status lists them."""
        return [ThresholdInfo(name=t.name, direction=t.direction, value=t.value,
                              hysteresis=t.hysteresis, dwell_s=t.dwell_s, severity=t.severity)
                for t in self.rules.thresholds]

    # -- inputs --------------------------------------------------------------------------------

    def on_reading(self, reading: Reading) -> list[Draft]:
        """One sample (a value, or a fault the source reported). Returns drafts in time order."""
        if reading.sensor_id != self.sensor_id:
            raise ValueError(f"reading for sensor {reading.sensor_id!r} given to the decider of "
                             f"{self.sensor_id!r}")
        out: list[Draft] = []
        t = self._advance(float(reading.time), out)
        self._close_windows(t, out)
        value = None if reading.value is None else float(reading.value)
        if reading.fault is not None or value is None:
            code: FaultCode = reading.fault if reading.fault is not None else "read_failed"
            detail = reading.detail or f"the source reported {code}"
            if code == "stale":  # see the module docstring: stale is ours
                code, detail = "read_failed", f"the source reported stale: {detail}"
            self._bad(t, code, detail, value, out)
            return out
        rejection = check_value(value, self.unit, t, self.rules, self._last_good)
        if rejection is not None:
            self._bad(t, rejection.fault, rejection.detail, value, out)
        else:
            self._good(t, value, out)
        return out

    def on_tick(self, now: float) -> list[Draft]:
        """Time passing: closes summary windows, detects stale, completes due dwells."""
        out: list[Draft] = []
        t = self._advance(float(now), out)
        self._close_windows(t, out)
        if not self._check_stale(t, out) and not self._stale.stale and self._faults.current is None:
            change = self._bands.expire(t)
            if change is not None:
                out.append(self._state_draft(t, change, self._bands_value))
        return out

    def on_stop(self, now: float) -> list[Draft]:
        """The agent stops: windows due by ``now`` are emitted, then the open one cut short at
        ``now`` (its good readings would otherwise be lost with the process)."""
        out: list[Draft] = []
        t = self._advance(float(now), out)
        if self._summary is not None:
            out.extend(self._summary_draft(s) for s in self._summary.flush(t))
        return out

    # -- steps ---------------------------------------------------------------------------------

    def _advance(self, t: float, out: list[Draft]) -> float:
        if self._now is None:
            self._now = t
            self._stale.seen(t)
        elif t < self._now - CLOCK_STEP_BACK_S:
            if self._summary is not None:
                out.extend(self._summary_draft(s) for s in self._summary.restart(t))
            self._now = t
            self._interrupt()
            self._last_good = None
            self._stale.rebase(t)
        else:
            self._now = max(self._now, t)
        return self._now

    def _interrupt(self) -> None:
        """A gap in good data: dwells restart, rate restarts, the next value is reported."""
        self._bands.interrupt()
        if self._rate is not None:
            self._rate.clear()
        self._reporter.force_next()

    def _close_windows(self, t: float, out: list[Draft]) -> None:
        if self._summary is not None:
            out.extend(self._summary_draft(s) for s in self._summary.close_due(t))

    def _check_stale(self, t: float, out: list[Draft]) -> bool:
        if not self._stale.check(t):
            return False
        self._interrupt()
        self._smoother.clear()
        out.append(self._fault_draft(
            t, FaultTransition("stale", True), None,
            f"no good reading for {self._stale.age(t):.1f} s "
            f"(stale_after_s = {self.rules.stale_after_s})"))
        return True

    def _bad(self, t: float, code: FaultCode, detail: str, value: float | None,
             out: list[Draft]) -> None:
        shown = value if value is not None and math.isfinite(value) else None
        transitions = self._faults.fault(code)
        for tr in transitions:
            if tr.active:
                out.append(self._fault_draft(t, tr, shown, detail))
            else:  # the rejected value belongs to the fault that begins, not to this one
                out.append(self._fault_draft(t, tr, None, f"superseded by {code}"))
        if transitions:
            self._interrupt()
        self._check_stale(t, out)

    def _good(self, t: float, value: float, out: list[Draft]) -> None:
        ended = self._faults.recover()
        if ended is not None:
            out.append(self._fault_draft(t, ended, value, "good reading again"))
        age = self._stale.age(t)
        if self._stale.good(t):
            out.append(self._fault_draft(t, FaultTransition("stale", False), value,
                                         f"good reading after {age:.1f} s"))
        self._last_good = (t, value)
        if self._summary is not None:
            self._summary.add(t, value)
        smoothed = self._smoother.add(value)
        self._bands_value = smoothed
        change = self._bands.update(t, smoothed)
        if change is not None:
            out.append(self._state_draft(t, change, smoothed))
        if self._rate is not None:
            rate = self._rate.add(t, smoothed)
            if rate is not None:
                out.append(self._rate_draft(t, rate, smoothed))
        if self._reporter.check(t, smoothed):
            out.append(Draft("reading", self.sensor_id, t, {"value": smoothed, "unit": self.unit}))

    # -- drafts --------------------------------------------------------------------------------

    def _fault_draft(self, t: float, tr: FaultTransition, value: float | None,
                     detail: str) -> Draft:
        return Draft("fault", self.sensor_id, t, {
            "fault": tr.fault, "active": tr.active, "value": value, "unit": self.unit,
            "detail": detail, "severity": self.rules.fault_severity})

    def _state_draft(self, t: float, change: BandChange, value: float) -> Draft:
        return Draft("state_change", self.sensor_id, t, {
            "value": value, "unit": self.unit, "previous_state": change.previous,
            "new_state": change.new, "threshold": change.threshold,
            "severity": change.severity, "dwell_s": change.dwell_s})

    def _rate_draft(self, t: float, rate: RateChange, value: float) -> Draft:
        assert self.rules.rate_limit_per_min is not None
        return Draft("rate_alarm", self.sensor_id, t, {
            "value": value, "unit": self.unit, "rate_per_min": rate.rate_per_min,
            "limit_per_min": self.rules.rate_limit_per_min, "active": rate.active,
            "severity": self.rules.rate_severity})

    def _summary_draft(self, s: Summary) -> Draft:
        return Draft("summary", self.sensor_id, s.end, {
            "unit": self.unit, "window_start": epoch_to_utc(s.start), "count": s.count,
            "min": s.min, "max": s.max, "mean": s.mean, "last": s.last})
