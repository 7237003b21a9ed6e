"""The dashboard's pure state: what a sequence of envelopes and alerts shows."""

from __future__ import annotations

from datetime import timedelta

from hub.dashboard.state import DashboardState
from schemas.models import Alert
from tests.hub_alerting.helpers import Feed, env


def test_device_and_sensor_views() -> None:
    st = DashboardState()
    f = Feed("pi-1", "barn")
    changes = st.apply(env(f.status(True, "birth", session=3, sensors=("t1", "t2"))))
    assert [c["type"] for c in changes] == ["device", "sensor", "sensor", "event"]
    st.apply(env(f.reading("t1", 21.5)))
    st.apply(env(f.state("t1", "high", value=31.0, severity="warning")))
    st.apply(env(f.fault("t2", "disconnected", True)))
    st.apply(env(f.fault("t2", "stale", True)))
    st.apply(env(f.summary("t2", 7.0)))
    snap = st.snapshot()
    dev = snap["devices"][0]
    assert (dev["key"], dev["online"], dev["session"], dev["firmware"]) == (
        "barn/pi-1", True, 3, "fw-1.2")
    assert dev["sensors"] == ["barn/pi-1/t1", "barn/pi-1/t2"] and dev["last_seen"]
    t1, t2 = snap["sensors"]
    assert (t1["value"], t1["unit"], t1["state"], t1["severity"]) == (31.0, "degC", "high",
                                                                       "warning")
    assert t2["faults"] == ["disconnected", "stale"] and t2["stale"]
    assert t2["value"] == 7.0 and t2["summary"]["count"] == 3
    # readings and summaries are not listed as events; the rest are, newest first
    assert [e["kind"] for e in snap["events"]] == ["fault", "fault", "state_change", "status"]
    st.apply(env(f.fault("t2", "stale", False)))
    assert st.sensors["barn/pi-1/t2"]["faults"] == ["disconnected"]
    assert not st.sensors["barn/pi-1/t2"]["stale"]


def test_offline_online_and_out_of_order_status() -> None:
    st = DashboardState()
    f = Feed()
    birth = env(f.status(True, "birth", session=1))
    will = env(f.status(False, "will"))
    st.apply(will)
    st.apply(birth)  # older: must not flip the device back online
    assert st.devices["s1/d1"]["online"] is False
    st.apply(env(f.status(True, "birth", session=2)))
    assert st.devices["s1/d1"]["online"] is True


def test_redelivery_and_older_values_change_nothing() -> None:
    st = DashboardState()
    f = Feed()
    old = env(f.reading("t1", 10.0))
    new = env(f.reading("t1", 11.0))
    st.apply(new)
    version = st.version
    assert st.apply(new) == [] and st.version == version
    st.apply(old)  # out of order: listed nowhere, value kept
    assert st.sensors["s1/d1/t1"]["value"] == 11.0


def test_alerts_listed_once_and_open_alerts_tracked() -> None:
    st = DashboardState(recent_alerts=3)
    f = Feed()
    msg = f.state("t1", "high")
    firing = Alert(alert_id="a" * 32, group_key="g1", status="firing", severity="warning",
                   rule="r", site="s1", device_id="d1", sensor_id="t1", summary="hot",
                   event_id=msg.event_id, event_time=msg.time, time=msg.time)
    assert len(st.apply_alert(firing)) == 1
    assert st.apply_alert(firing) == []
    assert [a["group_key"] for a in st.snapshot()["open_alerts"]] == ["g1"]
    resolved = firing.model_copy(update={"alert_id": "b" * 32, "status": "resolved",
                                         "time": msg.time + timedelta(minutes=1)})
    st.apply_alert(resolved)
    snap = st.snapshot()
    assert snap["open_alerts"] == [] and [a["status"] for a in snap["alerts"]] == [
        "resolved", "firing"]


def test_a_will_older_than_its_sessions_birth_still_marks_the_device_offline() -> None:
    f = Feed("pi-9", "lab")
    will_made_at = f.time
    state = DashboardState()
    state.apply(env(f.status(True, "birth", session=2)))
    will = f.status(False, "will", session=2).model_copy(update={"time": will_made_at})
    state.apply(env(will))
    assert state.snapshot()["devices"][0]["online"] is False
    state.apply(env(f.status(True, "birth", session=3)))
    assert state.snapshot()["devices"][0]["online"] is True
