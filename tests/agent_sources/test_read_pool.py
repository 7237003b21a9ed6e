"""The 1-Wire source's read pool (edge_agent/sources/read_pool.py): one read in flight per key,
at most ``workers`` threads, queued reads dropped at shutdown, a crashing read not fatal."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from edge_agent.sources.read_pool import ReadPool


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_key_is_not_queued_again_while_its_read_is_unfinished() -> None:
    pool = ReadPool(2, "test")
    release = threading.Event()
    done: list[str] = []

    def read(key: str) -> None:
        release.wait(10)
        done.append(key)

    assert pool.submit("a", lambda: read("a"))
    assert not pool.submit("a", lambda: read("a"))  # still in flight: skipped
    assert pool.busy("a")
    release.set()
    wait_until(lambda: not pool.busy("a"))
    assert done == ["a"]
    assert pool.submit("a", lambda: read("a"))  # finished: may be read again
    wait_until(lambda: done == ["a", "a"])
    pool.shutdown()


def test_no_more_threads_than_workers_and_every_read_runs() -> None:
    pool = ReadPool(3, "w1-read bus")
    release = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()
    done: list[str] = []

    def read(key: str) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(10)
        with lock:
            running -= 1
            done.append(key)

    keys = [f"28-{i:012x}" for i in range(10)]
    for key in keys:
        assert pool.submit(key, lambda key=key: read(key))  # type: ignore[misc]
    wait_until(lambda: running == 3)
    assert pool.threads == 3
    assert all(t.name.startswith("w1-read bus ") and t.daemon
               for t in threading.enumerate() if t.name.startswith("w1-read bus"))
    release.set()
    wait_until(lambda: len(done) == 10)
    assert sorted(done) == keys and peak == 3 and pool.threads == 3
    pool.shutdown()


def test_idle_threads_are_reused_before_new_ones_start() -> None:
    pool = ReadPool(4, "test")
    done: list[int] = []
    for i in range(5):
        assert pool.submit("a", lambda i=i: done.append(i))  # type: ignore[misc]
        wait_until(lambda i=i: len(done) == i + 1 and not pool.busy("a"))  # type: ignore[misc]
    assert pool.threads == 1
    pool.shutdown()


def test_shutdown_drops_queued_reads_refuses_new_ones_and_ends_the_threads() -> None:
    pool = ReadPool(1, "test")
    release = threading.Event()
    started = threading.Event()
    done: list[str] = []

    def first() -> None:
        started.set()
        release.wait(10)
        done.append("first")

    assert pool.submit("a", first)
    assert pool.submit("b", lambda: done.append("queued"))
    assert started.wait(10)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit("c", lambda: done.append("late"))
    release.set()  # the read in progress finishes; the queued one never runs
    wait_until(lambda: not any(t.name.startswith("test ") for t in threading.enumerate()))
    assert done == ["first"]


def test_a_crashing_read_is_logged_frees_its_key_and_its_thread_serves_the_next() -> None:
    pool = ReadPool(1, "test")
    done: list[str] = []

    def broken() -> None:
        raise ZeroDivisionError("a bug")

    with capture_logs() as logs:
        assert pool.submit("a", broken)
        wait_until(lambda: not pool.busy("a"))
    assert [(e["event"], e["key"]) for e in logs] == [("read_pool.read_crashed", "a")]
    assert pool.submit("a", lambda: done.append("a"))
    wait_until(lambda: done == ["a"])
    assert pool.threads == 1
    pool.shutdown()


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        ReadPool(0, "test")
