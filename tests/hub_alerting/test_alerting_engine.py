"""The pure engine: what fires, resolves, is deduplicated, silenced, late; no I/O, no clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.alerting.engine import NO_SIGNAL_TYPES, AlertEngine, Notification, signal_for
from hub.config.alerting import AlertingConfig
from tests.contract.test_contract_models import model_strategy
from tests.hub_alerting.helpers import T0, Feed, env

NOW = T0 + timedelta(seconds=30)


def config(**kw: object) -> AlertingConfig:
    base: dict[str, object] = {
        "notifiers": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"},
                      "log": {"type": "log"}},
        "rules": [{"name": "all", "match": {"severity_at_least": "warning"},
                   "notifiers": ["hook", "log"]}],
        "repeat_interval_s": 3600,
        # offline fires at once here: these tests are about everything else; the
        # offline_for_s grace has its own tests (test_alerting_offline_grace.py)
        "offline_for_s": 0,
    }
    base.update(kw)
    return AlertingConfig.model_validate(base)


def run(engine: AlertEngine, *envs: object, now: datetime = NOW) -> list[Notification]:
    out: list[Notification] = []
    for e in envs:
        out += engine.process(e, now).notifications  # type: ignore[arg-type]
    return out


def test_default_config_logs_warnings() -> None:
    cfg = AlertingConfig()
    assert list(cfg.notifiers) == ["log"]
    f = Feed()
    got = run(AlertEngine(cfg), env(f.state("t1", "high")))
    assert [(n.alert.status, n.notifiers) for n in got] == [("firing", ("log",))]


def test_fire_then_resolve_once_with_deterministic_ids() -> None:
    f = Feed()
    eng = AlertEngine(config())
    high = env(f.state("t1", "high", value=31.5))
    normal = env(f.state("t1", "normal", prev="high", value=22.0))
    fired = run(eng, high)
    assert len(fired) == 1
    alert = fired[0].alert
    assert (alert.status, alert.severity, alert.sensor_id, alert.late) == (
        "firing", "warning", "t1", False)
    assert "high" in alert.summary and "31.5" in alert.summary
    assert fired[0].notifiers == ("hook", "log")
    resolved = run(eng, normal)
    assert [n.alert.status for n in resolved] == ["resolved"]
    assert resolved[0].alert.group_key == alert.group_key
    assert resolved[0].notifiers == ("hook", "log")
    assert run(eng, env(f.state("t1", "normal", prev="normal"))) == []
    # the same envelopes on a fresh engine give the same ids
    again = AlertEngine(config())
    assert [n.alert.alert_id for n in run(again, high, normal)] == [
        alert.alert_id, resolved[0].alert.alert_id]


def test_unknown_to_normal_is_not_an_alert_and_info_bands_do_not_page() -> None:
    f = Feed()
    eng = AlertEngine(config())
    assert run(eng, env(f.state("t1", "normal", prev="unknown"))) == []
    assert run(eng, env(f.state("t1", "unknown", prev="normal"))) == []
    assert run(eng, env(f.state("t1", "cool", severity="info"))) == []
    assert run(eng, env(f.reading("t1", 40.0)), env(f.summary("t1", 40.0))) == []


def test_dedupe_within_repeat_interval_and_escalation() -> None:
    f = Feed()
    eng = AlertEngine(config())
    assert len(run(eng, env(f.state("t1", "high")))) == 1
    out = eng.process(env(f.fault("t1", "implausible_jump", True)), NOW)
    assert out.notifications == [] and out.deduplicated == 1
    # higher severity: notified at once
    esc = run(eng, env(f.state("t1", "very_high", prev="high", severity="critical")))
    assert [n.alert.severity for n in esc] == ["critical"]
    # after the repeat interval, a new firing event notifies again
    later = NOW + timedelta(hours=2)
    rep = run(eng, env(f.fault("t1", "crc_error", True)), now=later)
    assert len(rep) == 1 and rep[0].alert.status == "firing"
    # the group resolves only when every member is clear
    assert run(eng, env(f.state("t1", "normal", prev="very_high"))) == []
    assert run(eng, env(f.fault("t1", "implausible_jump", False))) == []
    res = run(eng, env(f.fault("t1", "crc_error", False)))
    assert [n.alert.status for n in res] == ["resolved"]


def test_tick_repeats_and_ids_are_distinct() -> None:
    f = Feed()
    eng = AlertEngine(config())
    first = run(eng, env(f.fault("t1", "disconnected", True)))
    assert eng.tick(NOW + timedelta(minutes=59)).notifications == []
    rep1 = eng.tick(NOW + timedelta(minutes=61)).notifications
    rep2 = eng.tick(NOW + timedelta(minutes=122)).notifications
    ids = {first[0].alert.alert_id, rep1[0].alert.alert_id, rep2[0].alert.alert_id}
    assert len(ids) == 3


def test_fault_rate_offline_and_birth() -> None:
    f = Feed()
    eng = AlertEngine(config(offline_severity="critical"))
    assert len(run(eng, env(f.rate("t1", True)))) == 1
    assert [n.alert.status for n in run(eng, env(f.rate("t1", False)))] == ["resolved"]
    assert len(run(eng, env(f.fault("t1", "stale", True)))) == 1
    off = run(eng, env(f.status(False, "will")))
    assert len(off) == 1 and off[0].alert.sensor_id is None
    assert off[0].alert.severity == "critical" and "offline" in off[0].alert.summary
    assert run(eng, env(f.status(False, "shutdown"))) == []
    back = run(eng, env(f.status(True, "birth", session=2)))
    assert [n.alert.status for n in back] == ["resolved"]


def test_late_alert_goes_only_to_late_notifiers() -> None:
    f = Feed()
    eng = AlertEngine(config())
    # replayed by the agent
    got = run(eng, env(f.state("t1", "high", replayed=True)))
    assert got[0].alert.late and got[0].notifiers == ("log",)
    # a live event for the same group must now page (the pager never heard of it)
    live = run(eng, env(f.fault("t1", "crc_error", True)))
    assert live[0].notifiers == ("hook", "log") and not live[0].alert.late
    # old when received (clock synced): late; the envelope's own flag: late
    f2 = Feed("d2")
    old = f2.fault("t1", "disconnected", True)
    got = run(eng, env(old, received_at=old.time + timedelta(minutes=10)))
    assert got[0].alert.late and got[0].notifiers == ("log",)
    f3 = Feed("d3")
    assert run(eng, env(f3.fault("t1", "disconnected", True), late=True))[0].alert.late
    # an unsynchronised clock's age means nothing: not late
    f4 = Feed("d4")
    unsynced = f4.fault("t1", "disconnected", True).model_copy(update={"clock_synced": False})
    got = run(eng, env(unsynced, received_at=unsynced.time + timedelta(hours=3)))
    assert not got[0].alert.late


def test_out_of_order_never_reopens_a_resolved_alert() -> None:
    f = Feed()
    eng = AlertEngine(config())
    high = env(f.state("t1", "high"))
    normal = env(f.state("t1", "normal", prev="high"))
    assert [n.alert.status for n in run(eng, normal)] == []  # nothing open yet
    out = eng.process(high, NOW)
    assert out.out_of_order == 1
    # reported as late, to the late notifiers only; nothing left open
    assert [(n.alert.late, n.notifiers) for n in out.notifications] == [(True, ("log",))]
    assert eng.groups == {}
    # and an older recovery does not resolve a newer firing
    g = Feed("d9")
    old_ok = env(g.fault("t1", "disconnected", False))
    bad = env(g.fault("t1", "disconnected", True))
    run(eng, bad)
    assert run(eng, old_ok) == [] and len(eng.groups) == 1


def test_redelivered_envelope_decides_nothing() -> None:
    f = Feed()
    eng = AlertEngine(config())
    batch = [env(f.state("t1", "high")), env(f.fault("t1", "crc_error", True)),
             env(f.state("t1", "normal", prev="high"))]
    first = run(eng, *batch)
    again = [eng.process(e, NOW) for e in batch]
    assert all(o.notifications == [] and o.redelivered == 1 for o in again)
    assert len(first) == 1


def test_silence_suppresses_until_expiry_then_tick_notifies() -> None:
    until = NOW + timedelta(minutes=10)
    cfg = config(silences=[{"match": {"device": "d1"}, "until": until.isoformat(),
                            "comment": "maintenance"}])
    f = Feed()
    eng = AlertEngine(cfg)
    out = eng.process(env(f.state("t1", "high")), NOW)
    assert out.notifications == [] and len(out.silenced) == 1
    assert eng.tick(NOW + timedelta(minutes=5)).notifications == []
    after = eng.tick(until + timedelta(seconds=1)).notifications
    assert [n.alert.status for n in after] == ["firing"] and after[0].notifiers == ("hook", "log")
    # other devices are not silenced
    assert len(run(eng, env(Feed("d2").state("t1", "high")))) == 1


def test_resolve_of_a_silenced_group_sends_nothing() -> None:
    cfg = config(silences=[{"match": {"sensor": "t*"},
                            "until": (NOW + timedelta(days=1)).isoformat()}])
    f = Feed()
    eng = AlertEngine(cfg)
    run(eng, env(f.state("t1", "high")))
    assert run(eng, env(f.state("t1", "normal", prev="high"))) == []


def test_rules_match_globs_and_group_by() -> None:
    cfg = config(rules=[
        {"name": "freezers", "match": {"site": "s*", "sensor": "frz*", "kind": "state_change",
                                       "severity_at_least": "critical"}, "notifiers": ["hook"]},
        {"name": "site-wide", "match": {"device": "d?"}, "notifiers": ["log"],
         "group_by": ["site"]},
    ])
    f = Feed()
    eng = AlertEngine(cfg)
    got = run(eng, env(f.state("frz1", "very_high", severity="critical")))
    assert sorted(n.alert.rule for n in got) == ["freezers", "site-wide"]
    # site-wide groups by site: a second sensor adds to the open group, no new notification
    got = run(eng, env(f.fault("t2", "disconnected", True)))
    assert got == []
    got = run(eng, env(Feed("d2").state("t5", "high")))
    assert got == []
    # warning on a freezer: freezer rule wants critical
    g = Feed("d3")
    got = run(eng, env(g.state("frz2", "high", severity="warning")))
    assert [n.alert.rule for n in got] == []  # site-wide already firing for s1


def test_state_survives_a_snapshot_roundtrip() -> None:
    import json

    f = Feed()
    eng = AlertEngine(config())
    high = env(f.state("t1", "high"))
    run(eng, high)
    restored = AlertEngine(config(), json.loads(json.dumps(eng.snapshot())))
    assert restored.process(high, NOW).redelivered == 1
    res = run(restored, env(f.state("t1", "normal", prev="high")))
    assert [n.alert.status for n in res] == ["resolved"]


def test_config_errors_name_the_problem() -> None:
    from program_support.pydantic_loading import parse_config
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config({"rules": [{"name": "r", "notifiers": ["nope"]}]}, AlertingConfig, "hub.toml")
    assert "unknown notifier 'nope'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"notifiers": {"m": {"type": "email", "host": "h", "from": "a@b",
                                          "to": ["c@d"], "username": "u",
                                          "password": "inline"}}},
                     AlertingConfig, "hub.toml")
    assert "notifiers.m" in str(info.value) and "env:VARIABLE" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"silences": [{"until": "2026-01-01T00:00:00"}]}, AlertingConfig, "x")
    assert "silences[0].until" in str(info.value)


# -- properties ----------------------------------------------------------------------------------

def _scenario_events() -> list[object]:
    f, g = Feed("d1"), Feed("d2")
    return [env(f.state("t1", "high")), env(f.fault("t1", "crc_error", True)),
            env(g.status(False, "will")), env(f.state("t1", "very_high", prev="high",
                                                      severity="critical")),
            env(f.rate("t2", True)), env(f.state("t1", "normal", prev="very_high")),
            env(g.status(True, "birth", session=2)), env(f.fault("t1", "crc_error", False)),
            env(f.rate("t2", False)), env(f.state("t1", "high", replayed=True)),
            env(g.fault("t3", "stale", True)), env(f.state("t1", "normal", prev="high"))]


EVENTS = _scenario_events()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(EVENTS) - 1), st.integers(1, 4)), max_size=25),
       st.integers(0, 3), st.sampled_from([0, 60]))
def test_any_redelivery_interleaving_never_repeats_an_id(
        spans: list[tuple[int, int]], snapshot_every: int, offline_for_s: int) -> None:
    """Deliver the stream as batches that may be redelivered from any earlier point (as after a
    crash), sometimes from a restored snapshot, with and without an offline grace (then d2's
    will and birth, 1 s apart, are a flap): no alert id is ever notified twice, and every
    resolved notification follows a firing of its group."""
    import json

    cfg = config(offline_for_s=offline_for_s)
    eng = AlertEngine(cfg)
    sent: list[Notification] = []
    pos = 0
    for steps, (wanted, length) in enumerate([*spans, (len(EVENTS), 0)], start=1):
        # the dispatcher only redelivers from at most where it is now, then moves forward
        start = min(wanted, pos)
        end = max(pos, min(len(EVENTS), start + length)) if length else len(EVENTS)
        for e in EVENTS[start:end]:
            sent += eng.process(e, NOW).notifications  # type: ignore[arg-type]
        pos = max(pos, end)
        if snapshot_every and steps % snapshot_every == 0:
            eng = AlertEngine(cfg, json.loads(json.dumps(eng.snapshot())))
    ids = [n.alert.alert_id for n in sent]
    assert len(ids) == len(set(ids))
    firing_groups: set[str] = set()
    for n in sent:
        if n.alert.status == "firing":
            firing_groups.add(n.alert.group_key)
        else:
            assert n.alert.group_key in firing_groups
    # d2's will: paged at once without a grace; with one, the birth 1 s later cancels it
    assert any("went offline" in n.alert.summary for n in sent) == (offline_for_s == 0)
    assert not eng.pending
    reference = AlertEngine(cfg)
    for e in EVENTS:
        reference.process(e, NOW)  # type: ignore[arg-type]
    assert eng.groups.keys() == reference.groups.keys() == {
        "rule=all,site=s1,device=d2,sensor=t3"}


def test_property_reference_run_matches_expectations() -> None:
    eng = AlertEngine(config())
    got = [(n.alert.status, n.alert.device_id, n.alert.late) for e in EVENTS
           for n in eng.process(e, NOW).notifications]  # type: ignore[arg-type]
    assert got == [
        ("firing", "d1", False),     # high
        ("firing", "d2", False),     # offline
        ("firing", "d1", False),     # escalation to critical
        ("firing", "d1", False),     # rate on t2
        ("resolved", "d2", False),   # birth
        ("resolved", "d1", False),   # t1 all clear
        ("resolved", "d1", False),   # rate clear
        ("firing", "d1", True),      # replayed high: late, log only
        ("firing", "d2", False),     # stale fault
        ("resolved", "d1", False),   # late group resolved, to log only
    ]


def test_a_will_is_newer_than_the_birth_of_its_own_session_whatever_its_time() -> None:
    # The agent sets its will when the session connects, so the will's time is *older* than the
    # birth of that same session; the device's death must still fire, live, and the next
    # session's birth must resolve it (regression: the will was ranked out of order).
    f = Feed()
    will_made_at = f.time
    birth = f.status(True, "birth", session=3)
    will = f.status(False, "will", session=3).model_copy(update={"time": will_made_at})
    eng = AlertEngine(config())
    assert run(eng, env(birth)) == []
    off = run(eng, env(will))
    assert [(n.alert.status, n.alert.late) for n in off] == [("firing", False)]
    back = run(eng, env(f.status(True, "birth", session=4)))
    assert {n.alert.status for n in back} == {"resolved"}


@pytest.mark.parametrize("kind", sorted(t.__name__ for t in NO_SIGNAL_TYPES))
def test_the_kinds_the_consumer_skips_never_decide_anything(kind: str) -> None:
    """The consumer skips NO_SIGNAL_TYPES without calling the engine: for them the engine
    returns nothing and changes nothing, whatever the message and the state."""
    model = next(t for t in NO_SIGNAL_TYPES if t.__name__ == kind)

    @settings(max_examples=100, deadline=None)
    @given(model_strategy(model), st.sampled_from(["warning", "critical"]))
    def silent(message: Any, severity: Any) -> None:
        eng = AlertEngine(config())
        before = eng.snapshot()
        assert signal_for(env(message), severity) is None
        out = eng.process(env(message), T0)
        assert not out.changed and not out.notifications and eng.snapshot() == before

    silent()
