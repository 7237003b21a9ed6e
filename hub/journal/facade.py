"""The :class:`Journal` facade: today's public methods over the store, the event log, dedup ids,
marks and dead letters, and :class:`BatchRecord`, what one ingest batch commits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from hub.consumers.base import Envelope, JournalEntry, LocalRecord
from hub.journal import marks
from hub.journal.dead_letters import DeadLetters, DeadPruned, ReplayOutcome, unreadable
from hub.journal.dedup import SeenIds
from hub.journal.log import EventLog, Pending, Unreadable
from hub.journal.store import Store
from hub.records import DeadRecord, Point, clip_text

__all__ = ["BatchRecord", "Journal"]

log = structlog.get_logger("hub.journal")


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """What one ingest batch commits, in ONE transaction (:meth:`Journal.record`).

    ``pending``: accepted events, journaled in order; ``seen``: (event id, when) that make later
    copies duplicates; ``seq_marks``: the highest seq per (site, device, sensor) the batch raised;
    ``dead``: dead letters; ``replays``: what became of dead letters replayed;
    ``loss_state``: the loss detector's state of the devices it changed (what the hub holds and
    what it reported lost never disagree); ``identities``: (site, device, sensor) the batch
    admitted (hub/identity_limits.py)."""

    pending: Sequence[Pending] = ()
    seen: Iterable[tuple[str, float]] = ()
    seq_marks: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    dead: Sequence[DeadRecord] = ()
    replays: Sequence[ReplayOutcome] = ()
    loss_state: Mapping[str, Any] | None = None
    identities: Sequence[tuple[str, str, str]] = ()


class Journal:
    """The hub's durable record (see the package docstring), one object for its users."""

    def __init__(self, path: Path, synchronous: str = "full", *,
                 dedup_retention_s: float = 7 * 86_400, dedup_max_ids: int = 5_000_000) -> None:
        self.path = path
        self._store = Store(path, synchronous)
        self._seen = SeenIds(self._store, dedup_retention_s, dedup_max_ids)
        self._dead = DeadLetters(self._store)
        self._log = EventLog(self._store, self._quarantine_rows)

    @property
    def dedup_retention_s(self) -> float:
        return self._seen.retention_s

    @property
    def dedup_max_ids(self) -> int:
        return self._seen.max_ids

    # ---- writing (the ingest thread) ---------------------------------------------------------
    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` were already recorded (duplicates)."""
        return self._seen.known(ids)

    def load_seq_marks(self) -> dict[tuple[str, str, str], int]:
        return marks.load_seq_marks(self._store.conn)

    def load_identities(self) -> list[tuple[str, str, str]]:
        """The identities admitted so far, (site, device, sensor or "")."""
        return marks.load_identities(self._store.conn)

    def load_loss_state(self) -> dict[str, Any]:
        """The loss detector's state as :meth:`record` stored it, ``site/device`` -> state."""
        return marks.load_loss_state(self._store.conn)

    def record(self, batch: BatchRecord) -> list[Envelope]:
        """Commit one ingest batch atomically; return the new envelopes with their offsets."""
        with self._store.write_lock:
            rows, envelopes = self._log.rows_for(batch.pending)
            with self._store.transaction("record an ingest batch in") as conn:
                self._log.append(conn, rows)
                marks.insert_loss_state(conn, batch.loss_state)
                SeenIds.insert(conn, batch.seen)
                marks.insert_identities(conn, batch.identities)
                marks.insert_seq_marks(conn, batch.seq_marks)
                DeadLetters.insert(conn, batch.dead)
                DeadLetters.settle_replays(conn, batch.replays)
            self._log.publish(envelopes)
            return envelopes

    def add_dead_letters(self, dead: Sequence[DeadRecord]) -> None:
        """Dead letters made outside ingest (a consumer's poison event), committed now."""
        self._dead.add(dead)

    def _quarantine_rows(self, rows: list[Unreadable]) -> None:
        """Journal rows that cannot be read back: each becomes a dead letter (reason kept,
        ``hub dlq`` shows it) and leaves the journal, in one transaction, so no consumer and no
        restart reads it into the same failure again."""
        dead = unreadable(self.path.stem, rows)
        with self._store.write_lock, \
                self._store.transaction("quarantine unreadable rows of") as conn:
            DeadLetters.insert(conn, dead)
            EventLog.delete(conn, [r[0] for r in rows])
        for offset, _topic, _payload, _at, reason in rows:
            log.error("journal.row_quarantined", offset=offset, reason=clip_text(reason, 300)[0],
                      meaning="moved to the dead-letter store; consumers go on past it")

    def append_local(self, points: Sequence[tuple[str, Point]]) -> list[LocalRecord]:
        """Durably append the hub's own points, ``(record id, point)`` each (any thread).

        Returns after the commit (``synchronous`` as configured), so a point handed over here
        survives a crash; the storage consumer writes it like an event (retried, in order)."""
        if not points:
            return []
        with self._store.write_lock:
            rows, records = self._log.local_rows(points, time.time())
            with self._store.transaction("append to") as conn:
                self._log.append(conn, rows)
            self._log.publish(records)
            return records

    def mark_handled(self, name: str, offset: int) -> None:
        """Consumer ``name`` is done with everything up to ``offset`` (frees the tail)."""
        self._log.mark_handled(name, offset)

    def prune(self) -> int:
        """Drop journal rows every registered consumer has passed; return how many."""
        with self._store.write_lock:
            return self._log.prune()

    def prune_dead_letters(self, now: float, max_bytes: int, max_age_s: float) -> DeadPruned:
        """Retention of the dead-letter store (:meth:`DeadLetters.prune`)."""
        return self._dead.prune(now, max_bytes, max_age_s)

    def prune_seen(self, now: float | None = None) -> None:
        """Forget dedup ids past their retention or beyond the maximum count (oldest first)."""
        self._seen.prune(now)

    # ---- reading (the dispatcher threads) ----------------------------------------------------
    @property
    def last_offset(self) -> int:
        return self._log.last_offset

    def register(self, name: str) -> int:
        """Register a consumer; return its cursor (a new one starts at the oldest kept row)."""
        return self._log.register(name)

    def commit_cursor(self, name: str, offset: int) -> None:
        self._log.commit_cursor(name, offset)

    def wait_for(self, after: int, timeout: float,
                 stop: threading.Event | None = None) -> bool:
        """Block until an offset above ``after`` exists (True), or timeout, close or ``stop``
        (set, then :meth:`wake`) (False)."""
        return self._log.wait_for(after, timeout, stop)

    def wake(self) -> None:
        """Wake every :meth:`wait_for` to look at its ``stop`` again (a consumer stopping)."""
        self._log.wake()

    def read(self, after: int, limit: int) -> list[JournalEntry]:
        """Up to ``limit`` entries with offsets above ``after``, in order."""
        return self._log.read(after, limit)

    def backlog(self, cursor: int) -> int:
        return self._log.backlog(cursor)

    def last_received(self) -> float | None:
        """When the newest event the hub recorded was received (epoch seconds; None: none
        kept): what a hub that starts has heard until."""
        return self._seen.last_at()

    def received_after(self, offset: int) -> datetime | None:
        """When the first entry above ``offset`` was recorded (None: there is none)."""
        return self._log.received_after(offset)

    def close(self) -> None:
        """Close every connection, each under the lock its users take: a consumer thread that
        outlived shutdown (hung in its consumer) then gets a JournalError, not a closed
        connection under its feet (sqlite3 may crash the process on that)."""
        with self._store.write_lock:
            self._log.close()
            self._store.conn.close()
