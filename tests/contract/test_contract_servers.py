"""Contract events through the real servers: a private Mosquitto, InfluxDB 1.x, VictoriaMetrics."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.harness.mqtt_clients import stop_client
from hub.storage.points import point_for
from schemas import Encoding, FaultEvent, ReadingEvent, StateChangeEvent, Topics, decode, encode
from tests.servers import InfluxDB1, Mosquitto, VictoriaMetrics

pytestmark = pytest.mark.servers
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def events(n: int) -> list[ReadingEvent | StateChangeEvent | FaultEvent]:
    out: list[ReadingEvent | StateChangeEvent | FaultEvent] = []
    for i in range(n):
        common = dict(event_id=f"evt{i:013d}", site="lab", device_id="pi-01", sensor_id="t1",
                      seq=i, time=T0 + timedelta(seconds=i), clock_synced=True)
        if i % 3 == 0:
            out.append(ReadingEvent(**common, value=20.0 + i, unit="degC"))  # type: ignore[arg-type]
        elif i % 3 == 1:
            out.append(StateChangeEvent(**common, value=30.0, unit="degC",  # type: ignore[arg-type]
                                        previous_state="normal", new_state="high", threshold=28.0))
        else:
            out.append(FaultEvent(**common, fault="stale", active=True, unit="degC"))  # type: ignore[arg-type]
    return out


def test_contract_events_published_and_received_through_private_mosquitto(
        mosquitto: Mosquitto, topic_root: str) -> None:
    assert mosquitto.port != 1883
    topics = Topics(topic_root)
    sent = events(30)
    received: list[object] = []
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(decode(msg.payload))
        if len(received) == len(sent):
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{topic_root}-sub",
                      protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.on_connect = lambda c, *_a: c.subscribe([(f, 1) for f in topics.hub_filters()])
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{topic_root}-pub",
                      protocol=mqtt.MQTTv5)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        assert subscribed.wait(10)
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        for i, event in enumerate(sent):
            encoding = Encoding.AVRO if i % 2 else Encoding.JSON
            info = pub.publish(topics.for_event(event), encode(event, encoding), qos=1)
            info.wait_for_publish(10)
        assert done.wait(10), f"received {len(received)} of {len(sent)}"
    finally:
        for client in (pub, sub):
            stop_client(client)
    assert sorted(received, key=lambda e: e.seq) == sent  # type: ignore[attr-defined]


def test_contract_events_written_to_influxdb1_and_read_back_with_influxql(
        influxdb: InfluxDB1, influx_db_name: str) -> None:
    sent = events(60)
    lines = "\n".join(p.to_line() for e in sent if (p := point_for(e)) is not None)
    influxdb.write(influx_db_name, lines)
    rows = influxdb.series_rows(
        'SELECT "value", "event_id", "seq" FROM "sensor_event" GROUP BY "kind", "state"',
        influx_db_name)
    assert sorted(r["event_id"] for r in rows) == sorted(e.event_id for e in sent)
    kinds = {(r["kind"], r["state"]) for r in rows}
    assert kinds == {("reading", "value"), ("state_change", "high"), ("fault", "stale")}
    # same device, same microsecond, different seq: two points, not one overwritten
    twin = [e.model_copy(update={"time": T0, "seq": 1001 + i, "event_id": f"twin{i:012d}"})
            for i, e in enumerate(sent[:2])]
    influxdb.write(influx_db_name, "\n".join(point_for(e).to_line() for e in twin))  # type: ignore[union-attr]
    rows = influxdb.series_rows(
        "SELECT count(\"seq\") FROM \"sensor_event\" WHERE time >= '2026-11-26T09:00:00Z' "
        "AND time < '2026-11-26T09:00:00.000001Z'", influx_db_name)
    assert rows[0]["count"] == 3  # sent[0] plus both twins


def test_influxdb_client_v2_write_path_lands_in_victoria_metrics(
        victoria: VictoriaMetrics) -> None:
    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS

    # a site of this test's own: other tests write sensor_event points to the same server
    site = f"contract-{uuid.uuid4().hex[:8]}"
    sent = [e.model_copy(update={"site": site}) for e in events(30)
            if isinstance(e, ReadingEvent)]
    with InfluxDBClient(url=victoria.url, token="unused", org="thermopipe") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket="thermopipe", record=[point_for(e).to_line() for e in sent])  # type: ignore[union-attr]
    series = victoria.export(f'{{__name__="sensor_event_value",site="{site}"}}')
    values = sorted(v for s in series for v in s["values"])
    assert values == sorted(e.value for e in sent)
    assert {s["metric"]["device"] for s in series} == {"pi-01"}
