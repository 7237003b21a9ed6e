"""Property tests: hysteresis, dwell, fault isolation, fault episodes, summaries, determinism."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.decide import Draft, Reading, SensorDecider, SensorRules
from program_support.plain_config import parse
from tests.agent_decide.helpers import T0

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Step:
    dt: float                   # seconds after the previous step
    tick: bool                  # on_tick instead of on_reading
    value: float | None = None
    fault: Any = None


def run(d: SensorDecider, steps: list[Step]) -> list[tuple[Step, float, list[Draft]]]:
    """Feed the steps; returns (step, time, drafts of that call) and checks ordering per call."""
    t = T0
    out = []
    for s in steps:
        t += s.dt
        drafts = (d.on_tick(t) if s.tick
                  else d.on_reading(Reading("t1", t, s.value, fault=s.fault)))
        assert [x.time for x in drafts] == sorted(x.time for x in drafts)
        out.append((s, t, drafts))
    return out


def decider(**rules: Any) -> SensorDecider:
    return SensorDecider(sensor_id="t1", unit="degC", rules=parse(rules, SensorRules))


# round gaps too, so samples and ticks land exactly on window ends and dwell ends
gaps = st.one_of(st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
                 st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0]))


def steps_of(values: st.SearchStrategy[float | None]) -> st.SearchStrategy[list[Step]]:
    step = st.one_of(
        st.builds(Step, dt=gaps, tick=st.just(False), value=values),
        st.builds(Step, dt=gaps, tick=st.just(True)),
    )
    return st.lists(step, min_size=1, max_size=60)


# -- hysteresis ------------------------------------------------------------------------------

@SETTINGS
@given(threshold=st.floats(-40, 100), hysteresis=st.floats(0.05, 5),
       dwell=st.floats(0, 30), direction=st.sampled_from(["above", "below"]),
       data=st.data())
def test_oscillation_inside_the_hysteresis_band_changes_state_at_most_once(
        threshold: float, hysteresis: float, dwell: float, direction: str,
        data: st.DataObject) -> None:
    sign = 1.0 if direction == "above" else -1.0
    # strictly inside the band: beyond (threshold -/+ hysteresis), up to hysteresis past it
    inside = st.floats(0.01, 1.99).map(lambda f: threshold + sign * hysteresis * (f - 1.0))
    steps = data.draw(steps_of(inside))
    d = decider(thresholds=[{"name": "edge", direction: threshold, "hysteresis": hysteresis,
                             "dwell_s": dwell}], stale_after_s=15)
    changes = [x for _, _, drafts in run(d, steps) for x in drafts if x.kind == "state_change"
               and x.fields["previous_state"] != "unknown"]
    assert len(changes) <= 1


# -- dwell -----------------------------------------------------------------------------------

X, H = 30.0, 1.0


@SETTINGS
@given(dwell=st.floats(0, 40), steps=steps_of(st.one_of(
    st.floats(25, 35), st.just(31.0), st.just(29.5), st.none()).map(
        lambda v: round(v, 1) if v is not None else None)))
def test_no_state_change_before_the_dwell_of_continuous_exceedance(
        dwell: float, steps: list[Step]) -> None:
    d = decider(thresholds=[{"name": "high", "above": X, "hysteresis": H, "dwell_s": dwell}],
                stale_after_s=25)
    history: list[tuple[float, float | None]] = []  # every sample: (time, value or None = bad)
    for step, t, drafts in run(d, steps):
        if not step.tick:
            history.append((t, step.value))
        for x in drafts:
            if x.kind != "state_change" or x.fields["previous_state"] == "unknown":
                continue
            entering = x.fields["new_state"] == "high"

            def past(v: float | None, entering: bool = entering) -> bool:
                if v is None:
                    return False
                return v > X if entering else v <= X - H

            # walk back over the samples that kept the condition continuously true
            run_start = None
            for ts, v in reversed(history):
                if not past(v):
                    break
                run_start = ts
            assert run_start is not None, "changed state without the value past the threshold"
            assert x.time - run_start >= dwell - 1e-6, (x, run_start)


# -- faults ----------------------------------------------------------------------------------

GLITCHES: dict[float, str] = {85.0: "power_on_value", -127.0: "disconnected",
                              200.0: "out_of_range", -60.0: "out_of_range"}
sample = st.one_of(
    st.floats(0, 50).filter(lambda v: v != 85.0),
    st.sampled_from(sorted(GLITCHES)),
    st.none(),
)


def code_of(step: Step) -> str | None:
    """The oracle: which fault a sample is, independent of the decider."""
    if step.value is None:
        return "crc_error" if step.fault == "crc_error" else "read_failed"
    return GLITCHES.get(step.value)


faulty_steps = steps_of(sample).flatmap(lambda steps: st.just([
    Step(s.dt, s.tick, s.value, "crc_error" if (not s.tick and s.value is None and i % 2)
         else None) for i, s in enumerate(steps)]))


@SETTINGS
@given(steps=faulty_steps)
def test_faults_never_produce_threshold_events_and_episodes_are_counted_once(
        steps: list[Step]) -> None:
    d = decider(thresholds=[{"name": "high", "above": 30.0, "dwell_s": 5},
                            {"name": "low", "below": 10.0, "dwell_s": 0}],
                rate_limit_per_min=5.0, deadband=0.5, stale_after_s=30)
    steps = [*steps, Step(1.0, False, 20.0)]  # end on a good reading: every fault recovers
    episodes, current = 0, None
    actives = inactives = 0
    for step, _, drafts in run(d, steps):
        if not step.tick:
            code = code_of(step)
            if code is not None and code != current:
                episodes += 1
            current = code
            if code is not None:  # a bad sample: only faults (and closed summaries) come out
                assert {x.kind for x in drafts} <= {"fault", "summary"}
        for x in drafts:
            if x.kind == "fault" and x.fields["fault"] != "stale":
                actives += x.fields["active"]
                inactives += not x.fields["active"]
            if x.kind == "state_change":
                assert not step.tick or x.fields["previous_state"] != "unknown"
    assert actives == episodes
    assert inactives == actives
    assert d.fault is None and not d.stale


# -- summary ---------------------------------------------------------------------------------

@SETTINGS
@given(interval=st.sampled_from([1.0, 10.0, 60.0]), steps=steps_of(sample))
def test_summaries_equal_the_statistics_of_the_good_readings_of_each_window(
        interval: float, steps: list[Step]) -> None:
    d = decider(summary_interval_s=interval, smoothing={"kind": "mean", "window": 3})
    good: list[tuple[float, float]] = []
    summaries: list[Draft] = []
    results = run(d, [*steps, Step(3 * interval, True)])  # a last tick closes the last window
    for step, t, drafts in results:
        if not step.tick and code_of(step) is None and step.value is not None:
            good.append((t, step.value))
        summaries += [x for x in drafts if x.kind == "summary"]
    for s in summaries:
        start, end = s.fields["window_start"].timestamp(), s.time
        values = [v for t, v in good if start <= t < end]
        assert s.fields["count"] == len(values)
        if values:
            assert s.fields["min"] == min(values) and s.fields["max"] == max(values)
            assert abs(s.fields["mean"] - sum(values) / len(values)) < 1e-9
            assert s.fields["last"] == values[-1]
        else:
            assert s.fields["min"] is s.fields["mean"] is s.fields["last"] is None
    # nothing lost: every good reading is in exactly one summary, windows never overlap
    assert sum(s.fields["count"] for s in summaries) == len(good)
    starts = [(s.fields["window_start"].timestamp(), s.time) for s in summaries]
    assert all(a_end <= b_start + 1e-6 for (_, a_end), (b_start, _) in itertools.pairwise(starts))


# -- determinism -----------------------------------------------------------------------------

@SETTINGS
@given(steps=faulty_steps)
def test_the_same_input_always_gives_the_same_drafts(steps: list[Step]) -> None:
    rules = dict(thresholds=[{"name": "high", "above": 30.0, "dwell_s": 5}], deadband=0.5,
                 rate_limit_per_min=3.0, smoothing={"kind": "median", "window": 3},
                 max_jump_per_s=2.0, stale_after_s=20, report_every_s=30)
    first = [drafts for _, _, drafts in run(decider(**rules), steps)]
    second = [drafts for _, _, drafts in run(decider(**rules), steps)]
    assert first == second
