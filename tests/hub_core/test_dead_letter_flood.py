"""Hostile dead letters through a real hub over a real Mosquitto (issue 21, item 6): a 65 KB topic
level, a 1 MB payload and a flood of 1,500 refused payloads. Every stored row stays within
``DEAD_LETTER_ROW_MAX`` (measured in the SQLite file), every message on the dead-letter topic is
bounded, the ``ingest.dead_lettered`` lines are bounded and rate-limited with the rest counted,
and a hub restarted with a smaller ``[dead_letters] max_bytes`` prunes the oldest rows at once,
counted in /metrics and logged in one line."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from bench.harness.mqtt_clients import stop_client
from hub.app import Hub
from hub.ingest import DEAD_LETTER_LOGS_PER_S, LOG_REASON_KEEP, LOG_TOPIC_KEEP
from hub.metrics import _total
from hub.records import DEAD_LETTER_KEEP, DEAD_LETTER_ROW_MAX, TOPIC_KEEP
from schemas.codec import encode
from schemas.models import DeadLetter
from schemas.topics import Topics
from tests.hub_core.helpers import Publisher, hub_config, reading, wait_until

pytestmark = [pytest.mark.servers]
FLOOD = 1500


class Watcher:
    """Subscribes to the dead-letter topic and keeps what arrives."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[bytes] = []
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append(bytes(m.payload))
        self.client.connect(host, port)
        self.client.loop_start()
        assert ready.wait(10)

    def close(self) -> None:
        stop_client(self.client)


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("event") == name]


def test_hostile_dead_letters_stay_bounded_in_store_topic_and_log(
        tmp_path: Path, mosquitto: Any, topic_root: str) -> None:
    topics = Topics(topic_root)
    config = hub_config(tmp_path, mosquitto, topic_root)
    long_topic = topics.event("s1", "d1", "t1").rsplit("/", 1)[0] + "/" + "L" * 65_000
    assert len(long_topic.encode()) <= 65_535  # MQTT's limit: Mosquitto takes it
    big_payload = b'{"kind": "reading", "pad": "' + b"z" * (1024 * 1024) + b'"}'
    good_topic = topics.event("s1", "d1", "t1")
    watcher = Watcher(mosquitto.host, mosquitto.port, topics.deadletter())
    try:
        with capture_logs() as logs, Hub(config) as hub:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
            started = time.monotonic()
            pub = Publisher(mosquitto.host, mosquitto.port)
            try:
                pub.publish(long_topic, encode(reading(1)))
                pub.publish(good_topic, big_payload)
                for i in range(FLOOD):
                    pub.publish(good_topic, b"{not json %d" % i)
                pub.flush()
            finally:
                pub.close()
            total = FLOOD + 2
            wait_until(lambda: _total(hub.metrics.dead_lettered) >= total, 60,
                       what="every payload dead-lettered")
            elapsed = time.monotonic() - started
            # at most 100 a second are published; the rest are counted (all are in the store)
            wait_until(lambda: len(watcher.messages)
                       + _total(hub.metrics.dead_letter_publishes_suppressed) >= total, 30,
                       what="every dead letter on the dead-letter topic or counted")
            suppressed = _total(hub.metrics.dead_letter_logs_suppressed)
            metrics = httpx.get(f"http://127.0.0.1:{hub.web.port}/metrics", timeout=10).text
    finally:
        watcher.close()

    # the store: every row within the bound, measured in the file
    db = config.database_path
    with sqlite3.connect(db) as conn:
        count, biggest_topic = conn.execute(
            "SELECT COUNT(*), MAX(length(CAST(topic AS BLOB))) FROM dead_letters").fetchone()
        file_bytes = conn.execute("SELECT SUM(payload) FROM dbstat WHERE name='dead_letters'"
                                  ).fetchone()[0]
        long_row = conn.execute(
            "SELECT topic_size, payload_size FROM dead_letters WHERE topic_size > ?",
            (TOPIC_KEEP,)).fetchone()
        big_row = conn.execute("SELECT length(payload), payload_size FROM dead_letters "
                               "WHERE payload_size > ?", (DEAD_LETTER_KEEP,)).fetchone()
        # the two big rows' records, measured alone: copy them into a file of their own
        conn.execute(f"ATTACH '{tmp_path / 'two.sqlite3'}' AS two")
        conn.execute("CREATE TABLE two.rows AS SELECT * FROM dead_letters WHERE topic_size > ? "
                     "OR payload_size > ?", (TOPIC_KEEP, DEAD_LETTER_KEEP))
        conn.commit()
        two = conn.execute("SELECT SUM(payload) FROM dbstat('two') WHERE name='rows'"
                           ).fetchone()[0]
    print(f"\n[dead letters] {count} rows, {file_bytes} bytes of records in the file; the "
          f"65 KB-topic and 1 MB-payload rows: {two} bytes together (bound "
          f"{DEAD_LETTER_ROW_MAX} each); logged {total - suppressed} lines in {elapsed:.1f} s, "
          f"{suppressed} suppressed")
    assert count == total
    assert long_row == (len(long_topic.encode()), len(encode(reading(1))))
    assert big_row == (DEAD_LETTER_KEEP, len(big_payload))
    assert biggest_topic <= TOPIC_KEEP
    assert two <= 2 * DEAD_LETTER_ROW_MAX  # was 195 KB for the 65 KB topic alone
    assert file_bytes <= count * DEAD_LETTER_ROW_MAX

    # the dead-letter topic: bounded messages, the sizes say what was cut
    published = [DeadLetter.model_validate_json(m) for m in watcher.messages]
    assert max(len(m) for m in watcher.messages) < 12 * 1024
    assert any(d.topic_size == len(long_topic) and len(d.topic) == TOPIC_KEEP for d in published)
    assert any(d.payload_size == len(big_payload) for d in published)

    # the log: bounded lines, at most N a second, the rest counted
    lines = _events(logs, "ingest.dead_lettered")
    assert len(lines) + suppressed == total
    assert suppressed > 0
    assert len(lines) <= DEAD_LETTER_LOGS_PER_S * (elapsed + 2)
    assert sum(e["suppressed_before"] for e in lines) <= suppressed
    for line in lines:
        assert len(line["topic"].encode()) <= LOG_TOPIC_KEEP
        assert len(line["reason"].encode()) <= LOG_REASON_KEEP
        assert "payload" not in line
    assert f"thermopipe_hub_dead_letter_logs_suppressed_total {float(suppressed)}" in metrics

    # retention: a hub restarted with a smaller cap prunes the oldest rows at its first turn
    cap = 100_000
    small = config.model_copy(update={"dead_letters": config.dead_letters.model_copy(
        update={"max_bytes": cap})})
    with capture_logs() as logs, Hub(small) as hub:
        wait_until(lambda: _events(logs, "ingest.dead_letters_pruned"), 30, what="pruned")
        metrics = httpx.get(f"http://127.0.0.1:{hub.web.port}/metrics", timeout=10).text
    (pruned,) = _events(logs, "ingest.dead_letters_pruned")  # one line, with the counts
    assert pruned["by_size"] > 0 and pruned["by_age"] == 0
    assert pruned["kept_bytes"] <= cap
    assert f'thermopipe_hub_dead_letters_pruned_total{{by="size"}} {pruned["by_size"]:.1f}' \
        in metrics
    with sqlite3.connect(db) as conn:
        kept, kept_bytes, oldest = conn.execute(
            "SELECT COUNT(*), SUM(stored_bytes), MIN(id) FROM dead_letters").fetchone()
    assert (kept, kept_bytes) == (pruned["kept"], pruned["kept_bytes"])
    assert kept + pruned["by_size"] == total
    assert oldest == total - kept + 1  # the oldest went first
