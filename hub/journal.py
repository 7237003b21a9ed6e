"""The hub's durable record: journal, consumer cursors, dedup ids, sequence marks, dead letters.

One SQLite file (``data_dir/hub.sqlite3``) in WAL mode. The ingest thread writes the events: it
records a whole batch of MQTT messages (accepted events, the ids that make later
copies duplicates, the highest ``seq`` per sensor, dead letters) in ONE transaction and only then
acknowledges the batch to the broker. With ``synchronous=FULL`` (the default) the commit is on
disk before the broker forgets the messages, so neither a crash nor a power cut loses an
acknowledged event; ``normal`` survives a process crash only (the last commits may roll back on
power loss, and the broker will not resend them) and is offered for slow SD cards.

Consumers read from their own cursor. Cursor writes use a connection at ``synchronous=NORMAL``:
losing the last cursor move on power loss only redelivers a batch, and consumers are idempotent.
Rows every registered consumer has passed are pruned. Recent envelopes are also kept decoded in
memory (``tail``) so consumers that keep up never decode a payload again: the tail holds what
the slowest consumer has not handled yet (``mark_handled``), at most ``TAIL_CAPACITY`` entries
(memory); a consumer further behind reads and decodes from the file.

The hub's own records (its alerts, its ``hub_health`` points: ``LocalRecord``) are appended to the
same journal by ``append_local`` from other threads (the alerting consumer, the health timer), so
they get the journal's durability, order and per-consumer retry; a write lock keeps every write
transaction and offset assignment in one order. Only consumers that accept local records (storage)
receive them.

Dedup ids are kept ``dedup_retention_days`` (default 7) and at most ``dedup_max_ids`` (default 5
million, about 250 MB): an event replayed after that is stored again (storage writes are
idempotent, so the point is overwritten with the same values).

Dead letters are bounded rows (``hub/records.py``: at most ``DEAD_LETTER_ROW_MAX`` bytes each,
with the size and SHA-256 of payload, topic and reason in their own columns, added to an older
database when it is opened: :func:`migrate_dead_letters`) kept ``[dead_letters] max_age_days``
and at most ``max_bytes`` of row data, oldest first (:meth:`Journal.prune_dead_letters`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import structlog

from hub.consumers.base import Envelope, JournalEntry, LocalRecord
from hub.records import ID_KEEP, REASON_KEEP, DeadRecord, Point, clip_text
from hub.validate import Accepted
from schemas.codec import decode
from schemas.errors import ThermopipeError
from schemas.models import DataLoss, DeviceStatus, SensorEvent
from schemas.supervision import describe

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    offset INTEGER PRIMARY KEY, event_id TEXT NOT NULL, kind TEXT NOT NULL, topic TEXT NOT NULL,
    payload BLOB NOT NULL, received_at REAL NOT NULL, late INTEGER NOT NULL,
    out_of_order INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen(at);
CREATE TABLE IF NOT EXISTS seq_high (device TEXT NOT NULL, sensor TEXT NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (device, sensor)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY, dead_letter_id TEXT NOT NULL UNIQUE, received_at REAL NOT NULL,
    topic TEXT NOT NULL, reason_code TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'open', updated_at REAL NOT NULL, outcome TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS dead_letters_status ON dead_letters(status);
-- the dead letters' size and hash columns and their retention index: migrate_dead_letters
CREATE TABLE IF NOT EXISTS loss_state (device TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (site TEXT NOT NULL, device TEXT NOT NULL,
    sensor TEXT NOT NULL, PRIMARY KEY (site, device, sensor)) WITHOUT ROWID;
"""

#: Rows per multi-row ``INSERT ... VALUES`` (:func:`insert_rows`). ``executemany`` runs one SQLite
#: step per row and releases and retakes the GIL around each: under load every row of a batch
#: could wait for another thread's time slice (``sys.getswitchinterval()``, 5 ms), and the whole
#: hub waits on the ingest thread. One statement per chunk steps once.
INSERT_CHUNK = 256
TAIL_CAPACITY = 6_000  # decoded envelopes kept at most for consumers that lag (memory)
TAIL_SLACK = 1_000  # trimmed by whole slices, not one entry at a time
log = structlog.get_logger("hub.journal")
LOCAL_KIND = "_local_point"  # the journal ``kind`` of a LocalRecord (no event kind starts with _)

#: columns added to ``dead_letters`` after its first version (NULL in older rows: the payload's
#: size and hash are then in the reason's note, topic and reason are whole)
DEAD_LETTER_ADDED = (("payload_size", "INTEGER"), ("payload_sha256", "TEXT"),
                     ("topic_size", "INTEGER"), ("topic_sha256", "TEXT"),
                     ("reason_size", "INTEGER"), ("reason_sha256", "TEXT"),
                     ("stored_bytes", "INTEGER"))
#: a row's variable-length data, in SQL (older rows' ``stored_bytes``, and after a replay)
_ROW_BYTES_SQL = ("length(payload) + length(CAST(topic AS BLOB)) + length(CAST(reason AS BLOB))"
                  " + length(CAST(dead_letter_id AS BLOB)) + length(CAST(reason_code AS BLOB))"
                  " + length(CAST(status AS BLOB)) + length(CAST(outcome AS BLOB))"
                  " + coalesce(length(payload_sha256) + length(topic_sha256)"
                  " + length(reason_sha256), 0)")


class JournalError(ThermopipeError):
    """The journal file cannot be opened or written (disk full, corrupt, permissions)."""


def connect(path: Path, synchronous: str = "full") -> sqlite3.Connection:
    """A connection to the hub database in WAL mode; creates the schema on first use."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JournalError(f"cannot create the data directory {path.parent}: "
                           f"{exc.strerror or exc}") from exc
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        if synchronous == "full":  # the ingest writer: a little more of the dedup index cached
            conn.execute("PRAGMA cache_size=-4000")
        conn.executescript(SCHEMA)
        migrate_dead_letters(conn)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the hub database {path}: {exc}") from exc
    return conn


def migrate_dead_letters(conn: sqlite3.Connection) -> None:
    """Add the columns of :data:`DEAD_LETTER_ADDED` that a database made by an older hub lacks,
    fill ``stored_bytes`` of its rows, and index them for retention. Safe to race: a second
    process adding the same column finds it there."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(dead_letters)")}
    missing = [(name, kind) for name, kind in DEAD_LETTER_ADDED if name not in have]
    for name, kind in missing:
        try:
            conn.execute(f"ALTER TABLE dead_letters ADD COLUMN {name} {kind}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise
    if missing:
        conn.execute(f"UPDATE dead_letters SET stored_bytes = {_ROW_BYTES_SQL} "  # noqa: S608
                     "WHERE stored_bytes IS NULL")
    conn.execute("CREATE INDEX IF NOT EXISTS dead_letters_age "
                 "ON dead_letters(received_at, stored_bytes)")


@dataclass(frozen=True, slots=True)
class DeadPruned:
    """What one retention pass removed from the dead-letter store, and what it holds after."""

    by_age: int
    by_size: int
    kept_rows: int
    kept_bytes: int


@lru_cache(maxsize=128)
def _values_sql(head: str, width: int, count: int, tail: str) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return f"{head} VALUES {','.join([one] * count)}{tail}"


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[object]],
                tail: str = "") -> None:
    """``{head} VALUES (?,...),(?,...){tail}`` for every row, in as few statements as it takes:
    chunks of ``INSERT_CHUNK`` rows, then the rest in power-of-two sizes (so only a few distinct
    statement texts exist, each compiled once and cached)."""
    if not rows:
        return
    width = len(rows[0])
    done, total = 0, len(rows)
    while done < total:
        left = total - done
        count = INSERT_CHUNK if left >= INSERT_CHUNK else 1 << (left.bit_length() - 1)
        conn.execute(_values_sql(head, width, count, tail),
                     [value for row in rows[done:done + count] for value in row])
        done += count


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


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What became of a dead letter an operator asked to replay (row id -> outcome)."""

    row_id: int
    accepted: bool
    reason_code: str
    reason: str


def _ts(when: datetime) -> float:
    return when.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _point_payload(point: Point) -> bytes:
    return json.dumps({"m": point.measurement, "t": point.tags, "f": point.fields,
                       "ns": point.time_ns}, separators=(",", ":")).encode()


def _point_from(payload: bytes) -> Point:
    # JSON keeps the field types the line protocol needs: true/false, 5 (int), 5.0 (float), "s"
    data = json.loads(payload)
    return Point(data["m"], data["t"], data["f"], data["ns"])


class Journal:
    """The durable, ordered log of accepted events, with a cursor per consumer."""

    def __init__(self, path: Path, synchronous: str = "full", *,
                 dedup_retention_s: float = 7 * 86_400, dedup_max_ids: int = 5_000_000) -> None:
        self.path = path
        self._conn = connect(path, synchronous)
        self._cursor_conn = connect(path, "normal")
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one write transaction at a time on self._conn
        self._read_lock = threading.Lock()  # reader connections vs close (catch-up reads only)
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self.dedup_retention_s = dedup_retention_s
        self.dedup_max_ids = dedup_max_ids
        row = self._conn.execute("SELECT MAX(offset) FROM journal").fetchone()
        meta = self._conn.execute("SELECT value FROM meta WHERE key='last_offset'").fetchone()
        # last_offset survives pruning, so offsets never repeat even with an empty journal
        self._last = max(row[0] or 0, meta[0] if meta else 0)
        self._tail: list[JournalEntry] = []
        self._consumers: set[str] = set()
        self._handled: dict[str, int] = {}  # consumer -> offset it has handled up to

    # ---- writing (the ingest thread) ---------------------------------------------------------
    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` were already recorded (duplicates)."""
        found: set[str] = set()
        with self._write_lock:  # the connection is shared with append_local's transactions
            for start in range(0, len(ids), 900):
                chunk = ids[start:start + 900]
                marks = ",".join("?" * len(chunk))
                found.update(r[0] for r in self._conn.execute(
                    f"SELECT event_id FROM seen WHERE event_id IN ({marks})",  # noqa: S608
                    chunk))
        return found

    def load_seq_marks(self) -> dict[tuple[str, str], int]:
        return {(d, s): q for d, s, q in self._conn.execute(
            "SELECT device, sensor, seq FROM seq_high")}

    def record(self, pending: Sequence[Pending], seen_ids: Iterable[tuple[str, float]],  # noqa: PLR0917
               seq_marks: dict[tuple[str, str], int], dead: Sequence[DeadRecord],
               replays: Sequence[ReplayOutcome] = (),
               loss_state: dict[str, Any] | None = None,
               identities: Sequence[tuple[str, str, str]] = ()) -> list[Envelope]:
        """Commit one ingest batch atomically; return the new envelopes with their offsets.
        ``loss_state``: the loss detector's state of the devices it changed, in the same
        transaction (what the hub holds and what it reported lost never disagree);
        ``identities``: (site, device, sensor) the batch admitted (hub/identity_limits.py)."""
        with self._write_lock:
            return self._record(pending, seen_ids, seq_marks, dead, replays, loss_state,
                                identities)

    def load_identities(self) -> list[tuple[str, str, str]]:
        """The identities admitted so far, (site, device, sensor or "")."""
        return [(site, device, sensor) for site, device, sensor in self._conn.execute(
            "SELECT site, device, sensor FROM identities")]

    def load_loss_state(self) -> dict[str, Any]:
        """The loss detector's state as :meth:`record` stored it, ``site/device`` -> state."""
        rows = self._conn.execute("SELECT device, state FROM loss_state").fetchall()
        return {device: json.loads(state) for device, state in rows}

    def _record(self, pending: Sequence[Pending], seen_ids: Iterable[tuple[str, float]],  # noqa: PLR0917
                seq_marks: dict[tuple[str, str], int], dead: Sequence[DeadRecord],
                replays: Sequence[ReplayOutcome],
                loss_state: dict[str, Any] | None = None,
                identities: Sequence[tuple[str, str, str]] = ()) -> list[Envelope]:
        first = self._last + 1
        rows = []
        envelopes = []
        for i, p in enumerate(pending):
            offset = first + i
            ts = p.received_ts if p.received_ts is not None else _ts(p.received_at)
            rows.append((offset, p.message.event_id, p.message.kind, p.topic, p.payload, ts,
                         int(p.late), int(p.out_of_order)))
            envelopes.append(Envelope(offset, p.message, p.topic, p.received_at, p.late,
                                      p.out_of_order))
        with self._transaction("record an ingest batch in"):
            conn = self._conn
            self._append_rows(rows)
            if loss_state:
                insert_rows(
                    conn, "INSERT INTO loss_state",
                    [(k, json.dumps(v, separators=(",", ":"))) for k, v in loss_state.items()],
                    " ON CONFLICT(device) DO UPDATE SET state=excluded.state")
            insert_rows(conn, "INSERT OR IGNORE INTO seen", list(seen_ids))
            insert_rows(conn, "INSERT OR IGNORE INTO identities", identities)
            if seq_marks:
                insert_rows(conn, "INSERT INTO seq_high",
                            [(d, s, q) for (d, s), q in seq_marks.items()],
                            " ON CONFLICT(device, sensor) DO UPDATE SET seq=MAX(seq, excluded.seq)")
            self._insert_dead(dead)
            if replays:
                now = time.time()
                updates = []
                for r in replays:  # the new reason bounded like any dead letter's
                    reason, r_size, r_sha = clip_text(r.reason, REASON_KEEP)
                    updates.append(("replayed" if r.accepted else "open",
                                  clip_text(r.reason_code, ID_KEEP)[0], reason, r_size, r_sha,
                                  "accepted on replay" if r.accepted
                                  else "rejected again on replay", now, r.row_id))
                conn.executemany(
                    "UPDATE dead_letters SET status=?, reason_code=?, reason=?, reason_size=?, "
                    "reason_sha256=?, outcome=?, updated_at=? WHERE id=?", updates)
                conn.executemany(f"UPDATE dead_letters SET stored_bytes = {_ROW_BYTES_SQL} "  # noqa: S608
                                 "WHERE id=?", [(r.row_id,) for r in replays])
        self._publish(envelopes)
        return envelopes

    def _insert_dead(self, dead: Sequence[DeadRecord]) -> None:
        """Dead letters into the store (inside a transaction of the caller's), each bounded
        (:meth:`DeadRecord.bounded`) however it was made."""
        if dead:
            now = time.time()
            rows = []
            for d in (record.bounded() for record in dead):
                rows.append((d.dead_letter_id, _ts(d.received_at), d.topic, d.reason_code,
                              d.reason, d.payload, now, d.size, d.sha256, d.topic_size,
                              d.topic_sha256, d.reason_size, d.reason_sha256, d.stored_bytes))
            self._conn.executemany(
                "INSERT INTO dead_letters (dead_letter_id, received_at, topic, reason_code, "
                "reason, payload, updated_at, payload_size, payload_sha256, topic_size, "
                "topic_sha256, reason_size, reason_sha256, stored_bytes) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def add_dead_letters(self, dead: Sequence[DeadRecord]) -> None:
        """Dead letters made outside ingest (a consumer's poison event), committed now."""
        if not dead:
            return
        with self._write_lock, self._transaction("add dead letters to"):
            self._insert_dead(dead)

    def _quarantine_rows(self, rows: Sequence[tuple[int, str, bytes, float, str]]) -> None:
        """Journal rows that cannot be read back: each becomes a dead letter (reason kept,
        ``hub dlq`` shows it) and leaves the journal, in one transaction, so no consumer and no
        restart reads it into the same failure again. ``rows``: (offset, topic, payload,
        received_at, reason)."""
        dead = [DeadRecord.refused(f"journal-{self.path.stem}-{offset}",
                                   _dt(received_at), topic, payload,
                                   reason_code="unreadable_record",
                                   reason=f"journal row {offset} cannot be read back: {reason}")
                for offset, topic, payload, received_at, reason in rows]
        with self._write_lock, self._transaction("quarantine unreadable rows of"):
            self._insert_dead(dead)
            self._conn.executemany("DELETE FROM journal WHERE offset=?",
                                   [(r[0],) for r in rows])
        for offset, _topic, _payload, _at, reason in rows:
            log.error("journal.row_quarantined", offset=offset, reason=clip_text(reason, 300)[0],
                      meaning="moved to the dead-letter store; consumers go on past it")

    def append_local(self, points: Sequence[tuple[str, Point]]) -> list[LocalRecord]:
        """Durably append the hub's own points, ``(record id, point)`` each (any thread).

        Returns after the commit (``synchronous`` as configured), so a point handed over here
        survives a crash; the storage consumer writes it like an event (retried, in order)."""
        if not points:
            return []
        with self._write_lock:
            now = time.time()
            first = self._last + 1
            rows = [(first + i, record_id, LOCAL_KIND, "", _point_payload(point), now, 0, 0)
                    for i, (record_id, point) in enumerate(points)]
            with self._transaction("append to"):
                self._append_rows(rows)
            records = [LocalRecord(first + i, point, _dt(now))
                       for i, (_, point) in enumerate(points)]
            self._publish(records)
            return records

    @contextmanager
    def _transaction(self, what: str) -> Iterator[None]:
        """One write transaction on the ingest connection (callers hold the write lock);
        any SQLite failure rolls it back and becomes a JournalError naming ``what``."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise JournalError(f"cannot {what} {self.path}: {exc}") from exc

    def _append_rows(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Journal rows, and the last offset (kept apart: pruning may empty the journal)."""
        if rows:
            insert_rows(self._conn, "INSERT INTO journal", rows)
            self._conn.execute("INSERT INTO meta VALUES ('last_offset', ?) ON CONFLICT(key) "
                               "DO UPDATE SET value=excluded.value", (rows[-1][0],))

    def _publish(self, entries: Sequence[JournalEntry]) -> None:
        """Make committed entries visible to the consumers (called under the write lock)."""
        if entries:
            with self._cond:
                self._last = entries[-1].offset
                self._tail.extend(entries)
                self._trim_tail()
                self._cond.notify_all()

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

    def pending_replays(self, limit: int = 200) -> list[tuple[int, str, bytes]]:
        """Dead letters an operator asked to replay: (row id, topic, payload)."""
        with self._write_lock:
            return list(self._conn.execute(
                "SELECT id, topic, payload FROM dead_letters WHERE status='replay_requested' "
                "ORDER BY id LIMIT ?", (limit,)))

    def prune(self) -> int:
        """Drop journal rows every registered consumer has passed; return how many."""
        with self._write_lock:
            return self._prune()

    def _prune(self) -> int:
        with self._lock:
            consumers = sorted(self._consumers)
            last = self._last
        if consumers:
            marks = ",".join("?" * len(consumers))
            low = self._conn.execute(
                f"SELECT MIN(offset) FROM cursors WHERE name IN ({marks})",  # noqa: S608
                consumers).fetchone()[0]
            low = 0 if low is None else low
        else:
            low = last
        return int(self._conn.execute("DELETE FROM journal WHERE offset <= ?", (low,)).rowcount)

    def prune_dead_letters(self, now: float, max_bytes: int, max_age_s: float) -> DeadPruned:
        """Retention of the dead-letter store: rows received before ``now - max_age_s``, then
        the oldest until the rest hold at most ``max_bytes`` (``stored_bytes``: the rows' data,
        not SQLite's page overhead). Open rows go too: the store is bounded before it is
        complete; what was pruned is counted and logged by the caller."""
        with self._write_lock, self._transaction("prune dead letters of"):
            conn = self._conn
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

    def prune_seen(self, now: float | None = None) -> None:
        """Forget dedup ids past their retention or beyond the maximum count (oldest first)."""
        now = time.time() if now is None else now
        with self._write_lock:
            self._conn.execute("DELETE FROM seen WHERE at < ?", (now - self.dedup_retention_s,))
            count = self._conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
            if count > self.dedup_max_ids:
                self._conn.execute(
                    "DELETE FROM seen WHERE event_id IN (SELECT event_id FROM seen ORDER BY at "
                    "LIMIT ?)", (count - self.dedup_max_ids,))

    # ---- reading (the dispatcher threads) ----------------------------------------------------
    @property
    def last_offset(self) -> int:
        return self._last

    def register(self, name: str) -> int:
        """Register a consumer; return its cursor (a new one starts at the oldest kept row)."""
        with self._lock:
            self._consumers.add(name)
        with self._lock:
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
        with self._lock:
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
        bad: list[tuple[int, str, bytes, float, str]] = []
        for offset, kind, topic, payload, received_at, late, ooo in rows:
            try:
                if kind == LOCAL_KIND:
                    out.append(LocalRecord(offset, _point_from(payload), _dt(received_at)))
                    continue
                message = decode(payload, max_size=len(payload) + 1)  # validated at ingest
                if not isinstance(message, SensorEvent | DeviceStatus | DataLoss):
                    raise ThermopipeError(f"a {message.kind!r} message has no place here")
            except (ThermopipeError, ValueError, KeyError, TypeError) as exc:
                bad.append((offset, str(topic), bytes(payload), float(received_at),
                            describe(exc)))
                continue
            out.append(Envelope(offset, message, topic, _dt(received_at), bool(late), bool(ooo)))
        if bad:
            self._quarantine_rows(bad)
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
        return None if row is None else _dt(row[0])

    def close(self) -> None:
        """Close every connection, each under the lock its users take: a consumer thread that
        outlived shutdown (hung in its consumer) then gets a JournalError, not a closed
        connection under its feet (sqlite3 may crash the process on that)."""
        with self._write_lock, self._read_lock, self._cond:
            self._closed = True
            self._cond.notify_all()
            readers, self._readers = self._readers, []
            for conn in (*readers, self._cursor_conn, self._conn):
                conn.close()
