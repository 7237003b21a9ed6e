"""Per-consumer delivery: one thread per consumer, each from its own durable journal cursor.

A consumer that fails gets the same batch again after an exponential backoff (capped); one that
hangs stalls only its own thread (its backlog grows and shows in ``/metrics`` and ``/healthz``).
The cursor moves, durably, only after ``handle`` returned, so a restart hands over again at most
the batch that was in progress (consumers are idempotent). Threads wake on the journal's
condition when new rows are committed: no polling.

The hub's own records (``LocalRecord``: alerts, health points) reach only consumers with
``accepts_local = True``; the others' cursors move past them without a call.

Failures, two kinds (``hub/consumers/base.py``):

- :class:`DeliveryError` is an expected outage (the database down, the broker away): the same
  batch is retried with backoff, for as long as it takes. Nothing is skipped.
- Any other exception may be a *poison* entry, one the consumer can never handle. After
  :data:`POISON_AFTER` such failures in a row, the batch is handed over one entry at a time; an
  entry that raises a non-``DeliveryError`` on its own is quarantined for that consumer: a dead
  letter (reason code ``consumer_failed``, the exception as the reason, the event's JSON, or a
  ``LocalRecord``'s point as JSON, as the payload; ``hub dlq`` shows it), logged once as an error
  with its traceback, counted in ``thermopipe_hub_consumer_quarantined_total{consumer}``, and the
  consumer's cursor moves past it, durably at once, so a restart never reads it into the same
  failure. Other consumers still get that entry.

Each runner is a component of the hub's supervisor (``consumer-<name>``): anything that escapes
the loop (the journal failing) is a crash, restarted with backoff from the runner's cursor.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from dataclasses import dataclass

import structlog

from hub.consumers.base import Consumer, Envelope, JournalEntry, LocalRecord
from hub.journal import Journal, JournalError
from hub.metrics import HubMetrics
from hub.records import DeadRecord
from hub.redact import redact
from program_support.backoff import exponential_delay
from program_support.supervision import Supervisor, describe
from schemas.errors import DeliveryError

log = structlog.get_logger("hub.dispatch")

#: The cursor is written at most this often while a consumer is busy (and always when it goes
#: idle or stops): every cursor write takes SQLite's write lock from the ingest thread. A crash
#: then redelivers at most this much more, which idempotent consumers absorb.
CURSOR_COMMIT_EVERY_S = 0.5
#: A paced consumer that is not behind hands a partial batch over once this fraction of
#: ``max_wait_s`` has passed since the last hand-over, not the whole interval: with no load an
#: event is stored within milliseconds (a hub record, an alert's point, right after an event no
#: longer holds the next event back for the whole interval), while a consumer that is behind
#: still writes once per ``max_wait_s``.
IDLE_PACING_FRACTION = 0.1
#: Behind means: entries were waiting when it finished its last batch, and that batch held more
#: than this many (more than an event and the hub's records that follow it, its alert's point
#: or a health point: one event that came in during such a small write is not load).
IDLE_BATCH_MAX = 4
#: failures in a row of one batch (other than DeliveryError) before it is handed over one entry
#: at a time to find the entry that poisons the consumer
POISON_AFTER = 2


@dataclass
class ConsumerState:
    """What ``/healthz`` reports about one consumer."""

    name: str
    cursor: int = 0
    processed: int = 0
    retries: int = 0
    consecutive_failures: int = 0
    poison_failures: int = 0   # of those, failures other than DeliveryError (a possible poison)
    quarantined: int = 0
    last_error: str = ""
    last_error_at: float | None = None
    busy_since: float | None = None  # monotonic start of the batch in progress


class ConsumerRunner:
    def __init__(self, consumer: Consumer, journal: Journal, metrics: HubMetrics, *,
                 batch_size: int = 1000, max_wait_s: float = 0.0, retry_initial_s: float = 0.5,
                 retry_max_s: float = 30.0, supervisor: Supervisor | None = None) -> None:
        self.consumer = consumer
        self.supervisor = supervisor or Supervisor()
        self.component_name = f"consumer-{consumer.name}"
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
        self._handed_len = 0  # entries in it
        self._processed = metrics.processed.labels(consumer.name)
        self._retries = metrics.retries.labels(consumer.name)
        self._lag = metrics.lag.labels(consumer.name)
        self._quarantined = metrics.quarantined.labels(consumer.name)

    @property
    def alive(self) -> bool:
        """Its thread is running (a runner stopped, or never started, is not)."""
        component = self.supervisor.components.get(self.component_name)
        return component is not None and component.alive

    @property
    def backlog(self) -> int:
        return self.journal.backlog(self.state.cursor)

    def start(self) -> None:
        self.state.cursor = self._committed = self.journal.register(self.consumer.name)
        self.supervisor.spawn(self.component_name, self._run, reset=self._reset)

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to stop after its current batch; False if it is hung in ``handle``."""
        self.supervisor.retire(self.component_name)
        self._stop.set()
        self.journal.wake()  # a paced consumer may be waiting up to max_wait_s for company
        if not self.supervisor.join(self.component_name, timeout):
            log.warning("consumer.hung_at_shutdown", consumer=self.consumer.name,
                        backlog=self.backlog)
            return False
        return True

    def _reset(self) -> None:
        """Before a restart: the batch in progress is handed over again from the cursor
        (consumers are idempotent)."""
        self.state.busy_since = None

    def _next_batch(self) -> list[JournalEntry]:
        cursor = self.state.cursor
        waiting = self.journal.last_offset > cursor
        if not waiting:
            # idle: make the position durable, at most every CURSOR_COMMIT_EVERY_S (a waiting
            # consumer comes back here within a second). Not at once each time: under load a
            # consumer is idle after nearly every batch, and each cursor write waits on
            # SQLite's write lock behind ingest's fsync, on this thread (issue 26: some 6,000
            # cursor writes in a 300-crossing pass at 1,000 readings/s, up to 80 ms each,
            # alerting's thread among the writers; about 100 now)
            self._commit_cursor(force=False)
        if not self.journal.wait_for(cursor, 1.0, self._stop):
            return []
        batch = self.journal.read(cursor, self.batch_size)
        if self.max_wait_s > 0 and len(batch) < self.batch_size:
            # Pacing, not waiting: a partial batch is handed over at most once per max_wait_s
            # while events keep coming in during each hand-over (storage writes fewer, larger
            # requests under load), counted from the last hand-over, so an event after a quiet
            # spell goes at once instead of waiting for company that is not coming; a consumer
            # that is not behind waits only a fraction of it (the request rate stays bounded).
            behind = waiting and self._handed_len > IDLE_BATCH_MAX
            pace = self.max_wait_s * (1.0 if behind else IDLE_PACING_FRACTION)
            deadline = self._handed_at + pace
            while len(batch) < self.batch_size and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.journal.wait_for(batch[-1].offset, remaining,
                                                               self._stop):
                    break
                batch = self.journal.read(cursor, self.batch_size)
        self._handed_at = time.monotonic()
        self._handed_len = len(batch)
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
        except JournalError as exc:
            if not self._stop.is_set():
                raise  # the journal failing while the hub runs: a crash, restarted
            # the hub shut down while this consumer was still busy
            log.warning("consumer.stopped_late", consumer=self.consumer.name, error=str(exc))
        finally:
            try:
                self._commit_cursor()
            except JournalError as exc:  # restarts from the last saved position: replayed
                log.warning("consumer.cursor_not_saved", consumer=self.consumer.name,
                            error=str(exc))

    def _deliver(self) -> None:
        state = self.state
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            if state.poison_failures >= POISON_AFTER:
                self._one_at_a_time(batch)
                continue
            deliver = self._for_consumer(batch)
            state.busy_since = time.monotonic()
            try:
                if deliver:
                    self.consumer.handle(deliver)  # type: ignore[arg-type]  # accepts_local
            except Exception as exc:  # noqa: BLE001 - any consumer failure: log, count, retry
                self._failed(exc, batch)
                continue
            self._handled(batch, batch[-1].offset)

    def _for_consumer(self, entries: list[JournalEntry]) -> list[JournalEntry]:
        return entries if self.accepts_local else [e for e in entries if type(e) is Envelope]

    def _failed(self, exc: Exception, batch: list[JournalEntry]) -> None:
        """A failed batch: counted, logged, retried after a backoff (the same batch)."""
        state = self.state
        state.busy_since = None
        state.retries += 1
        state.consecutive_failures += 1
        if not isinstance(exc, DeliveryError):
            state.poison_failures += 1
        state.last_error = redact(describe(exc))  # an InfluxDB URL may carry a password
        state.last_error_at = time.time()
        self._retries.inc()
        delay = exponential_delay(state.consecutive_failures - 1, self.retry_initial_s,
                                  self.retry_max_s)
        log.warning("consumer.failed", consumer=self.consumer.name, error=state.last_error,
                    batch=len(batch), first_offset=batch[0].offset,
                    retry_in_s=round(delay, 2), attempt=state.consecutive_failures,
                    expected=isinstance(exc, DeliveryError))
        self._stop.wait(delay)

    def _handled(self, entries: list[JournalEntry], offset: int) -> None:
        """Entries up to ``offset`` are done: the cursor moves (durably at most every
        CURSOR_COMMIT_EVERY_S), and the counters and the lag follow."""
        state = self.state
        state.busy_since = None
        state.cursor = offset
        self.journal.mark_handled(self.consumer.name, offset)
        self._commit_cursor(force=False)
        if state.consecutive_failures:
            log.info("consumer.recovered", consumer=self.consumer.name,
                     after=state.consecutive_failures)
        state.consecutive_failures = state.poison_failures = 0
        events = [e for e in entries if type(e) is Envelope]
        if events:  # processed and lag count contract events, not the hub's own records
            state.processed += len(events)
            self._processed.inc(len(events))
            last = events[-1]
            if not last.late:
                self._lag.observe(max(0.0, time.time() - last.message.time.timestamp()))

    def _one_at_a_time(self, batch: list[JournalEntry]) -> None:
        """The batch failed :data:`POISON_AFTER` times with something other than an outage:
        hand it over one entry at a time; an entry that fails alone is quarantined. An outage
        (``DeliveryError``) on the way stops here: the rest is retried from the cursor."""
        log.warning("consumer.isolating", consumer=self.consumer.name, batch=len(batch),
                    first_offset=batch[0].offset, error=self.state.last_error)
        for entry in batch:
            if self._stop.is_set():
                return
            if self._for_consumer([entry]):
                self.state.busy_since = time.monotonic()
                try:
                    self.consumer.handle([entry])  # type: ignore[list-item]  # accepts_local
                except DeliveryError as exc:
                    self._failed(exc, [entry])
                    return
                except Exception as exc:  # noqa: BLE001 - this entry poisons the consumer
                    self._quarantine(entry, exc)
            self._handled([entry], entry.offset)
        self._commit_cursor()

    def _quarantine(self, entry: JournalEntry, exc: Exception) -> None:
        """A dead letter for this consumer, then the cursor past the entry, durably."""
        name = self.consumer.name
        reason = f"consumer {name} raised {redact(describe(exc))}"
        if isinstance(entry, LocalRecord):
            p = entry.point
            payload = json.dumps({"measurement": p.measurement, "tags": p.tags,
                                  "fields": p.fields, "time_ns": p.time_ns}).encode()
            topic = f"_local/{p.measurement}"
        else:
            payload = entry.message.model_dump_json().encode()
            topic = entry.topic
        record = DeadRecord.refused(f"{name}-{entry.offset}-{time.time_ns():x}",
                                    entry.received_at, topic,
                                    payload, reason_code="consumer_failed", reason=reason)
        self.journal.add_dead_letters([record])
        self.state.quarantined += 1
        self._quarantined.inc()
        log.error("consumer.quarantined", consumer=name, offset=entry.offset, reason=reason,
                  dead_letter_id=record.dead_letter_id, topic=topic[:200],
                  meaning="moved past for this consumer; the other consumers still get it",
                  traceback="".join(traceback.format_exception(exc)))
        self.state.cursor = entry.offset
        self.journal.mark_handled(name, entry.offset)
        self._commit_cursor()

