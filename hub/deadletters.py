"""The dead-letter store as operators see it: ``hub dlq list|show|replay``.

Rows are written by the ingest thread (``Journal.record``) with the raw payload, the topic, a
short reason code and the full reason. ``replay`` only marks rows ``replay_requested``: the
running hub (or the next one to start) feeds them through the same validation as live messages,
in its own ingest transaction, so journal offsets keep one writer. A row that passes becomes
``replayed``; one that fails again goes back to ``open`` with the new reason.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hub.journal import connect
from schemas.models import DeadLetter


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    row_id: int
    dead_letter_id: str
    received_at: datetime
    topic: str
    reason_code: str
    reason: str
    payload: bytes
    status: str
    outcome: str
    store: Path

    def to_message(self) -> DeadLetter:
        return DeadLetter(dead_letter_id=self.dead_letter_id, received_at=self.received_at,
                          topic=self.topic, reason=self.reason,
                          payload_b64=base64.b64encode(self.payload).decode())


_COLUMNS = ("id, dead_letter_id, received_at, topic, reason_code, reason, payload, status, "
            "outcome")


def _row(store: Path, r: tuple[object, ...]) -> DeadLetterRow:
    row_id, dl_id, received, topic, code, reason, payload, status, outcome = r
    assert isinstance(received, float)
    assert isinstance(row_id, int)
    assert isinstance(payload, bytes)
    return DeadLetterRow(row_id, str(dl_id), datetime.fromtimestamp(received, UTC), str(topic),
                         str(code), str(reason), payload, str(status), str(outcome), store)


def stores(data_dir: Path) -> list[Path]:
    """The hub databases under ``data_dir``: its own and those of ``--workers`` workers."""
    candidates = [data_dir / "hub.sqlite3", *sorted(data_dir.glob("worker-*/hub.sqlite3"))]
    return [p for p in candidates if p.is_file()]


def list_dead_letters(data_dir: Path, status: str | None = None) -> list[DeadLetterRow]:
    out: list[DeadLetterRow] = []
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


def find(data_dir: Path, dead_letter_id: str) -> DeadLetterRow | None:
    for row in list_dead_letters(data_dir):
        if row.dead_letter_id == dead_letter_id:
            return row
    return None


def request_replay(data_dir: Path, ids: list[str] | None) -> list[DeadLetterRow]:
    """Mark dead letters for replay (``None``: every open one); return the rows marked."""
    marked: list[DeadLetterRow] = []
    for store in stores(data_dir):
        conn = connect(store, "normal")
        try:
            rows = [_row(store, r) for r in conn.execute(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE status='open'")]  # noqa: S608
            chosen = [r for r in rows if ids is None or r.dead_letter_id in ids]
            conn.executemany(
                "UPDATE dead_letters SET status='replay_requested', updated_at=? WHERE id=?",
                [(time.time(), r.row_id) for r in chosen])
            marked.extend(chosen)
        finally:
            conn.close()
    return marked


def status_of(rows: list[DeadLetterRow]) -> list[DeadLetterRow]:
    """The current state of ``rows`` (re-read from their stores)."""
    out = []
    for row in rows:
        conn = connect(row.store, "normal")
        try:
            r = conn.execute(f"SELECT {_COLUMNS} FROM dead_letters WHERE id=?",  # noqa: S608
                             (row.row_id,)).fetchone()
        finally:
            conn.close()
        if r is not None:
            out.append(_row(row.store, r))
    return out
