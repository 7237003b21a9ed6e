"""The dead-letter store as operators see it: ``hub dlq list|show|replay``.

Rows are written by the ingest thread (``Journal.record``) with the raw payload, the topic, a
short reason code and the full reason. ``replay`` only marks rows ``replay_requested``: the
running hub (or the next one to start) feeds them through the same validation as live messages,
in its own ingest transaction, so journal offsets keep one writer. A row that passes becomes
``replayed``; one that fails again goes back to ``open`` with the new reason.

A dead letter keeps a bounded prefix of its payload, topic and reason with the size and SHA-256
of each whole (:meth:`hub.records.DeadRecord.refused`): ``replay`` refuses one whose payload or
topic was cut (an event cannot be accepted from part of it) and leaves it ``open``.

Everything here came from the wire: :func:`printable` escapes it before ``hub dlq`` prints it,
so control characters, terminal escape sequences, invalid UTF-8 and a 65 KB topic never reach
the operator's terminal raw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hub.journal import connect
from hub.records import DeadRecord

_COLUMNS = ("id, dead_letter_id, received_at, topic, reason_code, reason, payload, status, "
            "outcome, payload_size, payload_sha256, topic_size, topic_sha256, reason_size, "
            "reason_sha256")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _row(store: Path, r: tuple[object, ...]) -> DeadRecord:
    (row_id, dl_id, received, topic, code, reason, payload, status, outcome,
     size, sha, t_size, t_sha, r_size, r_sha) = r
    assert isinstance(received, float)
    assert isinstance(row_id, int)
    # a BLOB column: a TEXT value there (a row written by hand) is shown, not a crash
    raw = payload if isinstance(payload, bytes) else str(payload).encode("utf-8", "replace")
    return DeadRecord(str(dl_id), datetime.fromtimestamp(received, UTC), str(topic), str(code),
                      str(reason), raw, str(status), str(outcome), row_id, store,
                      _int(size), _str(sha), _int(t_size), _str(t_sha), _int(r_size),
                      _str(r_sha)).as_stored()


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(data: str | bytes, limit: int | None = None, *, lines: bool = False) -> str:
    """``data`` safe for a terminal: printable characters as they are, a backslash doubled,
    everything else escaped the way Python writes it (``\\x1b``, ``\\x00``, ``\\u202e``), bytes
    that are not UTF-8 as ``\\xNN``; ``lines``: newlines and tabs kept (a payload shown whole).
    Past ``limit`` characters of the result, the rest is replaced by a note of what was left."""
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    out: list[str] = []
    size = 0
    for i, ch in enumerate(text):
        code = ord(ch)
        if ch == "\\":
            piece = "\\\\"
        elif ch.isprintable() or (lines and ch in "\n\t"):
            piece = ch
        elif ch in _NAMED:
            piece = _NAMED[ch]
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            piece = f"\\x{code - 0xDC00:02x}"
        elif code <= 0xFF:
            piece = f"\\x{code:02x}"
        elif code <= 0xFFFF:
            piece = f"\\u{code:04x}"
        else:
            piece = f"\\U{code:08x}"
        if limit is not None and size + len(piece) > limit:
            out.append(f"... [{len(text) - i} more characters not shown]")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


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
    """Mark open dead letters for replay (``None``: every open one), except those whose payload
    or topic was cut (:attr:`DeadRecord.replayable`): returned as refused, still open."""
    out = ReplayRequest()
    for store in stores(data_dir):
        conn = connect(store, "normal")
        try:
            rows = [_row(store, r) for r in conn.execute(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE status='open'")]  # noqa: S608
            chosen = [r for r in rows if ids is None or r.dead_letter_id in ids]
            out.refused.extend(r for r in chosen if not r.replayable)
            chosen = [r for r in chosen if r.replayable]
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
