"""Hostile and absurd wire data through a real hub over a real Mosquitto (and a real InfluxDB):
issue 21's cases. A refused payload with seq 2**64 on a device's own topic stops nothing (and a
restart over what older hubs stored stops nothing either); receipts name only what the hub
holds; a seq jump is a jump; data_loss records decided in one instant are each one point."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness.mqtt_clients import stop_client
from hub.app import Hub
from hub.config.storage import StorageConfig
from hub.consumers.base import Envelope
from hub.storage.consumer import StorageConsumer
from schemas.codec import decode, encode
from schemas.models import DataLoss, Receipt
from schemas.topics import Topics
from tests.hub_core.helpers import (
    BASE_TIME,
    Publisher,
    Recorder,
    hub_config,
    reading,
    wait_until,
)

pytestmark = [pytest.mark.servers]



class Receipts:
    """Every receipt the hub publishes, decoded."""

    def __init__(self, broker: Any, topics: Topics) -> None:
        self.got: list[Receipt] = []
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(topics.receipt_filter(), 1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = lambda c, u, m: self.got.append(decode(m.payload))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(10)

    def named(self, device: str, field: str) -> set[int]:
        return {s for r in list(self.got) if r.device_id == device
                for x in getattr(r, field) for s in range(x.first, x.last + 1)}

    def close(self) -> None:
        stop_client(self.client)


def _healthz(hub: Hub) -> dict[str, Any]:
    answer = httpx.get(f"http://127.0.0.1:{hub.web.port}/healthz", timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_a_seq_of_2_64_on_a_devices_own_topic_stops_nothing(tmp_path: Path, mosquitto,
                                                            topic_root: str) -> None:
    """Regression (issue 21): the receipt of the refused payload failed to build, the ingest
    thread died and no event of any device was stored after it; after a restart the loss
    detector's stored state made a DataLoss fail to build and ingest died again."""
    topics = Topics(topic_root)
    config = hub_config(tmp_path, mosquitto, topic_root,
                        receipts={"gap_timeout_s": 1.0, "grace_s": 0.0})
    evil = f"{topic_root}/s1/evil/event/t1"
    hostile = [b'{"kind": "reading", "seq": 18446744073709551616}',
               b'{"kind": "reading", "seq": 7}',           # refused, its seq readable
               json.dumps({**json.loads(encode(reading(9, device="evil"))),
                           "value": float("nan")}).encode()]  # NaN: refused, seq 9
    receipts = Receipts(mosquitto, topics)
    pub = Publisher(mosquitto.host, mosquitto.port)
    recorder = Recorder()
    try:
        with Hub(config, extra_consumers=[recorder]) as hub:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
            # a good one first: held, and the device admitted (refused seqs are named only for
            # devices the identity caps admitted: an invented one gets no receipts)
            pub.publish(evil, encode(reading(8, device="evil")))
            pub.flush()
            wait_until(lambda: recorder.seqs("evil") == {8}, 15, what="the good event stored")
            for payload in hostile:
                pub.publish(evil, payload)
            for seq in range(1, 101):  # the control device, after the poison
                pub.publish(topics.for_event(reading(seq, device="ctl")),
                            encode(reading(seq, device="ctl")))
            pub.flush()
            wait_until(lambda: recorder.seqs("ctl") == set(range(1, 101)), 30,
                       what="every control event stored")
            wait_until(lambda: 7 in receipts.named("evil", "refused")
                       and 9 in receipts.named("evil", "refused"), 15,
                       what="the refused seqs named in a receipt")
            wait_until(lambda: 8 in receipts.named("evil", "ranges"), 15, what="8 receipted")
            assert _healthz(hub)["ok"] is True
            assert hub.supervisor.components["ingest"].alive
            assert hub.supervisor.components["ingest"].crashes == 0
        # what an older hub stored: the refused seq 2**64 as held, and a gap up to it
        with sqlite3.connect(config.database_path) as db:
            db.execute("INSERT OR REPLACE INTO loss_state VALUES (?, ?)",
                       ("s1/old", json.dumps({"held": [[0, 10], [2**64, 2**64]],
                                              "gaps": [[11, 2**64 - 1, 0.0]]})))
        with Hub(config, extra_consumers=[recorder]) as hub:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed again")
            for payload in hostile:
                pub.publish(evil, payload)
            for seq in range(101, 151):
                pub.publish(topics.for_event(reading(seq, device="ctl")),
                            encode(reading(seq, device="ctl")))
            pub.flush()
            wait_until(lambda: recorder.seqs("ctl") == set(range(1, 151)), 30,
                       what="every control event stored after the restart")
            wait_until(lambda: hub.ingest._next_loss_check > 0, 10, what="a loss check")
            assert _healthz(hub)["ok"] is True
            assert hub.supervisor.components["ingest"].alive
            assert hub.supervisor.components["ingest"].crashes == 0
            assert hub.ingest.detector is not None
            assert "s1/old" in hub.ingest.detector.repaired
        # receipts name only what the hub holds: a refused seq never in ranges
        assert not receipts.named("evil", "ranges") & {7, 9}
        assert receipts.named("evil", "ranges") == {8}
        assert receipts.named("ctl", "refused") == set()
    finally:
        pub.close()
        receipts.close()


def test_a_seq_jump_is_reported_as_a_jump_not_as_a_loss(tmp_path: Path, mosquitto,
                                                        topic_root: str) -> None:
    topics = Topics(topic_root)
    config = hub_config(tmp_path, mosquitto, topic_root,
                        receipts={"gap_timeout_s": 0.5, "grace_s": 0.0, "max_seq_jump": 1000})
    pub = Publisher(mosquitto.host, mosquitto.port)
    recorder = Recorder()
    try:
        with Hub(config, extra_consumers=[recorder]) as hub:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
            for seq in (1, 2, 2**62, 2**62 + 1):
                event = reading(seq, device="jumpy", when=BASE_TIME)
                pub.publish(topics.for_event(event), encode(event))
                pub.flush()
                wait_until(lambda s=seq: s in recorder.seqs("jumpy"), 20, what=f"seq {seq}")
            wait_until(lambda: hub.metrics.seq_jumps._value.get() >= 1, 10, what="jump counted")
            metrics = httpx.get(f"http://127.0.0.1:{hub.web.port}/metrics", timeout=10).text
            assert "thermopipe_hub_seq_jumps_total 1.0" in metrics
            assert hub.metrics.data_loss._value.get() == 0
            assert not [e for e in recorder.seen if isinstance(e.message, DataLoss)]
    finally:
        pub.close()


def test_data_loss_records_of_one_instant_are_each_one_point(influxdb, influx_db_name) -> None:
    """Regression (issue 21): the point time was the decision time + first_seq % 1000 ns, so of
    2,001 records decided in one instant 502 were stored. Written twice: still one each."""
    when = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    records = [DataLoss(event_id=uuid.uuid4().hex, site="s1", device_id="d1", time=when,
                        first_seq=2 * i, last_seq=2 * i, count=1, hub_id="hub")
               for i in range(2001)]
    envelopes = [Envelope(i, r, "t/_hub/data_loss/s1/d1", when, False, False)
                 for i, r in enumerate(records)]
    storage = StorageConsumer(StorageConfig(enabled=True, mode="v1", url=influxdb.url,
                                            database=influx_db_name))
    try:
        storage.handle(envelopes)
        storage.handle(envelopes[:700])  # a retry after a crash: the same points again
    finally:
        storage.close()
    rows = influxdb.series_rows('SELECT COUNT("first_seq") FROM "data_loss"', influx_db_name)
    assert int(rows[0]["count"]) == 2001
    rows = influxdb.series_rows('SELECT SUM("count") FROM "data_loss"', influx_db_name)
    assert int(rows[0]["sum"]) == 2001
