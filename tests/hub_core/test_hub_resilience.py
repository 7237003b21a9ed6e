"""The hub under failure, with real processes: SIGKILL mid-stream, an InfluxDB outage, consumers
that hang or fail, and three hubs on one shared subscription."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from hub.app import Hub
from hub.consumers.base import ConsumerDefaults, Envelope
from schemas.errors import DeliveryError
from schemas.topics import Topics
from tests.hub_core.helpers import (
    Publisher,
    hub_config,
    influx_count,
    messages_for,
    readings,
    wait_until,
    write_toml,
)

pytestmark = [pytest.mark.servers, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _hub_process(config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "-c", str(config_file)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def _config_file(tmp_path: Path, broker, topic_root: str, storage: dict, **extra) -> Path:
    data = {"hub_id": "prochub", "data_dir": str(tmp_path / "hubdata"),
            "mqtt": {"host": broker.host, "port": broker.port, "topic_root": topic_root,
                     "client_id": f"hub-{topic_root}"},
            "storage": storage, "http": {"enabled": False},
            "log": {"level": "info", "format": "json"},
            "dispatch": {"retry_initial_s": 0.2, "retry_max_s": 2.0}, **extra}
    return write_toml(tmp_path / "hub.toml", data)


def _publish_in_background(broker, messages, pace_every: int = 0, pause: float = 0.0,
                           ) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        pub = Publisher(broker.host, broker.port, max_in_flight=200)
        try:
            step = pace_every or len(messages)
            for start in range(0, len(messages), step):
                pub.publish_all(messages[start:start + step])
                if pause:
                    time.sleep(pause)  # pacing the load, not a correctness wait
        except BaseException as exc:
            errors.append(exc)
        finally:
            pub.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_sigkill_mid_stream_loses_and_duplicates_nothing(tmp_path: Path, mosquitto, influxdb,
                                                         influx_db_name, topic_root) -> None:
    n = 6000
    storage = {"enabled": True, "mode": "v1", "url": influxdb.url, "database": influx_db_name,
               "batch_size": 1000}
    config_file = _config_file(tmp_path, mosquitto, topic_root, storage)
    log = tmp_path / "hub.log"
    proc = _hub_process(config_file, log)
    try:
        wait_until(lambda: b"mqtt.connected" in log.read_bytes(), 30, what="hub connected")
        thread, errors = _publish_in_background(
            mosquitto, messages_for(Topics(topic_root), readings(n)), pace_every=500, pause=0.2)
        # kill it while events are flowing and some are stored
        wait_until(lambda: influx_count(influxdb, influx_db_name) > n // 10, 60, interval=0.05,
                   what="some events stored")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        publishing_at_kill = thread.is_alive()
        killed_at = influx_count(influxdb, influx_db_name)
        proc = _hub_process(config_file, log)
        thread.join(120)
        assert not errors, errors
        wait_until(lambda: influx_count(influxdb, influx_db_name) >= n, 90, interval=0.5,
                   what="all events stored after the restart")
    finally:
        _stop(proc)
    assert killed_at < n and publishing_at_kill, "the kill came too late to prove anything"
    assert influx_count(influxdb, influx_db_name) == n
    rows = influxdb.series_rows('SELECT COUNT("seq") FROM "sensor_event" GROUP BY "device"',
                                influx_db_name)
    assert sum(r["count"] for r in rows) == n
    distinct = influxdb.series_rows('SELECT COUNT(DISTINCT("event_id")) FROM "sensor_event"',
                                    influx_db_name)
    assert distinct[0]["count"] == n


def test_influxdb_down_for_30s_loses_nothing(tmp_path: Path, mosquitto, influxdb_factory,
                                              topic_root) -> None:
    influx = influxdb_factory()
    influx.create_database("outage")
    n = 3000
    storage = {"enabled": True, "mode": "v1", "url": influx.url, "database": "outage",
               "batch_size": 500, "timeout_s": 2.0}
    config = hub_config(tmp_path, mosquitto, topic_root, storage=storage,
                        dispatch={"retry_initial_s": 0.2, "retry_max_s": 2.0})
    messages = messages_for(Topics(topic_root), readings(n))
    with Hub(config) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            pub.publish_all(messages[:1000])
            wait_until(lambda: hub.runners[0].state.processed >= 1000, 30, what="first third")
            influx.stop()
            down_at = time.monotonic()
            pub.publish_all(messages[1000:])
            # the events wait in the journal; storage retries and shows its backlog
            wait_until(lambda: hub.runners[0].state.retries >= 3, 30, what="retries")
            # on a loaded machine ingest may still be journaling the last of them: wait for it
            wait_until(lambda: hub.health()["consumers"]["storage"]["backlog"] == n - 1000, 30,
                       what="the whole outage's events in the storage backlog")
            assert "unreachable" in hub.health()["consumers"]["storage"]["last_error"]
            time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))  # the outage itself
            influx.start()
            wait_until(lambda: hub.runners[0].state.processed >= n, 60, what="caught up")
        finally:
            pub.close()
    assert influx_count(influx, "outage") == n


class Hanging(ConsumerDefaults):
    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def handle(self, batch: Sequence[Envelope]) -> None:
        self.calls += 1
        self.release.wait(120)

    def close(self) -> None:
        self.release.set()


class Failing(ConsumerDefaults):
    name = "failing-webhook"

    def __init__(self) -> None:
        self.calls = 0

    def handle(self, batch: Sequence[Envelope]) -> None:
        self.calls += 1
        raise DeliveryError("webhook answered 503")

    def close(self) -> None:
        pass


def test_a_hanging_or_failing_consumer_does_not_slow_storage(
        tmp_path: Path, mosquitto, influxdb, influx_db_name, topic_root) -> None:
    n = 3000
    storage = {"enabled": True, "mode": "v1", "url": influxdb.url, "database": influx_db_name}
    hanging, failing = Hanging(), Failing()
    config = hub_config(tmp_path, mosquitto, topic_root, storage=storage)
    with Hub(config, extra_consumers=[hanging, failing]) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            started = time.monotonic()
            pub.publish_all(messages_for(Topics(topic_root), readings(n)))
            wait_until(lambda: hub.runners[0].state.processed >= n, 30, interval=0.02,
                       what="storage caught up")
            elapsed = time.monotonic() - started
        finally:
            pub.close()
        health = hub.health()["consumers"]
        assert health["storage"]["backlog"] == 0
        assert health["hanging"]["backlog"] > 0 and health["hanging"]["busy_s"] >= 0
        assert health["failing-webhook"]["backlog"] == n
        assert health["failing-webhook"]["retries"] >= 2
        assert "503" in health["failing-webhook"]["last_error"]
        assert hanging.calls == 1
        hanging.release.set()
    assert influx_count(influxdb, influx_db_name) == n
    # generous bound for 2 shared cores: storage was not held up by the 120 s hang
    assert elapsed < 20


def test_three_hubs_on_one_shared_subscription(tmp_path: Path, mosquitto, influxdb,
                                               influx_db_name, topic_root) -> None:
    n = 3000
    storage = {"enabled": True, "mode": "v1", "url": influxdb.url, "database": influx_db_name}
    base = hub_config(tmp_path, mosquitto, topic_root, storage=storage,
                      mqtt={"shared_group": "hubs"})
    hubs = [Hub(base.for_worker(i)) for i in range(3)]
    for hub in hubs:
        hub.start()
    try:
        for hub in hubs:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            pub.publish_all(messages_for(Topics(topic_root), readings(n)))
        finally:
            pub.close()
        wait_until(lambda: sum(h.runners[0].state.processed for h in hubs) >= n, 60,
                   what="all stored")
        shares = [int(h.metrics.events_in._value.get()) for h in hubs]
    finally:
        for hub in hubs:
            hub.stop()
    assert sum(shares) == n, shares
    assert all(share >= n // 10 for share in shares), shares  # the load was split
    assert influx_count(influxdb, influx_db_name) == n


def test_hub_run_workers_supervises_and_stops_cleanly(tmp_path: Path, mosquitto, influxdb,
                                                      influx_db_name, topic_root) -> None:
    n = 2000
    storage = {"enabled": True, "mode": "v1", "url": influxdb.url, "database": influx_db_name}
    config_file = _config_file(tmp_path, mosquitto, topic_root, storage)
    refused = subprocess.run([sys.executable, "-m", "hub.cli", "run", "-c", str(config_file),
                              "--workers", "2"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 2
    assert "shared_group" in refused.stderr
    text = config_file.read_text().replace("[mqtt]", '[mqtt]\nshared_group = "w"')
    config_file.write_text(text)
    log = tmp_path / "workers.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "-c", str(config_file),
                                 "--workers", "2"], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: log.read_bytes().count(b"mqtt.connected") >= 2, 30,
                   what="both workers connected")
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            pub.publish_all(messages_for(Topics(topic_root), readings(n)))
        finally:
            pub.close()
        wait_until(lambda: influx_count(influxdb, influx_db_name) >= n, 60, interval=0.3,
                   what="stored by the workers")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert influx_count(influxdb, influx_db_name) == n
    assert log.read_bytes().count(b"hub.stopped") == 2
    assert (tmp_path / "hubdata" / "worker-0" / "hub.sqlite3").is_file()
    assert (tmp_path / "hubdata" / "worker-1" / "hub.sqlite3").is_file()
    assert os.path.exists(tmp_path / "hubdata")
