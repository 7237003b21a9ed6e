"""A consumer that keeps going idle writes its cursor at most every CURSOR_COMMIT_EVERY_S, and
still makes its position durable soon after it goes quiet (issue 26: under load a consumer is
idle after nearly every batch, and it wrote its cursor each time, on its own thread, behind
ingest's fsync: some 6,000 journal writes in a 300-crossing pass at 1,000 readings/s)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from hub.consumers.base import ConsumerDefaults, JournalEntry
from hub.dispatch import CURSOR_COMMIT_EVERY_S, ConsumerRunner
from hub.journal import Journal
from hub.metrics import HubMetrics
from hub.records import Point
from tests.hub_core.helpers import wait_until


class Counting(ConsumerDefaults):
    name = "counting"
    accepts_local = True

    def __init__(self) -> None:
        self.seen = 0
        self.lock = threading.Lock()

    def handle(self, batch: Sequence[JournalEntry]) -> None:
        with self.lock:
            self.seen += len(batch)

    def close(self) -> None:
        pass


class CountingJournal(Journal):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.cursor_writes = 0

    def commit_cursor(self, name: str, offset: int) -> None:
        self.cursor_writes += 1
        super().commit_cursor(name, offset)


def test_an_idle_consumer_writes_its_cursor_at_most_every_interval(tmp_path: Path) -> None:
    journal = CountingJournal(tmp_path / "hub.sqlite3")
    consumer = Counting()
    runner = ConsumerRunner(consumer, journal, HubMetrics())
    runner.start()
    try:
        started = time.monotonic()
        for i in range(40):  # one record at a time: the consumer is idle after each
            journal.append_local([(f"p{i}", Point("m", {}, {"v": i}, i + 1))])
            time.sleep(0.01)
        wait_until(lambda: consumer.seen == 40, 10)
        elapsed = time.monotonic() - started
        # once per interval at most while it keeps going idle, plus the first (was: 40)
        assert journal.cursor_writes <= elapsed / CURSOR_COMMIT_EVERY_S + 2, (
            journal.cursor_writes, elapsed)

        def durable() -> int:
            with sqlite3.connect(tmp_path / "hub.sqlite3") as db:
                row = db.execute("SELECT offset FROM cursors WHERE name = 'counting'").fetchone()
            db.close()
            return int(row[0])

        # quiet now: the position is on disk within about a second (the idle wait's timeout)
        wait_until(lambda: durable() == journal.last_offset, 5)
    finally:
        runner.stop()
        journal.close()
