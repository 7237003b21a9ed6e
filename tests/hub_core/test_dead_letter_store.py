"""The dead-letter store is bounded (issue 21, item 6), without a broker: every row within
``DEAD_LETTER_ROW_MAX`` (payload, topic and reason each a prefix with the size and SHA-256 of the
whole, in columns), databases of older hubs migrated and their rows still read, retention by age
and size (time passed in), log lines rate-limited, and ``hub dlq`` escaping wire bytes through
the real CLI. tests/hub_core/test_dead_letter_flood.py does it through a real Mosquitto."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.dead_letter_replay import plan
from hub.deadletters import list_dead_letters, printable, read_for_replay
from hub.journal import BatchRecord, Journal, ReplayOutcome
from hub.log_budget import LogBudget
from hub.records import (
    DEAD_LETTER_KEEP,
    DEAD_LETTER_ROW_MAX,
    ID_KEEP,
    REASON_KEEP,
    TOPIC_KEEP,
    DeadRecord,
    clip_text,
)
from tests.hub_core.helpers import write_toml

ROOT = Path(__file__).resolve().parents[2]
WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HUGE_TOPIC = "tp/s1/d1/event/" + "L" * 65_000          # a 65 KB topic level
HUGE_REASON = "sensor id " + "R" * (1024 * 1024) + " is not valid"  # a 1 MB exception text
HUGE_PAYLOAD = b'{"kind": "reading", "pad": "' + b"z" * (10 * 1024 * 1024) + b'"}'


def sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def huge(dead_letter_id: str = "dead0001", when: datetime = WHEN) -> DeadRecord:
    return DeadRecord.refused(dead_letter_id, when, HUGE_TOPIC, HUGE_PAYLOAD,
                              reason_code="invalid", reason=HUGE_REASON)


def bytes_per_row(db: Path) -> int:
    """A dead-letter row's size as SQLite stores it (its record: header and every column),
    read from the file's b-tree pages (dbstat), overflow pages included; the rows of these
    tests are alike, so the mean is each one's."""
    with sqlite3.connect(db) as conn:
        count = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        total = conn.execute("SELECT SUM(payload) FROM dbstat WHERE name='dead_letters'"
                             ).fetchone()[0]
    assert count
    return int(total) // int(count)


# ---- records -------------------------------------------------------------------------------

def test_topic_reason_and_payload_each_keep_a_prefix_with_size_and_hash() -> None:
    record = huge()
    assert record.topic == HUGE_TOPIC[:TOPIC_KEEP]
    assert (record.topic_size, record.topic_sha256) == (len(HUGE_TOPIC), sha(HUGE_TOPIC))
    assert record.reason == HUGE_REASON[:REASON_KEEP]
    assert (record.reason_size, record.reason_sha256) == (len(HUGE_REASON), sha(HUGE_REASON))
    assert record.payload == HUGE_PAYLOAD[:DEAD_LETTER_KEEP]
    assert (record.size, record.sha256) == (len(HUGE_PAYLOAD), sha(HUGE_PAYLOAD))
    assert record.truncated and record.topic_truncated and record.reason_truncated
    assert not record.replayable
    assert "truncated" not in record.reason  # sizes and hashes are fields, not text
    assert record.stored_bytes <= DEAD_LETTER_ROW_MAX
    message = record.to_message()
    assert (message.topic_size, message.reason_size, message.payload_size,
            message.payload_sha256) == (len(HUGE_TOPIC), len(HUGE_REASON), len(HUGE_PAYLOAD),
                                        sha(HUGE_PAYLOAD))
    assert len(message.model_dump_json()) < 12 * 1024


def test_a_prefix_never_cuts_a_character_and_odd_text_never_raises() -> None:
    text = "é" * 3000  # two bytes each
    prefix, size, _ = clip_text(text, 1025)
    assert prefix == "é" * 512 and size == 6000
    # a lone surrogate (a str made with surrogateescape) is stored as visible text
    record = DeadRecord.refused("dead0002", WHEN, "tp/\udcff/x", b"", reason_code="invalid",
                                reason="bad \udcfe")
    assert record.topic == "tp/\\udcff/x" and record.reason == "bad \\udcfe"
    record.topic.encode()  # valid UTF-8 now: SQLite takes it
    assert record.replayable  # nothing was cut: the topic is whole, only made printable


def test_a_small_dead_letter_is_whole_and_replayable() -> None:
    record = DeadRecord.refused("dead0003", WHEN, "tp/s1/d1/event/t1", b"{not json",
                                reason_code="invalid", reason="not JSON")
    assert (record.topic, record.reason, record.payload) == ("tp/s1/d1/event/t1", "not JSON",
                                                             b"{not json")
    assert not (record.truncated or record.topic_truncated or record.reason_truncated)
    assert record.replayable


def test_a_record_made_directly_is_bounded_by_the_store(tmp_path: Path) -> None:
    # a consumer's poison event or a future caller may build one without refused()
    direct = DeadRecord("x" * 500, WHEN, HUGE_TOPIC, "c" * 500, HUGE_REASON, HUGE_PAYLOAD)
    journal = Journal(tmp_path / "hub.sqlite3")
    try:
        journal.add_dead_letters([direct])
    finally:
        journal.close()
    (row,) = list_dead_letters(tmp_path)
    assert len(row.dead_letter_id) == ID_KEEP and len(row.reason_code) == ID_KEEP
    assert (row.topic_size, row.reason_size, row.original_size) == (
        len(HUGE_TOPIC), len(HUGE_REASON), len(HUGE_PAYLOAD))
    assert bytes_per_row(tmp_path / "hub.sqlite3") <= DEAD_LETTER_ROW_MAX


# ---- the store -----------------------------------------------------------------------------

def test_every_row_is_within_the_bound_measured_in_the_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    journal = Journal(db)
    try:
        journal.record(BatchRecord(dead=[huge(f"dead{i:04d}") for i in range(20)]))
    finally:
        journal.close()
    size = bytes_per_row(db)
    print(f"\n[dead letter] 65 KB topic level, 1 MB reason, 10 MB payload: {size} bytes a "
          f"row in the file (bound {DEAD_LETTER_ROW_MAX})")
    assert size <= DEAD_LETTER_ROW_MAX  # was 1,150,000+: the topic and the reason whole
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT MAX(length(CAST(topic AS BLOB))), MAX(length(CAST(reason AS "
                            "BLOB))), MAX(length(payload)) FROM dead_letters").fetchone() == (
            TOPIC_KEEP, REASON_KEEP, DEAD_LETTER_KEEP)
    (row, *_) = list_dead_letters(tmp_path)
    assert (row.topic_sha256, row.reason_sha256, row.sha256) == (
        sha(HUGE_TOPIC), sha(HUGE_REASON), sha(HUGE_PAYLOAD))


def test_a_replay_rejected_again_keeps_the_new_reason_bounded(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "hub.sqlite3")
    try:
        journal.record(BatchRecord(dead=[DeadRecord.refused(
            "dead0004", WHEN, "tp/a", b"{", reason_code="invalid", reason="bad")]))
        (asked,) = read_for_replay(tmp_path / "hub.sqlite3", None)
        journal.record(BatchRecord(
            replays=[ReplayOutcome(asked.row_id, False, "invalid", HUGE_REASON)]))
    finally:
        journal.close()
    (row,) = list_dead_letters(tmp_path)
    assert row.reason == HUGE_REASON[:REASON_KEEP] and row.reason_size == len(HUGE_REASON)
    assert bytes_per_row(tmp_path / "hub.sqlite3") <= DEAD_LETTER_ROW_MAX


OLD_SCHEMA = """
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY, dead_letter_id TEXT NOT NULL UNIQUE, received_at REAL NOT NULL,
    topic TEXT NOT NULL, reason_code TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'open', updated_at REAL NOT NULL, outcome TEXT NOT NULL DEFAULT ''
);
"""


def test_a_database_of_an_older_hub_is_migrated_and_its_rows_read(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    digest = "ab" * 32
    note = f" [payload truncated: first 4 of 70000 bytes kept, sha256 {digest}]"
    with sqlite3.connect(db) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("INSERT INTO dead_letters (dead_letter_id, received_at, topic, reason_code, "
                     "reason, payload, updated_at) VALUES ('old1', ?, ?, 'too_large', ?, "
                     "x'7b226b22', 0)", (WHEN.timestamp(), "tp/" + "T" * 65_000,
                                         "too large" + note))
    journal = Journal(db)  # migrates
    try:
        journal.record(BatchRecord(dead=[huge("new1", WHEN + timedelta(seconds=1))]))
    finally:
        journal.close()
    with sqlite3.connect(db) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(dead_letters)")}
        stored = dict(conn.execute("SELECT dead_letter_id, stored_bytes FROM dead_letters"))
    assert {"payload_size", "topic_sha256", "reason_size", "stored_bytes"} <= columns
    assert stored["old1"] > 65_000  # measured, so retention counts the old row's real size
    old, new = list_dead_letters(tmp_path)
    assert (old.original_size, old.sha256, old.truncated) == (70_000, digest, True)
    assert old.topic_size == 65_003 and not old.topic_truncated  # stored whole back then
    assert new.topic_truncated
    Journal(db).close()  # opening again: nothing to add, no error


# ---- retention (time passed in) ------------------------------------------------------------

def _store(tmp_path: Path, ages_days: list[float], now: datetime) -> Journal:
    journal = Journal(tmp_path / "hub.sqlite3")
    journal.record(BatchRecord(dead=[
        DeadRecord.refused(f"dl{i:06d}", now - timedelta(days=age), "tp/s1/d1/event/t1",
                           b"p" * 1000, reason_code="invalid", reason="bad")
        for i, age in enumerate(ages_days)]))
    return journal


def test_retention_removes_rows_past_their_age(tmp_path: Path) -> None:
    now = WHEN
    journal = _store(tmp_path, [40, 31, 29, 1, 0], now)
    try:
        pruned = journal.prune_dead_letters(now.timestamp(), 10**9, 30 * 86_400)
    finally:
        journal.close()
    assert (pruned.by_age, pruned.by_size, pruned.kept_rows) == (2, 0, 3)
    assert [r.dead_letter_id for r in list_dead_letters(tmp_path)] == [
        "dl000002", "dl000003", "dl000004"]


def test_retention_removes_the_oldest_rows_past_the_size_cap(tmp_path: Path) -> None:
    now = WHEN
    journal = _store(tmp_path, [5, 4, 3, 2, 1, 0], now)
    try:
        each = list_dead_letters(tmp_path)[0].stored_bytes
        pruned = journal.prune_dead_letters(now.timestamp(), 3 * each + each // 2, 30 * 86_400)
        again = journal.prune_dead_letters(now.timestamp(), 3 * each + each // 2, 30 * 86_400)
    finally:
        journal.close()
    assert (pruned.by_age, pruned.by_size, pruned.kept_rows) == (0, 3, 3)
    assert pruned.kept_bytes == 3 * each
    assert (again.by_age, again.by_size) == (0, 0)
    assert [r.dead_letter_id for r in list_dead_letters(tmp_path)] == [
        "dl000003", "dl000004", "dl000005"]


def test_retention_of_an_empty_store_does_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "hub.sqlite3")
    try:
        pruned = journal.prune_dead_letters(WHEN.timestamp(), 1, 1)
    finally:
        journal.close()
    assert (pruned.by_age, pruned.by_size, pruned.kept_rows, pruned.kept_bytes) == (0, 0, 0, 0)


# ---- log lines -----------------------------------------------------------------------------

def test_the_log_budget_allows_n_a_second_and_says_how_many_it_hid() -> None:
    budget = LogBudget(per_s=3)
    taken = [budget.take(100.0 + i * 0.01) for i in range(10)]
    assert [ok for ok, _ in taken] == [True] * 3 + [False] * 7
    assert budget.take(101.0) == (True, 7)  # the next second: the first line says 7 were hidden
    assert budget.take(101.1) == (True, 0)
    assert budget.take(50.0) == (True, 0)  # a clock step back starts a new window


# ---- hub dlq: escaped --------------------------------------------------------------------------

def test_printable_escapes_what_a_terminal_would_obey() -> None:
    assert printable(b"a\x1b[2Jb\x00c\xff\xfe\\") == "a\\x1b[2Jb\\x00c\\xff\\xfe\\\\"
    assert printable("bidi \u202e and \u0007 and \n") == "bidi \\u202e and \\x07 and \\n"
    assert printable("x" * 500, 10) == "x" * 10 + "... [490 more characters not shown]"
    assert printable('{"a": 1,\n\t"b": "é"}', lines=True) == '{"a": 1,\n\t"b": "é"}'


HOSTILE_TOPIC = "tp/s1/\x1b[2J\x00/event/\x1b]0;owned\x07" + "W" * 3000
HOSTILE_PAYLOAD = b'{"kind": "\x1b[2J\x00\xff\xfe", "x": "\x1b[31mred"}'


def test_hub_dlq_list_and_show_never_print_wire_bytes_raw(tmp_path: Path) -> None:
    data_dir = tmp_path / "hubdata"
    hostile = DeadRecord.refused("deadbad1", WHEN, HOSTILE_TOPIC, HOSTILE_PAYLOAD,
                                 reason_code="invalid", reason="bad \x1b[2J\x00 reason")
    journal = Journal(data_dir / "hub.sqlite3")
    try:
        journal.record(BatchRecord(dead=[hostile, huge("deadbig1")]))
    finally:
        journal.close()
    config = write_toml(tmp_path / "hub.toml", {"data_dir": str(data_dir),
                                                "storage": {"enabled": False}})

    def dlq(*args: str) -> bytes:
        done = subprocess.run([sys.executable, "-m", "hub.cli", "dlq", "-c", str(config), *args],
                              capture_output=True, cwd=ROOT, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        out.decode("utf-8")  # strict: no invalid UTF-8 reaches the terminal
        assert not any(b < 0x20 and b not in b"\n\t" for b in out), out[:400]  # no ESC, NUL...
        return out

    listed = dlq("list").decode()
    assert "tp/s1/\\x1b[2J\\x00/event/\\x1b]0;owned\\x07WWW" in listed
    assert max(len(line) for line in listed.splitlines()) < 600  # the 3 KB topic is cut
    assert "2 dead letter(s)" in listed
    shown = dlq("show", "deadbad1").decode()
    assert "reason:      bad \\x1b[2J\\x00 reason" in shown
    assert '{"kind": "\\x1b[2J\\x00\\xff\\xfe", "x": "\\x1b[31mred"}' in shown
    assert base64.b64encode(HOSTILE_PAYLOAD).decode() in shown  # the exact bytes too
    big = dlq("show", "deadbig1").decode()
    assert f"[a prefix: {len(HUGE_TOPIC)} bytes received, sha256 {sha(HUGE_TOPIC)}]" in big
    assert f"[a prefix: {len(HUGE_REASON)} bytes received, sha256 {sha(HUGE_REASON)}]" in big
    assert len(big) < 32 * 1024


@pytest.mark.parametrize("cut", ["topic", "payload"])
def test_replay_refuses_a_dead_letter_whose_topic_or_payload_was_cut(tmp_path: Path,
                                                                     cut: str) -> None:
    topic = HUGE_TOPIC if cut == "topic" else "tp/s1/d1/event/t1"
    payload = HUGE_PAYLOAD if cut == "payload" else b"{}"
    journal = Journal(tmp_path / "hub.sqlite3")
    try:
        journal.record(BatchRecord(dead=[DeadRecord.refused(
            "deadcut1", WHEN, topic, payload, reason_code="invalid", reason="bad")]))
    finally:
        journal.close()
    to_replay, answers = plan(None, read_for_replay(tmp_path / "hub.sqlite3", None))
    assert to_replay == []
    assert [(a.id, a.result) for a in answers] == [("deadcut1", "refused")]
    assert "an event cannot be accepted from part of its payload or topic" in answers[0].reason
