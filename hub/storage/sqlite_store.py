"""The embedded default store: the same points as InfluxDB, kept in one SQLite file.

Used when no InfluxDB is configured (the one-command demo), so nothing has to be installed to see
the pipeline work. It stores exactly what ``hub/storage/points.py`` defines for InfluxDB, keyed
like InfluxDB keys a point (measurement, tag set, timestamp): writing an event again after a crash
replaces the row with identical values, so redelivery never duplicates. Read it with any SQLite
client::

    sqlite3 store.sqlite3 "SELECT time_ns, tags, fields FROM points
                           WHERE measurement = 'sensor_event'"

It is not a time-series database: no downsampling, no retention. Use InfluxDB for real sites.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import structlog

from hub.consumers.base import ConsumerDefaults, JournalEntry, LocalRecord
from hub.journal.store import insert_rows
from hub.storage.points import point_for
from schemas.errors import DeliveryError

log = structlog.get_logger("hub.storage.sqlite")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    tags        TEXT NOT NULL,   -- JSON object, keys sorted
    time_ns     INTEGER NOT NULL,
    fields      TEXT NOT NULL,   -- JSON object
    PRIMARY KEY (measurement, tags, time_ns)
) WITHOUT ROWID;
"""


class SqliteStoreConsumer(ConsumerDefaults):
    name = "storage"
    accepts_local = True  # the hub's own alerts and hub_health points (LocalRecord)
    batch_size: int  # its own: lines per write request

    def __init__(self, path: Path, batch_size: int = 1000, flush_interval_s: float = 0.2) -> None:
        self.path = Path(path)
        self.batch_size = batch_size
        self.max_wait_s = flush_interval_s
        self.points_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # used from the dispatcher's thread only, but created here: allow the hand-over
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def handle(self, batch: Sequence[JournalEntry]) -> None:
        rows: list[tuple[str, str, int, str]] = []
        for entry in batch:
            point = entry.point if isinstance(entry, LocalRecord) else point_for(entry.message)
            if point is None:
                continue
            rows.append((point.measurement, json.dumps(point.tags, sort_keys=True),
                         point.time_ns, json.dumps(point.fields)))
        if not rows:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN")
                # one statement per chunk of rows, not one step per row: each step releases
                # and retakes the GIL, and under load every retake may wait out another
                # thread's time slice, alerting's among them
                insert_rows(self._db, "INSERT OR REPLACE INTO points "
                            "(measurement, tags, time_ns, fields)", rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise DeliveryError(f"cannot write to {self.path}: {exc}") from exc
        self.points_written += len(rows)

    def count(self, measurement: str | None = None) -> int:
        with self._lock:
            if measurement is None:
                row = self._db.execute("SELECT count(*) FROM points").fetchone()
            else:
                row = self._db.execute("SELECT count(*) FROM points WHERE measurement = ?",
                                       (measurement,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
