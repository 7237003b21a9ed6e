"""The dead-letter store as operators see it: ``hub dlq list|show``, and the rows
a replay reads.

Rows are written by the ingest thread (``Journal.record``) with the raw payload, the topic, a
short reason code and the full reason. ``hub dlq replay`` is a command to the running hub
(:mod:`hub.dead_letter_replay`): the hub feeds the rows through the same validation as live
messages, in its own ingest transaction, so journal offsets keep one writer. A row that passes
becomes ``replayed``; one that fails again stays ``open`` with the new reason.

A dead letter keeps a bounded prefix of its payload, topic and reason with the size and SHA-256
of each whole (:meth:`hub.records.DeadRecord.refused`): the hub refuses to replay one whose
payload or topic was cut (an event cannot be accepted from part of it) and leaves it ``open``.

Everything here came from the wire: :func:`printable` escapes it before ``hub dlq`` prints it,
so control characters, terminal escape sequences, invalid UTF-8 and a 65 KB topic never reach
the operator's terminal raw.
"""

from __future__ import annotations

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


def read_for_replay(store: Path, ids: list[str] | None) -> list[DeadRecord]:
    """The rows of ``store`` a replay asks for: those of ``ids`` (any status), or with ``None``
    every open one; in the store's order. Read by the hub that owns the store
    (:mod:`hub.dead_letter_replay`), on its own connection."""
    conn = connect(store, "normal")
    try:
        query = f"SELECT {_COLUMNS} FROM dead_letters"  # noqa: S608
        if ids is None:
            return [_row(store, r) for r in conn.execute(query + " WHERE status='open' "
                                                         "ORDER BY id")]
        rows: list[DeadRecord] = []
        for start in range(0, len(ids), 500):  # SQLite's bound on parameters per statement
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            rows.extend(_row(store, r) for r in conn.execute(
                f"{query} WHERE dead_letter_id IN ({marks}) ORDER BY id", part))
        return sorted(rows, key=lambda r: r.row_id)
    finally:
        conn.close()
