"""Durable alert state: the engine's state, each notifier's outbox, and what was sent.

One SQLite file (``<state_dir>/alerting.sqlite3``, WAL, ``synchronous=FULL``). ``commit`` writes
the engine's changed entries (``AlertEngine.take_changes``: one row per condition, group,
pending offline or device's names, in ``engine_entries``) and the new outbox rows in one
transaction, so a crash either keeps both or neither (then the dispatcher redelivers the batch
and the engine decides the same again, with the same ids). A decision writes only the rows it
changed, so its cost does not grow with the number of devices and open alerts (a state saved
whole, as ``engine_state`` held it before issue 26, is moved into rows when the file is
opened). A row moves from ``outbox`` to ``sent`` only after its notifier succeeded; a row whose
``(alert_id, notifier)`` is already in ``sent`` is never queued again. The only window for a
duplicate is a crash between a successful send and that move; the webhook's
``Idempotency-Key`` header lets a receiver close it.

Listeners (the hub's stored alert point, the dashboard) are at-least-once the same way: each
decided alert gets a ``listener_pending`` row in the decision's own transaction; the consumer
deletes it, lazily inside a later commit, once every listener returned. Rows still there at the
next start are handed to the listeners again (``AlertingConsumer.replay_to_listeners``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import DeliveryError

SCHEMA = """
CREATE TABLE IF NOT EXISTS engine_state (id INTEGER PRIMARY KEY CHECK (id = 1),
                                         snapshot TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS engine_entries (section TEXT NOT NULL, key TEXT NOT NULL,
                                           entry TEXT NOT NULL, PRIMARY KEY (section, key))
                                           WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL, notifier TEXT NOT NULL, payload TEXT NOT NULL,
    created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, last_error TEXT NOT NULL DEFAULT '',
    UNIQUE (alert_id, notifier));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (notifier, next_at);
CREATE TABLE IF NOT EXISTS sent (alert_id TEXT NOT NULL, notifier TEXT NOT NULL,
                                 sent_at REAL NOT NULL, PRIMARY KEY (alert_id, notifier));
CREATE TABLE IF NOT EXISTS given_up (alert_id TEXT NOT NULL, notifier TEXT NOT NULL,
                                     payload TEXT NOT NULL, reason TEXT NOT NULL,
                                     at REAL NOT NULL, PRIMARY KEY (alert_id, notifier));
CREATE TABLE IF NOT EXISTS listener_pending (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                                             alert_id TEXT NOT NULL UNIQUE,
                                             payload TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    seq: int
    alert_id: str
    notifier: str
    payload: str
    created: float
    attempts: int


class AlertStore:
    """Thread-safe: the consumer's thread and every notifier worker share it under one lock."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "alerting.sqlite3"
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self._move_whole_state_into_rows()
        except sqlite3.Error as exc:
            raise DeliveryError(f"cannot open the alert state {self.path}: {exc}") from exc

    def _move_whole_state_into_rows(self) -> None:
        """A state saved whole (one ``engine_state`` row, before issue 26) becomes rows of
        ``engine_entries``, in one transaction: its version under ``meta``, every entry of
        each section under that section."""
        row = self._db.execute("SELECT snapshot FROM engine_state WHERE id = 1").fetchone()
        if row is None:
            return
        whole = json.loads(row[0])
        changes: dict[str, dict[str, Any]] = {"meta": {"version": whole.get("version")}}
        changes.update({section: entries for section, entries in whole.items()
                        if isinstance(entries, dict)})
        self._db.execute("BEGIN IMMEDIATE")
        self._write_changes(changes)
        self._db.execute("DELETE FROM engine_state")
        self._db.execute("COMMIT")

    def load_snapshot(self) -> dict[str, Any] | None:
        """The engine's state as ``AlertEngine.snapshot`` gives it (``None``: nothing saved)."""
        with self._lock:
            rows = self._db.execute("SELECT section, key, entry FROM engine_entries").fetchall()
        if not rows:
            return None
        snapshot: dict[str, Any] = {}
        for section, key, entry in rows:
            if section == "meta":
                snapshot[key] = json.loads(entry)
            else:
                snapshot.setdefault(section, {})[key] = json.loads(entry)
        return snapshot

    def _write_changes(self, changes: Mapping[str, Mapping[str, Any]]) -> None:
        """Upsert each changed entry, delete each gone one (``None``); inside a transaction."""
        upserts, deletes = [], []
        for section, entries in changes.items():
            for key, entry in entries.items():
                if entry is None:
                    deletes.append((section, key))
                else:
                    upserts.append((section, key, json.dumps(entry, separators=(",", ":"))))
        self._db.executemany("DELETE FROM engine_entries WHERE section = ? AND key = ?", deletes)
        self._db.executemany(
            "INSERT INTO engine_entries (section, key, entry) VALUES (?, ?, ?) "
            "ON CONFLICT (section, key) DO UPDATE SET entry = excluded.entry", upserts)

    def commit(self, changes: Mapping[str, Mapping[str, Any]] | None,
               items: list[tuple[str, str, str]], now: float, *,
               decided: Sequence[tuple[str, str]] = (),
               listeners_done: Sequence[str] = ()) -> int:
        """Save the engine's changed entries (``AlertEngine.take_changes``: section -> key ->
        entry, ``None`` for one that is gone) and queue ``(alert_id, notifier, payload)`` rows not
        already queued or sent, atomically. In the same transaction: forget the
        ``listeners_done`` alert ids, then record each ``(alert_id, payload)`` of ``decided`` as
        not yet handed to the listeners. Returns how many outbox rows were newly queued."""
        queued = 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                # done first: an id re-decided in this very commit is told again, so it stays
                self._db.executemany("DELETE FROM listener_pending WHERE alert_id = ?",
                                     [(alert_id,) for alert_id in listeners_done])
                self._db.executemany("INSERT OR IGNORE INTO listener_pending (alert_id, payload) "
                                     "VALUES (?, ?)", decided)
                if changes:
                    self._write_changes(changes)
                for alert_id, notifier, payload in items:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO outbox (alert_id, notifier, payload, created, "
                        "next_at) SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM sent "
                        "WHERE alert_id = ? AND notifier = ?)",
                        (alert_id, notifier, payload, now, now, alert_id, notifier))
                    queued += cur.rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise DeliveryError(f"cannot save the alert state: {exc}") from exc
        return queued

    def listener_pending(self) -> list[tuple[str, str]]:
        """``(alert_id, payload)`` of decided alerts not yet handed to every listener, oldest
        first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT alert_id, payload FROM listener_pending ORDER BY seq").fetchall()
        return [(str(alert_id), str(payload)) for alert_id, payload in rows]

    def mark_listeners_done(self, alert_ids: Sequence[str]) -> None:
        """Forget these ids outside a decision (at start after a replay, at close)."""
        if not alert_ids:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")  # one commit for all of them
                self._db.executemany("DELETE FROM listener_pending WHERE alert_id = ?",
                                     [(alert_id,) for alert_id in alert_ids])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise DeliveryError(f"cannot save the alert state: {exc}") from exc

    def due(self, notifier: str, now: float, limit: int = 50) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, alert_id, notifier, payload, created, attempts FROM outbox "
                "WHERE notifier = ? AND next_at <= ? ORDER BY seq LIMIT ?",
                (notifier, now, limit)).fetchall()
        return [OutboxItem(*row) for row in rows]

    def next_due(self, notifier: str) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_at) FROM outbox WHERE notifier = ?",
                                   (notifier,)).fetchone()
        return row[0] if row else None

    def mark_sent(self, item: OutboxItem, now: float) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO sent (alert_id, notifier, sent_at) "
                             "VALUES (?, ?, ?)", (item.alert_id, item.notifier, now))
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (item.seq,))
            self._db.execute("COMMIT")

    def mark_failed(self, item: OutboxItem, error: str, next_at: float) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?, "
                             "last_error = ? WHERE seq = ?", (next_at, error[:500], item.seq))

    def give_up(self, item: OutboxItem, reason: str, now: float) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO given_up (alert_id, notifier, payload, "
                             "reason, at) VALUES (?, ?, ?, ?, ?)",
                             (item.alert_id, item.notifier, item.payload, reason[:500], now))
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (item.seq,))
            self._db.execute("COMMIT")

    def pending(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT notifier, COUNT(*) FROM outbox GROUP BY notifier").fetchall()
        return {str(name): int(count) for name, count in rows}

    def sent_ids(self, notifier: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT alert_id FROM sent WHERE notifier = ? "
                                    "ORDER BY sent_at", (notifier,)).fetchall()
        return [row[0] for row in rows]

    def given_up_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM given_up").fetchone()[0])

    def prune_sent(self, older_than: float) -> int:
        """Forget sent ids older than ``older_than`` (no batch is redelivered that late)."""
        with self._lock:
            return self._db.execute("DELETE FROM sent WHERE sent_at < ?",
                                    (older_than,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
