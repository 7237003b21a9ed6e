"""Nothing lost: a 30-second broker outage while events keep coming, and SIGKILL mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.delivery import Delivery
from edge_agent.mqtt_link import MqttSettings
from edge_agent.outbox import Outbox, OutboxSettings
from edge_agent.stamping import EventStamper
from schemas import Topics
from tests.agent_delivery.helpers import Recorder, draft, retained_status
from tests.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_broker_down_30s_every_event_arrives_once_after_dedup(
        mosquitto_factory: Callable[..., Mosquitto], topic_root: str, tmp_path: Path) -> None:
    broker = mosquitto_factory()
    rec = Recorder(broker.host, broker.port, Topics(topic_root).hub_filters()).start()
    outbox = Outbox(OutboxSettings(path=tmp_path / "o.db", min_free_bytes=0,
                                   backlog_rate_per_s=200))
    stamper = EventStamper("site1", "dev1", outbox)
    delivery = Delivery(outbox, MqttSettings(host=broker.host, port=broker.port,
                                             topic_root=topic_root, reconnect_min_s=0.5,
                                             reconnect_max_s=2.0, receipts="off"),
                        "site1", "dev1")
    made: list[str] = []
    stop = threading.Event()

    def produce() -> None:  # a sensor source: 20 events/s whatever the broker does
        i = 0
        while not stop.wait(0.05):
            e = stamper.stamp(draft("reading", "s1", time.time(), float(i)), True)
            delivery.submit([e])
            made.append(e.event_id)
            i += 1

    producer = threading.Thread(target=produce)
    try:
        delivery.start()
        delivery.link.wait_connected(10)
        producer.start()
        assert rec.wait_for(lambda m: len(m) > 40, 10)
        broker.stop()
        down_at = time.monotonic()
        assert _wait(lambda: not delivery.connected, 10)
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))  # the outage itself
        during = len(made)
        broker.start()
        assert _wait(lambda: delivery.connected, 15), "no reconnect after the broker came back"
        time.sleep(2)
        stop.set()
        producer.join()
        delivery.flush()
        expected = set(made)
        assert rec.wait_for(lambda m: expected <= {x.message.event_id for x in m
                                                    if x.message.kind == "reading"}, 60)
        got = rec.events()
        ids = [e.event_id for e in got]
        assert set(ids) == expected  # every event, and nothing else
        assert during > 600  # events were made all through the outage
        assert any(e.replayed for e in got), "events made during the outage are backlog"
        c = delivery.counters()
        assert c["reconnects"] >= 1
        assert c["dropped_summary"] + c["dropped_reading"] + c["dropped_alarm"] == 0
        # at-least-once: a duplicate can only be an in-flight message paho resent after the
        # reconnect (its PUBACK lost with the broker), so never more than max_inflight
        assert len(ids) - len(set(ids)) <= delivery.settings.max_inflight
    finally:
        stop.set()
        if producer.is_alive():
            producer.join()
        delivery.stop(5)
        outbox.close()
        rec.stop()


def _wait(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _driver(broker: Mosquitto, root: str, db: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.agent_delivery.driver", "--host", broker.host,
         "--port", str(broker.port), "--root", root, "--db", str(db), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def test_sigkill_mid_stream_loses_nothing_and_the_will_marks_offline(
        mosquitto: Mosquitto, topic_root: str, tmp_path: Path) -> None:
    rec = Recorder(mosquitto.host, mosquitto.port, Topics(topic_root).hub_filters()).start()
    db = tmp_path / "outbox.db"
    durable: dict[str, int] = {}
    first = _driver(mosquitto, topic_root, db, "--events", "100000", "--batch", "10",
                    "--interval", "0.005")
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if line.startswith("durable "):
                for item in line.split()[1:]:
                    seq, event_id = item.split(":")
                    durable[event_id] = int(seq)
            if len(durable) >= 400 and len(rec.events()) >= 50:
                break  # publishing is under way, and more is committed than delivered
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        if first.stdout is not None:
            first.stdout.close()
    try:
        status_topic = Topics(topic_root).status("site1", "dev1")
        will = retained_status(mosquitto.host, mosquitto.port, status_topic)
        assert will is not None and (will.online, will.reason) == (False, "will")
        assert will.sensors and will.sensors[0].sensor_id == "s1"

        second = _driver(mosquitto, topic_root, db, "--events", "20", "--batch", "10",
                         "--drain")
        out, _ = second.communicate(timeout=90)
        assert second.returncode == 0, out
        assert "drained" in out
        later = {item.split(":")[1]: int(item.split(":")[0])
                 for line in out.splitlines() if line.startswith("durable ")
                 for item in line.split()[1:]}
        expected = set(durable) | set(later)
        assert rec.wait_for(lambda m: expected <= {x.message.event_id for x in m
                                                    if x.message.kind == "reading"}, 30)
        got = rec.events()
        assert expected <= {e.event_id for e in got}, "an event committed before SIGKILL is lost"
        assert min(later.values()) > max(durable.values())  # seq survives the crash
        by_id = {e.event_id: e for e in got}
        assert all(by_id[i].seq == s for i, s in durable.items())  # same id, same seq
        assert any(e.replayed for e in got)  # what was pending at the kill came back replayed
        birth = retained_status(mosquitto.host, mosquitto.port, status_topic)
        assert birth is not None and birth.reason == "shutdown"
    finally:
        rec.stop()
