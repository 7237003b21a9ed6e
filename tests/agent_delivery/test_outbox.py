"""The outbox alone: group commit, ordering, acks, restart recovery, bounds and the drop policy."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge_agent.outbox import Outbox, OutboxSettings, Stored
from edge_agent.stamping import EventStamper
from schemas import Topics
from schemas.plain_messages import SensorEvent
from tests.agent_delivery.helpers import T0, draft

TOPICS = Topics("tp")


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings(tmp_path: Path, **kw: object) -> OutboxSettings:
    base: dict[str, object] = {"path": tmp_path / "ob" / "outbox.db", "min_free_bytes": 0}
    base.update(kw)
    from program_support.plain_config import parse  # as the agent reads its [outbox] table

    return parse(base, OutboxSettings)


def add(outbox: Outbox, kinds: list[str], synced: bool = True) -> list[SensorEvent]:
    stamper = EventStamper("site1", "dev1", outbox)
    events = [stamper.stamp(draft(k), synced) for k in kinds]
    outbox.append((e, TOPICS.for_event(e)) for e in events)
    return events


def rows_on_disk(path: Path) -> int:
    """What another process would find in the file right now."""
    db = sqlite3.connect(str(path))
    try:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        db.close()


def test_events_are_on_disk_only_after_the_group_commit(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with Outbox(s) as ob:
        events = add(ob, ["reading"] * 50)
        assert ob.staged == 50 and ob.depth == 0
        assert rows_on_disk(s.path) == 0
        stored = ob.commit()
        assert ob.commits == 1  # one transaction for the whole batch
        assert rows_on_disk(s.path) == 50
        assert [r.seq for r in stored] == [e.seq for e in events]
        assert [r.event_id for r in stored] == [e.event_id for e in events]
        assert stored[0].event == events[0]
        assert ob.depth == 50 and ob.bytes > 50 * 100


def test_wal_mode_and_full_sync(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with Outbox(s):
        db = sqlite3.connect(str(s.path))
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            db.close()


def test_read_is_in_seq_order_whatever_the_append_order(tmp_path: Path) -> None:
    with Outbox(settings(tmp_path)) as ob:
        stamper = EventStamper("site1", "dev1", ob)
        events = [stamper.stamp(draft("reading"), True) for _ in range(20)]
        ob.append((e, TOPICS.for_event(e)) for e in reversed(events))
        stored = ob.commit()
        assert [r.seq for r in stored] == sorted(e.seq for e in events)
        assert [r.seq for r in ob.read(-1, 100)] == sorted(e.seq for e in events)
        assert [r.seq for r in ob.read(events[9].seq, 5)] == [e.seq for e in events[10:15]]
        back = ob.read(-1, 1)[0].to_event()
        assert back == events[0]


def test_a_read_skips_what_is_acked_or_receipted_and_still_fills_the_limit(
        tmp_path: Path) -> None:
    with Outbox(settings(tmp_path)) as ob:
        events = add(ob, ["reading"] * 30)
        ob.commit()
        seqs = [e.seq for e in events]
        ob.ack(seqs[:5])
        ob.receipted(seqs[5:15])  # not deleted before the next commit
        assert [r.seq for r in ob.read(-1, 10)] == seqs[15:25]
        assert [r.seq for r in ob.read(seqs[20], 100)] == seqs[21:]
        ob.ack(seqs[15:])
        assert ob.read(-1, 10) == []


def test_a_replayed_row_is_the_stored_json_with_the_flag_set(tmp_path: Path) -> None:
    with Outbox(settings(tmp_path)) as ob:
        add(ob, ["reading", "state_change", "fault", "summary", "rate_alarm"])
        ob.commit()
        rows = ob.read(-1, 10)
        assert len(rows) == 5
        for row in rows:
            event = row.to_event().replace(replayed=True)
            assert row.replayed_json() == event.to_json()
    # not the outbox's own JSON (damaged, or another writer's): decoded instead
    damaged = Stored(0, "0" * 32, "reading", "tp/x", b'{"replayed":false,"replayed":false}', T0)
    assert damaged.replayed_json() is None
    assert Stored(0, "0" * 32, "reading", "tp/x", b"\x00\x01", T0).replayed_json() is None


def test_acks_are_deleted_with_the_next_commit(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with Outbox(s) as ob:
        events = add(ob, ["reading"] * 10)
        ob.commit()
        ob.ack(e.seq for e in events[:4])
        # hidden from readers at once, deleted from disk with the next batch
        assert [r.seq for r in ob.read()] == [e.seq for e in events[4:]]
        assert rows_on_disk(s.path) == 10
        ob.commit()
        assert rows_on_disk(s.path) == 6
        assert ob.depth == 6


def test_a_crash_loses_only_what_was_not_committed(tmp_path: Path) -> None:
    s = settings(tmp_path)
    ob = Outbox(s)
    committed = add(ob, ["reading"] * 5)
    ob.commit()
    lost = add(ob, ["reading"] * 3)
    ob.ack([committed[0].seq])          # acked but not yet committed: comes back
    ob.close(flush=False)               # what kill -9 leaves behind
    with Outbox(s) as ob2:
        assert [r.event_id for r in ob2.read()] == [e.event_id for e in committed]
        # seq never goes back, even past events that were reserved but lost
        assert ob2.reserve_seq() > max(e.seq for e in committed)
        assert not {e.event_id for e in lost} & {r.event_id for r in ob2.read()}


def test_a_seq_reserved_during_a_commit_is_not_skipped_by_a_crash(tmp_path: Path) -> None:
    """Regression (CI, tests/agent_e2e SIGKILL test): the agent's thread reserved seq 31, the
    delivery thread committed before event 31 was buffered and stored next_seq = 32, then
    SIGKILL: the restarted agent went on at 32 and the hub saw a gap. Only stored events move the
    stored counter; the lost event's seq is used again (nothing with it was published)."""
    s = settings(tmp_path)
    ob = Outbox(s)
    committed = add(ob, ["reading"] * 3)
    reserved = ob.reserve_seq()          # stamped on the agent's thread, not buffered yet
    ob.commit()                          # the delivery thread's group commit
    assert reserved == committed[-1].seq + 1
    ob.close(flush=False)                # kill -9
    with Outbox(s) as ob2:
        assert ob2.reserve_seq() == reserved


def test_seq_and_session_survive_restarts(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with Outbox(s) as ob:
        events = add(ob, ["reading"] * 3)
        ob.ack(e.seq for e in events)
        assert ob.next_session() == 1
        assert ob.next_session() == 2
    with Outbox(s) as ob:
        assert ob.depth == 0  # everything was acked
        assert ob.reserve_seq() == events[-1].seq + 1
        assert ob.session == 2
        assert ob.next_session() == 3


def test_size_bound_drops_summaries_then_readings_then_alarms(tmp_path: Path) -> None:
    with Outbox(settings(tmp_path, max_bytes=10_000_000)) as ob:
        kinds = ["fault", "summary", "reading", "summary", "state_change", "reading",
                 "rate_alarm", "summary"]
        events = add(ob, kinds)
        ob.commit(force=True)
        sizes = {r.seq: len(r.payload) for r in ob.read()}
        total = ob.bytes
        # room for everything but the three summaries: exactly the summaries go
        summaries = [e for e in events if e.kind == "summary"]
        ob.settings = replace(ob.settings, max_bytes=total - sum(
            sizes[e.seq] + 64 + len(TOPICS.for_event(e)) for e in summaries))
        with capture_logs() as logs:
            ob.commit(force=True)
        left = {r.seq for r in ob.read()}
        assert left == {e.seq for e in events if e.kind != "summary"}
        assert ob.counters()["dropped_summary"] == 3
        assert ob.counters()["dropped_by_size"] == 3
        drops = [x for x in logs if x["event"] == "outbox.dropped"]
        assert drops and drops[0]["log_level"] == "warning"
        assert drops[0]["drop_class"] == "summary" and drops[0]["count"] == 3
        # tighter still: readings go next (oldest first), alarms are kept
        ob.settings = replace(ob.settings, max_bytes=ob.bytes - 1)
        ob.commit(force=True)
        assert [r.kind for r in ob.read()] == ["fault", "state_change", "reading", "rate_alarm"]
        assert ob.counters()["dropped_reading"] == 1
        ob.settings = replace(ob.settings, max_bytes=ob.bytes - 1)
        ob.commit(force=True)
        assert [r.kind for r in ob.read()] == ["fault", "state_change", "rate_alarm"]
        # only alarms left over the bound: the oldest alarm goes
        ob.settings = replace(ob.settings, max_bytes=ob.bytes - 1)
        ob.commit(force=True)
        assert [r.kind for r in ob.read()] == ["state_change", "rate_alarm"]
        assert ob.counters()["dropped_alarm"] == 1
        assert ob.counters()["dropped_reading"] == 2


def test_age_bound_spares_events_made_before_clock_sync(tmp_path: Path) -> None:
    clock = Clock()
    s = settings(tmp_path, max_age_s=3600)
    with Outbox(s, clock=clock) as ob:
        old_synced = add(ob, ["reading", "fault"], synced=True)
        old_unsynced = add(ob, ["reading"], synced=False)
        ob.commit(force=True)
        clock.now += 1800
        fresh = add(ob, ["summary"])
        ob.commit(force=True)
        assert ob.depth == 4
        assert ob.oldest_age_s() == pytest.approx(1800)
        clock.now += 1801
        with capture_logs() as logs:
            ob.commit(force=True)
        left = {r.event_id for r in ob.read()}
        assert left == {e.event_id for e in old_unsynced + fresh}
        c = ob.counters()
        assert (c["dropped_by_age"], c["dropped_reading"], c["dropped_alarm"]) == (2, 1, 1)
        assert {x["reason"] for x in logs if x["event"] == "outbox.dropped"} == {"age"}
        assert old_synced  # dropped whatever their class: expired data is useless


def test_free_disk_watermark_drops_to_cover_the_deficit(tmp_path: Path) -> None:
    free = {"bytes": 10**12}
    s = settings(tmp_path, min_free_bytes=1_000_000)
    with Outbox(s, disk_free=lambda p: free["bytes"]) as ob:
        add(ob, ["summary"] * 5 + ["reading"] * 5 + ["fault"] * 5)
        ob.commit(force=True)
        assert ob.depth == 15
        per_row = ob.bytes // 15
        # 3 rows' worth short of the watermark: the 3 oldest summaries go, nothing else
        free["bytes"] = 1_000_000 - 3 * per_row + 10
        ob.commit(force=True)
        assert [r.kind for r in ob.read()].count("summary") == 2
        assert ob.counters()["dropped_by_disk"] == 3
        # a disk that stays full empties the outbox of summaries and readings before alarms
        free["bytes"] = 1_000_000 - 9 * per_row
        ob.commit(force=True)
        kinds = [r.kind for r in ob.read()]
        assert kinds and set(kinds) == {"fault"}  # alarms are the last to go
        assert ob.counters()["dropped_reading"] == 5
        free["bytes"] = 10**12


def test_drop_counters_survive_restarts(tmp_path: Path) -> None:
    s = settings(tmp_path, max_bytes=1)
    with Outbox(s) as ob:
        add(ob, ["summary", "reading", "fault"])
        ob.commit()
        assert ob.depth == 0
    with Outbox(s) as ob:
        c = ob.counters()
        assert (c["dropped_summary"], c["dropped_reading"], c["dropped_alarm"]) == (1, 1, 1)
        assert c["dropped_by_size"] == 3


def test_an_idle_commit_writes_nothing_but_bounds_are_still_checked(tmp_path: Path) -> None:
    clock = Clock()
    with Outbox(settings(tmp_path, max_age_s=10), clock=clock) as ob:
        add(ob, ["reading"])
        ob.commit()
        commits = ob.commits
        clock.now += 60
        ob.commit()  # idle, checked less than BOUNDS_IDLE_S ago: nothing happens
        assert ob.commits == commits and ob.depth == 1
        ob.commit(force=True)
        assert ob.depth == 0 and ob.counters()["dropped_by_age"] == 1


def test_new_events_dropped_at_once_are_not_returned_for_publishing(tmp_path: Path) -> None:
    with Outbox(settings(tmp_path, max_bytes=1)) as ob:
        add(ob, ["summary"])
        assert ob.commit() == []


def test_a_corrupt_file_is_moved_aside_and_a_fresh_outbox_starts(tmp_path: Path) -> None:
    s = settings(tmp_path)
    s.path.parent.mkdir(parents=True)
    s.path.write_bytes(b"this is not a database" * 100)
    with capture_logs() as logs, Outbox(s) as ob:
        add(ob, ["reading"])
        assert len(ob.commit()) == 1
    assert any(x["event"] == "outbox.corrupt" for x in logs)
    assert list(s.path.parent.glob("outbox.db.corrupt-*"))


def test_settings_reject_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    from program_support.plain_config import parse
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="max_bytes: Input should be greater than 0"):
        parse({"max_bytes": 0}, OutboxSettings)
    with pytest.raises(ConfigError, match="did you mean 'flush_interval_s'"):
        parse({"flush_intervall_s": 1}, OutboxSettings)
