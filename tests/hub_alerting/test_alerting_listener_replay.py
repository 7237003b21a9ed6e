"""Listeners get every decided alert at least once, across a crash between the decision's commit
and the listener (the hub's stored alert point), and never again after a clean stop."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from hub.alerting.consumer import AlertingConsumer
from hub.config.alerting import AlertingConfig
from schemas.models import Alert
from tests.hub_alerting.helpers import Feed, env

REPO = Path(__file__).resolve().parents[2]


def make_config() -> AlertingConfig:
    return AlertingConfig.model_validate({
        "notifiers": {"log": {"type": "log"}},
        "rules": [{"name": "all", "match": {"severity_at_least": "warning"},
                   "notifiers": ["log"]}],
        "tick_interval_s": 3600, "offline_for_s": 0})


def fire_then_resolve() -> tuple[list[Any], list[Any]]:
    f = Feed()
    return [env(f.state("t1", "high", value=31.0))], [env(f.state("t1", "normal", prev="high"))]


def restart(state_dir: Path) -> tuple[list[Alert], int]:
    """A new consumer on the same state, wired like the hub does: what its listener gets."""
    seen: list[Alert] = []
    consumer = AlertingConsumer(make_config(), state_dir=state_dir)
    try:
        consumer.add_listener(seen.append)
        replayed = consumer.replay_to_listeners()
        assert replayed == len(seen)
    finally:
        consumer.close()
    return seen, replayed


# The child decides the firing alert (its listener returns), then the resolved one, and dies in
# the listener: after the decision's commit, before anything recorded the listener's work.
CHILD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from tests.hub_alerting.test_alerting_listener_replay import fire_then_resolve, make_config
    from hub.alerting.consumer import AlertingConsumer

    consumer = AlertingConsumer(make_config(), state_dir=Path(sys.argv[1]))
    fire, resolve = fire_then_resolve()
    told = open(sys.argv[2], "a", buffering=1)  # not stdout: the log notifier writes there
    consumer.add_listener(lambda alert: told.write(f"{alert.status} {alert.alert_id}\\n"))
    consumer.handle(fire)
    consumer.add_listener(lambda alert: os._exit(9) if alert.status == "resolved" else None)
    consumer.handle(resolve)
""")


def test_crash_in_the_listener_hands_that_alert_over_again_exactly_once(tmp_path: Path) -> None:
    state_dir, told_path = tmp_path / "state", tmp_path / "told.txt"
    child = subprocess.run([sys.executable, "-c", CHILD, str(state_dir), str(told_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert child.returncode == 9, child.stderr
    told = [line.split() for line in told_path.read_text().splitlines()]
    assert [status for status, _ in told] == ["firing", "resolved"]
    resolved_id = told[1][1]

    seen, replayed = restart(state_dir)
    # only the alert whose listeners did not finish; the firing one was marked done by the
    # resolved one's commit
    assert replayed == 1
    assert [(a.status, a.alert_id) for a in seen] == [("resolved", resolved_id)]
    seen, replayed = restart(state_dir)
    assert (seen, replayed) == ([], 0)


def test_failing_listener_gets_the_alert_at_the_next_start_then_never_again(
        tmp_path: Path) -> None:
    fire, resolve = fire_then_resolve()
    ok: list[Alert] = []
    calls = {"n": 0}

    def fails_first(alert: Alert) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("journal disk full")

    consumer = AlertingConsumer(make_config(), state_dir=tmp_path)
    try:
        consumer.add_listener(ok.append)
        consumer.add_listener(fails_first)
        consumer.handle(fire)
        consumer.handle(resolve)
        consumer.handle(fire + resolve)  # a redelivered batch decides nothing new
    finally:
        consumer.close()
    assert [a.status for a in ok] == ["firing", "resolved"]

    seen, _ = restart(tmp_path)
    assert [(a.status, a.alert_id) for a in seen] == [("firing", ok[0].alert_id)]
    assert restart(tmp_path) == ([], 0)


def test_clean_run_never_replays_to_listeners(tmp_path: Path) -> None:
    fire, resolve = fire_then_resolve()
    seen: list[Alert] = []
    consumer = AlertingConsumer(make_config(), state_dir=tmp_path)
    try:
        consumer.add_listener(seen.append)
        assert consumer.replay_to_listeners() == 0
        consumer.handle(fire)
        consumer.handle(resolve)  # its done mark waits for the next commit, or close
    finally:
        consumer.close()
    assert [a.status for a in seen] == ["firing", "resolved"]
    assert consumer.store.path.exists()
    assert restart(tmp_path) == ([], 0)
