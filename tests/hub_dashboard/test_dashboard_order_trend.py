"""The sensor row never goes backwards, says when the band lags the value, and keeps a bounded
trend for its chart (issue 23)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hub.dashboard.state import DashboardState, leaving
from hub.dashboard.trend import Trend
from schemas.models import SensorInfo, ThresholdInfo
from tests.hub_alerting.helpers import Feed, env

SID = "28-0000056c3d4e"
KEY = f"demo/pi-freezer/{SID}"
WARM = ThresholdInfo(name="warm", direction="above", value=-15.0, hysteresis=1.0, dwell_s=10,
                     severity="warning")
THAWING = ThresholdInfo(name="thawing", direction="above", value=-5.0, hysteresis=1.0,
                        dwell_s=5, severity="critical")


def birth(f: Feed) -> Any:
    msg = f.status(True, "birth", sensors=(SID,), names={SID: "freezer compartment"})
    info = SensorInfo(sensor_id=SID, unit="degC", source="simulator",
                      name="freezer compartment", thresholds=[WARM, THAWING])
    return env(msg.model_copy(update={"sensors": [info]}))


def test_a_late_band_change_is_not_lost_behind_a_newer_reading() -> None:
    """Before: one ``seq`` for the whole row, so a state change that arrived after a newer
    reading (out of order) was dropped, and the row kept the old band next to the new value."""
    st = DashboardState()
    f = Feed("pi-freezer", "demo")
    st.apply(birth(f))
    st.apply(env(f.reading(SID, -18.0)))
    warm = f.state(SID, "warm", value=-14.0)
    newer = f.reading(SID, -13.5)
    st.apply(env(newer))
    st.apply(env(warm, out_of_order=True))
    row = st.sensors[KEY]
    assert (row["value"], row["state"]) == (-13.5, "warm")  # the band came; the value held


def test_nothing_moves_back_for_a_late_event() -> None:
    st = DashboardState()
    f = Feed("pi-freezer", "demo")
    st.apply(birth(f))
    old_band = f.state(SID, "thawing", prev="warm", value=-4.0, severity="critical")
    old_reading = f.reading(SID, -4.0)
    st.apply_batch([env(f.state(SID, "normal", prev="thawing", value=-18.1)),
                    env(f.reading(SID, -18.1))])
    st.apply_batch([env(old_band, out_of_order=True), env(old_reading, out_of_order=True)])
    row = st.sensors[KEY]
    assert (row["value"], row["state"], row["leaving"]) == (-18.1, "normal", None)
    # ... but the late values are drawn where they happened
    points = st.snapshot()["trends"][KEY]["points"]
    assert [p[1] for p in points] == [-18.1]  # one 10 s bucket: it keeps its newest value


def test_a_late_reading_still_shows_when_nothing_newer_set_the_value() -> None:
    st = DashboardState()
    f = Feed("pi-freezer", "demo")
    st.apply(env(f.reading(SID, -18.0)))
    reading = f.reading(SID, -17.0)
    st.apply(env(f.fault(SID, "crc_error", True)))
    st.apply(env(reading, out_of_order=True))
    assert st.sensors[KEY]["value"] == -17.0


def test_the_row_says_when_the_value_already_left_the_band() -> None:
    """After the scenario loops, -18.1 arrives while the agent still holds ``thawing`` for its
    dwell: the row says the band is being left, instead of a bare critical ``thawing``."""
    st = DashboardState()
    f = Feed("pi-freezer", "demo")
    st.apply(birth(f))
    st.apply(env(f.state(SID, "thawing", prev="warm", value=3.9, severity="critical")))
    assert st.sensors[KEY]["leaving"] is None
    st.apply(env(f.reading(SID, -5.5)))  # inside the hysteresis: still thawing
    assert st.sensors[KEY]["leaving"] is None
    st.apply(env(f.reading(SID, -18.1)))
    assert st.sensors[KEY]["leaving"] == {"band": "thawing", "dwell_s": 5.0}
    st.apply(env(f.state(SID, "normal", prev="thawing", value=-18.0)))
    assert st.sensors[KEY]["leaving"] is None
    assert leaving("warm", -20.0, []) is None  # no birth yet: no claim


def test_stale_row_knows_since_when() -> None:
    st = DashboardState()
    f = Feed("pi-freezer", "demo")
    st.apply(env(f.reading(SID, -18.0)))
    stale = f.fault(SID, "stale", True)
    st.apply(env(stale))
    st.apply(env(f.fault(SID, "stale", True)))  # a repeat keeps the first time
    row = st.sensors[KEY]
    assert row["stale"] and row["fault_since"] == {"stale": stale.time.isoformat().replace(
        "+00:00", "Z")}
    assert row["fault_names"] == {"stale": "no fresh reading"}
    assert row["value_time"] < row["fault_since"]["stale"]


def test_the_ring_is_bounded_in_samples_and_memory() -> None:
    trend = Trend(points=30, step_s=10.0)
    for i in range(1000):
        trend.add(1_000_000.0 + i * 10, float(i))
    assert len(trend) == 30 and trend.capacity == 30
    assert trend._times.buffer_info()[1] == 30 and trend._values.buffer_info()[1] == 30
    assert trend._times.itemsize + trend._values.itemsize == 12  # bytes a point, fixed
    pts = trend.points()
    assert [p[1] for p in pts] == [float(i) for i in range(970, 1000)]
    trend.add(1_000_000.0 + 999 * 10 + 3, 5.0)  # same bucket: replaces, does not append
    assert len(trend) == 30 and trend.points()[-1][1] == 5.0
    trend.add(1_000_000.0, float("nan"))  # never a point
    assert len(trend) == 30
    for i in range(100):
        trend.fault(float(i), "crc_error", i % 2 == 0)
    assert len(trend.faults) == 16


def test_the_state_keeps_one_bounded_ring_per_sensor_and_sends_it_in_the_snapshot() -> None:
    st = DashboardState(trend_window_s=600, trend_points=60)
    f = Feed("pi-freezer", "demo")
    st.apply(birth(f))
    batch = []
    for i in range(500):
        msg = f.reading(SID, -18.0 + i * 0.01)
        batch.append(env(msg.model_copy(update={"time": msg.time + timedelta(seconds=i * 9)})))
    st.apply_batch(batch)  # one batch: every reading is charted, not only the newest
    st.apply(env(f.fault(SID, "disconnected", True)))
    trend = st.snapshot()["trends"][KEY]
    assert len(trend["points"]) == 60 and trend["step_s"] == 10.0
    assert trend["faults"][0][1] is None and trend["faults"][0][2] == "disconnected"
    assert st.snapshot()["trend_window_s"] == 600
