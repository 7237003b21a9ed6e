"""The dead-letter store as operators see it: ``hub dlq list|show|replay``.

Rows are written by the ingest thread (``Journal.record``) with the raw payload, the topic, a
short reason code and the full reason. ``replay`` only marks rows ``replay_requested``: the
running hub (or the next one to start) feeds them through the same validation as live messages,
in its own ingest transaction, so journal offsets keep one writer. A row that passes becomes
``replayed``; one that fails again goes back to ``open`` with the new reason.

A dead letter whose payload was longer than :data:`hub.records.DEAD_LETTER_KEEP` keeps only a
prefix, its original size and its SHA-256 (:meth:`hub.records.DeadRecord.refused`): ``replay``
refuses it (an event cannot be accepted from part of its payload) and leaves it ``open``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hub.journal import connect
from hub.records import DeadRecord

_COLUMNS = ("id, dead_letter_id, received_at, topic, reason_code, reason, payload, status, "
            "outcome")


def _row(store: Path, r: tuple[object, ...]) -> DeadRecord:
    row_id, dl_id, received, topic, code, reason, payload, status, outcome = r
    assert isinstance(received, float)
    assert isinstance(row_id, int)
    assert isinstance(payload, bytes)
    return DeadRecord(str(dl_id), datetime.fromtimestamp(received, UTC), str(topic), str(code),
                      str(reason), payload, str(status), str(outcome), row_id, store).as_stored()


def stores(data_dir: Path) -> list[Path]:
    """The hub databases under ``data_dir``: its own and those of ``--workers`` workers."""
    candidates = [data_dir / "hub.sqlite3", *sorted(data_dir.glob("worker-*/hub.sqlite3"))]
    return [p for p in candidates if p.is_file()]


def list_dead_letters(data_dir: Path, status: str | None = None) -> list[DeadRecord]:
    out: list[DeadRecord] = []
    for store in stores(data_dir):
        conn = connect(store, "normal")
        try:
            query = f"SELECT {_COLUMNS} FROM dead_letters"  # noqa: S608
            args: tuple[str, ...] = ()
            if status:
                query += " WHERE status=?"
                args = (status,)
            out.extend(_row(store, r) for r in conn.execute(query + " ORDER BY id", args))
        finally:
            conn.close()
    return sorted(out, key=lambda r: r.received_at)


def find(data_dir: Path, dead_letter_id: str) -> DeadRecord | None:
    for row in list_dead_letters(data_dir):
        if row.dead_letter_id == dead_letter_id:
            return row
    return None


@dataclass
class ReplayRequest:
    """What ``replay`` did: the rows marked for the hub, and those it refused (truncated)."""

    marked: list[DeadRecord] = field(default_factory=list)
    refused: list[DeadRecord] = field(default_factory=list)


def request_replay(data_dir: Path, ids: list[str] | None) -> ReplayRequest:
    """Mark open dead letters for replay (``None``: every open one), except truncated ones
    (only a prefix of their payload is kept): those are returned as refused, still open."""
    out = ReplayRequest()
    for store in stores(data_dir):
        conn = connect(store, "normal")
        try:
            rows = [_row(store, r) for r in conn.execute(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE status='open'")]  # noqa: S608
            chosen = [r for r in rows if ids is None or r.dead_letter_id in ids]
            out.refused.extend(r for r in chosen if r.truncated)
            chosen = [r for r in chosen if not r.truncated]
            conn.executemany(
                "UPDATE dead_letters SET status='replay_requested', updated_at=? WHERE id=?",
                [(time.time(), r.row_id) for r in chosen])
            out.marked.extend(chosen)
        finally:
            conn.close()
    return out


def status_of(rows: list[DeadRecord]) -> list[DeadRecord]:
    """The current state of ``rows`` (re-read from their stores)."""
    out = []
    for row in rows:
        assert row.store is not None  # rows read from a store know it
        conn = connect(row.store, "normal")
        try:
            r = conn.execute(f"SELECT {_COLUMNS} FROM dead_letters WHERE id=?",  # noqa: S608
                             (row.row_id,)).fetchone()
        finally:
            conn.close()
        if r is not None:
            out.append(_row(row.store, r))
    return out
