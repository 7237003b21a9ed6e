"""A journal row that cannot be read back (issue 21, item 2): quarantined as a dead letter with the
reason, the consumer moves on, and a restart never reads it into the same failure again."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from hub.consumers.base import Envelope
from hub.deadletters import list_dead_letters
from hub.journal import BatchRecord, Journal, Pending
from schemas.codec import encode
from schemas.models import ReadingEvent


def _reading(seq: int) -> ReadingEvent:
    return ReadingEvent(event_id=f"ev{seq:08d}", site="s1", device_id="d1", sensor_id="t1",
                        seq=seq, time=datetime(2026, 12, 7, tzinfo=UTC), clock_synced=True,
                        value=20.0 + seq, unit="degC")


def _record(journal: Journal, seqs: range) -> None:
    now = datetime.now(UTC)
    pending = [Pending(_reading(s), "t/s1/d1/event/t1", encode(_reading(s)), now, False, False,
                       now.timestamp()) for s in seqs]
    journal.record(BatchRecord(pending, [(p.message.event_id, now.timestamp()) for p in pending]))


def test_an_unreadable_row_is_quarantined_and_skipped_for_good(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    journal = Journal(path)
    journal.register("storage")
    _record(journal, range(1, 6))
    journal.close()
    # the third row's payload damaged on disk (a bad sector, a hand edit, an old bug's row)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE journal SET payload=? WHERE offset=3", (b"\x00garbage\xff",))

    journal = Journal(path)  # a restart: nothing in memory, every row read from the file
    try:
        cursor = journal.register("storage")
        entries = journal.read(cursor, 100)
        assert [e.offset for e in entries] == [1, 2, 4, 5]
        assert all(isinstance(e, Envelope) for e in entries)
        # the row is gone from the journal, kept as a dead letter with the reason
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*) FROM journal WHERE offset=3").fetchone()[0] == 0
        dead = list_dead_letters(tmp_path)
        assert len(dead) == 1
        assert dead[0].reason_code == "unreadable_record"
        assert "journal row 3 cannot be read back" in dead[0].reason
        assert dead[0].payload == b"\x00garbage\xff"
        # read again (another consumer, another restart): the same four, no new dead letter
        assert [e.offset for e in journal.read(0, 100)] == [1, 2, 4, 5]
        assert len(list_dead_letters(tmp_path)) == 1
    finally:
        journal.close()
