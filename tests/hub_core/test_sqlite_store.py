"""The embedded SQLite store writes a batch in chunks of rows (issue 26): every point once,
whatever the batch size, and a redelivered batch replaces its rows instead of adding any."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from hub.storage.points import point_for
from hub.storage.sqlite_store import SqliteStoreConsumer
from tests.hub_alerting.helpers import Feed, env


def test_batches_of_any_size_store_each_point_once(tmp_path: Path) -> None:
    store = SqliteStoreConsumer(tmp_path / "store.sqlite3")
    feeds = [Feed(f"d{i}", site=f"s{i % 3}") for i in range(7)]
    batch = [env(feeds[n % 7].reading(f"t{n % 2}", 20.0 + n / 10)) for n in range(600)]
    # 600 = two chunks of 256 and the rest in smaller statements; then sizes 1 and 3
    store.handle(batch)
    store.handle(batch[:1])
    store.handle(batch[-3:])
    assert store.count() == store.count("sensor_event") == 600
    # a redelivered batch (after a crash) replaces the same rows, with the same values
    store.handle(batch[100:400])
    assert store.count() == 600
    store.close()
    point = point_for(batch[599].message)
    assert point is not None
    db = sqlite3.connect(tmp_path / "store.sqlite3")
    rows = db.execute("SELECT fields FROM points WHERE measurement = ? AND tags = ? "
                      "AND time_ns = ?", (point.measurement, json.dumps(point.tags, sort_keys=True),
                                          point.time_ns)).fetchall()
    db.close()
    assert [json.loads(fields) for (fields,) in rows] == [point.fields]
