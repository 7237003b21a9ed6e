"""BandTracker: initial band, dwell to enter and leave, hysteresis, extremity, interruptions."""

from __future__ import annotations

from edge_agent.decide import SensorRules
from edge_agent.decide.bands import BandChange, BandTracker
from program_support.plain_config import parse
from tests.agent_decide.helpers import HIGH, HIGH_CRIT, LOW


def tracker(*thresholds: dict[str, object]) -> BandTracker:
    return BandTracker(parse({"thresholds": list(thresholds)}, SensorRules).thresholds)


def run(b: BandTracker, samples: list[tuple[float, float]]) -> list[tuple[float, str, str]]:
    out = []
    for t, v in samples:
        if (c := b.update(t, v)) is not None:
            out.append((t, c.previous, c.new))
    return out


def test_first_value_sets_the_band_without_dwell() -> None:
    b = tracker(HIGH, HIGH_CRIT, LOW)
    assert b.update(0.0, 35.0) == BandChange("unknown", "high", 30.0, "warning", 0.0)
    b = tracker(HIGH, HIGH_CRIT, LOW)
    assert b.update(0.0, 45.0) == BandChange("unknown", "high_critical", 40.0, "critical", 0.0)
    b = tracker(HIGH, LOW)
    assert b.update(0.0, 20.0) == BandChange("unknown", "normal", None, "info", 0.0)
    assert tracker().update(0.0, 500.0) == BandChange("unknown", "normal", None, "info", 0.0)


def test_entering_needs_the_value_past_the_threshold_for_the_whole_dwell() -> None:
    b = tracker(HIGH)  # above 30, hysteresis 1, dwell 10
    changes = run(b, [(0, 20.0), (1, 31.0), (5, 31.0), (6, 29.0),   # dipped: dwell restarts
                      (7, 31.0), (16, 31.0), (17, 31.0)])
    assert changes == [(0, "unknown", "normal"), (17, "normal", "high")]


def test_threshold_is_strictly_past_and_leaving_needs_hysteresis_and_dwell() -> None:
    b = tracker(HIGH)
    run(b, [(0, 30.0), (20, 30.0)])
    assert b.state == "normal"  # exactly at the threshold is not past it
    run(b, [(21, 30.5), (31, 30.5)])
    assert b.state == "high"
    # 29.5 is back under 30 but inside the 1.0 hysteresis: still holds
    assert run(b, [(32, 29.5), (100, 29.1)]) == []
    # 29.0 = threshold - hysteresis: released, but leaving needs the 10 s dwell too
    assert run(b, [(101, 29.0), (110, 28.0), (111, 28.0)]) == [(111, "high", "normal")]


def test_most_extreme_band_wins_and_steps_back_through_dwells() -> None:
    b = tracker(HIGH, HIGH_CRIT)
    run(b, [(0, 20.0)])
    # 41 is past both: high_critical has no dwell and wins at once
    assert run(b, [(1, 41.0)]) == [(1, "normal", "high_critical")]
    change = b.update(2, 35.0)  # leaves high_critical (dwell 0) into high (still held)
    assert change == BandChange("high_critical", "high", 30.0, "warning", 0.0)
    change = None
    for t in range(3, 20):
        change = b.update(float(t), 25.0) or change
    assert change == BandChange("high", "normal", None, "info", 10.0)


def test_low_and_high_jump_directly_once_the_new_dwell_completes() -> None:
    b = tracker(HIGH, LOW)
    run(b, [(0, 35.0)])
    # a sudden drop to 0: low holds (dwell 10), high released (dwell 10): straight to low
    assert run(b, [(1, 0.0), (10, 0.0), (11, 0.0)]) == [(11, "high", "low")]


def test_expire_completes_a_due_dwell_between_samples() -> None:
    b = tracker(HIGH)
    run(b, [(0, 20.0), (1, 31.0)])
    assert b.expire(10.9) is None
    assert b.expire(11.0) == BandChange("normal", "high", 30.0, "warning", 10.0)


def test_interrupt_restarts_every_dwell() -> None:
    b = tracker(HIGH)
    run(b, [(0, 20.0), (1, 31.0), (9, 31.0)])
    b.interrupt()
    assert b.expire(20.0) is None  # no completion from a gap
    assert run(b, [(20, 31.0), (29, 31.0)]) == []
    assert run(b, [(30, 31.0)]) == [(30, "normal", "high")]
