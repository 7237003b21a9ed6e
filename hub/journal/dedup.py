"""Dedup ids: the event ids already recorded, so a later copy is a duplicate.

Kept ``retention_s`` (default 7 days) and at most ``max_ids`` (default 5 million, about 250 MB):
an event replayed after that is stored again (storage writes are idempotent, so the point is
overwritten with the same values)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence

from hub.journal.store import Store, insert_rows

__all__ = ["SeenIds"]


class SeenIds:
    """The ``seen`` table."""

    def __init__(self, store: Store, retention_s: float, max_ids: int) -> None:
        self._store = store
        self.retention_s = retention_s
        self.max_ids = max_ids

    def known(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` were already recorded (duplicates)."""
        found: set[str] = set()
        conn = self._store.conn
        with self._store.write_lock:  # the connection is shared with the other writers
            for start in range(0, len(ids), 900):
                chunk = ids[start:start + 900]
                marks = ",".join("?" * len(chunk))
                found.update(r[0] for r in conn.execute(
                    f"SELECT event_id FROM seen WHERE event_id IN ({marks})",  # noqa: S608
                    chunk))
        return found

    def last_at(self) -> float | None:
        """When the newest recorded event was received (epoch seconds), if any is kept."""
        with self._store.write_lock:
            row = self._store.conn.execute("SELECT MAX(at) FROM seen").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    @staticmethod
    def insert(conn: sqlite3.Connection, seen: Iterable[tuple[str, float]]) -> None:
        """(event id, when) pairs, inside the caller's transaction."""
        insert_rows(conn, "INSERT OR IGNORE INTO seen", list(seen))

    def prune(self, now: float | None = None) -> None:
        """Forget ids past their retention or beyond the maximum count (oldest first)."""
        now = time.time() if now is None else now
        conn = self._store.conn
        with self._store.write_lock:
            conn.execute("DELETE FROM seen WHERE at < ?", (now - self.retention_s,))
            count = conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
            if count > self.max_ids:
                conn.execute(
                    "DELETE FROM seen WHERE event_id IN (SELECT event_id FROM seen ORDER BY at "
                    "LIMIT ?)", (count - self.max_ids,))
