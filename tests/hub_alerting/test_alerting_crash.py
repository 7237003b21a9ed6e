"""SIGKILL the process running the alerting consumer mid-delivery, restart it on the same state
directory with the whole stream redelivered: every alert reaches the webhook, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.alerting.engine import AlertEngine
from tests.hub_alerting.alert_child import config, events
from tests.hub_alerting.receivers import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]


def start_child(state_dir: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.hub_alerting.alert_child",
                                 str(state_dir), url], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_sigkill_mid_delivery_then_restart_delivers_each_alert_once(tmp_path: Path) -> None:
    # the 3rd request hangs: the process is killed while that send is in flight
    rx = WebhookReceiver(behaviour=lambda n, key: "hang" if n == 2 else 200)
    expected_engine = AlertEngine(config(rx.url))
    expected = {n.alert.alert_id for e in events()
                for n in expected_engine.process(e, datetime.now(UTC)).notifications
                if "hook" in n.notifiers}
    assert len(expected) == 9  # 3 devices x (high, fault, resolved)
    log = tmp_path / "child.log"
    child = start_child(tmp_path / "state", rx.url, log)
    try:
        rx.wait_requests(3, timeout=60)
        assert len(rx.requests) >= 3, log.read_text()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        first_run = log.read_text()
        assert "done" not in first_run
        handled_before = first_run.count("handled")
        child = start_child(tmp_path / "state", rx.url, log)
        assert child.wait(90) == 0, log.read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        rx.stop()
    acked = [r.key for r in rx.acked()]
    assert sorted(acked) == sorted(expected), log.read_text()  # each exactly once
    hung = rx.requests[2].key
    assert hung in acked  # the interrupted send was completed after the restart
    assert 1 <= handled_before < 6  # the kill came mid-stream: batches were redelivered
