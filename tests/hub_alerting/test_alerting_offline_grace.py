"""A device's will: never late by age, and the ``offline_for_s`` grace (Alertmanager's ``for:``).

Pure engine tests (time is an argument), then the consumer with its real ticker thread, a real
webhook receiver and a restart on the same state directory.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from hub.alerting.consumer import AlertingConsumer
from hub.alerting.engine import AlertEngine, Notification, alert_id
from hub.config.alerting import AlertingConfig
from hub.consumers.base import Envelope
from hub.validate import is_late
from schemas.models import DeviceStatus
from tests.hub_alerting.helpers import T0, Feed, env
from tests.hub_alerting.receivers import WebhookReceiver

GRACE = 60.0


def config(offline_for_s: float = GRACE, **kw: Any) -> AlertingConfig:
    base: dict[str, Any] = {
        "notifiers": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"},
                      "log": {"type": "log"}},
        "rules": [{"name": "all", "notifiers": ["hook", "log"]}],
        "offline_for_s": offline_for_s,
    }
    base.update(kw)
    return AlertingConfig.model_validate(base)


def will_and_birth(gap_s: float, *, session: int = 1) -> tuple[Envelope, Envelope]:
    """A will received at T0 + 100 s, and the next session's birth ``gap_s`` later. The will's
    own time is when its session connected: 2 hours earlier."""
    f = Feed()
    lost = T0 + timedelta(seconds=100)
    will = f.status(False, "will", session=session).model_copy(
        update={"time": lost - timedelta(hours=2)})
    birth = f.status(True, "birth", session=session + 1).model_copy(
        update={"time": lost + timedelta(seconds=gap_s)})
    return (env(will, received_at=lost),
            env(birth, received_at=lost + timedelta(seconds=gap_s)))


def at(env_: Envelope, seconds: float) -> datetime:
    return env_.received_at + timedelta(seconds=seconds)


def statuses(notes: list[Notification]) -> list[str]:
    return [n.alert.status for n in notes]


# -- the will is live news, whatever its time ---------------------------------------------------

def test_a_will_two_hours_after_its_session_connected_is_not_late_and_pages() -> None:
    will, _ = will_and_birth(30)
    msg = will.message
    assert isinstance(msg, DeviceStatus) and msg.clock_synced
    assert (will.received_at - msg.time) == timedelta(hours=2)
    # the hub's ingest flag (regression: it was late because of its time)
    assert is_late(msg, will.received_at, 300) is False
    live = Envelope(will.offset, msg, will.topic, will.received_at,
                    late=is_late(msg, will.received_at, 300), out_of_order=False)
    got = AlertEngine(config(offline_for_s=0)).process(live, will.received_at).notifications
    assert [(n.alert.status, n.alert.late, n.notifiers) for n in got] == [
        ("firing", False, ("hook", "log"))]
    # people are told when the device was lost (received), not when its session began
    assert got[0].alert.event_time == will.received_at
    assert f"{will.received_at:%Y-%m-%d %H:%M:%S} UTC" in got[0].alert.summary
    # other statuses and events are still judged by age
    birth = msg.model_copy(update={"online": True, "reason": "birth"})
    assert is_late(birth, will.received_at, 300) is True


# -- the grace, in the pure engine -----------------------------------------------------------

def test_will_then_birth_within_the_grace_sends_nothing() -> None:
    will, birth = will_and_birth(12)
    eng = AlertEngine(config())
    first = eng.process(will, at(will, 0))
    assert first.notifications == [] and first.changed and len(eng.pending) == 1
    assert eng.next_due() == will.received_at.timestamp() + GRACE
    back = eng.process(birth, at(birth, 0))
    assert back.notifications == [] and eng.pending == {} and eng.groups == {}
    assert [(f.device_id, f.session, f.offline_s) for f in back.flaps] == [("d1", 1, 12.0)]
    assert eng.tick(at(will, 10 * GRACE)).notifications == []


def test_will_then_silence_for_longer_than_the_grace_fires_once_at_tick() -> None:
    will, _ = will_and_birth(0)
    eng = AlertEngine(config())
    assert eng.process(will, at(will, 0)).notifications == []
    assert eng.tick(at(will, GRACE - 1)).notifications == []
    fired = eng.tick(at(will, GRACE + 2)).notifications
    assert [(n.alert.status, n.alert.late, n.notifiers) for n in fired] == [
        ("firing", False, ("hook", "log"))]
    alert = fired[0].alert
    # the id is the one an immediate firing makes: same inputs, same id
    immediate = AlertEngine(config(offline_for_s=0)).process(will, at(will, 0))
    assert alert.alert_id == immediate.notifications[0].alert.alert_id
    assert alert.alert_id == alert_id(alert.group_key, "firing", will.message.event_id)
    assert alert.event_time == will.received_at and alert.time == at(will, GRACE + 2)
    assert "not back within 60 s" in alert.summary and alert.sensor_id is None
    assert eng.pending == {} and list(eng.groups) == [alert.group_key]
    assert eng.tick(at(will, GRACE + 30)).notifications == []  # once


def test_will_grace_expires_then_birth_fires_then_resolves() -> None:
    will, birth = will_and_birth(GRACE + 40)
    eng = AlertEngine(config())
    eng.process(will, at(will, 0))
    assert statuses(eng.tick(at(will, GRACE)).notifications) == ["firing"]
    back = eng.process(birth, at(birth, 0))
    assert statuses(back.notifications) == ["resolved"] and back.flaps == []
    assert back.notifications[0].notifiers == ("hook", "log") and eng.groups == {}


def test_birth_after_the_grace_with_no_tick_between_fires_and_resolves() -> None:
    # e.g. both in one batch of a backlog: by their received times the device was gone too long
    will, birth = will_and_birth(GRACE + 5)
    eng = AlertEngine(config())
    eng.process(will, at(birth, 1))
    back = eng.process(birth, at(birth, 1))
    assert statuses(back.notifications) == ["firing", "resolved"] and eng.pending == {}
    # the same firing id as if a tick had fired it
    ticked = AlertEngine(config())
    ticked.process(will, at(will, 0))
    assert [n.alert.alert_id for n in ticked.tick(at(will, GRACE)).notifications] == [
        back.notifications[0].alert.alert_id]


def test_a_birth_the_broker_kept_while_the_hub_was_away_is_a_flap() -> None:
    """Regression (CI, the chaos test): a broker stop publishes the wills, the hub gets them and
    loses its connection; the device is back 4 s later, but the hub reconnects only 17 s later
    and receives the birth then. Only the time the hub could hear counts against the grace."""
    will, _ = will_and_birth(0)
    _, birth = will_and_birth(GRACE + 17)
    eng = AlertEngine(config())
    eng.process(will, at(will, 0))
    eng.deaf(at(will, 1).timestamp())
    # the grace runs out while the hub cannot hear: nothing fires, nothing is due
    assert eng.tick(at(will, GRACE + 5)).notifications == [] and len(eng.pending) == 1
    assert eng.next_due() is None
    eng.heard_again(at(will, GRACE + 16).timestamp())
    assert eng.next_due() == at(will, GRACE + GRACE + 15).timestamp()
    back = eng.process(birth, at(birth, 0))
    assert back.notifications == [] and eng.pending == {} and eng.groups == {}
    assert [f.offline_s for f in back.flaps] == [GRACE + 17]


def test_a_device_that_stays_away_pages_once_the_hub_heard_for_the_rest_of_the_grace() -> None:
    will, _ = will_and_birth(0)
    eng = AlertEngine(config())
    eng.process(will, at(will, 0))
    eng.deaf(at(will, 10).timestamp())
    eng.heard_again(at(will, 30).timestamp())  # 20 s away: the grace ends 20 s later
    assert eng.tick(at(will, GRACE + 19)).notifications == []
    assert statuses(eng.tick(at(will, GRACE + 21)).notifications) == ["firing"]
    assert eng.pending == {}


def test_a_grace_that_ran_out_before_the_hub_went_deaf_fires_while_it_is_deaf() -> None:
    will, _ = will_and_birth(0)
    eng = AlertEngine(config())
    eng.process(will, at(will, 0))
    eng.deaf(at(will, GRACE + 1).timestamp())  # heard for the whole grace: nothing came
    assert eng.next_due() == at(will, GRACE).timestamp()
    assert statuses(eng.tick(at(will, GRACE + 2)).notifications) == ["firing"]


def test_the_consumer_applies_the_hubs_hearing_before_each_batch(tmp_path: Path) -> None:
    will, _ = will_and_birth(0)
    _, birth = will_and_birth(GRACE + 17)
    clock = [at(will, 0)]
    consumer = AlertingConsumer(config(), state_dir=tmp_path, clock=lambda: clock[0],
                                start=False)
    try:
        consumer.handle([will])
        consumer.broker_lost(at(will, 1).timestamp())
        clock[0] = at(will, GRACE + 5)
        consumer.tick()
        assert not consumer.store.pending() and consumer.engine.pending
        consumer.broker_heard(at(will, GRACE + 16).timestamp())
        clock[0] = at(birth, 0)
        consumer.handle([birth])
        assert consumer.engine.pending == {} and consumer.engine.groups == {}
        assert not consumer.store.pending()  # no notification was queued
    finally:
        consumer.close()


def test_a_grace_is_not_judged_past_what_alerting_has_handled() -> None:
    """The birth came 10 s before the grace ran out, but alerting has not handled it yet (its
    backlog): the tick must not page for it; once it is handled, it is a flap."""
    will, _ = will_and_birth(0)
    _, birth = will_and_birth(GRACE - 10)
    eng = AlertEngine(config())
    eng.process(will, at(will, 0))
    unhandled_since = birth.received_at.timestamp()
    assert eng.tick(at(will, GRACE + 5), unhandled_since).notifications == []
    assert len(eng.pending) == 1
    back = eng.process(birth, at(will, GRACE + 6))
    assert back.notifications == [] and eng.pending == {} and eng.groups == {}
    # a grace that ran out before the first unhandled event was received fires as before
    will2, _ = will_and_birth(0, session=5)
    eng2 = AlertEngine(config())
    eng2.process(will2, at(will2, 0))
    later = at(will2, GRACE + 1).timestamp()
    assert statuses(eng2.tick(at(will2, GRACE + 2), later).notifications) == ["firing"]


def test_the_consumer_judges_no_grace_past_its_own_backlog(tmp_path: Path) -> None:
    will, _ = will_and_birth(0)
    _, birth = will_and_birth(GRACE - 10)
    clock = [at(will, 0)]
    backlog: list[Envelope] = []
    consumer = AlertingConsumer(config(), state_dir=tmp_path, clock=lambda: clock[0],
                                start=False)
    consumer.watch_backlog(lambda: backlog[0].received_at if backlog else None)
    try:
        consumer.handle([will])
        backlog.append(birth)  # recorded by ingest in time, not handled yet
        clock[0] = at(will, GRACE + 5)
        consumer.tick()
        assert consumer.engine.pending and not consumer.store.pending()
        consumer.handle([backlog.pop()])
        consumer.tick()
        assert consumer.engine.pending == {} and consumer.engine.groups == {}
        assert not consumer.store.pending()  # no notification was queued
    finally:
        consumer.close()


def test_a_restart_in_the_grace_fires_exactly_once() -> None:
    will, _ = will_and_birth(0)
    eng = AlertEngine(config())
    eng.process(will, at(will, 0))
    saved = json.loads(json.dumps(eng.snapshot()))
    # the hub restarts; the dispatcher redelivers the will's batch too
    restored = AlertEngine(config(), saved)
    assert restored.next_due() == eng.next_due()
    again = restored.process(will, at(will, 20))
    assert again.redelivered == 1 and again.notifications == []
    fired = restored.tick(at(will, GRACE + 1)).notifications
    assert statuses(fired) == ["firing"]
    after = AlertEngine(config(), json.loads(json.dumps(restored.snapshot())))
    assert after.tick(at(will, GRACE + 5)).notifications == []
    # a crash before the will's batch was saved: it is decided again, with the same deadline
    replay = AlertEngine(config())
    replay.process(will, at(will, 30))
    assert [n.alert.alert_id for n in replay.tick(at(will, GRACE)).notifications] == [
        fired[0].alert.alert_id]


def test_a_state_of_version_1_loads_with_nothing_pending() -> None:
    f = Feed()
    eng = AlertEngine(config(offline_for_s=0))
    eng.process(env(f.fault("t1", "disconnected", True)), T0)
    old = {k: v for k, v in eng.snapshot().items() if k != "pending"} | {"version": 1}
    restored = AlertEngine(config(), json.loads(json.dumps(old)))
    assert restored.pending == {} and restored.groups.keys() == eng.groups.keys()


def test_zero_grace_fires_at_once_as_before() -> None:
    will, birth = will_and_birth(1)
    eng = AlertEngine(config(offline_for_s=0))
    assert statuses(eng.process(will, at(will, 0)).notifications) == ["firing"]
    assert eng.pending == {} and eng.next_due() is None
    assert statuses(eng.process(birth, at(birth, 0)).notifications) == ["resolved"]


def test_a_will_older_than_a_birth_already_seen_is_a_flap() -> None:
    # the next session's birth reached the hub before the old session's will
    will, birth = will_and_birth(3)
    eng = AlertEngine(config())
    assert eng.process(birth, at(birth, 0)).notifications == []
    late_will = eng.process(will, at(birth, 1))
    assert late_will.notifications == [] and late_will.out_of_order == 1
    assert [(f.will_event_id, f.back_event_id) for f in late_will.flaps] == [
        (will.message.event_id, None)]
    assert eng.pending == {} and eng.groups == {}


def test_a_flapping_device_pages_only_when_it_stays_away() -> None:
    f = Feed()
    eng = AlertEngine(config())
    base = T0 + timedelta(seconds=100)
    sent: list[Notification] = []
    flaps = 0
    for session in range(1, 6):  # connection lost and back 5 s later, five times
        received = base + timedelta(seconds=30 * session)
        for e in (env(f.status(False, "will", session=session), received_at=received),
                  env(f.status(True, "birth", session=session + 1),
                      received_at=received + timedelta(seconds=5))):
            out = eng.process(e, e.received_at)
            sent += out.notifications
            flaps += len(out.flaps)
        sent += eng.tick(received + timedelta(seconds=10)).notifications
    assert sent == [] and flaps == 5
    last = env(f.status(False, "will", session=6), received_at=base + timedelta(seconds=300))
    eng.process(last, last.received_at)
    assert statuses(eng.tick(at(last, GRACE)).notifications) == ["firing"]


def test_a_silenced_offline_fires_nothing_and_resolves_nothing() -> None:
    will, birth = will_and_birth(GRACE + 40)
    cfg = config(silences=[{"match": {"device": "d1"},
                            "until": (T0 + timedelta(days=1)).isoformat()}])
    eng = AlertEngine(cfg)
    eng.process(will, at(will, 0))
    out = eng.tick(at(will, GRACE))
    assert out.notifications == [] and len(out.silenced) == 1
    assert eng.process(birth, at(birth, 0)).notifications == [] and eng.groups == {}


# -- the consumer: its ticker fires on time, and a restart in the grace ------------------------

def _consumer_config(url: str, grace: float) -> AlertingConfig:
    return AlertingConfig.model_validate({
        "notifiers": {"hook": {"type": "webhook", "url": url}},
        "rules": [{"name": "all", "notifiers": ["hook"]}],
        "offline_for_s": grace,
        "tick_interval_s": 3600,  # the offline deadline must not wait for the periodic tick
    })


def _live_will(session: int = 1, received: datetime | None = None) -> Envelope:
    received = received or datetime.now(UTC)
    will = Feed().status(False, "will", session=session).model_copy(
        update={"time": received - timedelta(hours=2)})
    return env(will, received_at=received, late=is_late(will, received, 300))


def test_consumer_pages_a_lost_device_after_the_grace_without_new_events(
        tmp_path: Path) -> None:
    rx = WebhookReceiver()
    consumer = AlertingConsumer(_consumer_config(rx.url, 1.0), state_dir=tmp_path)
    try:
        will = _live_will()
        consumer.handle([will])
        assert consumer.stats()["offline_pending"] == 1
        time.sleep(0.5)  # inside the grace: nothing may arrive yet
        assert rx.requests == []
        got = rx.wait_acked(1, timeout=10)
        waited = (datetime.now(UTC) - will.received_at).total_seconds()
        assert 1.0 <= waited < 5.0, waited
        body = got[0].body
        assert (body["status"], body["late"], body["event_id"]) == (
            "firing", False, will.message.event_id)
        assert datetime.fromisoformat(body["event_time"]) == will.received_at
        assert consumer.stats()["offline_pending"] == 0
    finally:
        consumer.close()
        rx.stop()


def test_consumer_flap_is_counted_and_restart_in_the_grace_pages_once(
        tmp_path: Path) -> None:
    rx = WebhookReceiver()
    cfg = _consumer_config(rx.url, 1.5)
    consumer = AlertingConsumer(cfg, state_dir=tmp_path)
    try:
        now = datetime.now(UTC)
        f = Feed("flappy")
        with capture_logs() as logs:
            consumer.handle([env(f.status(False, "will", session=1), received_at=now),
                             env(f.status(True, "birth", session=2),
                                 received_at=now + timedelta(seconds=0.2))])
        assert consumer.stats()["offline_flaps_suppressed"] == 1
        flaps = [e for e in logs if e["event"] == "alerting.offline_flap_suppressed"]
        assert [(e["log_level"], e["device"], e["offline_s"]) for e in flaps] == [
            ("info", "flappy", 0.2)]
        will = _live_will()
        consumer.handle([will])
    finally:
        consumer.close()  # the hub stops inside the grace
    again = AlertingConsumer(cfg, state_dir=tmp_path)
    try:
        again.handle([will])  # redelivered after the restart
        assert again.stats()["offline_pending"] == 1
        acked = rx.wait_acked(1, timeout=10)
        assert again.wait_delivered(10)
        time.sleep(0.5)  # a duplicate would have time to show up
        assert [(r.body["device_id"], r.body["status"]) for r in rx.requests] == [
            ("d1", "firing")]
        assert acked[0].key == acked[0].body["alert_id"]
    finally:
        again.close()
        rx.stop()
