"""Forged receipts against a real agent delivery over a real private Mosquitto (issue 21 item 4).

Someone who may publish on a device's receipt topic sends receipts naming the whole seq space,
in ``ranges`` and in ``refused``, while the agent replays a backlog. Before the fix the agent
deleted every outbox row in a receipted range, sent or not, and the backlog vanished without a
word. Now a receipt deletes only rows this run published and the broker acknowledged (so the
broker has them), the rest is logged and ignored, and refused rows stay: every event reaches the
subscriber, and the forged receipts are counted and logged."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from bench.harness.mqtt_clients import stop_client
from edge_agent.delivery import Delivery
from edge_agent.mqtt_link import MqttSettings
from edge_agent.outbox import Outbox, OutboxSettings
from edge_agent.stamping import EventStamper
from schemas import Topics, encode
from schemas.models import Receipt, SeqRange
from tests.agent_delivery.helpers import Recorder, draft
from tests.servers import Mosquitto

pytestmark = pytest.mark.servers

EVENTS = 1500
SEQ_MAX = 2**63 - 1  # the contract's highest seq


def forged(ranges: list[tuple[int, int]], refused: list[tuple[int, int]],
           hub_id: str = "attacker") -> bytes:
    return encode(Receipt(
        event_id=str(uuid.uuid4()), site="site1", device_id="dev1", time=datetime.now(UTC),
        hub_id=hub_id,
        ranges=[SeqRange(first=a, last=b) for a, b in ranges],
        refused=[SeqRange(first=a, last=b) for a, b in refused]))


class Attacker:
    """A client holding some account that may publish on the device's receipt topic."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.topic = topic
        self.sent = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"attacker-{uuid.uuid4().hex[:8]}")
        self.client.connect(host, port)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        everything = [(0, SEQ_MAX)]
        receipts = [forged(everything, []), forged([], everything),
                    forged(everything, everything)]
        while not self._stop.wait(0.05):
            self.client.publish(self.topic, receipts[self.sent % 3], qos=1).wait_for_publish(5)
            self.sent += 1

    def start(self) -> Attacker:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)
        stop_client(self.client)


@pytest.fixture
def recorder(mosquitto: Mosquitto, topic_root: str) -> Iterator[Recorder]:
    rec = Recorder(mosquitto.host, mosquitto.port,
                   [f"{topic_root}/+/+/event/+"]).start()
    yield rec
    rec.stop()


def seqs_seen(rec: Recorder) -> set[int]:
    return {e.seq for e in rec.events()}


def test_forged_receipts_for_the_whole_seq_space_lose_no_event(
        mosquitto: Mosquitto, topic_root: str, recorder: Recorder, tmp_path: Path) -> None:
    outbox = Outbox(OutboxSettings(path=tmp_path / "outbox.db", min_free_bytes=0,
                                   flush_interval_s=0.1))
    stamper = EventStamper("site1", "dev1", outbox)
    # a backlog: events made while the broker was away
    made = [stamper.stamp(draft("reading", "s1", value=float(i % 40)), True)
            for i in range(EVENTS)]
    outbox.append((e, Topics(topic_root).for_event(e)) for e in made)
    outbox.commit()
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, topic_root=topic_root,
                            reconnect_min_s=0.2, reconnect_max_s=1.0, receipts="on",
                            receipt_timeout_s=1.0, max_inflight=50)
    delivery = Delivery(outbox, settings, "site1", "dev1", dict, backlog_rate_per_s=300)
    attacker = Attacker(mosquitto.host, mosquitto.port,
                        Topics(topic_root).receipt("site1", "dev1"))
    logs: list[MutableMapping[str, Any]]
    try:
        with capture_logs() as logs:
            delivery.start()
            delivery.link.wait_connected(10)
            deadline = time.monotonic() + 10
            while delivery.count("acked") == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            attacker.start()  # while most of the backlog is not sent yet
            assert delivery.count("acked") < EVENTS // 2, "the backlog went out too fast"
            everything = set(range(EVENTS))
            # until every event arrived, or the outbox is empty (nothing left to send: what
            # is missing then is lost; a few seconds more for what the broker still delivers)
            got_all = recorder.wait_for(lambda _: seqs_seen(recorder) >= everything
                                        or delivery.outbox.depth == 0, 90)
            got_all = recorder.wait_for(lambda _: seqs_seen(recorder) >= everything, 5)
            attacker.stop()
            missing = everything - seqs_seen(recorder)
            # counters after the stop: receipts already on their way are still handled until
            # then, and logged; a snapshot before it could miss some that the log has
            delivery.stop(5)
            counters = delivery.counters()
    finally:
        attacker.stop()
        delivery.stop(3)
        outbox.close()
    assert got_all and not missing, (
        f"{len(missing)} events never reached the subscriber (first: {sorted(missing)[:10]}); "
        f"outbox depth {counters['outbox_depth']:.0f}, dropped "
        f"{sum(v for k, v in counters.items() if k.startswith('dropped_by_')):.0f}")
    assert attacker.sent >= 3
    # the forged receipts were seen, counted and logged, once per receipt at most
    assert counters["receipt_ignored"] > 0 and counters["refused_ignored"] > 0
    ignored = [e for e in logs if e["event"] == "delivery.receipt_ignored"]
    assert 0 < len(ignored) <= attacker.sent
    assert all(len(str(e)) < 2000 for e in ignored)
    refused = [e for e in logs if e["event"] == "delivery.refused"]
    assert counters["refused"] == sum(e["count"] for e in refused)
    assert counters["dropped_by_size"] == counters["dropped_by_age"] == 0


def test_refused_events_stay_are_sent_again_after_their_backoff_and_a_receipt_deletes_them(
        mosquitto: Mosquitto, topic_root: str, recorder: Recorder, tmp_path: Path) -> None:
    outbox = Outbox(OutboxSettings(path=tmp_path / "outbox.db", min_free_bytes=0,
                                   flush_interval_s=0.1))
    stamper = EventStamper("site1", "dev1", outbox)
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, topic_root=topic_root,
                            reconnect_min_s=0.2, reconnect_max_s=1.0, receipts="on",
                            receipt_timeout_s=2.0)
    delivery = Delivery(outbox, settings, "site1", "dev1", dict)
    hub = Attacker(mosquitto.host, mosquitto.port, Topics(topic_root).receipt("site1", "dev1"))
    logs: list[MutableMapping[str, Any]]
    try:
        with capture_logs() as logs:
            delivery.start()
            delivery.link.wait_connected(10)
            delivery.submit([stamper.stamp(draft("reading", "s1", value=float(i)), True)
                             for i in range(10)])
            assert wait(lambda: delivery.counters()["awaiting_receipt"] == 10, 10)
            # the hub holds 0-4 and dead-lettered payloads with seqs 5-9
            hub.client.publish(hub.topic, forged([(0, 4)], [(5, 9)], "hub-1"),
                               qos=1).wait_for_publish(5)
            assert wait(lambda: delivery.counters()["refused"] == 5, 10)
            assert wait(lambda: delivery.counters()["outbox_depth"] == 5, 10)  # 5-9 kept
            # sent again once their backoff (receipt_timeout_s) is over, replayed
            assert recorder.wait_for(
                lambda _: {e.seq for e in recorder.events() if e.replayed} >= set(range(5, 10)),
                20)
            hub.client.publish(hub.topic, forged([(5, 9)], [], "hub-1"),
                               qos=1).wait_for_publish(5)
            assert wait(lambda: delivery.counters()["outbox_depth"] == 0, 10)
            counters = delivery.counters()
    finally:
        hub.stop()
        delivery.stop(3)
        outbox.close()
    refused = [e for e in logs if e["event"] == "delivery.refused"]
    assert [(e["hub_id"], e["count"], e["seqs"]) for e in refused] == [("hub-1", 5, "5-9")]
    assert refused[0]["log_level"] == "warning"
    assert counters["receipt_ignored"] == 0 and counters["refused_ignored"] == 0


def wait(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()
