"""The small state machines one by one: smoothing, faults, stale, deadband, rate, summary."""

from __future__ import annotations

import statistics
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.decide import Smoothing
from edge_agent.decide.deadband import Reporter
from edge_agent.decide.faults import FaultEpisodes, FaultTransition
from edge_agent.decide.rate import RateTracker, slope_per_min
from edge_agent.decide.smoothing import Smoother, median
from edge_agent.decide.stale import StaleWatch
from edge_agent.decide.summary import Summary, SummaryWindows


def test_median_smoothing_removes_a_spike_and_mean_averages() -> None:
    median = Smoother(Smoothing(kind="median", window=3))
    assert [median.add(v) for v in (20.0, 20.0, 90.0, 20.0, 21.0)] == [20, 20, 20, 20, 21]
    mean = Smoother(Smoothing(kind="mean", window=2))
    assert [mean.add(v) for v in (20.0, 22.0, 26.0)] == [20.0, 21.0, 24.0]
    mean.clear()
    assert mean.add(10.0) == 10.0
    assert Smoother(None).add(3.5) == 3.5


@given(st.lists(st.floats(-60, 150, allow_nan=False), min_size=1, max_size=40))
def test_median_is_the_statistics_median(values: list[float]) -> None:
    assert median(deque(values)) == pytest.approx(statistics.median(values))
    assert isinstance(median(deque(values)), float)


def test_fault_episodes_one_active_per_episode_and_matching_recoveries() -> None:
    f = FaultEpisodes()
    assert f.fault("crc_error") == [FaultTransition("crc_error", True)]
    assert f.fault("crc_error") == []
    assert f.fault("disconnected") == [FaultTransition("crc_error", False),
                                       FaultTransition("disconnected", True)]
    assert f.recover() == FaultTransition("disconnected", False)
    assert f.recover() is None


def test_stale_watch_fires_once_and_recovers_on_good() -> None:
    s = StaleWatch(30.0)
    s.seen(0.0)
    assert not s.check(29.9)
    assert s.check(30.0)
    assert not s.check(100.0)  # once per stale period
    assert s.good(101.0) and not s.stale
    assert not s.good(102.0)
    assert not s.check(131.9) and s.check(132.0)
    off = StaleWatch(None)
    off.seen(0.0)
    assert not off.check(1e9)


def test_reporter_deadband_heartbeat_and_force() -> None:
    r = Reporter(deadband=0.5, every_s=60.0)
    assert r.check(0.0, 20.0)            # first value always
    assert not r.check(1.0, 20.4)        # inside the deadband
    assert r.check(2.0, 20.5)            # moved by exactly the deadband
    assert not r.check(3.0, 20.1)        # 0.4 from the last REPORTED value (20.5)
    assert r.check(62.0, 20.1)           # heartbeat
    r.force_next()
    assert r.check(63.0, 20.1)
    assert not Reporter(None, None).check(0.0, 1.0)
    every = Reporter(0.0, None)
    assert all(every.check(float(i), 5.0) for i in range(5))
    beat = Reporter(None, 10.0)
    assert [beat.check(float(t), 1.0) for t in (0, 5, 10, 15, 20)] == [True, False, True,
                                                                       False, True]


def test_slope_is_least_squares_per_minute() -> None:
    assert slope_per_min([(0.0, 0.0), (30.0, 1.0), (60.0, 2.0)]) == pytest.approx(2.0)
    assert slope_per_min([(1.8e9, 5.0), (1.8e9 + 60, 4.0)]) == pytest.approx(-1.0)


def test_rate_alarm_needs_half_a_window_and_clears_under_hysteresis() -> None:
    r = RateTracker(limit_per_min=2.0, clear_per_min=1.8, window_s=60.0)
    assert r.add(0.0, 20.0) is None
    assert r.add(10.0, 21.0) is None           # 6/min but the window spans only 10 s
    change = r.add(30.0, 23.0)                 # 6/min over 30 s
    assert change is not None and change.active and change.rate_per_min == pytest.approx(6.0)
    assert r.add(40.0, 24.0) is None           # still active: no repeat
    # flat from here: the rate decays as old samples leave the 60 s window, then clears once
    changes = [c for t in range(50, 200, 10) if (c := r.add(float(t), 24.0)) is not None]
    assert len(changes) == 1 and not changes[0].active
    assert abs(changes[0].rate_per_min) <= 1.8


def _alternating_slopes(r: RateTracker) -> list[bool]:
    """60 s at 2.5/min, 60 s at 1.7/min, repeated: the rate wanders across the 2.0 limit."""
    out, v = [], 0.0
    for i in range(120):
        v += (2.5 if (i // 6) % 2 == 0 else 1.7) / 6.0
        if (c := r.add(i * 10.0, v)) is not None:
            out.append(c.active)
    return out


def test_rate_alarm_does_not_flap_between_limit_and_clear_level() -> None:
    assert _alternating_slopes(RateTracker(2.0, 1.5, 60.0)) == [True]
    # the same signal without hysteresis flaps: the hysteresis is what prevents it
    assert len(_alternating_slopes(RateTracker(2.0, 2.0, 60.0))) > 4


def test_summary_windows_aligned_empty_and_late_ticks() -> None:
    w = SummaryWindows(60.0)
    assert w.close_due(1_000_010.0) == []      # opens the window [999960, 1000020)
    assert w.start == 999_960.0
    w.add(1_000_011.0, 20.0)
    w.add(1_000_012.0, 22.0)
    w.add(1_000_019.0, 21.0)
    assert w.close_due(1_000_019.9) == []
    assert w.close_due(1_000_020.0) == [Summary(999_960.0, 1_000_020.0, 3, 20.0, 22.0, 21.0, 21.0)]
    # an empty window is emitted with count 0
    assert w.close_due(1_000_080.5) == [Summary(1_000_020.0, 1_000_080.0, 0, None, None, None,
                                                None)]
    # a tick 10 windows late: the open window, then ONE empty summary for the skipped ones
    w.add(1_000_100.0, 5.0)
    late = w.close_due(1_000_745.0)
    assert late == [Summary(1_000_080.0, 1_000_140.0, 1, 5.0, 5.0, 5.0, 5.0),
                    Summary(1_000_140.0, 1_000_740.0, 0, None, None, None, None)]
    assert w.start == 1_000_740.0
    w.add(1_000_746.0, 1.0)
    assert w.restart(500.0) == [Summary(1_000_740.0, 1_000_800.0, 1, 1.0, 1.0, 1.0, 1.0)]
    assert w.start == 480.0
