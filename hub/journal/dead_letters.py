"""The dead-letter store: messages the hub refused, each a bounded row (``hub/records.py``: at
most ``DEAD_LETTER_ROW_MAX`` bytes, with the size and SHA-256 of payload, topic and reason in
their own columns, added to an older database when it is opened:
:func:`hub.journal.store.migrate_dead_letters`), kept ``[dead_letters] max_age_days`` and at most
``max_bytes`` of row data, oldest first (:meth:`DeadLetters.prune`). Journal rows that cannot be
read back are quarantined here (:func:`unreadable`)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from hub.journal.store import ROW_BYTES_SQL, Store, dt, ts
from hub.records import ID_KEEP, REASON_KEEP, DeadRecord, clip_text

__all__ = ["DeadLetters", "DeadPruned", "ReplayOutcome", "unreadable"]


@dataclass(frozen=True, slots=True)
class DeadPruned:
    """What one retention pass removed from the dead-letter store, and what it holds after."""

    by_age: int
    by_size: int
    kept_rows: int
    kept_bytes: int


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What became of a dead letter an operator asked to replay (row id -> outcome)
    (hub/dead_letter_replay.py)."""

    row_id: int
    accepted: bool
    reason_code: str
    reason: str


def unreadable(stem: str, rows: Sequence[tuple[int, str, bytes, float, str]]) -> list[DeadRecord]:
    """Dead letters for journal rows that cannot be read back, (offset, topic, payload,
    received_at, reason) each; ``stem``: the journal file's, to make their ids unique."""
    return [DeadRecord.refused(f"journal-{stem}-{offset}", dt(received_at), topic, payload,
                               reason_code="unreadable_record",
                               reason=f"journal row {offset} cannot be read back: {reason}")
            for offset, topic, payload, received_at, reason in rows]


class DeadLetters:
    """The ``dead_letters`` table."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @staticmethod
    def insert(conn: sqlite3.Connection, dead: Sequence[DeadRecord]) -> None:
        """Dead letters into the store (inside a transaction of the caller's), each bounded
        (:meth:`DeadRecord.bounded`) however it was made."""
        if dead:
            now = time.time()
            rows = []
            for d in (record.bounded() for record in dead):
                rows.append((d.dead_letter_id, ts(d.received_at), d.topic, d.reason_code,
                              d.reason, d.payload, now, d.size, d.sha256, d.topic_size,
                              d.topic_sha256, d.reason_size, d.reason_sha256, d.stored_bytes))
            conn.executemany(
                "INSERT INTO dead_letters (dead_letter_id, received_at, topic, reason_code, "
                "reason, payload, updated_at, payload_size, payload_sha256, topic_size, "
                "topic_sha256, reason_size, reason_sha256, stored_bytes) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    @staticmethod
    def settle_replays(conn: sqlite3.Connection, replays: Sequence[ReplayOutcome]) -> None:
        """Mark replayed rows ``replayed`` or ``open`` again (inside the caller's transaction),
        the new reason bounded like any dead letter's."""
        if replays:
            now = time.time()
            updates = []
            for r in replays:
                reason, r_size, r_sha = clip_text(r.reason, REASON_KEEP)
                updates.append(("replayed" if r.accepted else "open",
                              clip_text(r.reason_code, ID_KEEP)[0], reason, r_size, r_sha,
                              "accepted on replay" if r.accepted
                              else "rejected again on replay", now, r.row_id))
            conn.executemany(
                "UPDATE dead_letters SET status=?, reason_code=?, reason=?, reason_size=?, "
                "reason_sha256=?, outcome=?, updated_at=? WHERE id=?", updates)
            conn.executemany(f"UPDATE dead_letters SET stored_bytes = {ROW_BYTES_SQL} "  # noqa: S608
                             "WHERE id=?", [(r.row_id,) for r in replays])

    def add(self, dead: Sequence[DeadRecord]) -> None:
        """Dead letters made outside ingest (a consumer's poison event), committed now."""
        if not dead:
            return
        with self._store.write_lock, self._store.transaction("add dead letters to") as conn:
            self.insert(conn, dead)

    def prune(self, now: float, max_bytes: int, max_age_s: float) -> DeadPruned:
        """Retention: rows received before ``now - max_age_s``, then the oldest until the rest
        hold at most ``max_bytes`` (``stored_bytes``: the rows' data, not SQLite's page
        overhead). Open rows go too: the store is bounded before it is complete; what was pruned
        is counted and logged by the caller."""
        with self._store.write_lock, self._store.transaction("prune dead letters of") as conn:
            by_age = conn.execute("DELETE FROM dead_letters WHERE received_at < ?",
                                  (now - max_age_s,)).rowcount
            rows, total = conn.execute(
                "SELECT COUNT(*), coalesce(SUM(stored_bytes), 0) FROM dead_letters").fetchone()
            by_size = 0
            if total > max_bytes:
                # the newest row at which the running total (newest first) passes the cap:
                # it and every older row go
                cut = conn.execute(
                    "SELECT received_at, id FROM (SELECT received_at, id, SUM(stored_bytes) "
                    "OVER (ORDER BY received_at DESC, id DESC) AS running FROM dead_letters) "
                    "WHERE running > ? ORDER BY running LIMIT 1", (max_bytes,)).fetchone()
                by_size = conn.execute(
                    "DELETE FROM dead_letters WHERE received_at < ? OR "
                    "(received_at = ? AND id <= ?)", (cut[0], cut[0], cut[1])).rowcount
                rows, total = conn.execute(
                    "SELECT COUNT(*), coalesce(SUM(stored_bytes), 0) FROM dead_letters"
                ).fetchone()
        return DeadPruned(int(by_age), int(by_size), int(rows), int(total))
