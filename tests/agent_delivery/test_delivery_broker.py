"""Delivery against a real private Mosquitto: live publish, birth/will/shutdown status, rebirth,
replay of the backlog with pacing, live-first, Avro and MQTT 3.1.1, and connection errors."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from bench.harness.mqtt_clients import stop_client
from edge_agent.delivery import Delivery
from edge_agent.mqtt_link import MqttLink, MqttSettings
from edge_agent.outbox import Outbox, OutboxSettings
from edge_agent.stamping import EventStamper
from program_support.mqtt_settings import TlsSettings
from schemas import Topics
from schemas.errors import ServerError
from schemas.plain_messages import SensorInfo
from tests.agent_delivery.helpers import Recorder, draft, retained_status
from tests.servers import Mosquitto, free_port

pytestmark = pytest.mark.servers

SENSORS = [SensorInfo(sensor_id="s1", unit="degC", source="simulator")]


def provider() -> dict[str, Any]:
    return {"agent_version": "1.2.3", "firmware": "fw-9", "sensors": SENSORS,
            "counters": {"readings": 7.0}}


MakeDelivery = Callable[..., tuple[Delivery, EventStamper]]


@pytest.fixture
def make_delivery(tmp_path: Path) -> Iterator[MakeDelivery]:
    made: list[tuple[Delivery, Outbox]] = []

    def make(host: str, port: int, root: str, *, outbox: Outbox | None = None,
             rate: float | None = None, status: Callable[[], dict[str, Any]] = provider,
             **mqtt: Any) -> tuple[Delivery, EventStamper]:
        if outbox is None:
            outbox = Outbox(OutboxSettings(path=tmp_path / f"o{len(made)}.db", min_free_bytes=0,
                                           flush_interval_s=0.1))
        mqtt.setdefault("receipts", "off")  # the broker alone: deleted at its PUBACK
        settings = MqttSettings(host=host, port=port, topic_root=root, reconnect_min_s=0.2,
                                reconnect_max_s=1.0, **mqtt)
        delivery = Delivery(outbox, settings, "site1", "dev1", status, backlog_rate_per_s=rate)
        made.append((delivery, outbox))
        return delivery, EventStamper("site1", "dev1", outbox)

    yield make
    for delivery, outbox in made:
        delivery.stop(3)
        outbox.close()


def wait(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_a_changed_sensor_list_goes_out_in_an_update_at_once_and_only_once(
        mosquitto: Mosquitto, topic_root: str, make_delivery: MakeDelivery) -> None:
    """A birth sent before the sources finished looking lists what they had found; the list
    they find next goes out 2 s after the birth, not a status interval (an hour here)."""
    listed: dict[str, Any] = {"sensors": [], "sensors_complete": False}
    rec = Recorder(mosquitto.host, mosquitto.port, Topics(topic_root).hub_filters()).start()
    try:
        delivery, _ = make_delivery(mosquitto.host, mosquitto.port, topic_root,
                                    status=lambda: dict(provider(), **listed),
                                    status_interval_s=3600.0)
        delivery.start()
        assert rec.wait_for(lambda m: any(x.message.kind == "status" for x in m), 10)
        delivery.sensors_changed((False, frozenset()))  # what the birth said: nothing to send
        time.sleep(1.5)
        assert [m.message.reason for m in rec.statuses()] == ["birth"]
        assert rec.statuses()[0].message.sensors == []

        listed.update(sensors=SENSORS, sensors_complete=True)
        changed_at = time.monotonic()
        delivery.sensors_changed((True, frozenset({"s1"})))
        assert rec.wait_for(lambda m: len([x for x in m if x.message.kind == "status"]) >= 2, 5)
        assert time.monotonic() - changed_at < 3.5  # 2 s after the birth at the earliest
        update = rec.statuses()[1].message
        assert (update.reason, update.online, update.sensors_complete) == ("update", True, True)
        assert [s.sensor_id for s in update.sensors] == ["s1"]
        delivery.sensors_changed((True, frozenset({"s1"})))  # told again: already said
        time.sleep(1.5)
        assert len(rec.statuses()) == 2
    finally:
        rec.stop()


def test_a_sensor_list_no_status_can_carry_is_tried_again_only_at_the_status_interval(
        mosquitto: Mosquitto, topic_root: str, make_delivery: MakeDelivery) -> None:
    """A list the contract refuses (more than SENSORS_MAX sensors) fails the status each time:
    it is logged and tried again at the periodic status, never in a loop."""
    from schemas.vocabulary import SENSORS_MAX

    too_many = [SensorInfo(sensor_id=f"s{i}", unit="degC", source="simulator")
                for i in range(SENSORS_MAX + 1)]
    listed: dict[str, Any] = {"sensors": SENSORS, "sensors_complete": True}
    built = [0]

    def status() -> dict[str, Any]:
        built[0] += 1
        return dict(provider(), **listed)

    delivery, _ = make_delivery(mosquitto.host, mosquitto.port, topic_root, status=status,
                                status_interval_s=3600.0)
    delivery.start()
    assert wait(lambda: delivery.count("status_published") == 1, 10)  # the birth
    listed.update(sensors=too_many)
    before = built[0]
    delivery.sensors_changed((True, frozenset(s.sensor_id for s in too_many)))
    time.sleep(4.0)
    assert 1 <= built[0] - before <= 2, built[0] - before  # tried, then not again and again
    assert delivery.count("status_published") == 1


def test_live_events_status_and_rebirth(mosquitto: Mosquitto, topic_root: str,
                                        make_delivery: MakeDelivery) -> None:
    rec = Recorder(mosquitto.host, mosquitto.port, Topics(topic_root).hub_filters()).start()
    try:
        delivery, stamper = make_delivery(mosquitto.host, mosquitto.port, topic_root,
                                          status_interval_s=0.5)
        delivery.start()
        delivery.link.wait_connected(10)
        events = [stamper.stamp(draft("reading", "s1", value=float(i)), True) for i in range(30)]
        events.append(stamper.stamp(draft("summary", "s1"), True))
        delivery.submit(events)
        assert rec.wait_for(lambda m: len([x for x in m if x.message.kind != "status"]) >= 31, 10)
        got = rec.events()
        assert [e.event_id for e in got] == [e.event_id for e in events]  # live: in order
        assert not any(e.replayed for e in got)
        topics = {m.topic for m in rec.messages if m.message.kind == "summary"}
        assert topics == {Topics(topic_root).summary("site1", "dev1", "s1")}
        assert wait(lambda: delivery.counters()["acked"] == 31
                    and delivery.counters()["outbox_depth"] == 0, 10)

        births = [m.message for m in rec.statuses() if m.message.reason == "birth"]
        assert births and births[0].online
        assert [s.model_dump() for s in births[0].sensors] == [s.to_python() for s in SENSORS]
        assert births[0].session == delivery.link.session >= 1
        assert births[0].agent_version == "1.2.3" and births[0].counters["readings"] == 7.0
        assert rec.wait_for(lambda m: any(x.message.reason == "update" for x in m
                                          if x.message.kind == "status"), 5)
        update = next(m.message for m in rec.statuses() if m.message.reason == "update")
        assert {"events_made", "published", "acked", "outbox_depth", "dropped_summary",
                "dropped_reading", "dropped_alarm", "reconnects", "connected",
                "backlog_depth", "replayed"} <= update.counters.keys()
        retained = retained_status(mosquitto.host, mosquitto.port, delivery.link.status_topic)
        assert retained is not None and retained.online

        # rebirth on command
        assert rec.client is not None
        rec.client.publish(Topics(topic_root).command("site1", "dev1", "rebirth"),
                           json.dumps({"command": "rebirth"}), qos=1)
        assert rec.wait_for(lambda m: len([x for x in m if x.message.kind == "status"
                                           and x.message.reason == "birth"]) >= 2, 5)

        delivery.stop(5)
        assert not delivery.connected
        final = retained_status(mosquitto.host, mosquitto.port, delivery.link.status_topic)
        assert final is not None and (final.online, final.reason) == (False, "shutdown")
    finally:
        rec.stop()


def test_backlog_replays_in_seq_order_paced_and_live_goes_first(
        mosquitto: Mosquitto, topic_root: str, make_delivery: MakeDelivery,
        tmp_path: Path) -> None:
    outbox = Outbox(OutboxSettings(path=tmp_path / "b.db", min_free_bytes=0,
                                   flush_interval_s=0.1))
    # a backlog left by an earlier run (written while no broker was reachable)
    early = EventStamper("site1", "dev1", outbox)
    backlog = [early.stamp(draft("reading", "s1", value=float(i)), True) for i in range(200)]
    outbox.append((e, Topics(topic_root).for_event(e)) for e in backlog)
    outbox.commit()
    rec = Recorder(mosquitto.host, mosquitto.port, [f"{topic_root}/+/+/event/+"]).start()
    try:
        delivery, stamper = make_delivery(mosquitto.host, mosquitto.port, topic_root,
                                          outbox=outbox, rate=100.0)
        delivery.start()
        delivery.link.wait_connected(10)
        assert rec.wait_for(lambda m: len(m) >= 20, 10)  # the drain is under way
        live = [stamper.stamp(draft("fault", "s1"), True) for _ in range(5)]
        delivery.submit(live)
        assert rec.wait_for(lambda m: len(m) >= 205, 15)
        got = rec.events()
        replayed = [e for e in got if e.replayed]
        assert [e.event_id for e in replayed] == [e.event_id for e in backlog]  # seq order
        fresh = [e for e in got if not e.replayed]
        assert [e.event_id for e in fresh] == [e.event_id for e in live]
        # live first: the fault events overtook the rest of the backlog
        last_live = max(i for i, e in enumerate(got) if not e.replayed)
        assert last_live < len(got) - 50
        # counted just after the publish call returns: the subscriber may have the message first
        assert wait(lambda: delivery.counters()["replayed"] == 200, 10), delivery.counters()
    finally:
        rec.stop()


def test_backlog_drain_rate_is_capped(mosquitto: Mosquitto, topic_root: str,
                                      make_delivery: MakeDelivery, tmp_path: Path) -> None:
    outbox = Outbox(OutboxSettings(path=tmp_path / "r.db", min_free_bytes=0))
    early = EventStamper("site1", "dev1", outbox)
    outbox.append((e, Topics(topic_root).for_event(e))
                  for e in (early.stamp(draft(), True) for _ in range(150)))
    outbox.commit()
    delivery, _ = make_delivery(mosquitto.host, mosquitto.port, topic_root, outbox=outbox,
                                rate=100.0)
    started = time.monotonic()
    delivery.start()
    assert wait(lambda: delivery.counters()["acked"] == 150, 15)
    elapsed = time.monotonic() - started
    assert elapsed > 1.2, f"150 events at 100/s drained in {elapsed:.2f}s"


def test_avro_over_mqtt_3_1_1(mosquitto: Mosquitto, topic_root: str,
                              make_delivery: MakeDelivery) -> None:
    rec = Recorder(mosquitto.host, mosquitto.port, Topics(topic_root).hub_filters()).start()
    try:
        delivery, stamper = make_delivery(mosquitto.host, mosquitto.port, topic_root,
                                          protocol="3.1.1", encoding="avro")
        delivery.start()
        delivery.link.wait_connected(10)
        events = [stamper.stamp(draft(k), True) for k in ("reading", "state_change",
                                                           "rate_alarm", "fault", "summary")]
        delivery.submit(events)
        assert rec.wait_for(lambda m: len(m) >= 6, 10)
        assert all(m.payload[:2] == b"\xc3\x01" for m in rec.messages)
        assert [e.event_id for e in rec.events()] == [e.event_id for e in events]
        assert rec.statuses()[0].message.reason == "birth"
    finally:
        rec.stop()


def _link(port: int, **kw: Any) -> MqttLink:
    from program_support.plain_config import parse

    # as the agent reads its [mqtt] table: the password is a secret reference resolved here
    settings = parse({"host": "127.0.0.1", "port": port, "topic_root": "tp",
                      "reconnect_min_s": 0.2, "reconnect_max_s": 0.5, "connect_timeout_s": 3,
                      **kw}, MqttSettings)
    return MqttLink(settings, "site1", "dev1", notify=lambda e: None,
                    next_session=lambda: 1, will_payload=lambda s: b"{}")


def test_connection_errors_say_what_is_wrong(mosquitto_factory: Callable[..., Mosquitto],
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # nobody listens
    link = _link(free_port())
    link.start()
    with pytest.raises(ServerError, match="unreachable: connection refused"):
        link.wait_connected(1)
    link.stop()

    # a broker that wants a password
    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "dev1", "right"], check=True)
    broker = mosquitto_factory(extra_config=[f"password_file {pwfile}",
                                             "allow_anonymous false"])
    monkeypatch.setenv("TP_TEST_PW", "wrong")
    link = _link(broker.port, username="dev1", password="env:TP_TEST_PW")
    assert "wrong" not in repr(link.settings)  # a secret never shows in logs or reprs
    link.start()
    with pytest.raises(ServerError, match="bad credentials"):
        link.wait_connected(1)
    link.stop()
    monkeypatch.setenv("TP_TEST_PW", "right")
    link = _link(broker.port, username="dev1", password="env:TP_TEST_PW")
    link.start()
    link.wait_connected(5)
    link.stop()

    # TLS spoken to a plain port
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    link = _link(broker.port, tls={"ca_file": str(ca_file)})
    link.start()
    try:
        with pytest.raises(ServerError, match="TLS failure"):
            link.wait_connected(1)
    finally:
        link.stop()


def test_tls_settings_build_a_verifying_context(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("device1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ctx = TlsSettings(ca_file=ca_file, cert_file=cert_file, key_file=key_file).context()
    assert ctx.check_hostname
    with pytest.raises(ServerError, match="TLS configuration unusable"):
        TlsSettings(ca_file=tmp_path / "missing.pem").context()
    with pytest.raises(ValueError, match="cert_file"):
        TlsSettings(key_file=key_file)


def test_without_a_broker_events_are_kept_and_counted(tmp_path: Path) -> None:
    outbox = Outbox(OutboxSettings(path=tmp_path / "n.db", min_free_bytes=0,
                                   flush_interval_s=0.1))
    settings = MqttSettings(host="127.0.0.1", port=free_port(), topic_root="tp",
                            reconnect_min_s=0.2, reconnect_max_s=0.5, receipts="off")
    delivery = Delivery(outbox, settings, "site1", "dev1", provider)
    stamper = EventStamper("site1", "dev1", outbox)
    try:
        delivery.start()
        events = [stamper.stamp(draft(), True) for _ in range(25)]
        delivery.submit(events)
        delivery.flush()
        c = delivery.counters()
        assert (c["events_made"], c["outbox_depth"], c["backlog_depth"]) == (25, 25, 25)
        assert (c["connected"], c["published"]) == (0, 0)
        assert not delivery.connected
        assert wait(lambda: delivery.link.connect_failures >= 2, 5)  # it keeps trying
    finally:
        delivery.stop(1)
        outbox.close()
    with Outbox(OutboxSettings(path=tmp_path / "n.db", min_free_bytes=0)) as again:
        assert [r.event_id for r in again.read()] == [e.event_id for e in events]


def test_two_clients_with_one_client_id_are_reported_not_left_to_storm(
        mosquitto: Mosquitto) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    link = _link(mosquitto.port)
    link.start()
    link.wait_connected(10)
    # a second device configured with the same id (a cloned SD card): Mosquitto 2.0 closes the
    # older connection without a reason, and both reconnect
    twin = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=link.client_id,
                       protocol=mqtt.MQTTv5)
    twin.connect(mosquitto.host, mosquitto.port)
    twin.loop_start()
    try:
        deadline = time.monotonic() + 30
        while "another client with client id" not in str(link.last_error):
            assert time.monotonic() < deadline, f"no clash reported: {link.last_error}"
            time.sleep(0.1)
        assert link.client_id in str(link.last_error)
    finally:
        stop_client(twin)
    link.wait_connected(15)  # the twin gone: back by itself
    link.stop()
