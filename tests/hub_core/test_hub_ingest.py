"""Ingest with a real Mosquitto: dead letters, dedup across restarts, order and lateness flags,
health and metrics, and the dead-letter CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness.mqtt_clients import stop_client
from hub.app import Hub
from schemas.codec import encode
from schemas.models import DeadLetter, FaultEvent
from schemas.registry import AVRO_MAGIC
from schemas.topics import Topics
from tests.hub_core.helpers import (
    BASE_TIME,
    Publisher,
    Recorder,
    hub_config,
    influx_count,
    reading,
    state_change,
    wait_until,
    write_toml,
)
from tests.servers import free_port

pytestmark = [pytest.mark.servers]
ROOT = Path(__file__).resolve().parents[2]



class Subscriber:
    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[bytes] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append(m.payload)
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def close(self) -> None:
        stop_client(self.client)


def _publish(broker, messages) -> None:
    pub = Publisher(broker.host, broker.port)
    try:
        pub.publish_all(messages)
    finally:
        pub.close()


def big_fault(seq: int) -> FaultEvent:
    return FaultEvent(event_id=uuid.uuid4().hex, site="s1", device_id="d1", sensor_id="t1",
                      seq=seq, time=BASE_TIME, clock_synced=True, fault="read_failed",
                      active=True, unit="degC", detail="x" * 1000)  # within TEXT_MAX


def test_bad_payloads_go_to_the_dead_letter_store_and_good_ones_flow(
        tmp_path: Path, mosquitto, influxdb, influx_db_name, topic_root) -> None:
    topics = Topics(topic_root)
    storage = {"enabled": True, "mode": "v1", "url": influxdb.url, "database": influx_db_name}
    config = hub_config(tmp_path, mosquitto, topic_root, storage=storage,
                        mqtt={"max_payload_bytes": 1024})
    good = [reading(i) for i in range(1, 41)]
    fixable = big_fault(100)
    bad = [
        (topics.event("s1", "d1", "t1"), b"{not json"),
        (topics.event("s1", "d1", "t1"), b"{" + b" " * 3000 + b"}"),
        (topics.event("s1", "d1", "t1"), AVRO_MAGIC + bytes(8) + b"\x02"),
        (topics.event("s1", "d9", "t1"), encode(reading(7, device="d1"))),  # spoofed
        (topics.event("s1", "d1", "t1"), encode(fixable)),  # too large for this hub
    ]
    messages = [(topics.for_event(e), encode(e, "avro" if i % 2 else "json"))
                for i, e in enumerate(good)]
    for i, item in enumerate(bad):  # bad ones in between the good ones
        messages.insert(i * 8 + 1, item)
    dlq = Subscriber(mosquitto.host, mosquitto.port, topics.deadletter())
    try:
        with Hub(config) as hub:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
            _publish(mosquitto, messages)
            wait_until(lambda: hub.runners[0].state.processed >= len(good), 30, what="stored")
            wait_until(lambda: len(dlq.messages) >= len(bad), 15, what="dead letters published")
            health = httpx.get(f"http://127.0.0.1:{hub.web.port}/healthz", timeout=10).json()
            metrics = httpx.get(f"http://127.0.0.1:{hub.web.port}/metrics", timeout=10).text
    finally:
        dlq.close()
    assert influx_count(influxdb, influx_db_name) == len(good)
    published = [DeadLetter.model_validate_json(m) for m in dlq.messages]
    assert sorted(d.reason.split()[0] for d in published)  # every one carries a reason
    assert {d.topic for d in published} == {t for t, _ in bad}
    assert health["ok"] is True
    assert health["consumers"]["storage"]["backlog"] == 0
    assert f"thermopipe_hub_events_in_total {float(len(good) + len(bad))}" in metrics
    for code in ("invalid", "too_large", "unknown_schema", "spoofed"):
        assert f'thermopipe_hub_dead_lettered_total{{reason="{code}"}}' in metrics, code
    assert 'thermopipe_hub_consumer_processed_total{consumer="storage"} 40.0' in metrics

    # the operator's view: list, show, then replay on a hub that accepts larger payloads (a
    # command to the running hub: its web server's address is in the file)
    port = free_port()
    file = write_toml(tmp_path / "hub.toml", {
        "hub_id": "testhub", "data_dir": str(config.data_dir),
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "topic_root": topic_root,
                 "client_id": config.client_id},
        "storage": storage, "http": {"port": port}, "log": {"level": "warning"}})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hub.cli", "dlq", "-c", str(file), *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert "5 dead letter(s)" in listed.stdout
    assert "spoofed" in listed.stdout
    size = f"payload of {len(encode(fixable))} bytes"
    fixable_id = next(line.split()[0] for line in listed.stdout.splitlines() if size in line)
    shown = cli("show", fixable_id)
    assert '"read_failed"' in shown.stdout
    assert "exceeds the limit of 1024 bytes" in shown.stdout

    bigger = config.model_copy(update={
        "mqtt": config.mqtt.model_copy(update={"max_payload_bytes": 65536}),
        "http": config.http.model_copy(update={"port": port})})
    with Hub(bigger) as hub:
        replayed = cli("replay", "--all")
        wait_until(lambda: hub.runners[0].state.processed >= 1, 30, what="replayed one stored")
    assert f"{fixable_id}: replayed: accepted on replay" in replayed.stdout, replayed
    assert replayed.stdout.count(": still refused: ") == 4
    assert replayed.returncode == 1  # some are still bad
    assert influx_count(influxdb, influx_db_name, "sensor_event") == len(good) + 1
    after = cli("list", "--status", "open")
    assert "4 dead letter(s)" in after.stdout


def test_duplicates_across_restarts_late_and_out_of_order_flags(tmp_path: Path, mosquitto,
                                                                topic_root) -> None:
    topics = Topics(topic_root)
    config = hub_config(tmp_path, mosquitto, topic_root, late_after_s=60)
    first = [reading(i) for i in (1, 2, 5)]
    recorder = Recorder()
    with Hub(config, extra_consumers=[recorder]) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        _publish(mosquitto, [(topics.for_event(e), encode(e)) for e in first])
        wait_until(lambda: len(recorder.seen) == 3, 20, what="first events")
    # a new hub process on the same data dir: the same events again are duplicates; a late
    # arrival (seq 3) is accepted, flagged out of order; a replayed one is flagged late
    late_seq = reading(3)
    replayed = reading(6, replayed=True)
    recorder2 = Recorder()
    with Hub(config, extra_consumers=[recorder2]) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        _publish(mosquitto, [(topics.for_event(e), encode(e))
                             for e in [*first, late_seq, replayed]])
        wait_until(lambda: len(recorder2.seen) == 2, 20, what="second events")
        wait_until(lambda: hub.metrics.duplicates._value.get() == 3, 10, what="dups counted")
    got = {env.message.seq: env for env in recorder2.seen}
    assert set(got) == {3, 6}
    assert got[3].out_of_order is True
    assert got[6].out_of_order is False
    assert got[6].late is True
    # the fixed test time is far in the past: synced and older than late_after_s -> late too
    assert all(env.late for env in recorder.seen)
    assert [env.offset for env in recorder.seen] == [1, 2, 3]
    assert [env.offset for env in recorder2.seen] == [4, 5]


def test_status_messages_pass_through_the_journal(tmp_path: Path, mosquitto, topic_root) -> None:
    from schemas.models import DeviceStatus

    topics = Topics(topic_root)
    status = DeviceStatus(event_id=uuid.uuid4().hex, site="s1", device_id="d1", time=BASE_TIME,
                          clock_synced=True, online=True, reason="birth", session=1)
    recorder = Recorder()
    with Hub(hub_config(tmp_path, mosquitto, topic_root), extra_consumers=[recorder]) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            pub.publish(topics.for_status(status), encode(status), retain=True)
            pub.flush()
        finally:
            pub.close()
        wait_until(lambda: recorder.seen, 20, what="status delivered")
    assert recorder.seen[0].message == status
    assert json.loads(encode(status))["online"] is True


def test_a_stalled_journal_holds_the_broker_back_instead_of_filling_memory(
        tmp_path: Path, mosquitto, topic_root) -> None:
    from hub.ingest import QUEUE_MAX
    from tests.hub_core.helpers import messages_for, readings

    recorder = Recorder()
    # a receive maximum the broker would let through in full: only the hub's own bound is left
    config = hub_config(tmp_path, mosquitto, topic_root, mqtt={"receive_maximum": 65535})
    with Hub(config, extra_consumers=[recorder]) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        journal = hub.ingest.journal
        original = journal.record
        go_on = threading.Event()

        def stalled_record(*args, **kwargs):  # a disk that stops answering for a while
            go_on.wait(60)
            return original(*args, **kwargs)

        journal.record = stalled_record  # type: ignore[method-assign]
        events = readings(3 * QUEUE_MAX)
        _publish(mosquitto, messages_for(Topics(topic_root), events))
        deepest = 0
        for _ in range(30):  # 3 s: paho would have read every message by then without the bound
            deepest = max(deepest, hub.ingest._queue.qsize())
            threading.Event().wait(0.1)
        assert deepest == QUEUE_MAX  # full, and no further: the rest waits at the broker
        go_on.set()
        wait_until(lambda: len(recorder.seen) >= len(events), 60, what="every event")
        threading.Event().wait(0.5)
    assert sorted(e.message.seq for e in recorder.seen) == [e.seq for e in events]


def test_a_second_client_with_the_hubs_client_id_is_reported_as_a_clash(
        tmp_path: Path, mosquitto, topic_root) -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    config = hub_config(tmp_path, mosquitto, topic_root)
    with Hub(config) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id,
                               protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        intruder.connect(mosquitto.host, mosquitto.port, clean_start=False, properties=props)
        intruder.loop_start()
        try:
            # Mosquitto 2.0 closes the older connection without "Session taken over", and both
            # clients reconnect: the hub notices the flapping and says what it likely is
            wait_until(lambda: "another client" in hub.ingest.last_error, 30,
                       what="the clash reported")
            assert config.client_id not in hub.ingest.last_error  # /healthz shows it: a secret
        finally:
            stop_client(intruder)
        wait_until(hub.ingest.subscribed.is_set, 30, what="the hub back on its session")


def test_the_hubs_own_alerts_are_not_taken_for_events_of_a_site_named_event(
        tmp_path: Path, mosquitto, topic_root) -> None:
    # {root}/_hub/alerts/event/d1 matches the hub's own filter {root}/+/+/event/+
    topics = Topics(topic_root)
    alerting = {"rules": [{"name": "bus", "notifiers": ["bus"]}],
                "notifiers": {"bus": {"type": "mqtt"}}}
    config = hub_config(tmp_path, mosquitto, topic_root, alerting=alerting)
    crossing = state_change(1, "high", "normal").model_copy(update={"site": "event"})
    alerts = Subscriber(mosquitto.host, mosquitto.port, f"{topic_root}/_hub/alerts/#")
    dlq = Subscriber(mosquitto.host, mosquitto.port, topics.deadletter())
    try:
        with Hub(config) as hub:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
            _publish(mosquitto, [(topics.for_event(crossing), encode(crossing))])
            wait_until(lambda: alerts.messages, 30, what="the alert published")
            # the alert came back to the hub's own subscription; give it time to be judged
            wait_until(lambda: hub.metrics.totals()["events_in"] >= 1, 15, what="event in")
            time.sleep(1.5)
            totals = hub.metrics.totals()
    finally:
        alerts.close()
        dlq.close()
    assert totals["events_in"] == 1
    assert totals["dead_lettered"] == 0 and dlq.messages == []


def test_a_hub_whose_broker_is_down_tries_again_every_few_seconds(
        tmp_path: Path, mosquitto_factory, topic_root) -> None:
    """The hub is one client, not a fleet: while its broker is down (a restart, an upgrade) it
    tries again within 5 s every time, never the 30 s an agent may wait, and is back on its
    session as soon as the broker is (every alert waits for it)."""
    import socket
    from itertools import pairwise

    broker = mosquitto_factory()
    config = hub_config(tmp_path, broker, topic_root)
    with Hub(config) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        broker.stop()
        # the broker's port now answers and hangs up at once: each connect is an attempt
        attempts: list[float] = []
        with socket.create_server((broker.host, broker.port)) as server:
            server.settimeout(0.2)
            down_until = time.monotonic() + 30
            while time.monotonic() < down_until:
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                attempts.append(time.monotonic())
                conn.close()
        gaps = [round(b - a, 1) for a, b in pairwise(attempts)]
        # 1 s doubling to 5 s with full jitter (+ the connect itself); an agent's pacing (up to
        # 30 s) passes this 3 times in 100 (simulated with its ReconnectPacing)
        assert len(attempts) >= 6 and max(gaps) <= 6.0, gaps
        broker.start()
        back = time.monotonic()
        wait_until(lambda: hub.ingest.connected.is_set() and hub.ingest.subscribed.is_set(), 15,
                   what="the hub back on the broker")
        assert time.monotonic() - back <= 7.0
