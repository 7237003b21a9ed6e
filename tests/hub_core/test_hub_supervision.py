"""Issue 21, item 1 and the consumer part of item 2, through a real hub and a private Mosquitto:

(a) ingest raising unexpectedly once: logged once with its traceback, /healthz 503 naming ingest
    while it waits to restart, counted in /metrics, restarted from durable state, and the events
    of the batch it crashed on (never acknowledged) and after it are each handed on exactly once;
(b) a component crashing past its restart budget: ``hub run`` (a real process) exits 70 with one
    line on stderr;
(c) a consumer that raises on one event: that event is dead-lettered for it with the exception as
    the reason, the consumer moves on, the other consumers got it, and a restarted hub does not
    hand it over again;
(d) a ``data_loss`` record still unhandled in the journal at a restart, read back from disk (not
    from the in-memory tail): storage stores it (before the journal fix this tripped an assert and
    killed the storage thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from hub import deadletters
from hub.app import Hub
from hub.consumers.base import ConsumerDefaults, Envelope
from hub.journal import BatchRecord, Journal, Pending
from hub.storage.sqlite_store import SqliteStoreConsumer
from program_support.supervision import EXIT_COMPONENT_FAILED
from schemas.codec import encode
from schemas.models import DataLoss
from schemas.topics import Topics
from tests.hub_core.helpers import (
    Publisher,
    hub_config,
    messages_for,
    reading,
    readings,
    wait_until,
    write_toml,
)

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]


class Recorder(ConsumerDefaults):
    """Counts every event id handed over (a consumer that keeps everything)."""

    def __init__(self, name: str = "recorder", poison: str | None = None) -> None:
        self.name = name
        self.poison = poison  # the event id this consumer raises on
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    def handle(self, batch: Sequence[Envelope]) -> None:
        if self.poison is not None and any(e.message.event_id == self.poison for e in batch):
            raise ValueError(f"cannot handle {self.poison}")
        with self._lock:
            self.seen.update(e.message.event_id for e in batch)

    def count(self, ids: Sequence[str]) -> dict[str, int]:
        with self._lock:
            return {i: self.seen[i] for i in ids}

    def close(self) -> None:
        pass


def _healthz(hub: Hub) -> tuple[int, dict]:
    assert hub.web is not None
    resp = httpx.get(f"http://127.0.0.1:{hub.web.port}/healthz", timeout=10)
    return resp.status_code, resp.json()


def _metric(hub: Hub, line_start: str) -> float | None:
    assert hub.web is not None
    text = httpx.get(f"http://127.0.0.1:{hub.web.port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_ingest_crashing_once_is_logged_reported_counted_restarted_and_loses_nothing(
        tmp_path: Path, mosquitto, topic_root) -> None:
    topics = Topics(topic_root)
    recorder = Recorder()
    config = hub_config(tmp_path, mosquitto, topic_root, journal={"synchronous": "normal"})
    pub = Publisher(mosquitto.host, mosquitto.port)
    before, during, after = readings(10), readings(10, start_seq=100), readings(10, start_seq=200)
    try:
        with Hub(config, extra_consumers=[recorder]) as hub, capture_logs() as logs:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
            pub.publish_all(messages_for(topics, before))
            wait_until(lambda: all(recorder.count([e.event_id for e in before]).values()), 30,
                       what="the first events handed on")
            # the seam: ingest's next batch raises (once), before anything of it is recorded
            # or acknowledged; the restart waits 2 s so /healthz can be seen saying so
            hub.supervisor.restart_initial_s = 2.0
            real_process = hub.ingest.process
            crashed = threading.Event()

            def process_once(batch: list) -> list:
                if not crashed.is_set():
                    crashed.set()
                    raise RuntimeError("injected: a bug in ingest")
                return real_process(batch)  # what became of replayed dead letters

            hub.ingest.process = process_once  # type: ignore[method-assign]
            pub.publish_all(messages_for(topics, during))
            assert crashed.wait(15)
            status, health = _healthz(hub)
            assert status == 503 and health["ok"] is False
            assert health["problems"]["ingest"] == ("restarting after a crash: RuntimeError: "
                                                    "injected: a bug in ingest")
            assert health["ingest_failed"] == health["problems"]["ingest"]
            assert health["components"]["ingest"]["crashes"] == 1
            assert "consumers" in health and "mqtt_connected" in health  # the existing fields
            assert _metric(hub, 'thermopipe_hub_component_crashes_total{component="ingest"}') \
                == 1.0
            # restarted: the broker sends the unacknowledged batch again on a new connection
            wait_until(lambda: _healthz(hub)[0] == 200, 30, what="/healthz ok again")
            pub.publish_all(messages_for(topics, after))
            ids = [e.event_id for e in (*before, *during, *after)]
            wait_until(lambda: all(recorder.count(ids).values()), 30,
                       what="every event handed on after the restart")
            time.sleep(0.5)  # a late duplicate would show up now
            assert set(recorder.count(ids).values()) == {1}
            assert hub.supervisor.components["ingest"].state == "running"
            assert _metric(hub, "thermopipe_hub_components_up") \
                == len(hub.supervisor.components)
    finally:
        pub.close()
    crashes = [e for e in logs if e["event"] == "supervisor.component_crashed"]
    assert len(crashes) == 1 and crashes[0]["component"] == "ingest"
    assert "raise RuntimeError(\"injected: a bug in ingest\")" in crashes[0]["traceback"]
    assert [e["event"] for e in logs if e["event"] == "supervisor.component_restarted"] \
        == ["supervisor.component_restarted"]


def test_hub_run_exits_70_with_one_line_when_a_component_crashes_past_its_budget(
        tmp_path: Path, mosquitto, topic_root) -> None:
    config_file = write_toml(tmp_path / "hub.toml", {
        "hub_id": "crashhub", "data_dir": str(tmp_path / "hubdata"),
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "topic_root": topic_root,
                 "client_id": f"hub-{topic_root}"},
        "storage": {"enabled": False}, "http": {"enabled": False},
        "log": {"level": "info", "format": "json"}})
    env = {**os.environ, "THERMOPIPE_TEST_CRASH_COMPONENT": "ingest"}
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "run", "-c", str(config_file)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
                          check=False)
    assert proc.returncode == EXIT_COMPONENT_FAILED, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    plain = [line for line in lines if not line.startswith("{")]
    assert plain == [
        "hub: stopped: ingest crashed 6 times within 600 s (last: RuntimeError: crash injected "
        "by THERMOPIPE_TEST_CRASH_COMPONENT (a test)); exit 70 for the service manager to "
        "restart it"], proc.stderr[-3000:]
    events = [json.loads(line)["event"] for line in lines if line.startswith("{")]
    assert events.count("supervisor.component_crashed") == 6
    assert "supervisor.fatal" in events and "hub.stopped" in events


def test_a_consumer_poisoned_by_one_event_dead_letters_it_and_moves_on_for_good(
        tmp_path: Path, mosquitto, topic_root) -> None:
    topics = Topics(topic_root)
    events = readings(6)
    bad = events[2]
    config = hub_config(tmp_path, mosquitto, topic_root)
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        poisoned, healthy = Recorder("poisoned", poison=bad.event_id), Recorder("healthy")
        with Hub(config, extra_consumers=[poisoned, healthy]) as hub, capture_logs() as logs:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
            pub.publish_all(messages_for(topics, events))
            good = [e.event_id for e in events if e is not bad]
            wait_until(lambda: all(poisoned.count(good).values()), 30,
                       what="the poisoned consumer past the bad event")
            wait_until(lambda: all(healthy.count([e.event_id for e in events]).values()), 30,
                       what="the other consumer got every event")
            assert poisoned.count([bad.event_id]) == {bad.event_id: 0}
            assert _metric(hub, 'thermopipe_hub_consumer_quarantined_total{consumer="poisoned"}'
                           ) == 1.0
            assert _metric(hub, 'thermopipe_hub_consumer_quarantined_total{consumer="healthy"}'
                           ) == 0.0
            status, health = _healthz(hub)
            assert status == 200 and health["consumers"]["poisoned"]["quarantined"] == 1
        quarantined = [e for e in logs if e["event"] == "consumer.quarantined"]
        assert len(quarantined) == 1 and quarantined[0]["log_level"] == "error"
        assert "ValueError" in quarantined[0]["traceback"]
        dead = [d for d in deadletters.list_dead_letters(config.data_dir)
                if d.reason_code == "consumer_failed"]
        assert len(dead) == 1
        assert dead[0].reason == (f"consumer poisoned raised ValueError: cannot handle "
                                  f"{bad.event_id}")
        assert dead[0].topic == topics.for_event(bad)
        assert json.loads(dead[0].payload)["event_id"] == bad.event_id

        # a restart hands the quarantined event to nobody again; new events still flow
        again = Recorder("poisoned", poison=bad.event_id)
        later = reading(50)
        with Hub(config, extra_consumers=[again, Recorder("healthy")]) as hub:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed again")
            pub.publish_all(messages_for(topics, [later]))
            wait_until(lambda: again.count([later.event_id])[later.event_id] == 1, 30,
                       what="the next event after the restart")
            assert hub.runners[-2].state.retries == 0  # no failure: the bad one was not read
        assert again.count([bad.event_id]) == {bad.event_id: 0}
        assert len([d for d in deadletters.list_dead_letters(config.data_dir)
                    if d.reason_code == "consumer_failed"]) == 1
    finally:
        pub.close()


def test_a_data_loss_record_read_back_from_disk_after_a_restart_is_stored(
        tmp_path: Path, mosquitto, topic_root) -> None:
    """InfluxDB down when the loss was declared, then the hub restarted: the record waits in the
    journal and the new process reads it from the file (its in-memory tail starts empty)."""
    store = tmp_path / "store.sqlite3"
    config = hub_config(tmp_path, mosquitto, topic_root, storage={
        "enabled": True, "mode": "sqlite", "path": str(store), "health_interval_s": 3600})
    when = datetime.now(UTC)
    loss = DataLoss(event_id="f" * 32, site="s1", device_id="d1", time=when, first_seq=5,
                    last_seq=9, count=5, cause="test", hub_id="testhub")
    journal = Journal(config.database_path)
    assert journal.register("storage") == 0  # storage has handled nothing yet
    journal.record(BatchRecord([Pending(loss, f"{topic_root}/_hub/data_loss/s1/d1",
                                        encode(loss, "json"), when, False, False)],
                               [(loss.event_id, when.timestamp())]))
    journal.close()
    with Hub(config) as hub:
        storage = hub.consumers[0]
        assert isinstance(storage, SqliteStoreConsumer)
        wait_until(lambda: storage.count("data_loss") == 1, 30, what="the data_loss point")
        assert hub.supervisor.problems() == {}
        assert hub.runners[0].state.cursor == 1
