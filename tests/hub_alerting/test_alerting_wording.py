"""Alert summaries read as one sentence about the sensor by its name (issue 23): no site/device
path and no severity (the alert's own fields carry them), band names as people read them, the
page's number format; the names come from the device's birth and survive a restart."""

from __future__ import annotations

from datetime import timedelta

from hub.alerting.engine import AlertEngine
from schemas.models import SensorInfo, ThresholdInfo
from tests.hub_alerting.helpers import T0, Feed, env
from tests.hub_alerting.test_alerting_engine import config, run

SID = "28-0000056c3d4e"


def _birth(f: Feed, name: str = "freezer compartment") -> object:
    birth = f.status(True, "birth", sensors=(SID, "28-0000056c9f10"), names={SID: name})
    warm = ThresholdInfo(name="warm", direction="above", value=-15.0, hysteresis=1.0,
                         dwell_s=10, severity="warning")
    too_hot = ThresholdInfo(name="too_hot", direction="above", value=-5.0, hysteresis=1.0,
                            dwell_s=5, severity="critical")
    sensors = [SensorInfo(sensor_id=SID, unit="degC", source="simulator", name=name,
                          thresholds=[warm, too_hot]), birth.sensors[1]]
    return env(birth.model_copy(update={"sensors": sensors}))


def test_state_alerts_name_the_sensor_in_one_sentence() -> None:
    f = Feed("pi-freezer", "demo")
    eng = AlertEngine(config())
    run(eng, env(f.state(SID, "normal", prev="unknown", value=-18.0)), _birth(f))
    warm = f.state(SID, "warm", value=-5.06).model_copy(update={"threshold": -15.0})
    hot = f.state(SID, "too_hot", prev="warm", value=-4.0, severity="critical").model_copy(
        update={"threshold": -5.0})
    back = f.state(SID, "normal", prev="warm", value=-18.1)
    got = [n.alert.summary for n in run(eng, env(warm), env(hot), env(back))]
    assert got == ["freezer compartment is warm: -5.1 \u00b0C, above -15.0 \u00b0C",
                   "freezer compartment is too hot: -4.0 \u00b0C, above -5.0 \u00b0C (was warm)",
                   "freezer compartment is back to normal at -18.1 \u00b0C"]
    for text in got:
        assert "demo/" not in text and "pi-freezer" not in text and SID not in text
        assert "(warning)" not in text and "(critical)" not in text and "_" not in text


def test_faults_and_rates_use_the_name_and_a_sensor_without_one_its_id() -> None:
    f = Feed("pi-freezer", "demo")
    eng = AlertEngine(config())
    run(eng, _birth(f))
    got = [n.alert.summary for n in run(
        eng, env(f.fault(SID, "crc_error", True, detail="3 bad CRCs")),
        env(f.fault(SID, "crc_error", False)), env(f.rate(SID, True)),
        env(f.fault("28-0000056c9f10", "disconnected", True)))]
    assert got == ["freezer compartment has a fault (crc error): 3 bad CRCs",
                   "freezer compartment recovered from its fault (crc error)",
                   "freezer compartment changes by 3.0 \u00b0C/min, over the limit of 2.0",
                   "28-0000056c9f10 has a fault (disconnected)"]


def test_device_alerts_name_the_device_once() -> None:
    f = Feed("pi-freezer", "demo")
    eng = AlertEngine(config())
    run(eng, _birth(f))
    will = env(f.status(False, "will"), received_at=T0 + timedelta(minutes=5))
    got = [n.alert.summary for n in run(eng, will)]
    assert len(got) == 1 and got[0].startswith("pi-freezer went offline at ")
    assert "demo/" not in got[0]


def test_names_survive_a_restart_and_the_newest_birth_wins() -> None:
    f = Feed("pi-freezer", "demo")
    eng = AlertEngine(config())
    old_birth = _birth(f, name="old name")
    run(eng, _birth(f))
    run(eng, old_birth)  # an older status arriving late changes nothing
    restarted = AlertEngine(config(), eng.snapshot())
    got = run(restarted, env(f.fault(SID, "stale", True)))
    assert got[0].alert.summary == "freezer compartment has a fault (stale)"
