"""SensorDecider end to end: every draft kind, faults, stale, dwell, reports, summary, clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

import schemas
from edge_agent.decide import Draft, SensorDecider, SensorRules, draft_to_event
from schemas import plain_messages, plain_runtime
from schemas.errors import ConfigError, InvalidIdentifier
from tests.agent_decide.helpers import (
    HIGH,
    HIGH_CRIT,
    LOW,
    T0,
    decider,
    feed,
    kinds,
    reading,
    states,
)


def test_first_good_reading_announces_the_band_from_unknown() -> None:
    d = decider(thresholds=[HIGH, LOW])
    assert d.state == "unknown"
    out = d.on_reading(reading(0, 35.0))
    assert states(out) == [("unknown", "high")]
    assert out[0].fields["dwell_s"] == 0.0 and d.state == "high"
    assert out[0].time == T0


def test_rejected_readings_make_one_fault_episode_and_never_threshold_events() -> None:
    d = decider(thresholds=[HIGH_CRIT], deadband=0.0)
    feed(d, [(0, 20.0)])
    out = feed(d, [(1, 85.0), (2, 85.0), (3, 85.0)])
    assert [(x.kind, x.fields["fault"], x.fields["active"]) for x in out] == [
        ("fault", "power_on_value", True)]
    assert out[0].fields["value"] == 85.0 and "power-on" in out[0].fields["detail"]
    assert d.state == "normal" and d.fault == "power_on_value"
    out = feed(d, [(4, -127.0), (5, 200.0), (6, 21.0)])
    assert [(x.kind, x.fields.get("fault"), x.fields.get("active")) for x in out] == [
        ("fault", "power_on_value", False), ("fault", "disconnected", True),
        ("fault", "disconnected", False), ("fault", "out_of_range", True),
        ("fault", "out_of_range", False), ("reading", None, None)]
    assert out[2].fields["detail"] == "superseded by out_of_range"
    assert out[4].fields["value"] == 21.0 and d.fault is None


def test_a_superseded_fault_recovers_without_the_next_faults_rejected_value() -> None:
    # DS18B20: 85.0 (power-on) then -127.0 (disconnected): the power_on_value recovery must not
    # carry -127.0, nor the disconnected recovery the CRC failure's missing value; only a good
    # reading ends an episode with a value, and it is that good value.
    d = decider(deadband=0.0)
    feed(d, [(0, 21.5)])
    out = feed(d, [(1, 85.0), (2, -127.0)])
    out += d.on_reading(reading(3, None, fault="crc_error", detail="crc=a5 NO"))
    out += feed(d, [(4, 22.0)])
    faults = [(x.fields["fault"], x.fields["active"], x.fields["value"])
              for x in out if x.kind == "fault"]
    assert faults == [("power_on_value", True, 85.0), ("power_on_value", False, None),
                      ("disconnected", True, -127.0), ("disconnected", False, None),
                      ("crc_error", True, None), ("crc_error", False, 22.0)]


def test_source_reported_faults_and_missing_values() -> None:
    d = decider()
    feed(d, [(0, 20.0)])
    out = d.on_reading(reading(1, None, fault="crc_error", detail="crc=a5 NO"))
    out += d.on_reading(reading(2, 20.0, fault="crc_error"))
    out += d.on_reading(reading(3, None))
    assert [(x.fields["fault"], x.fields["active"], x.fields["detail"]) for x in out] == [
        ("crc_error", True, "crc=a5 NO"), ("crc_error", False, "superseded by read_failed"),
        ("read_failed", True, "the source reported read_failed")]


def test_a_source_reported_stale_is_a_read_failure_not_a_second_stale_episode() -> None:
    d = decider(stale_after_s=10, summary_interval_s=None)
    out = d.on_reading(reading(0, None, fault="stale", detail="no answer"))
    out += d.on_tick(T0 + 10)
    assert [(x.fields["fault"], x.fields["detail"]) for x in out] == [
        ("read_failed", "the source reported stale: no answer"),
        ("stale", "no good reading for 10.0 s (stale_after_s = 10.0)")]


def test_a_forward_clock_jump_makes_the_sensor_stale_instead_of_completing_a_dwell() -> None:
    d = decider(thresholds=[HIGH], stale_after_s=30, summary_interval_s=None)
    feed(d, [(0, 20.0), (1, 31.0)])
    out = d.on_tick(T0 + 86_400.0)
    assert [x.kind for x in out] == ["fault"] and d.state == "normal"


def test_a_fault_does_not_complete_a_dwell() -> None:
    d = decider(thresholds=[HIGH])  # dwell 10
    feed(d, [(0, 20.0), (1, 31.0), (5, 31.0)])
    out = feed(d, [(6, None), (8, 31.0)])
    out += d.on_tick(T0 + 12.0)
    out += feed(d, [(17, 31.0)])
    assert states(out) == []  # without the fault the change would have come at 11
    out = d.on_tick(T0 + 18.0)
    assert states(out) == [("normal", "high")] and out[0].time == T0 + 18.0


def test_tick_completes_a_dwell_between_samples() -> None:
    d = decider(thresholds=[HIGH], stale_after_s=60)
    feed(d, [(0, 20.0), (1, 31.0)])
    assert d.on_tick(T0 + 10.5) == []
    out = d.on_tick(T0 + 11.0)
    assert states(out) == [("normal", "high")]
    assert out[0].fields["value"] == 31.0 and out[0].fields["threshold"] == 30.0


def test_stale_fault_keeps_the_band_and_recovers_on_the_next_good_reading() -> None:
    d = decider(thresholds=[HIGH], stale_after_s=30, summary_interval_s=None)
    feed(d, [(0, 35.0)])
    assert d.on_tick(T0 + 29.9) == []
    out = d.on_tick(T0 + 30.0)
    assert [(x.fields["fault"], x.fields["active"], x.fields["value"]) for x in out] == [
        ("stale", True, None)]
    assert d.stale and d.state == "high"
    assert d.on_tick(T0 + 100.0) == []  # once per stale period
    out = feed(d, [(120, 20.0)])
    assert [(x.fields["fault"], x.fields["active"]) for x in out] == [("stale", False)]
    assert "120.0 s" in out[0].fields["detail"]
    # fresh readings must complete the whole leaving dwell again
    assert states(feed(d, [(125, 20.0)]) + d.on_tick(T0 + 129.0)) == []
    assert states(d.on_tick(T0 + 130.0)) == [("high", "normal")]


def test_a_sensor_that_never_answers_goes_stale_and_glitches_alone_are_stale_too() -> None:
    d = decider(stale_after_s=10, summary_interval_s=None)
    assert d.on_tick(T0) == []
    assert [x.fields["fault"] for x in d.on_tick(T0 + 10)] == ["stale"]
    d = decider(stale_after_s=10, summary_interval_s=None)
    out = feed(d, [(0, 20.0), (1, -127.0), (5, -127.0), (11, -127.0)])
    assert [(x.fields["fault"], x.fields["active"]) for x in kinds(out, "fault")] == [
        ("disconnected", True), ("stale", True)]
    out = feed(d, [(12, 20.0)])
    assert [(x.fields["fault"], x.fields["active"]) for x in out] == [
        ("disconnected", False), ("stale", False)]


def test_reading_reports_by_deadband_heartbeat_and_after_faults() -> None:
    d = decider(deadband=0.5, report_every_s=60, max_jump_per_s=2.0)
    out = feed(d, [(0, 20.0), (1, 20.2), (2, 20.5), (3, 20.3), (64, 20.3)])
    assert [(x.time - T0, x.fields["value"]) for x in kinds(out, "reading")] == [
        (0, 20.0), (2, 20.5), (64, 20.3)]
    out = feed(d, [(65, 60.0), (66, 20.3)])  # jump fault, then the same value again
    assert [x.kind for x in out] == ["fault", "fault", "reading"]


def test_smoothed_value_drives_bands_and_reports_raw_values_drive_the_summary() -> None:
    d = decider(thresholds=[{**HIGH, "dwell_s": 0}], smoothing={"kind": "median", "window": 3},
                deadband=0.0, summary_interval_s=60)
    out = feed(d, [(0, 20.0), (1, 20.0), (2, 50.0), (3, 20.0)])  # one spike: median hides it
    assert states(out) == [("unknown", "normal")]
    assert [x.fields["value"] for x in kinds(out, "reading")] == [20.0, 20.0, 20.0, 20.0]
    summary = kinds(d.on_tick(T0 + 60), "summary")
    assert len(summary) == 1
    assert summary[0].fields | {} == {
        "unit": "degC", "window_start": datetime.fromtimestamp(T0, UTC), "count": 4,
        "min": 20.0, "max": 50.0, "mean": 27.5, "last": 20.0}
    assert summary[0].time == T0 + 60


def test_rate_alarm_through_the_decider() -> None:
    d = decider(rate_limit_per_min=2.0, rate_window_s=60)
    out = feed(d, [(t, 20.0 + t / 10) for t in range(0, 61, 10)])  # 6 degrees a minute
    alarms = kinds(out, "rate_alarm")
    assert len(alarms) == 1 and alarms[0].fields["active"]
    assert alarms[0].time == T0 + 30 and alarms[0].fields["rate_per_min"] == pytest.approx(6.0)
    out = feed(d, [(t, 26.0) for t in range(70, 200, 10)])
    assert [x.fields["active"] for x in kinds(out, "rate_alarm")] == [False]


def test_stale_clears_the_rate_window() -> None:
    d = decider(rate_limit_per_min=2.0, rate_window_s=60, stale_after_s=30)
    feed(d, [(0, 20.0)])
    d.on_tick(T0 + 40)
    # 20 -> 30 across the stale gap would be 6/min; after stale only fresh samples count
    out = feed(d, [(100, 30.0), (110, 30.0), (130, 30.0)])
    assert kinds(out, "rate_alarm") == []


def test_clock_step_back_flushes_the_window_and_restarts_timers() -> None:
    d = decider(thresholds=[HIGH], summary_interval_s=60)
    feed(d, [(0, 20.0), (30, 31.0)])
    out = feed(d, [(-3600, 31.0)])  # NTP pulled the clock back an hour
    assert [x.kind for x in out] == ["summary"]
    assert out[0].fields["count"] == 2 and out[0].time == T0 + 60
    out = d.on_tick(T0 - 3600 + 9) + d.on_tick(T0 - 3600 + 10)
    assert states(out) == [("normal", "high")]  # dwell counted afresh from the step


def test_small_backwards_jitter_is_handled_at_the_newest_time() -> None:
    d = decider(deadband=0.0)
    d.on_tick(T0 + 10.0)
    out = d.on_reading(reading(9.2, 20.0))  # read before the tick, delivered after it
    assert [x.time for x in out] == [T0 + 10.0, T0 + 10.0]


def test_bad_construction_and_foreign_readings_are_refused() -> None:
    with pytest.raises(InvalidIdentifier):
        SensorDecider(sensor_id="a/b", unit="degC", rules=SensorRules())
    with pytest.raises(ConfigError, match="unknown unit 'K'"):
        SensorDecider(sensor_id="t1", unit="K", rules=SensorRules())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="given to the decider of 't1'"):
        decider().on_reading(reading(0, 1.0).__class__("t2", T0, 1.0))


def test_thresholds_info_for_the_birth_status() -> None:
    info = decider(thresholds=[HIGH, LOW]).thresholds_info()
    assert [(i.name, i.direction, i.value, i.hysteresis, i.dwell_s) for i in info] == [
        ("high", "above", 30.0, 1.0, 10.0), ("low", "below", 5.0, 1.0, 10.0)]
    assert all(isinstance(i, plain_messages.ThresholdInfo) for i in info)


def _every_kind(unit: str) -> list[Draft]:
    d = decider(unit=unit, thresholds=[HIGH, HIGH_CRIT, LOW], rate_limit_per_min=2.0,
                deadband=0.1, stale_after_s=30, max_jump_per_s=5.0)
    offset = 0.0 if unit == "degC" else 40.0  # keep degF values inside the physical range
    out = feed(d, [(t, offset + 20.0 + t / 5) for t in range(0, 60, 5)])
    out += feed(d, [(61, None), (62, 85.0 if unit == "degC" else 185.0), (63, -127.0)])
    out += d.on_tick(T0 + 100)
    out += feed(d, [(101, offset + 35.0), (102, float("nan"))])
    out += d.on_tick(T0 + 200)
    return out


@pytest.mark.parametrize("unit", ["degC", "degF"])
def test_every_draft_kind_builds_a_valid_contract_event(unit: str) -> None:
    drafts = _every_kind(unit)
    assert {x.kind for x in drafts} == {"reading", "state_change", "rate_alarm", "fault",
                                        "summary"}
    for seq, draft in enumerate(drafts):
        # exactly the construction the agent does
        event = schemas.MODELS[draft.kind](
            event_id=f"evt{seq:08d}", site="lab", device_id="pi1", sensor_id=draft.sensor_id,
            seq=seq, time=datetime.fromtimestamp(draft.time, UTC), clock_synced=True,
            **draft.fields)
        assert event.kind == draft.kind and event.unit == unit
        # the agent's plain twin builds the same event, as the hub reads it
        plain = draft_to_event(draft, event_id=f"evt{seq:08d}", site="lab", device_id="pi1",
                               seq=seq, clock_synced=True)
        assert schemas.decode(plain.to_json()) == event
        assert schemas.decode(plain_runtime.encode(plain, "avro")) == event
        # and it survives both wire encodings
        for encoding in ("json", "avro"):
            assert schemas.decode(schemas.encode(event, encoding)) == event


def test_drafts_of_one_call_are_in_time_order_and_deterministic() -> None:
    first, second = _every_kind("degC"), _every_kind("degC")
    assert first == second
    assert [x.time for x in first] == sorted(x.time for x in first)


def test_decide_package_reads_no_clock_and_does_no_io() -> None:
    package = Path(__file__).resolve().parents[2] / "edge_agent" / "decide"
    forbidden = re.compile(r"\btime\.time\(|\bdatetime\.now\(|\bmonotonic\(|\bopen\(|"
                           r"^import (time|socket|threading|os)\b|^from (time|os) ", re.M)
    for source in package.glob("*.py"):
        assert not forbidden.search(source.read_text()), source.name
