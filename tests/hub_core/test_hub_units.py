"""Fast tests of the hub's pure decisions, its journal and its config (no servers)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from hub.config import HubConfig, load_hub_config
from hub.journal import BatchRecord, DeadRecord, Journal, Pending
from hub.journal.store import connect
from hub.validate import OrderTracker, Rejection, check_payload, is_late
from schemas.codec import encode
from schemas.registry import AVRO_MAGIC
from schemas.topics import Topics
from tests.hub_core.helpers import BASE_TIME, reading

ROOT = Path(__file__).resolve().parents[2]
T = Topics("tp")


def test_good_json_and_avro_payloads_are_accepted() -> None:
    event = reading(1)
    for encoding in ("json", "avro"):
        result = check_payload(T, T.for_event(event), encode(event, encoding), 65536)
        assert result == event


def test_each_bad_payload_gets_its_reason_code() -> None:
    event = reading(1, device="d1")
    topic = T.for_event(event)
    cases = {
        "too_large": (topic, b"{" + b" " * 5000 + b"}"),
        "unknown_encoding": (topic, b"hello"),
        "unknown_schema": (topic, AVRO_MAGIC + b"\x01" * 8 + b"\x00"),
        "invalid": (topic, b'{"kind": "reading", "value": "hot"}'),
        "spoofed": (T.event("s1", "d2", "t1"), encode(event)),
        "topic": ("elsewhere/s1/d1/event/t1", encode(event)),
    }
    for code, (topic_, payload) in cases.items():
        result = check_payload(T, topic_, payload, 4096)
        assert isinstance(result, Rejection), code
        assert result.code == code, (code, result)
        assert result.reason
    wrong_sensor = check_payload(T, T.event("s1", "d1", "other"), encode(event), 4096)
    assert isinstance(wrong_sensor, Rejection)
    assert "sensor" in wrong_sensor.reason


def test_order_tracker_flags_late_sequence_numbers() -> None:
    tracker = OrderTracker({("s1", "d1", "t1"): 5})
    assert tracker.observe("s1", "d1", "t1", 4) is True
    assert tracker.observe("s1", "d1", "t1", 6) is False
    assert tracker.observe("s1", "d1", "t1", 6) is True
    assert tracker.observe("s1", "d1", "t2", 1) is False
    assert tracker.take_changes() == {("s1", "d1", "t1"): 6, ("s1", "d1", "t2"): 1}
    assert tracker.take_changes() == {}


def test_the_same_device_id_at_two_sites_is_two_devices() -> None:
    # a device id is unique within its site only: site s2's pi-01 is not behind s1's
    tracker = OrderTracker({("s1", "pi-01", "t1"): 500})
    assert tracker.observe("s2", "pi-01", "t1", 3) is False
    assert tracker.observe("s1", "pi-01", "t1", 4) is True
    assert tracker.take_changes() == {("s2", "pi-01", "t1"): 3}


def test_lateness_rules() -> None:
    now = BASE_TIME + timedelta(seconds=1000)
    assert is_late(reading(1, when=now - timedelta(seconds=10)), now, 300) is False
    assert is_late(reading(1, when=now - timedelta(seconds=400)), now, 300) is True
    assert is_late(reading(1, when=now, replayed=True), now, 300) is True
    unsynced = reading(1, when=now - timedelta(days=3)).model_copy(update={"clock_synced": False})
    assert is_late(unsynced, now, 300) is False


def _pending(seq: int) -> Pending:
    event = reading(seq)
    return Pending(event, T.for_event(event), encode(event), BASE_TIME, False, False)


def test_an_older_hubs_sequence_marks_move_to_every_site_of_their_device(tmp_path: Path,
                                                                       ) -> None:
    """An older hub kept the marks per (device, sensor) in ``seq_high``: each moves to every
    site the hub admitted that device and sensor for, and a mark of no admitted identity goes."""
    path = tmp_path / "hub.sqlite3"
    Journal(path).close()  # today's schema, then the older hub's table and rows beside it
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE seq_high (device TEXT NOT NULL, sensor TEXT NOT NULL, "
                     "seq INTEGER NOT NULL, PRIMARY KEY (device, sensor)) WITHOUT ROWID")
        conn.executemany("INSERT INTO seq_high VALUES (?, ?, ?)",
                         [("pi-01", "t1", 7), ("pi-01", "t2", 4), ("gone", "t1", 3)])
        conn.executemany("INSERT INTO identities VALUES (?, ?, ?)",
                         [("north", "pi-01", ""), ("north", "pi-01", "t1"),
                          ("south", "pi-01", "t1"), ("north", "pi-01", "t2")])
    # a reader (`hub dlq`, perhaps newer than the hub still running) leaves the table alone
    connect(path, "normal").close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM seq_high").fetchone() == (3,)
    journal = Journal(path)
    try:
        assert journal.load_seq_marks() == {("north", "pi-01", "t1"): 7,
                                            ("south", "pi-01", "t1"): 7,
                                            ("north", "pi-01", "t2"): 4}
    finally:
        journal.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'seq_high'"
                            ).fetchall() == []
    Journal(path).close()  # once done, opening again changes nothing


def test_journal_records_reads_prunes_and_remembers_ids(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    journal = Journal(path)
    try:
        start = journal.register("c1")
        assert start == 0
        batch = [_pending(i) for i in range(1, 6)]
        dead = DeadRecord("deadletter01", BASE_TIME, "tp/x", "invalid", "bad", b"\x00")
        envs = journal.record(BatchRecord(batch, [(p.message.event_id, 1.0) for p in batch],
                                          {("s1", "d1", "t1"): 5}, [dead]))
        assert [e.offset for e in envs] == [1, 2, 3, 4, 5]
        assert journal.read(0, 3) == envs[:3]
        assert journal.known_ids([batch[0].message.event_id, "nope-nope"]) == {
            batch[0].message.event_id}
        journal.commit_cursor("c1", 3)
        assert journal.prune() == 3
    finally:
        journal.close()
    # reopened: cursor, offsets, ids and sequence marks survive; rows come back decoded
    journal = Journal(path)
    try:
        assert journal.register("c1") == 3
        rows = journal.read(3, 10)
        assert [r.offset for r in rows] == [4, 5]
        assert rows[0].message == batch[3].message
        assert journal.load_seq_marks() == {("s1", "d1", "t1"): 5}
        assert journal.known_ids([batch[4].message.event_id])
        more = journal.record(BatchRecord([_pending(9)]))
        assert more[0].offset == 6
        # a consumer registered later starts at the oldest row still kept
        assert journal.register("late-comer") == 3
    finally:
        journal.close()


def test_the_decoded_tail_holds_only_what_the_slowest_consumer_has_not_handled(
        tmp_path: Path, monkeypatch) -> None:
    import hub.journal.log as journal_module

    monkeypatch.setattr(journal_module, "TAIL_CAPACITY", 10)
    monkeypatch.setattr(journal_module, "TAIL_SLACK", 5)
    journal = Journal(tmp_path / "hub.sqlite3")
    try:
        journal.register("fast")
        journal.register("slow")
        envs = journal.record(BatchRecord([_pending(i) for i in range(1, 9)]))
        assert len(journal._log._tail) == 8
        journal.mark_handled("fast", 8)
        assert len(journal._log._tail) == 8  # "slow" has handled nothing yet
        journal.mark_handled("slow", 5)
        assert [e.offset for e in journal._log._tail] == [6, 7, 8]
        assert journal.read(5, 10) == envs[5:]  # served from memory
        journal.mark_handled("slow", 8)
        assert journal._log._tail == []
        # a consumer far behind: the tail stops at its capacity, the file serves the rest
        more = journal.record(BatchRecord([_pending(i) for i in range(9, 29)]))
        journal.mark_handled("fast", 28)
        assert len(journal._log._tail) <= 15
        assert [e.offset for e in journal.read(8, 100)] == [e.offset for e in more]
        assert journal.read(8, 100)[0].message == more[0].message  # decoded from the file
    finally:
        journal.close()


def test_config_errors_name_their_key_paths(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('hub_id = "no/slash"\n[mqtt]\nport = 99999\npassword = "inline"\n'
                   '[storage]\nmode = "v3"\nurl = "ftp://x"\n[nonsense]\na = 1\n')
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "check-config", str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 2
    for key in ("hub_id", "mqtt.port", "mqtt.password", "storage.mode", "storage.url"):
        assert f"  {key}:" in proc.stderr, (key, proc.stderr)
    assert "  (file): unknown key 'nonsense'" in proc.stderr, proc.stderr
    good = tmp_path / "good.toml"
    good.write_text('hub_id = "h1"\n[mqtt]\npassword = "env:HUB_TEST_PW"\n'
                    '[storage]\nmode = "v1"\n')
    monkeypatch.setenv("HUB_TEST_PW", "s3cret")
    config = load_hub_config(good)
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "check-config", str(good)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                          env={**__import__("os").environ, "HUB_TEST_PW": "x"})
    assert proc.returncode == 0, proc.stderr


def test_check_config_no_secrets_validates_the_shipped_hub_file_without_its_secrets() -> None:
    import os

    shipped = ROOT / "deploy" / "hub" / "hub.toml"
    env = {k: v for k, v in os.environ.items()
           if k not in ("HUB_MQTT_PASSWORD", "INFLUXDB_TOKEN")}

    def check(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hub.cli", "check-config", *extra,
                               str(shipped)], capture_output=True, text=True, cwd=ROOT,
                              timeout=60, check=False, env=env)

    missing = check()
    assert missing.returncode == 2
    assert "HUB_MQTT_PASSWORD is not set" in missing.stderr
    unread = check("--no-secrets")
    assert unread.returncode == 0, unread.stderr
    assert "secret env:HUB_MQTT_PASSWORD: not read (--no-secrets)" in unread.stdout
    assert "secret env:INFLUXDB_TOKEN: not read (--no-secrets)" in unread.stdout


def test_worker_configs_get_their_own_dir_client_and_port(tmp_path: Path) -> None:
    config = HubConfig.model_validate({"hub_id": "h", "data_dir": str(tmp_path),
                                       "mqtt": {"shared_group": "g"}, "http": {"port": 9000}})
    w1 = config.for_worker(1)
    assert w1.data_dir == tmp_path / "worker-1"
    assert w1.client_id == f"{config.client_id}-w1"  # the hub's (random, kept) id + -w1
    assert w1.client_id.startswith("thermopipe-hub-h-")
    assert w1.http.port == 9001
    assert w1.mqtt.shared_group == "g"


def test_fast_reading_lines_equal_the_documented_points() -> None:
    from hub.storage.lines import line_for
    from hub.storage.points import point_for
    from tests.hub_core.helpers import state_change

    cases = [reading(7, value=-3.25), reading(1001, site="a.b-c", device="d_1", sensor="T.1",
                                                  replayed=True), state_change(5, "high", "normal")]
    cases.append(reading(3).model_copy(update={"clock_synced": False, "value": 1e-7}))
    for message in cases:
        point = point_for(message)
        assert point is not None
        assert line_for(message) == point.to_line()
