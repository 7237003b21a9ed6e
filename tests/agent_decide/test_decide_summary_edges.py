"""Summary windows at their edges: every good reading is counted exactly once.

These pin down the candidates that were ruled out for the end-to-end "one reading short per
sensor" report (the cause was the serial reader: tests/agent_sources/test_serial_last_bytes.py):
the first reading, a reading exactly on a window boundary, a tick exactly on a boundary, and a
reading older than the last tick (the agent's source thread stamps a reading before the agent
thread's tick closes its window), which is counted in the open window, never dropped.
"""

from __future__ import annotations

from edge_agent.decide import Draft, SensorDecider
from tests.agent_decide.helpers import T0, decider, kinds, reading


def summaries(drafts: list[Draft]) -> list[tuple[float, float, int]]:
    return [(d.fields["window_start"].timestamp() - T0, d.time - T0, d.fields["count"])
            for d in kinds(drafts, "summary")]


def close_all(d: SensorDecider, t: float) -> list[Draft]:
    return d.on_tick(T0 + t)


def test_the_first_reading_is_counted() -> None:
    d = decider(summary_interval_s=10.0)
    out = d.on_reading(reading(3.0, 20.0))
    out += close_all(d, 10.0)
    assert summaries(out) == [(0.0, 10.0, 1)]


def test_a_reading_exactly_on_a_boundary_opens_the_next_window_and_is_counted_once() -> None:
    d = decider(summary_interval_s=10.0)
    out: list[Draft] = []
    for t in (0.0, 5.0, 10.0, 20.0):
        out += d.on_reading(reading(t, 20.0))
    out += close_all(d, 30.0)
    assert summaries(out) == [(0.0, 10.0, 2), (10.0, 20.0, 1), (20.0, 30.0, 1)]


def test_a_tick_exactly_on_a_boundary_closes_the_window_before_the_reading_there() -> None:
    d = decider(summary_interval_s=10.0)
    out = d.on_reading(reading(9.5, 20.0))
    out += d.on_tick(T0 + 10.0)
    out += d.on_reading(reading(10.0, 21.0))
    out += close_all(d, 20.0)
    assert summaries(out) == [(0.0, 10.0, 1), (10.0, 20.0, 1)]


def test_a_reading_older_than_the_last_tick_is_counted_in_the_open_window() -> None:
    d = decider(summary_interval_s=10.0)
    out = d.on_reading(reading(8.0, 20.0))
    out += d.on_tick(T0 + 10.05)             # the agent thread ticked first...
    late = d.on_reading(reading(9.99, 21.0))  # ...the source had stamped this reading before
    assert all(x.time == T0 + 10.05 for x in late)  # handled at the newest time seen
    out += late
    out += close_all(d, 20.0)
    assert summaries(out) == [(0.0, 10.0, 1), (10.0, 20.0, 1)]
    assert sum(c for _, _, c in summaries(out)) == 2


def test_many_readings_and_ticks_interleaved_count_every_good_reading() -> None:
    # the e2e shape: a reading every 83 ms per sensor, a tick every 200 ms, 1 s windows,
    # readings sometimes stamped before the tick that precedes them
    d = decider(summary_interval_s=1.0)
    out: list[Draft] = []
    n = 0
    t = 0.0
    for i in range(1000):
        t = i * 0.0833
        if i % 3 == 0:
            out += d.on_tick(T0 + t + 0.01)
        out += d.on_reading(reading(t, 20.0 + (i % 7) / 10))
        n += 1
    out += close_all(d, t + 2.0)
    assert sum(c for _, _, c in summaries(out)) == n


# -- stopping: the open window is emitted, cut short ----------------------------------------

def test_on_stop_emits_the_open_window_cut_short_with_its_readings() -> None:
    d = decider(summary_interval_s=60.0)
    out: list[Draft] = []
    for t in (1.0, 61.0, 70.0, 80.0):
        out += d.on_reading(reading(t, 20.0))
    out += d.on_stop(T0 + 85.0)
    assert summaries(out) == [(0.0, 60.0, 1), (60.0, 85.0, 3)]
    assert d.on_stop(T0 + 90.0) == []  # nothing stays open


def test_on_stop_closes_due_windows_first_and_makes_no_empty_zero_length_window() -> None:
    d = decider(summary_interval_s=10.0)
    out = d.on_reading(reading(5.0, 20.0))
    out += d.on_stop(T0 + 20.0)  # exactly on a boundary: [10, 20) is due, [20, 20) is nothing
    assert summaries(out) == [(0.0, 10.0, 1), (10.0, 20.0, 0)]


def test_on_stop_counts_a_reading_stamped_before_the_last_tick() -> None:
    d = decider(summary_interval_s=10.0)
    out = d.on_reading(reading(2.0, 20.0))
    out += d.on_tick(T0 + 4.0)
    out += d.on_reading(reading(3.9, 21.0))
    out += d.on_stop(T0 + 3.95)  # the stop clock is older than the tick: the newest time rules
    assert summaries(out) == [(0.0, 4.0, 2)]
