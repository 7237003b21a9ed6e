"""Per-consumer delivery: one thread per consumer, each from its own durable journal cursor.

A consumer that fails gets the same batch again after an exponential backoff (capped); one that
hangs stalls only its own thread (its backlog grows and shows in ``/metrics`` and ``/healthz``).
The cursor moves, durably, only after ``handle`` returned, so a restart hands over again at most
the batch that was in progress (consumers are idempotent). Threads wake on the journal's
condition when new rows are committed: no polling.

The hub's own records (``LocalRecord``: alerts, health points) reach only consumers with
``accepts_local = True``; the others' cursors move past them without a call.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import structlog

from hub.consumers.base import Consumer, Envelope, JournalEntry
from hub.journal import Journal, JournalError
from hub.metrics import HubMetrics
from schemas.backoff import exponential_delay

log = structlog.get_logger("hub.dispatch")

#: The cursor is written at most this often while a consumer is busy (and always when it goes
#: idle or stops): every cursor write takes SQLite's write lock from the ingest thread. A crash
#: then redelivers at most this much more, which idempotent consumers absorb.
CURSOR_COMMIT_EVERY_S = 0.5


@dataclass
class ConsumerState:
    """What ``/healthz`` reports about one consumer."""

    name: str
    cursor: int = 0
    processed: int = 0
    retries: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_error_at: float | None = None
    busy_since: float | None = None  # monotonic start of the batch in progress


class ConsumerRunner:
    def __init__(self, consumer: Consumer, journal: Journal, metrics: HubMetrics, *,
                 batch_size: int = 1000, max_wait_s: float = 0.0, retry_initial_s: float = 0.5,
                 retry_max_s: float = 30.0) -> None:
        self.consumer = consumer
        self.journal = journal
        self.metrics = metrics
        self.batch_size = consumer.batch_size or batch_size
        self.max_wait_s = consumer.max_wait_s or max_wait_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.accepts_local = consumer.accepts_local
        self.state = ConsumerState(consumer.name)
        self._stop = threading.Event()
        self._committed = 0
        self._committed_at = 0.0
        self._handed_at = float("-inf")  # monotonic time of the last batch handed over
        self._processed = metrics.processed.labels(consumer.name)
        self._retries = metrics.retries.labels(consumer.name)
        self._lag = metrics.lag.labels(consumer.name)
        self._thread = threading.Thread(target=self._run, name=f"consumer-{consumer.name}",
                                        daemon=True)

    @property
    def backlog(self) -> int:
        return self.journal.backlog(self.state.cursor)

    def start(self) -> None:
        self.state.cursor = self._committed = self.journal.register(self.consumer.name)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to stop after its current batch; False if it is hung in ``handle``."""
        self._stop.set()
        self.journal.wake()  # a paced consumer may be waiting up to max_wait_s for company
        if not self._thread.is_alive():  # finished, or never started (a failed start-up)
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("consumer.hung_at_shutdown", consumer=self.consumer.name,
                        backlog=self.backlog)
            return False
        return True

    def _next_batch(self) -> list[JournalEntry]:
        cursor = self.state.cursor
        if self.journal.last_offset <= cursor:
            self._commit_cursor()  # idle: make the position durable now
        if not self.journal.wait_for(cursor, 1.0, self._stop):
            return []
        batch = self.journal.read(cursor, self.batch_size)
        if self.max_wait_s > 0 and len(batch) < self.batch_size:
            # Pacing, not waiting: a partial batch is handed over at most once per max_wait_s
            # (storage writes fewer, larger requests under load), counted from the last
            # hand-over, so an event after a quiet spell goes at once instead of waiting for
            # company that is not coming.
            deadline = self._handed_at + self.max_wait_s
            while len(batch) < self.batch_size and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.journal.wait_for(batch[-1].offset, remaining,
                                                               self._stop):
                    break
                batch = self.journal.read(cursor, self.batch_size)
        self._handed_at = time.monotonic()
        return batch

    def _commit_cursor(self, force: bool = True) -> None:
        now = time.monotonic()
        if self._committed == self.state.cursor or (
                not force and now - self._committed_at < CURSOR_COMMIT_EVERY_S):
            return
        self.journal.commit_cursor(self.consumer.name, self.state.cursor)
        self._committed = self.state.cursor
        self._committed_at = now

    def _run(self) -> None:
        try:
            self._deliver()
        except JournalError as exc:  # the hub shut down while this consumer was still busy
            log.warning("consumer.stopped_late", consumer=self.consumer.name, error=str(exc))
        finally:
            try:
                self._commit_cursor()
            except JournalError as exc:  # restarts from the last saved position: replayed
                log.warning("consumer.cursor_not_saved", consumer=self.consumer.name,
                            error=str(exc))

    def _deliver(self) -> None:
        name = self.consumer.name
        state = self.state
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            events = [e for e in batch if type(e) is Envelope]
            deliver: list[JournalEntry] | list[Envelope] = batch if self.accepts_local else events
            state.busy_since = time.monotonic()
            try:
                if deliver:
                    self.consumer.handle(deliver)  # type: ignore[arg-type]  # accepts_local
            except Exception as exc:  # noqa: BLE001 - any consumer failure: log, count, retry
                state.busy_since = None
                state.retries += 1
                state.consecutive_failures += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                state.last_error_at = time.time()
                self._retries.inc()
                delay = exponential_delay(state.consecutive_failures - 1, self.retry_initial_s,
                                          self.retry_max_s)
                log.warning("consumer.failed", consumer=name, error=state.last_error,
                            batch=len(batch), first_offset=batch[0].offset,
                            retry_in_s=round(delay, 2), attempt=state.consecutive_failures)
                self._stop.wait(delay)
                continue
            state.busy_since = None
            state.cursor = batch[-1].offset
            self.journal.mark_handled(name, state.cursor)
            self._commit_cursor(force=False)
            if state.consecutive_failures:
                log.info("consumer.recovered", consumer=name, after=state.consecutive_failures)
            state.consecutive_failures = 0
            if events:  # processed and lag count contract events, not the hub's own records
                state.processed += len(events)
                self._processed.inc(len(events))
                last = events[-1]
                if not last.late:
                    self._lag.observe(max(0.0, time.time() - last.message.time.timestamp()))
