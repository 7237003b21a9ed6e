"""Bounded dead letters (issue 12, defence in depth): of a refused payload over 4 KiB the hub keeps
a prefix, the original size and a SHA-256, in its store and on the dead-letter topic; ``hub dlq``
shows that (the running hub refuses to replay a truncated one:
tests/hub_core/test_dlq_replay_command.py). No broker: the store is written by the journal
as ingest writes it; tests/deploy/test_broker_defence.py does it through a real Mosquitto."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hub.ingest_decision import screen
from hub.journal import BatchRecord, Journal
from hub.records import DEAD_LETTER_KEEP, DeadRecord
from schemas.codec import DEFAULT_MAX_PAYLOAD, encode
from schemas.models import DeadLetter
from schemas.topics import Topics
from tests.hub_core.helpers import reading, write_toml

ROOT = Path(__file__).resolve().parents[2]
WHEN = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    received_at: float = WHEN.timestamp()
    replay_row: int | None = None


def test_a_10_mb_payload_keeps_a_prefix_its_size_and_hash() -> None:
    payload = b"x" * (10 * 1024 * 1024)
    record = DeadRecord.refused("deadletter1", WHEN, "t/x", payload, reason_code="too_large",
                                reason="payload of 10485760 bytes exceeds the limit")
    digest = hashlib.sha256(payload).hexdigest()
    assert record.payload == payload[:DEAD_LETTER_KEEP]
    assert (record.original_size, record.sha256, record.truncated) == (len(payload), digest, True)
    assert record.reason == "payload of 10485760 bytes exceeds the limit"  # size/hash: fields
    message = record.to_message().model_dump_json().encode()
    assert len(message) < 8 * 1024, len(message)  # was 14 MB before
    sent = DeadLetter.model_validate_json(message)
    assert (sent.reason, sent.payload_size, sent.payload_sha256) == (record.reason, len(payload),
                                                                     digest)
    # a row written before the size columns existed: size and hash from the reason's note
    note = f" [payload truncated: first 4096 of 10485760 bytes kept, sha256 {digest}]"
    stored = DeadRecord("deadletter1", WHEN, "t/x", "too_large", record.reason + note,
                        record.payload).as_stored()
    assert (stored.original_size, stored.sha256, stored.truncated) == (len(payload), digest, True)


def test_a_small_payload_is_kept_whole() -> None:
    record = DeadRecord.refused("deadletter2", WHEN, "t/x", b"{not json", reason_code="invalid",
                                reason="bad json")
    assert (record.payload, record.original_size, record.truncated) == (b"{not json", 9, False)
    assert record.reason == "bad json"
    stored = DeadRecord("deadletter2", WHEN, "t/x", "invalid", "bad json", b"{not json").as_stored()
    assert stored.sha256 == hashlib.sha256(b"{not json").hexdigest()
    assert not stored.truncated


def test_screen_bounds_every_dead_letter_not_only_the_too_large() -> None:
    topics = Topics("tp")
    event = reading(1)
    topic = topics.for_event(event)
    ids = iter(["dead000a", "dead000b", "dead000c", "dead000d"])
    batch = [
        Msg(topic, b"y" * (DEFAULT_MAX_PAYLOAD + 1)),             # too large
        Msg(topic, b"{" + b" " * 20_000),                         # invalid, 20 kB: truncated
        Msg(topics.event("s1", "d9", "t1"), encode(event)),       # spoofed, small: kept whole
        Msg(topic, encode(event)),                                # good
    ]
    out = screen(batch, topics, DEFAULT_MAX_PAYLOAD, lambda: next(ids))
    assert len(out.candidates) == 1
    dead = {d.dead_letter_id: d for d in out.dead}
    assert (dead["dead000a"].reason_code, dead["dead000a"].truncated) == ("too_large", True)
    assert (dead["dead000b"].reason_code, dead["dead000b"].truncated) == ("invalid", True)
    assert (dead["dead000c"].reason_code, dead["dead000c"].truncated) == ("spoofed", False)
    assert all(len(d.payload) <= DEAD_LETTER_KEEP for d in out.dead)
    assert dead["dead000a"].original_size == DEFAULT_MAX_PAYLOAD + 1


def test_hub_dlq_shows_the_truncation(tmp_path: Path) -> None:
    data_dir = tmp_path / "hubdata"
    data_dir.mkdir()
    big = b'{"kind": "reading", "pad": "' + b"z" * 200_000 + b'"}'
    small = b"{not json"
    records = [DeadRecord.refused(uuid.uuid4().hex, WHEN, "tp/s1/d1/event/t1", p,
                                  reason_code=code, reason=reason)
               for p, code, reason in ((big, "too_large", f"payload of {len(big)} bytes "
                                        f"exceeds the limit of 65536 bytes"),
                                       (small, "invalid", "not JSON"))]
    journal = Journal(data_dir / "hub.sqlite3")
    try:
        journal.record(BatchRecord(dead=records))
    finally:
        journal.close()
    with sqlite3.connect(data_dir / "hub.sqlite3") as conn:
        sizes = dict(conn.execute("SELECT dead_letter_id, length(payload) FROM dead_letters"))
    assert sizes == {records[0].dead_letter_id: DEAD_LETTER_KEEP,
                     records[1].dead_letter_id: len(small)}
    config = write_toml(tmp_path / "hub.toml", {"data_dir": str(data_dir),
                                                "storage": {"enabled": False}})

    def dlq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hub.cli", "dlq", "-c", str(config), *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)

    big_id, small_id = records[0].dead_letter_id, records[1].dead_letter_id
    listed = dlq("list")
    assert listed.returncode == 0, listed.stderr
    assert f"({len(big)} B, truncated)" in listed.stdout
    assert f"({len(small)} B)" in listed.stdout
    shown = dlq("show", big_id)
    digest = hashlib.sha256(big).hexdigest()
    assert f"size:        {len(big)} bytes (truncated: the first 4096 kept" in shown.stdout
    assert f"sha256:      {digest}" in shown.stdout
    assert "payload, first 4096 bytes (utf-8):" in shown.stdout
    whole = dlq("show", small_id)
    assert f"sha256:      {hashlib.sha256(small).hexdigest()}" in whole.stdout
    assert "payload (utf-8):\n{not json" in whole.stdout
    # replaying it is refused by the running hub: tests/hub_core/test_dlq_replay_command.py
