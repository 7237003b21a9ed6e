"""Fills an InfluxDB 1.x THROUGH THE HUB for the Grafana query tests.

A scripted set of contract messages for two sites, two devices and three sensors (readings,
summaries, state changes, a fault, a rate alarm, replayed and unsynced-clock readings, statuses
online and offline, one duplicate and one undecodable payload) is published with paho to a
private Mosquitto, and a real hub process (``python -m hub.cli run -c ...``, storage mode "v1")
writes them to the database.

Every measurement the dashboards read is written by the hub itself: the events, and its own
``alert`` points (every alert its alerting consumer decides) and ``hub_health`` points (every
``[storage] health_interval_s``, short here). The alerts the hub also publishes with its MQTT
notifier on ``{root}/_hub/alerts/...`` are collected as the independent record of what it decided.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness.mqtt_clients import stop_client
from hub.records import Point
from hub.storage.points import point_for
from schemas.codec import decode, encode
from schemas.models import (
    Alert,
    DeviceStatus,
    FaultEvent,
    RateAlarmEvent,
    ReadingEvent,
    SensorInfo,
    StateChangeEvent,
    SummaryEvent,
    ThresholdInfo,
)
from schemas.topics import Topics
from tests.servers import InfluxDB1, free_port

ROOT = Path(__file__).resolve().parents[2]
LAB, LAB_DEV = "lab", "pi.lab-1"      # a dot and a dash: Grafana's regex escaping matters
BARN, BARN_DEV = "barn", "pi-barn"
SENSORS = {(LAB, LAB_DEV): ("tank", "room"), (BARN, BARN_DEV): ("tank",)}
UNITS = {"room": "degF"}  # the lab room sensor reports Fahrenheit; every other sensor Celsius
V1_SETUP = ROOT / "deploy" / "influxdb" / "v1" / "setup.sh"
HUB_ID = "hub-grafana-test"
HEALTH_INTERVAL_S = 0.5

Message = (ReadingEvent | StateChangeEvent | RateAlarmEvent | FaultEvent | SummaryEvent
           | DeviceStatus)


def _id() -> str:
    return uuid.uuid4().hex


@dataclass
class Filled:
    """What went in, so the tests can say what each query must return."""

    db: str
    base: datetime
    messages: list[Message]
    alerts: list[Alert] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)  # the last stored hub_health point
    hub_log: str = ""

    @property
    def events(self) -> list[ReadingEvent | StateChangeEvent | RateAlarmEvent | FaultEvent]:
        return [m for m in self.messages
                if isinstance(m, ReadingEvent | StateChangeEvent | RateAlarmEvent | FaultEvent)]

    @property
    def summaries(self) -> list[SummaryEvent]:
        return [m for m in self.messages if isinstance(m, SummaryEvent)]

    @property
    def statuses(self) -> list[DeviceStatus]:
        return [m for m in self.messages if isinstance(m, DeviceStatus)]

    def points(self) -> list[Point]:
        return [p for m in self.messages if (p := point_for(m)) is not None]


def scenario(base: datetime) -> list[Message]:
    """The messages, in the order a device would send them."""
    seq: dict[str, int] = {}
    out: list[Message] = []

    def common(site: str, device: str, sensor: str, minute: float, **kw: Any) -> dict[str, Any]:
        seq[device] = seq.get(device, 0) + 1
        return dict(event_id=_id(), site=site, device_id=device, sensor_id=sensor,
                    seq=seq[device], time=base + timedelta(minutes=minute),
                    clock_synced=kw.pop("clock_synced", True), replayed=kw.pop("replayed", False),
                    **kw)

    high = ThresholdInfo(name="high", direction="above", value=30.0, hysteresis=1.0, dwell_s=0.0,
                         severity="warning")
    for (site, device), sensors in SENSORS.items():
        out.append(DeviceStatus(
            event_id=_id(), site=site, device_id=device, time=base, clock_synced=True,
            online=True, reason="birth", session=1, agent_version="0.1.0",
            sensors=[SensorInfo(sensor_id=s, unit=UNITS.get(s, "degC"),  # type: ignore[arg-type]
                                source="simulator", thresholds=[high]) for s in sensors],
            counters={"outbox_events": 0.0, "dropped": 0.0}))
    lab_tank = [20.0, 22.0, 24.0, 26.0, 28.0, 30.5, 32.0, 33.0, 31.0, 29.0, 27.0, 25.0, 24.0,
                23.0, 22.5]
    for minute in range(1, 16):
        v = lab_tank[minute - 1]
        out.append(ReadingEvent(**common(LAB, LAB_DEV, "tank", minute, value=v, unit="degC")))
        if minute == 6:
            out.append(StateChangeEvent(**common(
                LAB, LAB_DEV, "tank", minute + 0.5, value=v, unit="degC", previous_state="normal",
                new_state="high", threshold=30.0, severity="warning", dwell_s=0.0)))
        if minute == 10:
            out.append(StateChangeEvent(**common(
                LAB, LAB_DEV, "tank", minute + 0.5, value=v, unit="degC", previous_state="high",
                new_state="normal", severity="info", dwell_s=0.0)))
        if minute % 3 == 0:
            out.append(ReadingEvent(**common(
                LAB, LAB_DEV, "room", minute + 0.2, value=70.0 + minute / 10, unit="degF",
                clock_synced=minute != 12)))   # one made before the Pi had NTP time
        if minute == 9:  # the Fahrenheit sensor crosses its own threshold, in degF
            out.append(StateChangeEvent(**common(
                LAB, LAB_DEV, "room", minute + 0.6, value=74.5, unit="degF",
                previous_state="normal", new_state="warm", threshold=74.0, severity="info",
                dwell_s=0.0)))
        out.append(ReadingEvent(**common(
            BARN, BARN_DEV, "tank", minute + 0.1, value=4.0 + minute / 4, unit="degC",
            replayed=minute in (2, 3))))       # two sent from the outbox after an outage
        if minute == 4:
            out.append(FaultEvent(**common(
                BARN, BARN_DEV, "tank", minute + 0.3, fault="power_on_value", active=True,
                value=85.0, unit="degC", detail="85.0 degC right after power-on")))
        if minute == 5:
            out.append(FaultEvent(**common(
                BARN, BARN_DEV, "tank", minute + 0.3, fault="power_on_value", active=False,
                unit="degC", detail="recovered")))
        if minute == 8:
            out.append(RateAlarmEvent(**common(
                BARN, BARN_DEV, "tank", minute + 0.4, value=6.0, unit="degC", rate_per_min=2.5,
                limit_per_min=1.0, active=True)))
        if minute % 5 == 0:
            for (site, device), sensors in SENSORS.items():
                for sensor in sensors:
                    lo = 20.0 + minute if device == LAB_DEV else 4.0
                    lo = 68.0 + minute if sensor == "room" else lo
                    out.append(SummaryEvent(**common(
                        site, device, sensor, minute + 0.05,
                        unit=UNITS.get(sensor, "degC"),  # type: ignore[arg-type]
                        window_start=base + timedelta(minutes=minute - 5), count=5,
                        min=lo, max=lo + 3.0, mean=lo + 1.5, last=lo + 2.0)))
    out.append(DeviceStatus(
        event_id=_id(), site=LAB, device_id=LAB_DEV, time=base + timedelta(minutes=16),
        clock_synced=True, online=True, reason="update", session=1,
        counters={"outbox_events": 3.0, "dropped": 0.0, "read_errors": 1.0}))
    out.append(DeviceStatus(   # the will: the broker sends it when the barn Pi vanishes
        event_id=_id(), site=BARN, device_id=BARN_DEV, time=base + timedelta(minutes=17),
        clock_synced=True, online=False, reason="will", session=1))
    out.sort(key=lambda m: m.time)
    return out


# --- the pipeline -----------------------------------------------------------------------------

class _Publisher:
    def __init__(self, host: str, port: int, alert_filter: str) -> None:
        self.alerts: queue.Queue[bytes] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fill-{_id()[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, msg: self.alerts.put(bytes(msg.payload))
        self.client.connect(host, port)
        self.client.loop_start()
        # sent before any publish on this connection, so it is in place before any alert
        self.client.subscribe(alert_filter, qos=1)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), f"not acknowledged: {topic}"

    def close(self) -> None:
        stop_client(self.client)


def _wait(what: str, check: Callable[[], bool], timeout: float, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; hub log tail:\n{log()[-3000:]}")


def _count(influx: InfluxDB1, db: str, measurement: str) -> int:
    rows = influx.series_rows(f'SELECT count("event_id") FROM "{measurement}"', db)
    return int(rows[0]["count"]) if rows else 0


def _idle_health_seconds(influx: InfluxDB1, db: str) -> set[int]:
    rows = influx.series_rows('SELECT "events_in" FROM "hub_health" WHERE "events_in" = 0', db)
    return {int(r["time"]) // 1_000_000_000 for r in rows}


def _last_health(influx: InfluxDB1, db: str) -> dict[str, Any]:
    rows = influx.series_rows(
        f'SELECT * FROM "hub_health" WHERE "hub" = \'{HUB_ID}\' ORDER BY time DESC LIMIT 1', db)
    return rows[0] if rows else {}


def fill_through_hub(influx: InfluxDB1, broker_host: str, broker_port: int, workdir: Path,
                     ) -> Filled:
    db = f"grafana_{_id()[:10]}"
    # the database as deploy/influxdb/v1/setup.sh provisions it: retention policies and the
    # continuous query of the long-term series
    subprocess.run(["bash", str(V1_SETUP), "--url", influx.url, "--db", db], check=True,
                   capture_output=True, text=True, timeout=60)
    root = f"g{_id()[:10]}"
    topics = Topics(root)
    now = datetime.now(UTC).replace(microsecond=0)
    filled = Filled(db, now - timedelta(minutes=20), [])
    filled.messages = scenario(filled.base)
    http_port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "hub.toml"
    config.write_text(f"""
hub_id = "{HUB_ID}"
data_dir = "{workdir / 'data'}"
late_after_s = 86400.0
[mqtt]
host = "{broker_host}"
port = {broker_port}
topic_root = "{root}"
[storage]
mode = "v1"
url = "{influx.url}"
database = "{db}"
flush_interval_s = 0.1
health_interval_s = {HEALTH_INTERVAL_S}
[http]
host = "127.0.0.1"
port = {http_port}
[log]
format = "json"
[alerting]
late_after_s = 86400.0
[alerting.notifiers.mqtt]
type = "mqtt"
[[alerting.rules]]
name = "default"
match = {{ severity_at_least = "warning" }}
notifiers = ["mqtt"]
""")
    log_path = workdir / "hub.log"
    hub_url = f"http://127.0.0.1:{http_port}"
    publisher = _Publisher(broker_host, broker_port, f"{root}/_hub/alerts/#")
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "-c", str(config)],
                                cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)

    def log() -> str:
        return log_path.read_text(errors="replace")

    def connected() -> bool:
        assert proc.poll() is None, f"the hub exited with {proc.returncode}:\n{log()[-3000:]}"
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"{hub_url}/healthz", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("mqtt_connected"))
        return False

    try:
        _wait("the hub to connect", connected, 60, log)
        # Health points before any traffic, in two distinct seconds: the dashboards' rates
        # (a derivative per 1 s bucket in the tests) then start from an all-zero bucket.
        _wait("hub_health points of two seconds before any traffic",
              lambda: len(_idle_health_seconds(influx, db)) >= 2, 30, log)
        # Births first (retained): once stored, the hub's subscription is surely in place.
        births = [m for m in filled.messages if isinstance(m, DeviceStatus)][:2]
        for birth in births:
            publisher.publish(topics.for_status(birth), encode(birth), retain=True)
        _wait("the births in InfluxDB", lambda: _count(influx, db, "device_status") == 2, 30, log)
        duplicate: bytes | None = None
        received = len(births)  # MQTT messages the hub gets: events_in
        for i, m in enumerate(filled.messages):
            if m in births:
                continue
            payload = encode(m, "avro" if i % 2 else "json")  # both encodings
            if isinstance(m, DeviceStatus):
                publisher.publish(topics.for_status(m), payload, retain=True)
            else:
                publisher.publish(topics.for_event(m), payload)
                duplicate = duplicate or payload
                if payload is duplicate:
                    publisher.publish(topics.for_event(m), payload)  # a QoS 1 redelivery
                    received += 1
            received += 1
        publisher.publish(topics.event(LAB, LAB_DEV, "tank"), b"not a contract message")
        received += 1

        expected = {"sensor_event": len(filled.events), "sensor_summary": len(filled.summaries),
                    "device_status": len(filled.statuses)}
        _wait(f"{expected} points in InfluxDB",
              lambda: all(_count(influx, db, k) == v for k, v in expected.items()), 60, log)

        # The alerts the hub published (its MQTT notifier), until none came for 2 s.
        settle = time.monotonic() + 3.0
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and (time.monotonic() < settle or not filled.alerts):
            with contextlib.suppress(queue.Empty):
                alert = decode(publisher.alerts.get(timeout=0.2))
                assert isinstance(alert, Alert)
                filled.alerts.append(alert)
                settle = time.monotonic() + 2.0
        _wait(f"the hub's {len(filled.alerts)} alerts in InfluxDB",
              lambda: _count(influx, db, "alert") >= len(filled.alerts), 30, log)

        # The hub's own health: everything it received counted, nothing left to handle.
        want = {"events_in": received, "duplicates": 1, "dead_lettered": 1}
        _wait(f"a hub_health point with {want} and no backlog",
              lambda: bool(h := _last_health(influx, db))
              and all(h.get(k) == v for k, v in want.items())
              and all(v == 0 for k, v in h.items() if k.startswith("backlog_")), 30, log)
    finally:
        publisher.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        filled.hub_log = log()
    filled.health = _last_health(influx, db)
    backfill_long_term(influx, db, filled.base - timedelta(hours=1),
                       filled.base + timedelta(hours=1))
    return filled


def backfill_long_term(influx: InfluxDB1, db: str, start: datetime, end: datetime) -> None:
    """Run the provisioned continuous query over [start, end), as its README says for data
    written before the query existed (the test server runs no continuous queries itself)."""
    cqs = influx.series_rows("SHOW CONTINUOUS QUERIES", db)
    (cq,) = [r["query"] for r in cqs if r["_measurement"] == db]
    body = re.search(r" BEGIN (SELECT .*) END$", cq)
    assert body, cq
    select = body.group(1)
    where = (f" WHERE time >= '{start.isoformat().replace('+00:00', 'Z')}'"
             f" AND time < '{end.isoformat().replace('+00:00', 'Z')}'")
    head, group = select.split(" GROUP BY ", 1)
    result = influx.query(f"{head}{where} GROUP BY {group}", db)
    assert "error" not in result["results"][0], result
