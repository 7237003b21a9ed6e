"""``hub dlq replay`` through real processes: a ``hub run`` on a private Mosquitto, and the CLI
posting the command to its web server (hub/dead_letter_api.py). The dead letters are written to
the hub's store before it starts (as an earlier run refused them); replayed, a fixed one becomes
an event exactly once, an invalid one is refused again with its reason, an unknown id says so, a
cut one is not replayable. With no hub running the CLI says so in one line; a hub with an
``[http] token`` takes the command only with it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hub.journal import BatchRecord, Journal
from hub.journal.store import REPLAY_REQUEST_DROPPED
from hub.records import DeadRecord
from schemas.codec import encode
from schemas.topics import Topics
from tests.hub_core.helpers import reading, wait_until, write_toml
from tests.servers import free_port

pytestmark = [pytest.mark.servers]
ROOT = Path(__file__).resolve().parents[2]
WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TOKEN = "a-replay-token-of-32-characters!"


def _config(tmp_path: Path, broker: Any, topic_root: str, port: int,
            **http: Any) -> Path:
    return write_toml(tmp_path / "hub.toml", {
        "hub_id": "replayhub", "data_dir": str(tmp_path / "hubdata"),
        "mqtt": {"host": broker.host, "port": broker.port, "topic_root": topic_root,
                 "client_id": f"hub-{topic_root}"},
        "storage": {"mode": "sqlite"},
        "http": {"enabled": True, "host": "127.0.0.1", "port": port, **http},
        "log": {"level": "info", "format": "json"}})


def _seed(data_dir: Path, records: list[DeadRecord]) -> None:
    """Dead letters in the hub's store, as an earlier run refused them."""
    journal = Journal(data_dir / "hub.sqlite3")
    try:
        journal.record(BatchRecord(dead=records))
    finally:
        journal.close()


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "HUB_CONFIG"},
            "TP_TEST_REPLAY_TOKEN": TOKEN}


@contextmanager
def _hub_run(config: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "-c", str(config)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=_env())
    try:
        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                    return True
            except (urllib.error.URLError, OSError):
                return False

        wait_until(healthy, 60, 0.2, what="hub run answering /healthz")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _dlq(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli", "dlq", "-c", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
                          env=_env())


def _status(data_dir: Path) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(data_dir / "hub.sqlite3") as conn:
        return {i: (s, o) for i, s, o in conn.execute(
            "SELECT dead_letter_id, status, outcome FROM dead_letters")}


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


def test_replay_is_a_command_the_running_hub_answers_per_id(
        tmp_path: Path, mosquitto: Any, topic_root: str) -> None:
    topics = Topics(topic_root)
    fixed, later = reading(1, device="dfix"), reading(2, device="dfix")
    big = b'{"kind": "reading", "pad": "' + b"z" * 100_000 + b'"}'

    def dead(dead_id: str, topic: str, payload: bytes, code: str = "identity_limit",
             ) -> DeadRecord:
        return DeadRecord.refused(dead_id, WHEN, topic, payload, reason_code=code,
                                  reason="refused by an earlier run")

    data_dir = tmp_path / "hubdata"
    _seed(data_dir, [
        dead("fixed", topics.for_event(fixed), encode(fixed)),       # its cap was raised since
        dead("twin", topics.for_event(fixed), encode(fixed)),        # the same event again
        dead("invalid", topics.for_event(fixed), b"{not json", "invalid"),
        dead("cut", topics.for_event(fixed), big, "too_large"),
        dead("legacy", topics.for_event(later), encode(later))])
    with sqlite3.connect(data_dir / "hub.sqlite3") as conn:  # an older hub's `dlq replay`
        conn.execute("UPDATE dead_letters SET status='replay_requested' "
                     "WHERE dead_letter_id='legacy'")
    port = free_port()
    config = _config(tmp_path, mosquitto, topic_root, port)
    with _hub_run(config, port, tmp_path / "hub.log"):
        # opened again at start, and no longer polled: it stays open until asked
        assert _status(data_dir)["legacy"] == ("open", REPLAY_REQUEST_DROPPED)
        time.sleep(2.5)  # the old hub polled every second
        assert _status(data_dir)["legacy"][0] == "open"

        first = _dlq(config, "replay", "fixed", "invalid", "nope", "cut")
        assert first.returncode == 1, first
        lines = first.stdout.splitlines()
        assert lines[0] == "fixed: replayed: accepted on replay"
        assert lines[1].startswith("invalid: still refused: invalid: "), lines
        assert lines[2] == "nope: unknown id: no dead letter with this id in this hub's store"
        assert lines[3].startswith(f"cut: still refused: not replayable: only the first 4096 "
                                   f"of its {len(big)} bytes were kept"), lines
        assert len(lines) == 4 and first.stderr == ""

        twin = _dlq(config, "replay", "twin", "fixed")
        assert twin.returncode == 0, twin
        assert twin.stdout.splitlines() == [
            "twin: replayed: accepted on replay (already stored)",
            "fixed: already replayed: accepted on replay"]
        # exactly one event from the two dead letters of one event id
        assert _metric(port, 'thermopipe_hub_events_accepted_total{kind="reading"}') == 1.0

        everything = _dlq(config, "replay", "--all")
        assert everything.returncode == 1  # invalid and cut are still refused
        assert sorted(line.split(":")[0] for line in everything.stdout.splitlines()) == [
            "cut", "invalid", "legacy"]
        assert "legacy: replayed: accepted on replay" in everything.stdout
        assert _metric(port, 'thermopipe_hub_events_accepted_total{kind="reading"}') == 2.0
        listed = _dlq(config, "list", "--status", "open")
        assert "2 dead letter(s)" in listed.stdout, listed
    status = _status(data_dir)
    assert {k: v[0] for k, v in status.items()} == {
        "fixed": "replayed", "twin": "replayed", "legacy": "replayed", "invalid": "open",
        "cut": "open"}
    with sqlite3.connect(data_dir / "store.sqlite3") as conn:
        stored = conn.execute("SELECT COUNT(*) FROM points WHERE measurement='sensor_event'"
                              ).fetchone()[0]
    assert stored == 2  # fixed (once) and legacy


def test_replay_with_no_hub_running_says_so_in_one_line(tmp_path: Path, mosquitto: Any,
                                                       topic_root: str) -> None:
    _seed(tmp_path / "hubdata", [DeadRecord.refused(
        "lonely", WHEN, "tp/s1/d1/event/t1", b"{}", reason_code="invalid", reason="bad")])
    port = free_port()
    config = _config(tmp_path, mosquitto, topic_root, port)
    result = _dlq(config, "replay", "lonely")
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"hub: no hub answers at http://127.0.0.1:{port} (connection "
                           "refused): replay needs the running hub"), line
    assert f"start it (hub run -c {config}" in line
    assert _status(tmp_path / "hubdata")["lonely"][0] == "open"  # nothing written by the CLI


def test_a_hub_with_a_token_takes_the_command_only_with_it(tmp_path: Path, mosquitto: Any,
                                                           topic_root: str) -> None:
    topics = Topics(topic_root)
    event = reading(1, device="dtok")
    _seed(tmp_path / "hubdata", [DeadRecord.refused(
        "tok1", WHEN, topics.for_event(event), encode(event), reason_code="identity_limit",
        reason="refused by an earlier run")])
    port = free_port()
    config = _config(tmp_path, mosquitto, topic_root, port, token="env:TP_TEST_REPLAY_TOKEN")
    tokenless = write_toml(tmp_path / "tokenless.toml", {
        **_read_toml(config), "http": {"enabled": True, "host": "127.0.0.1", "port": port}})
    with _hub_run(config, port, tmp_path / "hub.log"):
        without = _dlq(tokenless, "replay", "tok1")
        assert without.returncode == 1
        assert without.stderr.splitlines() == [
            f"hub: the hub at http://127.0.0.1:{port} needs its [http] token: this config "
            "file has none"]
        wrong_env = {**_env(), "TP_TEST_REPLAY_TOKEN": "x" * 32}
        wrong = subprocess.run([sys.executable, "-m", "hub.cli", "dlq", "-c", str(config),
                                "replay", "tok1"], capture_output=True, text=True, cwd=ROOT,
                               timeout=120, check=False, env=wrong_env)
        assert wrong.returncode == 1
        assert "refused the token" in wrong.stderr
        assert _status(tmp_path / "hubdata")["tok1"][0] == "open"
        # the route itself: a form post (what a web page across sites can send) is refused
        form = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/dlq/replay", b"all=true", method="POST",
            headers={"Authorization": f"Bearer {TOKEN}",
                     "Content-Type": "application/x-www-form-urlencoded"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(form, timeout=10)
        assert refused.value.code == 415
        refused.value.close()
        right = _dlq(config, "replay", "tok1")
        assert right.returncode == 0, right
        assert right.stdout == "tok1: replayed: accepted on replay\n"


def _read_toml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads(path.read_text())
    return data
