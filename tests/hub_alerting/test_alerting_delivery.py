"""The consumer against real receivers: an HTTP webhook server, aiosmtpd (STARTTLS + AUTH), a
private Mosquitto; slow and failing receivers; restarts on the same state directory."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from hub.alerting.consumer import AlertingConsumer
from hub.config.alerting import AlertingConfig
from schemas.codec import decode
from schemas.models import Alert
from tests.hub_alerting.helpers import Feed, env
from tests.hub_alerting.receivers import SmtpReceiver, WebhookReceiver


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    rx = WebhookReceiver()
    yield rx
    rx.stop()


def make_config(**notifiers: dict[str, Any]) -> AlertingConfig:
    notifiers.setdefault("log", {"type": "log"})
    return AlertingConfig.model_validate({
        "notifiers": notifiers,
        "rules": [{"name": "all", "match": {"severity_at_least": "warning"},
                   "notifiers": list(notifiers)}],
        "tick_interval_s": 3600,
        "offline_for_s": 0,  # the grace is tested in test_alerting_offline_grace.py
    })


def batch_fire_resolve() -> list[Any]:
    f = Feed()
    return [env(f.reading("t1", 25.0)), env(f.state("t1", "high", value=31.0)),
            env(f.fault("t1", "crc_error", True)),  # same group: deduplicated
            env(f.fault("t1", "crc_error", False)),
            env(f.state("t1", "normal", prev="high", value=22.0))]


def test_webhook_delivers_each_alert_once_with_idempotency_key(
        webhook: WebhookReceiver, tmp_path: Path) -> None:
    consumer = AlertingConsumer(make_config(hook={"type": "webhook", "url": webhook.url}),
                                state_dir=tmp_path)
    try:
        consumer.handle(batch_fire_resolve())
        got = webhook.wait_acked(2)
        assert consumer.wait_delivered(10)
        assert [r.body["status"] for r in got] == ["firing", "resolved"]
        assert all(r.key == r.body["alert_id"] for r in got)
        Alert.model_validate_json(json.dumps(got[0].body))  # the body is the contract's Alert
        assert got[1].body["summary"].endswith("t1 is back to normal at 22.0 \u00b0C")
        stats = consumer.stats()
        assert stats["alerts_sent"] == {"hook": 2, "log": 2}
        assert stats["deduplicated"] == 1 and stats["pending"] == {}
    finally:
        consumer.close()
    assert len(webhook.requests) == 2


def test_webhook_500_is_retried_and_delivered_once(tmp_path: Path) -> None:
    rx = WebhookReceiver(behaviour=lambda n, key: 500 if n == 0 else 200)
    consumer = AlertingConsumer(make_config(hook={"type": "webhook", "url": rx.url,
                                                  "max_retries": 2, "retry_backoff_s": 0.05}),
                                state_dir=tmp_path)
    try:
        f = Feed()
        consumer.handle([env(f.fault("t1", "disconnected", True))])
        acked = rx.wait_acked(1)
        assert consumer.wait_delivered(10)
        assert [r.status for r in rx.requests] == [500, 200]
        assert len(acked) == 1 and rx.requests[0].key == rx.requests[1].key
        assert consumer.stats()["alerts_sent"]["hook"] == 1
    finally:
        consumer.close()
        rx.stop()


def test_webhook_down_then_up_is_delivered_from_the_outbox(tmp_path: Path) -> None:
    rx = WebhookReceiver(behaviour=lambda n, key: 503 if n < 2 else 200)
    consumer = AlertingConsumer(make_config(hook={"type": "webhook", "url": rx.url,
                                                  "max_retries": 0}), state_dir=tmp_path)
    try:
        consumer.handle([env(Feed().fault("t1", "disconnected", True))])
        # first attempt fails, the outbox retries after 1 s, then 2 s
        assert len(rx.wait_acked(1, timeout=20)) == 1
        assert consumer.stats()["alerts_failed"]["hook"] == 2
    finally:
        consumer.close()
        rx.stop()


def test_rejected_webhook_is_given_up_counted_and_kept(tmp_path: Path) -> None:
    rx = WebhookReceiver(behaviour=lambda n, key: 400)
    consumer = AlertingConsumer(make_config(hook={"type": "webhook", "url": rx.url}),
                                state_dir=tmp_path)
    try:
        consumer.handle([env(Feed().fault("t1", "disconnected", True))])
        assert consumer.wait_delivered(10)
        assert consumer.stats()["alerts_given_up"] == {"hook": 1}
        assert consumer.store.given_up_count() == 1 and len(rx.requests) == 1
    finally:
        consumer.close()
        rx.stop()


def test_hung_webhook_times_out_and_does_not_delay_email_or_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TP_SMTP_PASSWORD", "s3cret")
    smtp = SmtpReceiver(tmp_path)
    hung = WebhookReceiver(behaviour=lambda n, key: "hang")
    cfg = make_config(
        hook={"type": "webhook", "url": hung.url, "timeout_s": 4, "max_retries": 0},
        mail={"type": "email", "host": "127.0.0.1", "port": smtp.port, "starttls": True,
              "ca_file": str(smtp.ca_file), "username": "hub", "password": "env:TP_SMTP_PASSWORD",
              "from": "hub@example.org", "to": ["oncall@example.org"]})
    consumer = AlertingConsumer(cfg, state_dir=tmp_path / "state")
    try:
        f = Feed()
        t0 = time.monotonic()
        consumer.handle([env(f.state("t1", "very_high", severity="critical", value=41.0))])
        handled = time.monotonic() - t0
        assert handled < 2.0, f"handle() waited on a receiver: {handled:.2f}s"
        msgs = smtp.wait_messages(1, timeout=10)
        mail_after = time.monotonic() - t0
        # in series behind the hung webhook it could not arrive before the 4 s timeout
        assert len(msgs) == 1 and mail_after < 3.5, mail_after
        deadline = time.monotonic() + 10
        while consumer.stats().get("alerts_sent", {}).get("log") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # the hung webhook: timed out (counted), still pending for a retry
        hung.wait_requests(1)
        deadline = time.monotonic() + 10
        while not consumer.stats().get("alerts_failed", {}).get("hook"):
            assert time.monotonic() < deadline, "the webhook timeout did not fire"
            time.sleep(0.05)
        assert consumer.stats()["pending"] == {"hook": 1}
        # the e-mail itself: STARTTLS + AUTH happened, the text is readable
        assert smtp.logins == ["hub"]
        mail = message_from_bytes(msgs[0].content)
        assert mail["Subject"] == "[thermopipe] CRITICAL: s1/d1/t1"
        assert mail["Message-ID"].startswith("<") and "@thermopipe>" in mail["Message-ID"]
        # the body opens with the sentence (the subject has the path and the severity)
        body = mail.get_payload(decode=True).decode()
        assert body.splitlines()[0] == "t1 is very high: 41.0 \u00b0C, threshold 30.0 \u00b0C"
        assert msgs[0].rcpt_tos == ["oncall@example.org"]
    finally:
        consumer.close()
        hung.stop()
        smtp.stop()


def test_email_with_a_wrong_password_fails_and_is_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TP_SMTP_PASSWORD", "wrong")
    smtp = SmtpReceiver(tmp_path)
    cfg = make_config(mail={"type": "email", "host": "127.0.0.1", "port": smtp.port,
                            "ca_file": str(smtp.ca_file), "username": "hub",
                            "password": "env:TP_SMTP_PASSWORD", "from": "hub@example.org",
                            "to": ["oncall@example.org"]})
    consumer = AlertingConsumer(cfg, state_dir=tmp_path / "state")
    try:
        consumer.handle([env(Feed().fault("t1", "disconnected", True))])
        deadline = time.monotonic() + 10
        while not consumer.stats().get("alerts_failed", {}).get("mail"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert smtp.messages == [] and consumer.stats()["pending"] == {"mail": 1}
    finally:
        consumer.close()
        smtp.stop()


@pytest.mark.servers
def test_mqtt_alert_topic_gets_live_and_late_alerts(
        mosquitto: Any, topic_root: str, tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    got: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{topic_root}-sub")
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    sub.subscribe(f"{topic_root}/_hub/alerts/#", qos=1)
    assert subscribed.wait(10)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{topic_root}-pub")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()

    def publish(topic: str, payload: bytes) -> None:
        info = pub.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        if not info.is_published():
            raise RuntimeError("not acknowledged")

    hook = WebhookReceiver()
    consumer = AlertingConsumer(make_config(bus={"type": "mqtt"},
                                            hook={"type": "webhook", "url": hook.url}),
                                mqtt_publish=publish, topic_root=topic_root,
                                state_dir=tmp_path)
    try:
        f = Feed(device="pi-7", site="barn")
        consumer.handle([env(f.fault("t1", "disconnected", True)),
                         env(Feed(device="pi-8", site="barn").state("t1", "high",
                                                                    replayed=True))])
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        alerts = {topic: decode(payload) for topic, payload in got}
        assert set(alerts) == {f"{topic_root}/_hub/alerts/barn/pi-7",
                               f"{topic_root}/_hub/alerts/barn/pi-8"}
        late = alerts[f"{topic_root}/_hub/alerts/barn/pi-8"]
        assert isinstance(late, Alert) and late.late
        # the late one is not paged to the webhook
        assert consumer.wait_delivered(10)
        assert [r.body["device_id"] for r in hook.acked()] == ["pi-7"]
    finally:
        consumer.close()
        hook.stop()
        for c in (sub, pub):
            c.loop_stop()
            c.disconnect()


def test_restart_on_the_same_state_redelivered_batch_sends_nothing(
        webhook: WebhookReceiver, tmp_path: Path) -> None:
    cfg = make_config(hook={"type": "webhook", "url": webhook.url})
    f = Feed()
    first = [env(f.state("t1", "high")), env(f.status(False, "will"))]
    second = [env(f.state("t1", "normal", prev="high"))]
    consumer = AlertingConsumer(cfg, state_dir=tmp_path)
    consumer.handle(first)
    assert len(webhook.wait_acked(2)) == 2
    assert consumer.wait_delivered(10)
    consumer.close()

    again = AlertingConsumer(cfg, state_dir=tmp_path)
    try:
        again.handle(first)          # redelivered after the restart
        again.handle(first + second)  # and once more, overlapping the next batch
        acked = webhook.wait_acked(3)
        assert again.wait_delivered(10)
        time.sleep(0.3)  # would-be duplicates have time to show up
        assert len(webhook.requests) == 3
        assert [r.body["status"] for r in acked] == ["firing", "firing", "resolved"]
        assert len({r.key for r in acked}) == 3
        # the open offline alert was not forgotten
        assert [a["device_id"] for a in again.open_alerts()] == ["d1"]
        assert again.stats()["redelivered"] == 4  # 2 envelopes, twice
    finally:
        again.close()


def test_listener_sees_each_decided_alert_once(webhook: WebhookReceiver,
                                               tmp_path: Path) -> None:
    seen: list[Alert] = []
    consumer = AlertingConsumer(make_config(), state_dir=tmp_path)
    consumer.add_listener(seen.append)
    consumer.add_listener(lambda alert: 1 / 0)  # a broken listener changes nothing
    try:
        batch = batch_fire_resolve()
        consumer.handle(batch)
        consumer.handle(batch)
        assert [a.status for a in seen] == ["firing", "resolved"]
    finally:
        consumer.close()


def test_unsaved_state_is_rolled_back_so_the_retry_decides_again(tmp_path: Path) -> None:
    from schemas.errors import DeliveryError

    consumer = AlertingConsumer(make_config(), state_dir=tmp_path)
    try:
        original = consumer.store.commit
        calls = {"n": 0}

        def failing_once(*args: Any, **kwargs: Any) -> int:
            calls["n"] += 1
            if calls["n"] == 1:
                raise DeliveryError("disk full")
            return original(*args, **kwargs)

        consumer.store.commit = failing_once  # type: ignore[method-assign]
        batch = [env(Feed().fault("t1", "disconnected", True))]
        with pytest.raises(DeliveryError):
            consumer.handle(batch)
        consumer.handle(batch)  # the dispatcher's retry
        assert consumer.wait_delivered(10)
        assert consumer.stats()["alerts_sent"] == {"log": 1}
    finally:
        consumer.close()


def test_state_dir_is_required(tmp_path: Path) -> None:
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="state_dir"):
        AlertingConsumer(AlertingConfig())
    with pytest.raises(ConfigError, match="mqtt notifier"):
        AlertingConsumer(make_config(bus={"type": "mqtt"}), state_dir=tmp_path)
    assert json.dumps(AlertingConsumer.__init__.__doc__) is not None


def test_repeat_and_silence_expiry_through_the_consumer(webhook: WebhookReceiver,
                                                         tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    now = [datetime(2026, 11, 26, 12, 0, tzinfo=UTC)]
    cfg = AlertingConfig.model_validate({
        "notifiers": {"hook": {"type": "webhook", "url": webhook.url}},
        "rules": [{"name": "all", "notifiers": ["hook"], "repeat_interval_s": 600}],
        "silences": [{"match": {"device": "quiet"},
                      "until": (now[0] + timedelta(minutes=5)).isoformat()}],
        "tick_interval_s": 3600})
    consumer = AlertingConsumer(cfg, state_dir=tmp_path, clock=lambda: now[0])
    try:
        consumer.handle([env(Feed().fault("t1", "disconnected", True)),
                         env(Feed("quiet").fault("t1", "disconnected", True))])
        assert [r.body["device_id"] for r in webhook.wait_acked(1)] == ["d1"]
        assert consumer.stats()["silenced"] == 1
        now[0] += timedelta(minutes=6)   # the silence is over: "quiet" is notified now
        consumer.tick()
        assert sorted(r.body["device_id"] for r in webhook.wait_acked(2)) == ["d1", "quiet"]
        now[0] += timedelta(minutes=5)   # 11 min after d1's page: its repeat is due
        consumer.tick()
        acked = webhook.wait_acked(3)
        assert [r.body["device_id"] for r in acked][2] == "d1"
        assert len({r.key for r in acked}) == 3
        consumer.tick()                   # nothing more is due
        assert consumer.wait_delivered(10)
        time.sleep(0.2)
        assert len(webhook.requests) == 3
    finally:
        consumer.close()
