"""The event log: journal rows with their offsets, the consumers' cursors, the decoded tail in
memory, reads and pruning.

Consumers read from their own cursor. Cursor writes use a connection at ``synchronous=NORMAL``:
losing the last cursor move on power loss only redelivers a batch, and consumers are idempotent.
Rows every registered consumer has passed are pruned. Recent envelopes are also kept decoded in
memory (``tail``) so consumers that keep up never decode a payload again: the tail holds what
the slowest consumer has not handled yet (``mark_handled``), at most ``TAIL_CAPACITY`` entries
(memory); a consumer further behind reads and decodes from the file. A row that cannot be read
back is handed to ``on_unreadable`` (the facade moves it to the dead-letter store)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from hub.consumers.base import Envelope, JournalEntry, LocalRecord
from hub.journal.store import JournalError, Store, connect, dt, insert_rows, ts
from hub.records import Point
from hub.validate import Accepted
from program_support.supervision import describe
from schemas.codec import decode
from schemas.errors import ThermopipeError
from schemas.models import DataLoss, DeviceStatus, SensorEvent

__all__ = ["LOCAL_KIND", "TAIL_CAPACITY", "TAIL_SLACK", "EventLog", "Pending", "Unreadable",
           "point_payload"]

TAIL_CAPACITY = 6_000  # decoded envelopes kept at most for consumers that lag (memory)
TAIL_SLACK = 1_000  # trimmed by whole slices, not one entry at a time
LOCAL_KIND = "_local_point"  # the journal ``kind`` of a LocalRecord (no event kind starts with _)

#: a journal row that cannot be read back: (offset, topic, payload, received_at, reason)
Unreadable = tuple[int, str, bytes, float, str]


@dataclass(slots=True)  # not frozen: one per event on the ingest thread (3x cheaper to make)
class Pending:
    """An accepted event not yet in the journal."""

    message: Accepted | DataLoss  # a DataLoss: the hub's own record (hub/loss_detector.py)
    topic: str
    payload: bytes
    received_at: datetime
    late: bool
    out_of_order: bool
    received_ts: float | None = None  # received_at as a POSIX time, when the caller has it


def point_payload(point: Point) -> bytes:
    return json.dumps({"m": point.measurement, "t": point.tags, "f": point.fields,
                       "ns": point.time_ns}, separators=(",", ":")).encode()


def _point_from(payload: bytes) -> Point:
    # JSON keeps the field types the line protocol needs: true/false, 5 (int), 5.0 (float), "s"
    data = json.loads(payload)
    return Point(data["m"], data["t"], data["f"], data["ns"])


class EventLog:
    """The durable, ordered log of accepted events, with a cursor per consumer. Writes go through
    the store's connection inside the caller's transaction (the caller holds the write lock);
    :meth:`publish` then makes them visible."""

    def __init__(self, store: Store, on_unreadable: Callable[[list[Unreadable]], None]) -> None:
        self._store = store
        self.path = store.path
        self._on_unreadable = on_unreadable
        self._cursor_conn = connect(store.path, "normal")
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        #: the cursor connection's own lock: a cursor write may wait on SQLite's write lock
        #: (an ingest commit's fsync) and must not hold ``_lock`` meanwhile, or committed
        #: events wait to be published and every consumer's read waits too (issue 26: publishing
        #: waited up to 98 ms under 1,000 readings/s, p99 2-9 ms; p99 under 1.2 ms with this lock)
        self._cursor_lock = threading.Lock()
        self._read_lock = threading.Lock()  # reader connections vs close (catch-up reads only)
        self._cond = threading.Condition(self._lock)
        self._closed = False
        conn = store.conn
        row = conn.execute("SELECT MAX(offset) FROM journal").fetchone()
        meta = conn.execute("SELECT value FROM meta WHERE key='last_offset'").fetchone()
        # last_offset survives pruning, so offsets never repeat even with an empty journal
        self._last = max(row[0] or 0, meta[0] if meta else 0)
        self._tail: list[JournalEntry] = []
        self._consumers: set[str] = set()
        self._handled: dict[str, int] = {}  # consumer -> offset it has handled up to

    # ---- writing (under the store's write lock) ----------------------------------------------
    def rows_for(self, pending: Sequence[Pending]) -> tuple[list[tuple[object, ...]],
                                                            list[Envelope]]:
        """The journal rows of ``pending`` and their envelopes, at the next offsets."""
        offset = self._last
        rows: list[tuple[object, ...]] = []
        envelopes: list[Envelope] = []
        row, envelope = rows.append, envelopes.append
        make = tuple.__new__  # Envelope's own __new__ is a Python call around this
        for p in pending:
            offset += 1
            message = p.message
            stamp = p.received_ts if p.received_ts is not None else ts(p.received_at)
            row((offset, message.event_id, message.kind, p.topic, p.payload, stamp,
                 int(p.late), int(p.out_of_order)))
            envelope(make(Envelope, (offset, message, p.topic, p.received_at, p.late,
                                     p.out_of_order)))
        return rows, envelopes

    def local_rows(self, points: Sequence[tuple[str, Point]], now: float
                   ) -> tuple[list[tuple[object, ...]], list[LocalRecord]]:
        """The journal rows of the hub's own points and their records, at the next offsets."""
        first = self._last + 1
        rows: list[tuple[object, ...]] = [
            (first + i, record_id, LOCAL_KIND, "", point_payload(point), now, 0, 0)
            for i, (record_id, point) in enumerate(points)]
        records = [LocalRecord(first + i, point, dt(now)) for i, (_, point) in enumerate(points)]
        return rows, records

    @staticmethod
    def append(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
        """Journal rows, and the last offset (kept apart: pruning may empty the journal)."""
        if rows:
            insert_rows(conn, "INSERT INTO journal", rows)
            conn.execute("INSERT INTO meta VALUES ('last_offset', ?) ON CONFLICT(key) "
                         "DO UPDATE SET value=excluded.value", (rows[-1][0],))

    @staticmethod
    def delete(conn: sqlite3.Connection, offsets: Sequence[int]) -> None:
        conn.executemany("DELETE FROM journal WHERE offset=?", [(o,) for o in offsets])

    def publish(self, entries: Sequence[JournalEntry]) -> None:
        """Make committed entries visible to the consumers."""
        if entries:
            with self._cond:
                self._last = entries[-1].offset
                self._tail.extend(entries)
                self._trim_tail()
                self._cond.notify_all()

    def prune(self) -> int:
        """Drop journal rows every registered consumer has passed; return how many (the caller
        holds the write lock)."""
        with self._lock:
            consumers = sorted(self._consumers)
            last = self._last
        conn = self._store.conn
        if consumers:
            marks = ",".join("?" * len(consumers))
            low = conn.execute(
                f"SELECT MIN(offset) FROM cursors WHERE name IN ({marks})",  # noqa: S608
                consumers).fetchone()[0]
            low = 0 if low is None else low
        else:
            low = last
        return int(conn.execute("DELETE FROM journal WHERE offset <= ?", (low,)).rowcount)

    # ---- the decoded tail ----------------------------------------------------------------------
    def _trim_tail(self) -> None:
        """Drop what every consumer has handled, and beyond the capacity (under self._lock)."""
        tail = self._tail
        if not tail:
            return
        drop = 0
        if self._handled:
            drop = min(self._handled.values()) - tail[0].offset + 1
        if len(tail) - drop > TAIL_CAPACITY + TAIL_SLACK:
            drop = len(tail) - TAIL_CAPACITY
        if drop > 0:
            del tail[:drop]

    def mark_handled(self, name: str, offset: int) -> None:
        """Consumer ``name`` is done with everything up to ``offset`` (frees the tail)."""
        with self._lock:
            self._handled[name] = offset
            self._trim_tail()

    # ---- reading (the dispatcher threads) ----------------------------------------------------
    @property
    def last_offset(self) -> int:
        return self._last

    def register(self, name: str) -> int:
        """Register a consumer; return its cursor (a new one starts at the oldest kept row)."""
        with self._lock:
            self._consumers.add(name)
        with self._lock, self._cursor_lock:
            row = self._cursor_conn.execute(
                "SELECT offset FROM cursors WHERE name=?", (name,)).fetchone()
            if row is not None:
                start = int(row[0])
            else:
                low = self._cursor_conn.execute("SELECT MIN(offset) FROM journal").fetchone()[0]
                start = int(low - 1) if low is not None else self._last
                self._cursor_conn.execute("INSERT INTO cursors VALUES (?, ?)", (name, start))
            self._handled[name] = start
            return start

    def commit_cursor(self, name: str, offset: int) -> None:
        with self._cursor_lock:
            if self._closed:  # a consumer thread that outlived the hub's shutdown
                raise JournalError(f"cannot move the cursor of {name}: the journal is closed")
            try:
                self._cursor_conn.execute("UPDATE cursors SET offset=? WHERE name=?",
                                          (offset, name))
            except sqlite3.Error as exc:
                raise JournalError(f"cannot move the cursor of {name}: {exc}") from exc

    def wait_for(self, after: int, timeout: float,
                 stop: threading.Event | None = None) -> bool:
        """Block until an offset above ``after`` exists (True), or timeout, close or ``stop``
        (set, then :meth:`wake`) (False)."""
        def ready() -> bool:
            return self._last > after or self._closed or (stop is not None and stop.is_set())
        with self._cond:
            return self._cond.wait_for(ready, timeout) and self._last > after \
                and not self._closed

    def wake(self) -> None:
        """Wake every :meth:`wait_for` to look at its ``stop`` again (a consumer stopping)."""
        with self._cond:
            self._cond.notify_all()

    def read(self, after: int, limit: int) -> list[JournalEntry]:
        """Up to ``limit`` entries with offsets above ``after``, in order."""
        with self._lock:
            if self._tail and self._tail[0].offset <= after + 1:
                start = after + 1 - self._tail[0].offset
                return self._tail[start:start + limit]
        return self._read_db(after, limit)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, "normal")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def _read_db(self, after: int, limit: int) -> list[JournalEntry]:
        with self._read_lock:
            if self._closed:
                raise JournalError(f"cannot read {self.path}: the journal is closed")
            rows = self._reader().execute(
                "SELECT offset, kind, topic, payload, received_at, late, out_of_order "
                "FROM journal WHERE offset > ? ORDER BY offset LIMIT ?",
                (after, limit)).fetchall()
        out: list[JournalEntry] = []
        bad: list[Unreadable] = []
        for offset, kind, topic, payload, received_at, late, ooo in rows:
            try:
                if kind == LOCAL_KIND:
                    out.append(LocalRecord(offset, _point_from(payload), dt(received_at)))
                    continue
                message = decode(payload, max_size=len(payload) + 1)  # validated at ingest
                if not isinstance(message, SensorEvent | DeviceStatus | DataLoss):
                    raise ThermopipeError(f"a {message.kind!r} message has no place here")
            except (ThermopipeError, ValueError, KeyError, TypeError) as exc:
                bad.append((offset, str(topic), bytes(payload), float(received_at),
                            describe(exc)))
                continue
            out.append(Envelope(offset, message, topic, dt(received_at), bool(late), bool(ooo)))
        if bad:
            self._on_unreadable(bad)
        return out

    def backlog(self, cursor: int) -> int:
        return max(0, self._last - cursor)

    def received_after(self, offset: int) -> datetime | None:
        """When the first entry above ``offset`` was recorded (None: there is none)."""
        with self._lock:
            if offset >= self._last:
                return None
            if self._tail and self._tail[0].offset <= offset + 1:
                return self._tail[offset + 1 - self._tail[0].offset].received_at
        with self._read_lock:
            if self._closed:
                return None
            row = self._reader().execute(
                "SELECT received_at FROM journal WHERE offset > ? ORDER BY offset LIMIT 1",
                (offset,)).fetchone()
        return None if row is None else dt(row[0])

    def close(self) -> None:
        """Close the reader and cursor connections under the locks their users take (the caller
        holds the write lock): a consumer thread that outlived shutdown then gets a
        JournalError, not a closed connection under its feet (sqlite3 may crash the process)."""
        with self._read_lock, self._cond, self._cursor_lock:
            self._closed = True
            self._cond.notify_all()
            readers, self._readers = self._readers, []
            for conn in (*readers, self._cursor_conn):
                conn.close()
