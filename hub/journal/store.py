"""The hub database itself: its schema and migrations, connections, write transactions, and
multi-row inserts. Every other journal module writes through one :class:`Store`, so one ingest
batch is one transaction whatever tables it touches."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from pathlib import Path

from schemas.errors import ThermopipeError

__all__ = ["DEAD_LETTER_ADDED", "INSERT_CHUNK", "REPLAY_REQUEST_DROPPED",
           "ROW_BYTES_SQL", "SCHEMA", "JournalError", "Store",
           "connect", "dt", "has_old_seq_marks", "insert_rows", "migrate_dead_letters",
           "migrate_seq_marks", "ts"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    offset INTEGER PRIMARY KEY, event_id TEXT NOT NULL, kind TEXT NOT NULL, topic TEXT NOT NULL,
    payload BLOB NOT NULL, received_at REAL NOT NULL, late INTEGER NOT NULL,
    out_of_order INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen(at);
CREATE TABLE IF NOT EXISTS seq_marks (site TEXT NOT NULL, device TEXT NOT NULL,
    sensor TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (site, device, sensor)) WITHOUT ROWID;
-- seq_high (device, sensor, seq), without the site, is an older hub's: migrate_seq_marks
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

#: columns added to ``dead_letters`` after its first version (NULL in older rows: the payload's
#: size and hash are then in the reason's note, topic and reason are whole)
DEAD_LETTER_ADDED = (("payload_size", "INTEGER"), ("payload_sha256", "TEXT"),
                     ("topic_size", "INTEGER"), ("topic_sha256", "TEXT"),
                     ("reason_size", "INTEGER"), ("reason_sha256", "TEXT"),
                     ("stored_bytes", "INTEGER"))
#: a dead letter's variable-length data, in SQL (older rows' ``stored_bytes``, and after a replay)
ROW_BYTES_SQL = ("length(payload) + length(CAST(topic AS BLOB)) + length(CAST(reason AS BLOB))"
                 " + length(CAST(dead_letter_id AS BLOB)) + length(CAST(reason_code AS BLOB))"
                 " + length(CAST(status AS BLOB)) + length(CAST(outcome AS BLOB))"
                 " + coalesce(length(payload_sha256) + length(topic_sha256)"
                 " + length(reason_sha256), 0)")


#: the outcome of a row an older hub left ``replay_requested`` (:func:`migrate_dead_letters`)
REPLAY_REQUEST_DROPPED = ("replay request of an older hub dropped: open again; replay it with "
                          "`hub dlq replay` while the hub runs")


class JournalError(ThermopipeError):
    """The journal file cannot be opened or written (disk full, corrupt, permissions)."""


def ts(when: datetime) -> float:
    return when.timestamp()


def dt(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


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
    fill ``stored_bytes`` of its rows, index them for retention, and open again the rows an
    older ``hub dlq replay`` left ``replay_requested``. Safe to race: a second
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
        conn.execute(f"UPDATE dead_letters SET stored_bytes = {ROW_BYTES_SQL} "  # noqa: S608
                     "WHERE stored_bytes IS NULL")
    conn.execute("CREATE INDEX IF NOT EXISTS dead_letters_age "
                 "ON dead_letters(received_at, stored_bytes)")
    # ``replay_requested`` was the polled table of older hubs: replay is now a command to the
    # running hub (hub/dead_letter_replay.py), so a row left asking is open again
    # (read first: an UPDATE would take the write lock at every connect)
    if conn.execute("SELECT 1 FROM dead_letters WHERE status='replay_requested' LIMIT 1"
                    ).fetchone():
        # one statement (atomic); SET reads the old status and outcome, so the size is theirs
        # swapped for the new ones
        conn.execute(f"UPDATE dead_letters SET status='open', outcome=:note, "  # noqa: S608
                     f"stored_bytes = {ROW_BYTES_SQL} - length(CAST(status AS BLOB)) "
                     "- length(CAST(outcome AS BLOB)) + 4 + length(CAST(:note AS BLOB)) "
                     "WHERE status='replay_requested'", {"note": REPLAY_REQUEST_DROPPED})


def has_old_seq_marks(conn: sqlite3.Connection) -> bool:
    """An older hub's ``seq_high`` table is still there (:func:`migrate_seq_marks`)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' "
                        "AND name='seq_high'").fetchone() is not None


def migrate_seq_marks(conn: sqlite3.Connection) -> None:
    """Move an older hub's ``seq_high`` marks, kept per (device, sensor) without the site (two
    sites' ``pi-01`` shared one mark, so each flagged the other's events out of order), to
    ``seq_marks``: each goes to every site the hub admitted that device and sensor for
    (``identities``); a mark with no admitted identity is dropped (the first event of that sensor
    after the upgrade is then never out of order). Inside the caller's transaction; a no-op
    once done."""
    if has_old_seq_marks(conn):  # again: another connection may have done it meanwhile
        conn.execute("INSERT OR IGNORE INTO seq_marks (site, device, sensor, seq) "
                     "SELECT i.site, h.device, h.sensor, h.seq FROM seq_high h "
                     "JOIN identities i ON i.device = h.device AND i.sensor = h.sensor")
        conn.execute("DROP TABLE seq_high")


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
                     list(chain.from_iterable(rows[done:done + count])))
        done += count


class Store:
    """The write connection (``synchronous`` as configured) and the lock that keeps every write
    transaction and offset assignment in one order (writers: ingest, ``append_local`` from other
    threads, retention passes)."""

    def __init__(self, path: Path, synchronous: str = "full") -> None:
        self.path = path
        self.conn = connect(path, synchronous)
        self.write_lock = threading.Lock()  # one write transaction at a time on self.conn
        # here, not in connect(): only the hub that writes the journal moves an older hub's
        # table (a newer `hub dlq` run beside an older running hub must not take it away)
        if has_old_seq_marks(self.conn):
            try:
                with self.write_lock, self.transaction("move the older sequence marks in"):
                    migrate_seq_marks(self.conn)
            except JournalError:
                self.conn.close()
                raise

    @contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (callers hold :attr:`write_lock`); any SQLite failure rolls it
        back and becomes a JournalError naming ``what``."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise JournalError(f"cannot {what} {self.path}: {exc}") from exc
