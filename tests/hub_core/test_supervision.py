"""program_support/supervision.py: one supervision model for both programs, as fast unit tests
(threads, no servers, backoffs of a few milliseconds; waits are on conditions with generous
timeouts)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from program_support.supervision import ERROR_MAX, Supervisor, describe

FAST = {"restart_initial_s": 0.001, "restart_max_s": 0.005}


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not predicate():
            if done.wait(0.005):
                raise AssertionError("timed out waiting for a condition")
    finally:
        deadline.cancel()


def test_a_crash_is_logged_once_with_its_traceback_counted_reset_and_restarted() -> None:
    crashed: list[tuple[str, str]] = []
    sup = Supervisor(on_crash=lambda name, exc: crashed.append((name, describe(exc))), **FAST)
    runs: list[int] = []
    resets: list[int] = []
    stop = threading.Event()

    def target() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("boom")
        stop.wait(10)

    with capture_logs() as logs:
        sup.spawn("worker", target, reset=lambda: resets.append(1))
        wait_for(lambda: len(runs) == 2)
        sup.stop()
        stop.set()
        assert sup.join("worker", 5)
    crashes = [e for e in logs if e["event"] == "supervisor.component_crashed"]
    assert len(crashes) == 1
    assert crashes[0]["component"] == "worker" and crashes[0]["error"] == "ValueError: boom"
    assert 'raise ValueError("boom")' in crashes[0]["traceback"]
    assert crashed == [("worker", "ValueError: boom")]
    assert resets == [1]  # the reset ran before the second run
    assert sup.components["worker"].state == "stopped"
    assert not sup.fatal.is_set()


def test_health_names_the_component_and_the_exception_while_it_waits_to_restart() -> None:
    sup = Supervisor(restart_initial_s=30.0, restart_max_s=30.0)

    def target() -> None:
        raise KeyError("the reason " + "x" * 1000)

    sup.spawn("ingest", target)
    wait_for(lambda: sup.components["ingest"].state == "restarting")
    problems = sup.problems()
    assert list(problems) == ["ingest"]
    assert problems["ingest"].startswith("restarting after a crash: KeyError: ")
    assert len(sup.components["ingest"].last_error) == ERROR_MAX  # bounded
    assert not sup.healthy() and sup.up() == 0
    entry = sup.health()["ingest"]
    assert entry["state"] == "restarting" and entry["crashes"] == 1 and entry["restart_in_s"] > 0
    sup.stop()  # calls the restart off at once: no 30 s wait
    assert sup.join("ingest", 5)
    assert sup.components["ingest"].state == "stopped"


def test_past_the_budget_the_supervisor_turns_fatal_once() -> None:
    reasons: list[str] = []
    sup = Supervisor(budget=2, budget_window_s=60.0, on_fatal=reasons.append, **FAST)

    def target() -> None:
        raise RuntimeError("always")

    sup.spawn("ingest", target)
    assert sup.fatal.wait(10)
    assert sup.join("ingest", 5)
    assert sup.components["ingest"].state == "failed"
    assert sup.components["ingest"].crashes == 3  # the budget allows 2 restarts
    assert reasons == [sup.fatal_reason]
    assert sup.fatal_reason == ("ingest crashed 3 times within 60 s "
                                "(last: RuntimeError: always)")
    assert sup.problems() == {"ingest": "failed after a crash: RuntimeError: always"}


def test_a_reset_that_raises_is_a_crash_and_the_loop_waits_for_a_good_reset() -> None:
    sup = Supervisor(budget=10, **FAST)
    resets: list[int] = []
    runs: list[int] = []
    stop = threading.Event()

    def reset() -> None:
        resets.append(1)
        if len(resets) < 3:
            raise OSError("not yet")

    def target() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("first")
        stop.wait(10)

    with capture_logs() as logs:
        sup.spawn("c", target, reset=reset)
        wait_for(lambda: len(runs) == 2)
    # the loop ran again only after a reset that worked
    assert len(resets) == 3
    assert [e.get("during") for e in logs if e["event"] == "supervisor.component_crashed"] \
        == ["run", "reset", "reset"]
    sup.stop()
    stop.set()
    assert sup.join("c", 5)


def test_a_loop_that_returns_while_running_is_a_crash_unless_retired_or_finite() -> None:
    sup = Supervisor(budget=0, **FAST)
    sup.spawn("returns", lambda: None)
    assert sup.fatal.wait(10)
    assert "its loop returned while the program was running" in sup.fatal_reason

    sup2 = Supervisor(budget=0, **FAST)
    sup2.spawn("simulator", lambda: None, may_return=True)
    assert sup2.join("simulator", 5)
    assert sup2.components["simulator"].state == "finished" and sup2.healthy()

    sup3 = Supervisor(budget=0, **FAST)
    release = threading.Event()
    sup3.spawn("consumer", lambda: release.wait(10) and None)
    sup3.retire("consumer")  # its owner ends it: returning is its end, not a crash
    release.set()
    assert sup3.join("consumer", 5)
    assert sup3.components["consumer"].state == "stopped" and not sup3.fatal.is_set()


def test_an_exception_while_stopping_is_not_a_crash() -> None:
    sup = Supervisor(budget=0, **FAST)
    release = threading.Event()

    def target() -> None:
        release.wait(10)
        raise RuntimeError("the journal is closed")

    sup.spawn("consumer", target)
    sup.stop()
    release.set()
    assert sup.join("consumer", 5)
    assert sup.components["consumer"].state == "stopped" and not sup.fatal.is_set()


def test_a_stalled_loop_is_reported_and_a_beat_clears_it() -> None:
    sup = Supervisor()
    stop = threading.Event()
    component = sup.spawn("loop", lambda: stop.wait(10) and None, stall_s=5.0)
    wait_for(lambda: component.state == "running")
    now = component.last_beat
    assert sup.problems(now + 1.0) == {}
    assert sup.problems(now + 6.0) == {"loop": "stalled: its loop has not turned for 6 s"}
    component.beat()
    assert sup.problems() == {}
    sup.stop()
    stop.set()
    assert sup.join("loop", 5)


def test_two_components_with_one_name_are_refused() -> None:
    sup = Supervisor()
    sup.spawn("a", lambda: None, start=False)
    with pytest.raises(ValueError, match="supervised already"):
        sup.spawn("a", lambda: None, start=False)


def test_describe_is_one_bounded_line() -> None:
    text = describe(ValueError("line one\nline two " + "y" * 500))
    assert "\n" not in text and len(text) == ERROR_MAX and text.endswith("...")
    assert describe(KeyError("k")) == "KeyError: 'k'"
