"""The hub's own records: its ``hub_health`` points and its alerts, stored through the journal
(``LocalRecord``, for the storage consumer only); and the broker's refusal reason in /healthz."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from hub.app import Hub
from hub.consumers.base import ConsumerDefaults, Envelope, JournalEntry, LocalRecord
from hub.dispatch import ConsumerRunner
from hub.journal import BatchRecord, Journal, Pending
from hub.metrics import HubMetrics
from hub.records import Point
from hub.storage.points import health_point, point_for
from schemas.codec import encode
from schemas.errors import DeliveryError
from schemas.models import Alert, StateChangeEvent
from schemas.topics import Topics
from tests.hub_core.helpers import (
    BASE_TIME,
    Publisher,
    hub_config,
    messages_for,
    reading,
    readings,
    state_change,
    wait_until,
)
from tests.servers import free_port, require_binary

T = Topics("tp")


def _pending(seq: int) -> Pending:
    event = reading(seq)
    return Pending(event, T.for_event(event), encode(event), BASE_TIME, False, False)


def _alert_point() -> Point:
    alert = Alert(alert_id="a" * 32, group_key="s1/d1/t1/default", status="firing",
                  severity="warning", rule="default", site="s1", device_id="d1",
                  sensor_id="t1", summary="s1/d1/t1 is high", event_id="e" * 32,
                  event_time=BASE_TIME, time=BASE_TIME, late=True)
    point = point_for(alert)
    assert point is not None
    return point


# --- fast: no servers --------------------------------------------------------------------------

def test_local_records_are_journaled_in_order_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    health = health_point("hub-1", 1_800_000_000_000_000_000, events_in=7, duplicates=1,
                          dead_lettered=2, backlogs={"storage": 3, "alerting": 0}, lag_s=0.0)
    journal = Journal(path)
    try:
        journal.register("storage")
        first = journal.record(BatchRecord([_pending(1)]))
        local = journal.append_local([("alert-1", _alert_point()), ("health-1", health)])
        last = journal.record(BatchRecord([_pending(2)]))
        entries: list[JournalEntry] = [*first, *local, *last]
        assert [e.offset for e in entries] == [1, 2, 3, 4]
        assert journal.read(0, 10) == entries
    finally:
        journal.close()
    journal = Journal(path)  # read back from the file, not the in-memory tail
    try:
        entries = journal.read(0, 10)
        assert [type(e) for e in entries] == [Envelope, LocalRecord, LocalRecord, Envelope]
        stored = entries[2]
        assert isinstance(stored, LocalRecord) and stored.point == health
        assert stored.point.to_line() == health.to_line()  # ints stay ints, 0.0 stays a float
        assert "events_in=7i" in health.to_line() and "lag_s=0.0" in health.to_line()
        assert entries[1].point == _alert_point()  # type: ignore[union-attr]
        assert journal.append_local([("health-2", health)])[0].offset == 5
    finally:
        journal.close()


class _Recorder(ConsumerDefaults):
    def __init__(self, name: str, accepts_local: bool) -> None:
        self.name = name
        self.accepts_local = accepts_local
        self.got: list[JournalEntry] = []

    def handle(self, batch: Sequence[JournalEntry]) -> None:
        self.got.extend(batch)

    def close(self) -> None:
        pass


def test_only_consumers_that_accept_local_records_get_them(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "hub.sqlite3")
    metrics = HubMetrics()
    storage, alerting = _Recorder("storage", True), _Recorder("alerting", False)
    runners = [ConsumerRunner(c, journal, metrics) for c in (storage, alerting)]
    try:
        for runner in runners:
            runner.start()
        journal.record(BatchRecord([_pending(1)]))
        journal.append_local([("alert-1", _alert_point())])
        journal.append_local([("alert-2", _alert_point())])  # a batch of local records only
        journal.record(BatchRecord([_pending(2)]))
        wait_until(lambda: all(r.state.cursor == journal.last_offset for r in runners), 10,
                   what="both consumers past every entry")
        assert [e.offset for e in storage.got] == [1, 2, 3, 4]
        assert [e.offset for e in alerting.got] == [1, 4]
        assert all(type(e) is Envelope for e in alerting.got)
        assert [r.state.processed for r in runners] == [2, 2]  # contract events only
    finally:
        for runner in runners:
            runner.stop()
        journal.close()


# --- with real servers -------------------------------------------------------------------------

def _health_rows(influxdb: Any, db: str) -> list[dict[str, Any]]:
    query = 'SELECT * FROM "hub_health" ORDER BY time'
    rows: list[dict[str, Any]] = influxdb.series_rows(query, db)
    return rows


class _Gate(ConsumerDefaults):
    """A consumer that holds its first batch until opened: backlog and lag build up."""

    name = "gate"

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.got: list[Envelope] = []

    def handle(self, batch: Sequence[Envelope]) -> None:
        if not self.opened.wait(30):
            raise DeliveryError("gate still closed")
        self.got.extend(batch)

    def close(self) -> None:
        self.opened.set()


@pytest.mark.servers
def test_health_points_in_influxdb_1x_count_backlog_and_lag(tmp_path: Path, mosquitto, influxdb,
                                                            influx_db_name, topic_root) -> None:
    # A health point is itself a journal entry that storage handles after its flush wait: with
    # the two intervals equal (0.2 s), a sample with every backlog at 0 needed luck on a loaded
    # machine. Storage flushes 20 times per health interval here.
    config = hub_config(tmp_path, mosquitto, topic_root, storage={
        "enabled": True, "mode": "v1", "url": influxdb.url, "database": influx_db_name,
        "health_interval_s": 1.0, "flush_interval_s": 0.05})
    gate = _Gate()
    events = readings(20)
    messages = messages_for(Topics(topic_root), events)
    messages += [messages[0], (messages[0][0], b"not a contract message")]
    with Hub(config, extra_consumers=[gate]) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="hub subscribed")
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            pub.publish_all(messages)
        finally:
            pub.close()

        def held() -> bool:
            rows = _health_rows(influxdb, influx_db_name)
            return bool(rows) and rows[-1]["backlog_gate"] >= 20 and rows[-1]["lag_s"] > 0.3
        wait_until(held, 30, what="a health point showing the gate's backlog and lag")
        assert hub.web is not None
        metrics = httpx.get(f"http://127.0.0.1:{hub.web.port}/metrics", timeout=10).text
        lag = [line for line in metrics.splitlines()
               if line.startswith("thermopipe_hub_journal_lag_seconds ")]
        assert lag and float(lag[0].split()[1]) > 0.3
        gate.opened.set()

        def settled() -> dict[str, Any] | None:
            last = _health_rows(influxdb, influx_db_name)[-1]
            backlogs = [v for k, v in last.items() if k.startswith("backlog_")]
            return last if last["lag_s"] == 0 and not any(backlogs) else None
        last = wait_until(settled, 30, what="a health point with nothing left to handle")
        names = [c.name for c in hub.consumers]
    assert {k for k in last if k.startswith("backlog_")} == {f"backlog_{n}" for n in names}
    assert (last["hub"], last["events_in"], last["duplicates"], last["dead_lettered"]) == (
        "testhub", 22, 1, 1)
    types = {r["fieldKey"]: r["fieldType"] for r in influxdb.series_rows(
        'SHOW FIELD KEYS FROM "hub_health"', influx_db_name)}
    assert types == {"events_in": "integer", "duplicates": "integer",
                     "dead_lettered": "integer", "lag_s": "float",
                     **{f"backlog_{n}": "integer" for n in names}}
    assert len(gate.got) == 20 and all(type(e) is Envelope for e in gate.got)


def _publish_alert_events(hub: Hub, mosquitto: Any, topic_root: str) -> None:
    """Once the hub is subscribed, publish the events that make its four alerts."""
    wait_until(hub.ingest.subscribed.is_set, 15, what="hub subscribed")
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        pub.publish_all(messages_for(Topics(topic_root), _alert_events()))
    finally:
        pub.close()


def _alert_events() -> list[StateChangeEvent]:
    return [state_change(1, "high", "normal", sensor="t1"), state_change(2, "high", "normal",
            sensor="t2"), state_change(3, "normal", "high", sensor="t1"),
            state_change(4, "normal", "high", sensor="t2")]


def _stored_alert_ids(influxdb: Any, db: str) -> list[str]:
    rows = influxdb.series_rows('SELECT "alert_id" FROM "alert"', db)
    return sorted(r["alert_id"] for r in rows)


def _fail_once_after_work(consumer: Any, when: Callable[[Sequence[Any]], bool]) -> list[int]:
    """The consumer does its work, then reports a failure once (an answer lost after the
    write): the dispatcher hands the same batch over again."""
    real = consumer.handle
    failed: list[int] = []

    def handle(batch: Sequence[Any]) -> None:
        real(batch)
        if not failed and when(batch):
            failed.append(len(batch))
            raise DeliveryError("answer lost after the work was done (test)")
    consumer.handle = handle
    return failed


def _alerting(hub: Hub) -> Any:
    return next(c for c in hub.consumers if c.name == "alerting")


@pytest.mark.servers
def test_alerts_are_stored_exactly_once_even_when_batches_are_redelivered(
        tmp_path: Path, mosquitto, influxdb, influx_db_name, topic_root) -> None:
    config = hub_config(tmp_path, mosquitto, topic_root, storage={
        "enabled": True, "mode": "v1", "url": influxdb.url, "database": influx_db_name,
        "health_interval_s": 3600.0})
    decided: list[Alert] = []
    with Hub(config) as hub:
        _alerting(hub).add_listener(decided.append)
        storage_failed = _fail_once_after_work(hub.consumers[0], lambda b: any(
            isinstance(e, LocalRecord) and e.point.measurement == "alert" for e in b))
        alerting_failed = _fail_once_after_work(_alerting(hub), lambda b: any(
            isinstance(e.message, StateChangeEvent) for e in b))
        _publish_alert_events(hub, mosquitto, topic_root)
        wait_until(lambda: len(_stored_alert_ids(influxdb, influx_db_name)) >= 4, 30,
                   what="four alerts stored")
        wait_until(lambda: all(r.backlog == 0 for r in hub.runners), 30, what="all handled")
        assert storage_failed and alerting_failed  # both batches really came twice
    assert sorted(a.status for a in decided) == ["firing", "firing", "resolved", "resolved"]
    assert _stored_alert_ids(influxdb, influx_db_name) == sorted(a.alert_id for a in decided)
    rows = influxdb.series_rows('SELECT * FROM "alert" WHERE "sensor" = \'t1\'', influx_db_name)
    assert sorted((r["status"], r["firing"], r["rule"]) for r in rows) == [
        ("firing", 1, "default"), ("resolved", 0, "default")]


@pytest.mark.servers
def test_alerts_and_health_decided_while_influxdb_is_unreachable_are_stored_after_a_restart(
        tmp_path: Path, mosquitto, influxdb, influx_db_name, topic_root) -> None:
    storage = {"enabled": True, "mode": "v1", "url": f"http://127.0.0.1:{free_port()}",
               "database": influx_db_name, "health_interval_s": 0.2, "timeout_s": 2.0}
    config = hub_config(tmp_path, mosquitto, topic_root, storage=storage)
    decided: list[Alert] = []
    with Hub(config) as hub:
        _alerting(hub).add_listener(decided.append)
        _publish_alert_events(hub, mosquitto, topic_root)
        wait_until(lambda: len(decided) == 4, 30, what="four alerts decided")
        recorder = hub.health_recorder
        assert recorder is not None
        wait_until(lambda: recorder.recorded >= 2, 10, what="health points taken")
        recorded = recorder.recorded
        assert "unreachable" in hub.health()["consumers"]["storage"]["last_error"]
    # the same data dir, InfluxDB reachable now: what waited in the journal is written
    config = hub_config(tmp_path, mosquitto, topic_root,
                        storage={**storage, "url": influxdb.url, "health_interval_s": 3600.0})
    with Hub(config) as hub:
        wait_until(lambda: len(_stored_alert_ids(influxdb, influx_db_name)) == 4, 30,
                   what="the four alerts stored after the restart")
        wait_until(lambda: all(r.backlog == 0 for r in hub.runners), 30, what="all handled")
    assert _stored_alert_ids(influxdb, influx_db_name) == sorted(a.alert_id for a in decided)
    assert len(_health_rows(influxdb, influx_db_name)) >= recorded


@pytest.mark.servers
def test_a_refused_connect_shows_its_reason_in_healthz(tmp_path: Path, mosquitto_factory,
                                                       topic_root) -> None:
    passwd_bin = require_binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run([passwd_bin, "-b", str(passwd), "hub", "right-password"], check=True,
                   capture_output=True, timeout=30)
    broker = mosquitto_factory(extra_config=[f"password_file {passwd}"])
    config = hub_config(tmp_path, broker, topic_root, mqtt={
        "host": broker.host, "port": broker.port, "topic_root": topic_root,
        "username": "hub", "password": SecretStr("wrong-password")})
    with Hub(config) as hub:
        assert hub.web is not None
        url = f"http://127.0.0.1:{hub.web.port}/healthz"

        def reason() -> str:
            response = httpx.get(url, timeout=10)
            assert response.status_code == 503
            return str(response.json()["mqtt_last_error"]).lower()
        refused = ("not authorized", "bad user name or password")
        wait_until(lambda: any(r in reason() for r in refused), 15, what="the refusal reason")
        # paho closes the refused connection right away (a "disconnect"): the reason stays
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            assert any(r in reason() for r in refused), reason()
            time.sleep(0.1)


@pytest.mark.servers
def test_the_embedded_sqlite_store_gets_the_alerts_and_health_points_too(
        tmp_path: Path, mosquitto, topic_root) -> None:
    store = tmp_path / "store.sqlite3"
    config = hub_config(tmp_path, mosquitto, topic_root, storage={
        "enabled": True, "mode": "sqlite", "path": str(store), "health_interval_s": 0.2})
    decided: list[Alert] = []
    with Hub(config) as hub:
        _alerting(hub).add_listener(decided.append)
        _publish_alert_events(hub, mosquitto, topic_root)
        sqlite_store = hub.consumers[0]

        def latest_health() -> tuple[dict[str, Any], dict[str, Any]] | None:
            db = sqlite3.connect(store)
            try:
                row = db.execute("SELECT tags, fields FROM points WHERE measurement = "
                                 "'hub_health' ORDER BY time_ns DESC LIMIT 1").fetchone()
            finally:
                db.close()
            return None if row is None else (json.loads(row[0]), json.loads(row[1]))
        wait_until(lambda: sqlite_store.count("alert") == 4  # type: ignore[attr-defined]
                   and (h := latest_health()) is not None and h[1]["events_in"] == 4,
                   30, what="alerts and a health point counting the events, in the store")
        tags, fields = latest_health()  # type: ignore[misc]
        names = {c.name for c in hub.consumers}
    db = sqlite3.connect(store)
    try:
        ids = sorted(json.loads(f)["alert_id"] for (f,) in db.execute(
            "SELECT fields FROM points WHERE measurement = 'alert'"))
    finally:
        db.close()
    assert ids == sorted(a.alert_id for a in decided)
    assert tags == {"hub": "testhub"}
    assert (fields["duplicates"], fields["dead_lettered"]) == (0, 0)
    assert {k for k in fields if k.startswith("backlog_")} == {f"backlog_{n}" for n in names}
    assert {"storage", "alerting"} <= names
