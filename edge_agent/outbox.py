"""The durable outbox: every event is on disk before it is published, and leaves only when acked.

Storage: one SQLite file in WAL mode. Table ``events`` holds the pending events (``seq`` primary
key, ``event_id`` unique, the drop class, the topic, the JSON of the contract event, when it was
stored, its size); table ``meta`` holds the counters that must survive restarts (``next_seq``, the
connect ``session`` counter = Sparkplug's bdSeq, and the drop counters).

Group commit (the SD card is not worn by one fsync per event): :meth:`Outbox.append` only buffers
in memory; :meth:`Outbox.commit` writes every buffered event, deletes every acknowledged one and
enforces the bounds in ONE transaction with ``synchronous=FULL`` (one WAL fsync per batch).
The delivery loop commits every ``flush_interval_s`` or ``flush_max_events``, and publishes an
event only after the commit that stored it returned, so "on disk before published" holds exactly.
A commit writes every page it touched; new outboxes use 1 KiB pages (:data:`PAGE_SIZE`), 2.6x
fewer bytes per commit than SQLite's default 4 KiB with the same transactions and fsyncs
(bench/README.md: about 15 MB/h at 16 sensors x 1 Hz).

Loss window, stated honestly: events appended after the last commit are only in memory; a power
cut or ``kill -9`` loses them (at most ``flush_interval_s`` worth; they were never published, and
the sources simply read the sensors again). Acknowledgements are batched the same way: an event
acked in the last interval before a crash is published again after the restart, with the same
``event_id``, and the hub drops it as a duplicate. Nothing committed is ever lost by a crash.

What deletes a row, besides the bounds below: only the delivery loop, by exact seq. With no hub
receipt awaited, the broker's PUBACK (:meth:`Outbox.ack`); with receipts, a hub's receipt
(:meth:`Outbox.receipted`) for the rows the delivery policy names: those this run published and
saw acknowledged by the broker (edge_agent/receipt_policy.py), never the whole range a receipt
names. A receipt naming rows not sent yet (the backlog, rows of an earlier run) deletes nothing
of them; rows a hub says it refused (the receipt's ``refused``) stay and are sent again later.
Not covered: a receipt that is forged, or wrong, about a row the broker did acknowledge deletes
that row, and the agent cannot tell (the broker had it; the hub's loss detection is what
reports a seq no hub ever got).

Bounds, enforced at every commit, in this order:

1. age: events older than ``max_age_s`` are dropped, whatever their class. Only events stored
   while the clock was NTP-synchronised are aged: a Raspberry Pi without RTC jumps its clock forward
   at NTP sync, which would otherwise make the whole buffer look ancient.
2. size: the stored bytes (payload + topic + a fixed per-row overhead) stay under ``max_bytes``.
3. disk: the free space of the outbox's filesystem stays above ``min_free_bytes``; rows are dropped
   to cover the deficit and their pages are handed back to the filesystem (incremental vacuum).

Drop policy for size and disk: the oldest *summaries* go first, then the oldest *readings*, and
alarms (threshold state changes, rate alarms, faults) only last. Every drop is counted per class and
per reason in ``meta`` (so the counts survive restarts), logged as a structured warning, and shown
in :meth:`Outbox.counters` (and thus in the device status).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

import structlog

from edge_agent.config.outbox import OutboxSettings
from schemas.errors import DeliveryError
from schemas.plain_messages import SENSOR_EVENTS, SensorEvent
from schemas.plain_runtime import decode

log = structlog.get_logger(__name__)

ROW_OVERHEAD = 64  # bytes counted per row for the key, indexes and SQLite record headers
_CHUNK = 500       # rows per DELETE statement (well under SQLite's parameter limit)
BOUNDS_IDLE_S = 5.0  # how often an idle outbox still checks its age and free-disk bounds
PAGE_SIZE = 1024     # SQLite page size of a new outbox (see _connect)


class DropClass(IntEnum):
    """Lower classes are dropped first when a bound is hit."""

    SUMMARY = 0
    READING = 1
    ALARM = 2  # state changes, rate alarms, faults: dropped last


_CLASS_OF_KIND = {"summary": DropClass.SUMMARY, "reading": DropClass.READING,
                  "state_change": DropClass.ALARM, "rate_alarm": DropClass.ALARM,
                  "fault": DropClass.ALARM}
_CLASS_NAME = {DropClass.SUMMARY: "summary", DropClass.READING: "reading",
               DropClass.ALARM: "alarm"}
_DROP_REASONS = ("age", "size", "disk")
_META_KEYS = ("next_seq", "session", "receipts_seen",
              *(f"dropped_{name}" for name in _CLASS_NAME.values()),
              *(f"dropped_by_{reason}" for reason in _DROP_REASONS))


def drop_class(kind: str) -> DropClass:
    return _CLASS_OF_KIND[kind]


_LIVE_FLAG = b'"replayed":false'
_REPLAYED_FLAG = b'"replayed":true'


class Stored(NamedTuple):
    """One event as the outbox keeps it. ``event`` is set for rows committed in this process.

    A tuple, not a dataclass: the backlog replay makes one per row read, straight from the
    SQLite row (``Stored._make``), and that is most of what a replayed event costs the agent."""

    seq: int
    event_id: str
    kind: str
    topic: str
    payload: bytes  # the contract event as JSON
    created_at: float
    event: SensorEvent | None = None

    def to_event(self) -> SensorEvent:
        if self.event is not None:
            return self.event
        return decode(self.payload, SENSOR_EVENTS)

    def replayed_json(self) -> bytes | None:
        """The stored JSON with ``replayed`` set, without decoding and encoding it again.

        The payload is this outbox's own serialization of a contract event (``to_json``, as
        pydantic's ``model_dump_json``: compact, ``replayed`` a top-level boolean, no free-form
        object keys), so the flag is the one byte sequence ``"replayed":false`` (inside a JSON
        string a quote is escaped, so the sequence cannot come from a value). ``None`` unless it
        is there exactly once (a row that is not such JSON: the caller decodes it, and drops it
        if it is damaged)."""
        payload = self.payload
        if payload.count(_LIVE_FLAG) != 1:
            return None
        return payload.replace(_LIVE_FLAG, _REPLAYED_FLAG, 1)


@dataclass(frozen=True, slots=True)
class Drop:
    """A run of events the outbox evicted (full, or expired), for the log and the counters."""

    reason: str
    cls: DropClass
    count: int
    first_seq: int
    last_seq: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    cls INTEGER NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    clock_ok INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_class ON events (cls, seq);
CREATE INDEX IF NOT EXISTS events_by_age ON events (clock_ok, created_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_Row = tuple[int, str, int, str, str, bytes, float, int, int]


def _disk_free(path: Path) -> int:
    # what shutil.disk_usage(path).free computes; shutil (with bz2, lzma and zlib) is 0.2-0.6 MiB
    # of the agent's memory, imported for this line alone (bench/README.md)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Outbox:
    """The durable, bounded queue of events waiting for a broker acknowledgement. Thread-safe."""

    def __init__(self, settings: OutboxSettings | None = None, *,
                 disk_free: Callable[[Path], int] = _disk_free,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or OutboxSettings()
        self._disk_free = disk_free
        self._clock = clock
        self._stage_lock = threading.Lock()
        self._db_lock = threading.RLock()
        self._staged: list[tuple[_Row, SensorEvent]] = []
        self._acked: set[int] = set()  # acknowledged or receipted: deleted at the next commit
        self._receipts_seen = False
        self.dropped_seqs: set[int] = set()  # what the last commit's bounds dropped
        self._closed = False
        path = self.settings.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeliveryError(f"cannot create the outbox directory {path.parent}: "
                                f"{exc.strerror or exc}") from exc
        self._db = self._open(path)
        self._meta = self._load_meta()
        self._rows, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM events").fetchone()
        max_seq = self._db.execute("SELECT MAX(seq) FROM events").fetchone()[0]
        self._next_seq = max(self._meta["next_seq"], (max_seq + 1) if max_seq is not None else 0)
        self.commits = 0
        self._bounds_checked_at = float("-inf")
        log.info("outbox.opened", path=str(path), pending=self._rows, bytes=self._bytes,
                 next_seq=self._next_seq)

    # -- opening and recovery ----------------------------------------------------------------
    def _open(self, path: Path) -> sqlite3.Connection:
        try:
            return self._connect(path)
        except sqlite3.OperationalError as exc:  # cannot open or write (read-only, permissions)
            raise DeliveryError(f"cannot open the outbox {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            # A file that is not a database (torn by a broken card, overwritten by hand): keep it
            # for forensics and start afresh, so the agent keeps working and says what happened.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error("outbox.corrupt", path=str(path), moved_to=str(aside), error=str(exc))
            try:
                for suffix in ("", "-wal", "-shm"):
                    src = Path(str(path) + suffix)
                    if src.exists():
                        src.rename(Path(str(aside) + suffix))
                return self._connect(path)
            except (sqlite3.Error, OSError) as exc2:
                raise DeliveryError(f"cannot create the outbox {path}: {exc2}") from exc2
        except (sqlite3.Error, OSError) as exc:
            raise DeliveryError(f"cannot open the outbox {path}: {exc}") from exc

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            # page_size and auto_vacuum must be chosen before the first table exists (an outbox
            # made by an older version keeps its 4 KiB pages). A commit writes every page it
            # touched (the row, three indexes, meta) to the WAL: 1 KiB pages write 2.6x fewer
            # bytes per commit to the SD card than SQLite's default 4 KiB (bench/README.md).
            # auto_vacuum lets a disk-pressure drop hand pages back to the filesystem.
            db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.DatabaseError(f"journal_mode is {mode}, not wal")
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(_SCHEMA)
            db.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, 0)",
                           [(k,) for k in _META_KEYS])
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _load_meta(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    # -- identity ------------------------------------------------------------------------------
    def reserve_seq(self) -> int:
        """The next sequence number of this device; persisted past it by the commit that stores
        its event.

        An event is published only after a commit that stored it and ``next_seq`` past its seq,
        so a restart never reuses a seq the hub has seen, and never skips one either.
        """
        with self._stage_lock:
            seq = self._next_seq
            self._next_seq += 1
            return seq

    def next_session(self) -> int:
        """Increment and persist the connect counter (Sparkplug bdSeq); returns the new value."""
        with self._db_lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'session'")
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise DeliveryError(f"outbox: cannot store the session counter: {exc}") from exc
            self._meta["session"] += 1
            return self._meta["session"]

    @property
    def session(self) -> int:
        return self._meta["session"]

    # -- writing ---------------------------------------------------------------------------------
    def append(self, items: Iterable[tuple[SensorEvent, str]]) -> int:
        """Buffer ``(event, topic)`` pairs for the next commit; returns how many are buffered."""
        now = self._clock()
        rows: list[tuple[_Row, SensorEvent]] = []
        for event, topic in items:
            payload = event.to_json()
            size = len(payload) + len(topic) + ROW_OVERHEAD
            rows.append(((event.seq, event.event_id, int(_CLASS_OF_KIND[event.kind]), event.kind,
                          topic, payload, now, int(event.clock_synced), size), event))
        with self._stage_lock:
            self._staged.extend(rows)
            return len(self._staged)

    @property
    def staged(self) -> int:
        with self._stage_lock:
            return len(self._staged)

    def ack(self, seqs: Iterable[int]) -> None:
        """Delete these with the next commit (batched): acknowledged, and no receipt awaited."""
        with self._stage_lock:
            self._acked.update(seqs)

    def receipted(self, seqs: Iterable[int]) -> None:
        """A receipt arrived: delete exactly these rows with the next commit (the ones the
        delivery policy decided a receipt may delete: sent in this run and acknowledged, never
        a whole range), and remember that this outbox has had a receipt (``receipts_seen``)."""
        with self._stage_lock:
            self._acked.update(seqs)
            self._receipts_seen = True

    @property
    def receipts_seen(self) -> bool:
        """A hub has sent this outbox a receipt, ever (persisted): receipts are awaited."""
        return bool(self._meta["receipts_seen"]) or self._receipts_seen

    def commit(self, force: bool = False) -> list[Stored]:
        """One transaction: store the buffered events, delete the acked ones, enforce the bounds.

        With nothing buffered or acked it is a no-op unless the bounds were last checked more
        than ``BOUNDS_IDLE_S`` ago (or ``force``), so an idle device does not spin the card.

        Returns the newly stored events (in seq order) that the bounds did not drop at once; only
        these may be published. Raises :class:`DeliveryError` if the disk write failed, in which
        case the buffered events and acks are kept for the next attempt.
        """
        with self._db_lock:
            self._check_open()
            with self._stage_lock:
                batch, self._staged = self._staged, []
                acked, self._acked = self._acked, set()
                seen = self._receipts_seen
            now = time.monotonic()
            self.dropped_seqs = set()
            if not (batch or acked or force or (seen and not self._meta["receipts_seen"])) \
                    and now - self._bounds_checked_at < BOUNDS_IDLE_S:
                return []  # idle: nothing to write; age and disk are still checked every few s
            self._bounds_checked_at = now
            try:
                stored, drops = self._commit(batch, acked, seen)
            except sqlite3.Error as exc:
                self._rollback()
                self._reload_stats()
                with self._stage_lock:
                    self._staged[:0] = batch
                    self._acked |= acked
                raise DeliveryError(f"outbox commit failed: {exc}") from exc
            self.commits += 1
        for drop in drops:
            log.warning("outbox.dropped", reason=drop.reason, drop_class=_CLASS_NAME[drop.cls],
                        count=drop.count, first_seq=drop.first_seq, last_seq=drop.last_seq,
                        policy="summaries first, then readings, alarms last")
        return stored

    def _commit(self, batch: list[tuple[_Row, SensorEvent]], acked: set[int],
                receipts_seen: bool) -> tuple[list[Stored], list[Drop]]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        if batch:
            db.executemany("INSERT INTO events (seq, event_id, cls, kind, topic, payload, "
                           "created_at, clock_ok, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [row for row, _ in batch])
            self._rows += len(batch)
            self._bytes += sum(row[8] for row, _ in batch)
        ordered = sorted(acked)
        for i in range(0, len(ordered), _CHUNK):
            chunk = ordered[i:i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            sizes = db.execute(f"DELETE FROM events WHERE seq IN ({marks}) RETURNING size",  # noqa: S608
                               chunk).fetchall()
            self._rows -= len(sizes)
            self._bytes -= sum(s for (s,) in sizes)
        drops, dropped = self._enforce_bounds(sum(row[8] for row, _ in batch))
        self.dropped_seqs = dropped
        # past every seq stored so far, not past every seq reserved: one reserved and not yet
        # buffered when this commit ran (stamped on another thread) is not on disk, and a SIGKILL
        # now must not leave a gap in the seqs (the hub would report it lost). A restart reuses
        # it: nothing with it was ever published (only what a commit stored is).
        meta = dict(self._meta, next_seq=max(
            self._meta["next_seq"], max((row[0] for row, _ in batch), default=-1) + 1))
        if receipts_seen:
            meta["receipts_seen"] = 1
        for drop in drops:
            meta[f"dropped_{_CLASS_NAME[drop.cls]}"] += drop.count
            meta[f"dropped_by_{drop.reason}"] += drop.count
        db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                       [(v, k) for k, v in meta.items() if v != self._meta.get(k)])
        db.execute("COMMIT")
        self._meta = meta
        if any(d.reason == "disk" for d in drops):
            # hand the freed pages back to the filesystem, and shrink the WAL file
            db.execute("PRAGMA incremental_vacuum")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        stored = [Stored(row[0], row[1], row[3], row[4], row[5], row[6], event)
                  for row, event in sorted(batch, key=lambda r: r[0][0])
                  if row[0] not in dropped]
        return stored, drops

    # -- bounds ----------------------------------------------------------------------------------
    def _enforce_bounds(self, incoming_bytes: int) -> tuple[list[Drop], set[int]]:
        s = self.settings
        drops: list[Drop] = []
        dropped: set[int] = set()
        cutoff = self._clock() - s.max_age_s
        expired = self._db.execute(
            "DELETE FROM events WHERE clock_ok = 1 AND created_at < ? RETURNING seq, cls, size",
            (cutoff,)).fetchall()
        if expired:
            self._account(expired, "age", drops, dropped)
        if self._bytes > s.max_bytes:
            self._drop_oldest(self._bytes - s.max_bytes, "size", drops, dropped)
        if s.min_free_bytes:
            try:
                free = self._disk_free(s.path.parent)
            except OSError as exc:
                log.warning("outbox.disk_usage_failed", path=str(s.path.parent), error=str(exc))
                free = s.min_free_bytes
            # the batch may not be on disk yet (it is in the WAL at COMMIT): count it as used
            deficit = s.min_free_bytes - (free - incoming_bytes)
            if deficit > 0:
                self._drop_oldest(min(deficit, self._bytes), "disk", drops, dropped)
        return drops, dropped

    def _drop_oldest(self, need: int, reason: str, drops: list[Drop], dropped: set[int]) -> None:
        for cls in DropClass:
            while need > 0:
                candidates = self._db.execute(
                    "SELECT seq, cls, size FROM events WHERE cls = ? ORDER BY seq LIMIT 1000",
                    (int(cls),)).fetchall()
                if not candidates:
                    break
                take: list[tuple[int, int, int]] = []
                for row in candidates:
                    take.append(row)
                    need -= row[2]
                    if need <= 0:
                        break
                self._db.execute("DELETE FROM events WHERE cls = ? AND seq <= ?",
                                 (int(cls), take[-1][0]))
                self._account(take, reason, drops, dropped)

    def _account(self, rows: Sequence[tuple[int, int, int]], reason: str, drops: list[Drop],
                 dropped: set[int]) -> None:
        by_class: dict[DropClass, list[int]] = {}
        for seq, cls, size in rows:
            by_class.setdefault(DropClass(cls), []).append(seq)
            self._rows -= 1
            self._bytes -= size
            dropped.add(seq)
        for cls, seqs in by_class.items():
            drops.append(Drop(reason, cls, len(seqs), min(seqs), max(seqs)))

    # -- reading ---------------------------------------------------------------------------------
    def read(self, after_seq: int = -1, limit: int = 500) -> list[Stored]:
        """Committed events with ``seq > after_seq`` in seq order, at most ``limit``, leaving out
        those acknowledged or receipted and not deleted yet (the next commit deletes them)."""
        out: list[Stored] = []
        with self._db_lock:
            self._check_open()
            cursor = after_seq
            while len(out) < limit:
                want = limit - len(out)
                rows = self._db.execute(
                    "SELECT seq, event_id, kind, topic, payload, created_at, NULL FROM events "
                    "WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, want)).fetchall()
                if not rows:
                    break
                cursor = rows[-1][0]
                with self._stage_lock:
                    acked = self._acked
                    if not acked:
                        out.extend(map(Stored._make, rows))
                    else:
                        out.extend(Stored._make(row) for row in rows if row[0] not in acked)
                if len(rows) < want:
                    break
        return out

    # -- status ----------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return int(self._rows)

    @property
    def bytes(self) -> int:
        return int(self._bytes)

    def oldest_age_s(self) -> float:
        return self._oldest()[1]

    def oldest_seq(self) -> int:
        """The lowest seq the outbox still holds (stored or buffered); ``next_seq`` when empty.
        Everything below it has left the outbox (receipted, acknowledged or dropped): the hub
        turns a gap below it into a data_loss record at once (hub/loss_detector.py)."""
        return self._oldest()[0]

    def _oldest(self) -> tuple[int, float]:
        with self._db_lock:
            self._check_open()
            row = self._db.execute(
                "SELECT seq, created_at FROM events ORDER BY seq LIMIT 1").fetchone()
            with self._stage_lock:
                staged = min((r[0][0] for r in self._staged), default=None)
                next_seq = self._next_seq
        seqs = [s for s in (row[0] if row else None, staged) if s is not None]
        age = max(0.0, self._clock() - row[1]) if row else 0.0
        return (min(seqs) if seqs else next_seq), age

    def counters(self) -> dict[str, float]:
        meta = self._meta
        oldest_seq, oldest_age = self._oldest()
        return {
            "outbox_depth": float(self._rows),
            "outbox_bytes": float(self._bytes),
            "outbox_oldest_age_s": round(oldest_age, 3),
            "outbox_oldest_seq": float(oldest_seq),
            "outbox_staged": float(self.staged),
            "outbox_commits": float(self.commits),
            **{f"dropped_{name}": float(meta[f"dropped_{name}"])
               for name in _CLASS_NAME.values()},
            **{f"dropped_by_{reason}": float(meta[f"dropped_by_{reason}"])
               for reason in _DROP_REASONS},
        }

    # -- closing ---------------------------------------------------------------------------------
    def close(self, flush: bool = True) -> None:
        """Commit what is buffered (unless ``flush`` is False, which is how tests model a crash)."""
        if self._closed:
            return
        try:
            if flush:
                self.commit()
        finally:
            with self._db_lock:
                self._closed = True
                self._db.close()
            log.info("outbox.closed", path=str(self.settings.path), pending=self._rows)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reload_stats(self) -> None:
        try:
            self._rows, self._bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM events").fetchone()
        except sqlite3.Error as exc:
            log.error("outbox.stats_failed", error=str(exc))

    def _check_open(self) -> None:
        if self._closed:
            raise DeliveryError("the outbox is closed")

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.error("outbox.rollback_failed", error=str(exc))
