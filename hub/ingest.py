"""MQTT ingest: receive, validate, dedup, record durably, and only then acknowledge.

paho's network thread only appends each message to a queue. The broker should send at most
``receive_maximum`` unacknowledged messages, but not every broker holds to it for a resumed
session (Mosquitto 2.0 with ``max_inflight_messages 0`` sends the whole backlog at once), so the
hub bounds the queue itself: at ``QUEUE_MAX`` messages ``on_message`` waits until the ingest
thread has taken a batch, paho stops reading the socket, and TCP holds the rest back. The
ingest thread takes as a batch what is queued (up to ``BATCH_MAX`` messages) without waiting;
only under load (``BATCH_LOAD_MIN`` queued) does it wait, at most ``BATCH_FILL_S``, to fill the
batch. It validates each message (``hub.validate``), drops duplicates by event id, flags late
and out-of-order events, records the batch in one SQLite transaction (``Journal.record``) and
then acknowledges every message of the batch with paho's manual ack: accepted events,
duplicates and dead letters alike (they are all recorded). A crash before the commit leaves
the messages unacknowledged, and the broker sends them again to the persistent session; a
crash after it gives duplicates that the dedup drops.

Supervision (``program_support/supervision.py``): two components of the hub's supervisor, ``ingest``
(the thread above) and ``ingest-mqtt`` (paho's network loop, run by the supervisor instead of
paho's ``loop_start``). When the ingest thread raises (a bug, or the journal failing with
:class:`JournalError`), its :meth:`Ingest.reset` rebuilds it from durable state before the
restart: what is queued in memory is dropped (none of it was acknowledged), the seq marks and
the loss detector's state are read again from the journal, and the connection is closed and
opened again, so the broker sends every unacknowledged message again to the persistent
session (acknowledgements of the old connection's messages are skipped: ``generation``).
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import structlog

from hub.config import HubConfig
from hub.dead_letter_replay import ReplayInbox
from hub.identity_limits import IDENTITY_LIMIT, IdentityLimits
from hub.ingest_decision import INTERNAL_ERROR, Decision, decide_batch, internal_error
from hub.journal import BatchRecord, Journal, Pending, ReplayOutcome
from hub.log_budget import LogBudget
from hub.loss_detector import Loss, LossDetector
from hub.metrics import HubMetrics
from hub.mqtt_client import BufferedClient, wait_acked
from hub.receipt_core import (
    loss_cause,
    loss_record,
    new_records,
    ranges_by_device,
    receipt_counts,
    receipt_ranges,
    split_receipts,
    status_report,
)
from hub.receipts import ReceiptBook
from hub.records import DeadRecord, clip_text
from hub.validate import SENSOR_TYPES, OrderTracker
from program_support.connect_errors import connect_error
from program_support.mqtt_connect import build_client
from program_support.mqtt_network_loop import NetworkLoop
from program_support.reconnect_pacing import hub_pacing
from program_support.supervision import Supervisor, describe
from schemas.codec import decode, encode
from schemas.errors import ContractError, DeliveryError
from schemas.ids import new_event_id
from schemas.models import DeviceStatus, Receipt
from schemas.topics import Topics

BATCH_MAX = 1000
QUEUE_MAX = 2 * BATCH_MAX  # messages received and not yet taken by the ingest thread (memory)
#: Load is when at least this many messages wait as the ingest thread comes round: only then
#: does it wait, up to BATCH_FILL_S, for a full batch (a backlog drains in fewer, larger
#: transactions). A lone event, or a trickle of a few thousand a second, never waits.
BATCH_LOAD_MIN = 50
BATCH_FILL_S = 0.02
PRUNE_EVERY_S = 2.0
PRUNE_SEEN_EVERY_S = 600.0
PRUNE_DEAD_EVERY_S = 60.0  # dead-letter retention ([dead_letters]); also once at start
DEAD_LETTER_LOGS_PER_S = 10  # ingest.dead_lettered lines at most; the rest counted (a flood)
DEAD_LETTER_PUBLISHES_PER_S = 100  # dead-letter topic messages at most; the rest counted
LOG_TOPIC_KEEP, LOG_REASON_KEEP = 200, 300  # bytes of topic and reason on a log line
LOSS_CHECK_EVERY_S = 1.0
#: the ingest loop turns at least every 0.2 s; one that has not turned for this long is stuck
#: (a SQLite write that never returns): /healthz says "stalled"
INGEST_STALL_S = 120.0

log = structlog.get_logger("hub.ingest")


@dataclass(slots=True)  # not frozen: one per message, and a frozen __init__ costs 3x
class Inbound:
    """One MQTT message as received (or a dead letter being replayed: ``replay_row``)."""

    topic: str
    payload: bytes
    received_at: float
    mid: int = 0
    qos: int = 0
    generation: int = 0
    replay_row: int | None = None


class Ingest:
    def __init__(self, config: HubConfig, journal: Journal, metrics: HubMetrics, *,
                 supervisor: Supervisor | None = None) -> None:
        self.config = config
        self.supervisor = supervisor or Supervisor()
        self.journal = journal
        self.metrics = metrics
        self.topics = Topics(config.mqtt.topic_root)
        self.tracker = OrderTracker(journal.load_seq_marks())
        self.limits = IdentityLimits(config.limits, journal.load_identities())
        self._count_identities()
        for over in self.limits.over_caps():  # the caps were lowered: the known ones stay
            log.warning("ingest.identities_over_cap", cap=over)
        self._queue: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._room = threading.Event()  # set by the ingest thread each time it takes a batch
        self._generation = 0
        self.connected = threading.Event()
        #: told (epoch seconds, paho's thread) when the connection to the broker drops and when
        #: the broker accepts one again, before any message of it is handled: alerting's offline
        #: grace runs only while the hub can hear (hub/alerting/engine.py, ``deaf``)
        self.on_broker_lost: list[Callable[[float], None]] = []
        self.on_broker_heard: list[Callable[[float], None]] = []
        self.subscribed = threading.Event()
        self.last_error = ""
        self._refused = False  # the broker refused our last CONNECT (until one is accepted)
        self._pacing = hub_pacing()  # reconnect waits; connections dropped at once
        self._network = self._make_network_loop()
        self._client = self._network.connection.client
        self.replays = ReplayInbox()  # hub dlq replay (hub/dead_letter_replay.py)
        self._last_prune = time.monotonic()
        self._last_prune_seen = 0.0
        self._last_prune_dead: float | None = None  # None: not yet (done at the first turn)
        self._dead_log_budget = LogBudget(DEAD_LETTER_LOGS_PER_S)
        self._dead_publish_budget = LogBudget(DEAD_LETTER_PUBLISHES_PER_S)
        rc = config.receipts
        self.receipts = (ReceiptBook(config.hub_id, new_event_id, rc.interval_s) if rc.enabled
                         else None)
        self.detector = self._load_detector()
        self._next_loss_check = 0.0

    def _load_detector(self) -> LossDetector | None:
        """The loss detector with its state from the journal (checked, repaired, logged)."""
        rc = self.config.receipts
        if not rc.detect_gaps:
            return None
        detector = LossDetector(rc.gap_timeout_s, rc.grace_s, self.journal.load_loss_state(),
                                max_seq_jump=rc.max_seq_jump)
        for key, what in detector.repaired.items():
            log.warning("ingest.loss_state_repaired", device=key, repaired=what)
        return detector

    # ---- MQTT --------------------------------------------------------------------------------
    def _make_network_loop(self) -> NetworkLoop[BufferedClient]:
        connection = build_client(BufferedClient, self.config.mqtt, self.config.client_id,
                                  manual_ack=True,
                                  receive_maximum=self.config.mqtt.receive_maximum)
        client = connection.client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_plain_message = self._on_plain_message  # most messages: no MQTTMessage made
        client.on_plain_batch = self._on_plain_batch  # the buffered read path's: a list a call
        client.on_subscribe = self._on_subscribe
        return NetworkLoop(connection, self._pacing, on_connect_error=self._on_connect_fail)

    def _on_connect_fail(self, exc: OSError) -> None:
        # the connect failed (refused, TLS handshake, DNS): paho logs nothing itself
        cfg = self.config.mqtt
        reason = str(connect_error(exc, cfg.host, cfg.port, tls=cfg.tls is not None))
        self._refused = False  # a newer reason: the broker cannot be reached at all
        first = self.last_error != f"cannot connect: {reason}"
        self.last_error = f"cannot connect: {reason}"
        self.metrics.connected.set(0)
        # once per distinct reason: the network loop retries every few seconds
        (log.error if first else log.debug)("mqtt.connect_failed", host=cfg.host,
                                            port=cfg.port, reason=reason)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any,
                    _props: Any) -> None:
        if reason.is_failure:
            error = f"broker refused the connection: {reason}"
            first = self.last_error != error  # once per distinct reason: we retry
            self._refused = True
            self.last_error = error
            (log.error if first else log.debug)("mqtt_refused", reason=str(reason))
            return
        self._refused = False
        self._generation += 1
        self._pacing.accepted(time.monotonic())
        self.connected.set()
        for heard in self.on_broker_heard:
            heard(time.time())
        self.metrics.connected.set(1)
        log.info("mqtt.connected", session_present=bool(flags.session_present),
                 client_id=self.config.client_id)
        filters = self.topics.hub_filters(self.config.mqtt.shared_group)
        if self.detector is not None:  # every hub's receipts: not shared
            filters.append(self.topics.receipt_filter())
        client.subscribe([(f, 1) for f in filters])

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, reasons: Any, _p: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self.last_error = f"subscription refused: {failed}"
            log.error("mqtt.subscribe_refused", reasons=failed)
        else:
            self.subscribed.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        for lost in self.on_broker_lost:
            lost(time.time())
        self.subscribed.clear()
        self.metrics.connected.set(0)
        if self._network.restarting:
            log.info("mqtt.reconnecting", reason="ingest restarted: the broker sends what was "
                     "not acknowledged again")
        elif self._refused:
            # paho closes a refused connection itself and reports that as a disconnect
            # ("Protocol error"); the refusal (bad password, not authorized) is the reason to show
            log.debug("mqtt.disconnected_after_refusal", reason=str(reason))
        elif not self._stop.is_set():
            self._judge_flapping(reason)

    def _judge_flapping(self, reason: Any) -> None:
        """Two clients with one client id throw each other off in a loop (a reconnect storm
        that also splits one session between them). MQTT 5 says so with "Session taken over"
        (142), but Mosquitto 2.0 just closes the connection; so a connection that keeps dropping
        right after it was accepted is reported as a likely clash, and its reconnects keep
        slowing down (``ReconnectPacing`` restarts the backoff only after a lasting one)."""
        flaps = self._pacing.ended(time.monotonic())
        taken_over = getattr(reason, "value", None) == 142
        if not taken_over and not self._pacing.clash:
            self.last_error = f"disconnected: {reason}"
            log.warning("mqtt.disconnected", reason=str(reason))
            return
        # /healthz shows last_error: the client id (a secret: whoever has it can take over the
        # session) stays in the log line below only
        self.last_error = ("session taken over: another client is connecting with this hub's "
                           "client id (two hubs or workers with one client_id? see the log's "
                           "mqtt.client_id_clash)"
                           if taken_over else
                           f"connection dropped {flaps} times in a row within "
                           f"{self._pacing.clashes.window_s:.0f} s of connecting ({reason}): "
                           "another client with this hub's client id? (see the log's "
                           "mqtt.client_id_clash)")
        log.error("mqtt.client_id_clash", client_id=self.config.client_id, reason=str(reason),
                  flaps=flaps)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_plain_message(msg.topic, bytes(msg.payload), msg.mid, msg.qos)

    def _on_plain_message(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        q = self._queue
        q.put(Inbound(topic, payload, time.time(), mid, qos, self._generation))
        self._wait_for_room()

    def _on_plain_batch(self, messages: list[tuple[str, bytes, int, int]]) -> None:
        """Messages read from the socket together (at most ``HANDOFF_MAX``): one receive time
        (they arrived in the same read), and the same bound as one at a time: the queue fills
        to ``QUEUE_MAX`` and no further while the ingest thread is behind."""
        q = self._queue
        put = q.put
        now = time.time()
        generation = self._generation
        start, count = 0, len(messages)
        while start < count:
            room = QUEUE_MAX - q.qsize()
            if room > 0 or self._stop.is_set():
                end = count if self._stop.is_set() else min(count, start + room)
                for topic, payload, mid, qos in messages[start:end]:
                    put(Inbound(topic, payload, now, mid, qos, generation))
                start = end
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        """Back-pressure: paho's thread waits here while the queue is full, so it reads no
        more from the socket."""
        q = self._queue
        if q.qsize() >= QUEUE_MAX:
            self._room.clear()
            while q.qsize() >= QUEUE_MAX and not self._stop.is_set():
                self._room.wait(0.5)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Best-effort publish on the hub's connection (dead letters)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def publish_acked(self, topic: str, payload: bytes, timeout_s: float = 10.0) -> None:
        """QoS 1 publish that returns once the broker acknowledged it (the alerting MQTT
        notifier: an alert stays in its outbox until then); raises :class:`DeliveryError`."""
        if not self.connected.is_set():
            raise DeliveryError(f"not connected to the broker; {topic} not published")
        wait_acked(self._client.publish(topic, payload, qos=1), topic, timeout_s)

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.supervisor.spawn("ingest-mqtt", self._network.run)
        self.supervisor.spawn("ingest", self._run, reset=self.reset, stall_s=INGEST_STALL_S)

    def stop(self) -> None:
        """Stop taking messages, record what was taken, send the receipts owed, then disconnect
        (the session stays)."""
        self.supervisor.retire("ingest")
        self._stop.set()
        self._room.set()  # paho's thread may wait for room in the queue
        self.supervisor.join("ingest", 30)
        self._send_receipts(time.time(), force=True)
        self.supervisor.retire("ingest-mqtt")
        self._network.stop()
        if not self.supervisor.join("ingest-mqtt", 10):
            log.warning("mqtt.network_loop_busy_at_shutdown")

    def reset(self) -> None:
        """Before the ingest thread restarts after a crash: rebuild from durable state. The
        batch in progress was never acknowledged, and neither was anything still queued: drop
        it, and connect again so the broker sends all of it again (the persistent session).
        The seq marks, the admitted identities and the loss detector's state are read back from
        the journal."""
        dropped = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            dropped += 1
        self._room.set()
        self.tracker = OrderTracker(self.journal.load_seq_marks())
        self.limits = IdentityLimits(self.config.limits, self.journal.load_identities())
        self.detector = self._load_detector()
        self._network.reconnect_now()
        log.info("ingest.reset", dropped_unacknowledged=dropped,
                 meaning="the broker sends them again on the new connection")

    # ---- the ingest thread -------------------------------------------------------------------
    def _take_batch(self) -> list[Inbound]:
        """Wait for one message, then take what else is queued (up to ``BATCH_MAX``): a lone
        event is recorded and handed on at once, and a batch is what arrived while the
        previous one was being recorded (a group commit). Only under load (``BATCH_LOAD_MIN``
        queued) does it wait, at most ``BATCH_FILL_S``, to fill the batch."""
        q = self._queue
        try:
            first = q.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        get = q.get_nowait
        try:
            while len(batch) < BATCH_MAX:
                batch.append(get())
        except queue.Empty:
            pass
        if BATCH_LOAD_MIN <= len(batch) < BATCH_MAX:
            deadline = time.monotonic() + BATCH_FILL_S
            try:
                while len(batch) < BATCH_MAX:
                    batch.append(q.get(timeout=max(deadline - time.monotonic(), 0.0)))
            except queue.Empty:
                pass
        self._room.set()
        return batch

    def _run(self) -> None:
        """The ingest loop (the ``ingest`` component). Anything it raises, a
        :class:`JournalError` included (nothing of the batch was acknowledged: the broker keeps
        it), is a crash: logged once, counted, and the loop restarts after :meth:`reset`."""
        component = self.supervisor.components["ingest"]
        while not self._stop.is_set():
            component.beat()
            batch = self._take_batch()
            now = time.monotonic()
            jobs = self.replays.take()
            batch.extend(Inbound(topic, payload, time.time(), replay_row=row_id)
                         for job in jobs for row_id, topic, payload in job.rows)
            if batch:
                self.metrics.ingest_queue.set(self._queue.qsize())
                try:
                    replayed = self.process(batch)
                except BaseException as exc:
                    self.replays.fail(jobs, f"ingest failed: {describe(exc)}")
                    raise
                self.replays.finish(jobs, replayed)
            self._housekeeping(now)
            self._send_receipts(time.time())
            self._check_losses(time.time())
        # drain what paho already handed us, so it is recorded and acked before we disconnect
        rest: list[Inbound] = []
        while True:
            try:
                rest.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if rest:
            self.process(rest)
        self.replays.fail(self.replays.take(), "the hub is stopping")

    def _housekeeping(self, now: float) -> None:
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            self.metrics.journal_pruned.inc(self.journal.prune())
        if now - self._last_prune_seen >= PRUNE_SEEN_EVERY_S:
            self._last_prune_seen = now
            self.journal.prune_seen()
        if self._last_prune_dead is None or now - self._last_prune_dead >= PRUNE_DEAD_EVERY_S:
            self._last_prune_dead = now
            self._prune_dead_letters(time.time())

    def _prune_dead_letters(self, now: float) -> None:
        """Dead-letter retention: one log line per pass that removed something."""
        cfg = self.config.dead_letters
        pruned = self.journal.prune_dead_letters(now, cfg.max_bytes, cfg.max_age_days * 86_400)
        self.metrics.dead_letter_bytes.set(pruned.kept_bytes)
        if pruned.by_age or pruned.by_size:
            self.metrics.dead_letters_pruned.labels("age").inc(pruned.by_age)
            self.metrics.dead_letters_pruned.labels("size").inc(pruned.by_size)
            log.info("ingest.dead_letters_pruned", by_age=pruned.by_age, by_size=pruned.by_size,
                     kept=pruned.kept_rows, kept_bytes=pruned.kept_bytes,
                     max_age_days=cfg.max_age_days, max_bytes=cfg.max_bytes)

    def process(self, batch: list[Inbound]) -> list[ReplayOutcome]:
        """Decide (hub/ingest_decision.py), record in one transaction, then acknowledge; what
        the batch made the hub hold is owed a receipt from then on. Returns what became of
        the dead letters replayed in it."""
        events = batch
        bad_receipts: list[DeadRecord] = []
        if self.detector is not None:
            events, receipts = split_receipts(batch, self.topics.root)
            if receipts:
                bad_receipts = self._read_receipts(receipts)
        decision = decide_batch(events, self.topics,
                                max_size=self.config.mqtt.max_payload_bytes,
                                late_after_s=self.config.late_after_s, tracker=self.tracker,
                                known_ids=self.journal.known_ids, new_id=new_event_id,
                                limits=self.limits)
        decision.dead.extend(bad_receipts)
        if decision.errors:  # each such message is a dead letter (internal_error)
            self._failed("decide", decision.errors[0], count=len(decision.errors))
        # what the batch holds, per device as seq ranges (made once for receipts and detector)
        held = (ranges_by_device(decision.held)
                if self.receipts is not None or self.detector is not None else {})
        admitted = self.limits.take_new()
        self.journal.record(BatchRecord(
            pending=decision.pending, seen=decision.seen, seq_marks=decision.seq_marks,
            dead=decision.dead, replays=decision.replays,
            loss_state=self._detect(decision, held), identities=admitted))
        if self.receipts is not None:
            self.receipts.note(held, ranges_by_device(decision.refused))
        self._ack(batch)
        self._count(decision.live, decision.pending, decision.duplicates, decision.dead)
        if decision.own:  # acknowledged above, like every message of the batch
            log.debug("ingest.own_topics_ignored", count=decision.own)
        self._report_identities(bool(admitted))
        for record in decision.dead:
            self._report_dead_letter(record)
        for outcome in decision.replays:
            log.info("ingest.dead_letter_replayed", row=outcome.row_id, accepted=outcome.accepted,
                     reason=clip_text(outcome.reason, LOG_REASON_KEEP)[0])
        return decision.replays

    # ---- receipts and losses (schemas/TOPICS.md "Receipts", hub/loss_detector.py) -----------
    def _read_receipts(self, items: list[Inbound]) -> list[DeadRecord]:
        """Every hub's receipts tell the loss detector what they hold (``ranges`` only: their
        ``refused`` seqs are not held). A receipt that is not one is ignored (logged); one whose
        reading raises is a dead letter (``internal_error``) and its device's detection state is
        dropped, so it cannot fail the same way again."""
        detector = self.detector
        assert detector is not None
        now = time.time()
        dead: list[DeadRecord] = []
        for item in items:
            try:
                receipt = decode(item.payload, max_size=self.config.mqtt.max_payload_bytes)
                if not isinstance(receipt, Receipt):
                    raise ContractError(f"a {receipt.kind!r} message on a receipt topic")
            except ContractError as exc:
                log.warning("ingest.bad_receipt", topic=item.topic[:200],
                            reason=str(exc)[:300])
                continue
            except Exception as exc:  # noqa: BLE001 - no input stops ingest: a dead letter
                self._failed("receipt", exc)
                dead.append(self._dead_letter(item, exc))
                continue
            if receipt.hub_id == self.config.hub_id:  # our own are noted at the commit
                continue
            try:
                detector.held(receipt.site, receipt.device_id, receipt_ranges(receipt), now)
            except Exception as exc:  # noqa: BLE001 - no input stops ingest: a dead letter
                self._failed("loss_detection", exc, site=receipt.site,
                             device=receipt.device_id)
                detector.forget(receipt.site, receipt.device_id)
                dead.append(self._dead_letter(item, exc))
        self._take_jumps()
        return dead

    def _dead_letter(self, item: Inbound, exc: Exception) -> DeadRecord:
        rejection = internal_error(exc)
        return DeadRecord.refused(new_event_id(), datetime.fromtimestamp(item.received_at, UTC),
                                  item.topic, item.payload, reason_code=INTERNAL_ERROR,
                                  reason=rejection.reason)

    def _failed(self, step: str, exc: Exception, count: int = 1, **where: Any) -> None:
        """An unexpected exception in an ingest step, survived: logged once with its
        traceback, counted (``thermopipe_hub_ingest_internal_errors_total{step}``)."""
        self.metrics.ingest_errors.labels(step).inc(count)
        log.error("ingest.internal_error", step=step, error=describe(exc), count=count,
                  traceback="".join(traceback.format_exception(exc))[-4000:], **where)

    def _take_jumps(self) -> None:
        """Log and count what the loss detector saw since last asked: seq jumps, and devices
        whose evaluation failed (their state dropped)."""
        detector = self.detector
        if detector is None:
            return
        for jump in detector.jumps:
            self.metrics.seq_jumps.inc()
            log.warning("ingest.seq_jump", site=jump.site, device=jump.device_id,
                        from_seq=jump.from_seq, to_seq=jump.to_seq,
                        max_seq_jump=detector.max_seq_jump, open_gaps_dropped=jump.dropped_gaps,
                        open_gap_seqs_dropped=jump.dropped_seqs)
        detector.jumps.clear()
        for (site, device), exc in detector.failures:
            self._failed("loss_detection", exc, site=site, device=device)
        detector.failures.clear()

    def _detect(self, decision: Decision, held: dict[tuple[str, str], list[tuple[int, int]]],
                ) -> dict[str, Any] | None:
        """Tell the loss detector what this batch holds (``held``: seq ranges per device) and
        what the agents' statuses say; its changed state is recorded with the batch."""
        detector = self.detector
        if detector is None:
            return None
        now = time.time()
        for (site, device), ranges in held.items():
            try:
                detector.held(site, device, ranges, now)
            except Exception as exc:  # noqa: BLE001 - one device's failure stops no other
                self._failed("loss_detection", exc, site=site, device=device)
                detector.forget(site, device)
        for p in decision.pending:
            message = p.message
            if type(message) in SENSOR_TYPES:  # the usual: nothing for the detector here
                continue
            if isinstance(message, DeviceStatus):
                try:
                    report = status_report(message)
                    if report is not None:
                        detector.status(message.site, message.device_id, report[0], now,
                                        report[1], online=message.online)
                except Exception as exc:  # noqa: BLE001 - one device's failure stops no other
                    self._failed("loss_detection", exc, site=message.site,
                                 device=message.device_id)
                    detector.forget(message.site, message.device_id)
        self._take_jumps()
        if not detector.changed:
            return None
        state = detector.snapshot(detector.changed)
        detector.changed.clear()
        return state

    def _send_receipts(self, now: float, force: bool = False) -> None:
        book = self.receipts
        if book is None:
            return
        encoding = self.config.receipts.encoding
        for receipt in book.due(now, force=force):
            try:
                published = self.connected.is_set() and self._client.publish(
                    self.topics.receipt(receipt.site, receipt.device_id),
                    encode(receipt, encoding), qos=1).rc == mqtt.MQTT_ERR_SUCCESS
            except Exception as exc:  # noqa: BLE001 - dropped, not retried forever
                # the agent sends those events again; they are receipted as duplicates
                self._failed("receipt", exc, site=receipt.site, device=receipt.device_id)
                continue
            if not published:
                book.requeue(receipt)  # with the next one, once connected
                continue
            receipted, refused = receipt_counts(receipt)
            self.metrics.receipts_sent.inc()
            self.metrics.receipted.inc(receipted)
            self.metrics.refused_named.inc(refused)
        for (site, device), error in book.failures:  # receipts that could not be made
            self._failed("receipt", error, site=site, device=device)
        book.failures.clear()

    def _check_losses(self, now: float) -> None:
        detector = self.detector
        if detector is None or now < self._next_loss_check:
            return
        self._next_loss_check = now + LOSS_CHECK_EVERY_S
        losses = detector.due(now)
        self._take_jumps()
        self.metrics.open_gaps.set(detector.open_gaps)
        if losses:
            self._record_losses(losses, now)

    def _record_losses(self, losses: list[Loss], now: float) -> None:
        """Each loss becomes one ``data_loss`` record in the journal (so storage, alerting and
        the live page get it like an event), with the detector's state, in one transaction."""
        detector = self.detector
        assert detector is not None
        when = datetime.fromtimestamp(now, UTC)
        records = []
        for x in losses:
            try:
                records.append(loss_record(x, when, self.config.hub_id))
            except Exception as exc:  # noqa: BLE001 - the device's state is dropped instead
                self._failed("loss_record", exc, site=x.site, device=x.device_id,
                             first_seq=x.first_seq, last_seq=x.last_seq)
                detector.forget(x.site, x.device_id)
        known = self.journal.known_ids([r.event_id for r in records])
        pending = [Pending(r, self.topics.data_loss(r.site, r.device_id),
                           r.model_dump_json().encode(), when, False, False, now)
                   for r in new_records(records, known)]
        state = detector.snapshot(detector.changed)
        detector.changed.clear()
        self.journal.record(BatchRecord(
            pending=pending, seen=[(p.message.event_id, now) for p in pending], loss_state=state))
        for record in records:
            self.metrics.data_loss.inc()
            self.metrics.data_loss_events.inc(record.count)
            log.error("ingest.data_loss", site=record.site, device=record.device_id,
                      first_seq=record.first_seq, last_seq=record.last_seq, count=record.count,
                      cause=loss_cause(record, self.config.receipts.gap_timeout_s),
                      already_recorded=record.event_id in known)

    def _ack(self, batch: list[Inbound]) -> None:
        # A message from an earlier connection is redelivered by the broker on this one; its
        # copy will be dropped as a duplicate and acknowledged then. The subscription is QoS 1,
        # so a message is QoS 0 (nothing to ack) or 1: one write acknowledges the whole batch.
        generation = self._generation
        self._client.ack_many([item.mid for item in batch
                               if item.qos and item.generation == generation])

    def _count(self, live: int, pending: list[Pending], duplicates: int,
               dead: list[DeadRecord]) -> None:
        m = self.metrics
        m.events_in.inc(live)
        kinds: dict[str, int] = {}
        late = ooo = 0
        for p in pending:
            kinds[p.message.kind] = kinds.get(p.message.kind, 0) + 1
            late += p.late
            ooo += p.out_of_order
        for kind, n in kinds.items():
            m.accepted.labels(kind).inc(n)
        if duplicates:
            m.duplicates.inc(duplicates)
            log.debug("ingest.duplicates_dropped", count=duplicates)
        if late:
            m.late.inc(late)
        if ooo:
            m.out_of_order.inc(ooo)
        for record in dead:
            m.dead_lettered.labels(record.reason_code).inc()

    def _count_identities(self) -> None:
        limits = self.limits
        for level, known in (("site", limits.sites), ("device", limits.devices),
                             ("sensor", limits.sensors)):
            self.metrics.identities.labels(level).set(known)

    def _report_identities(self, admitted: bool) -> None:
        """Identity refusals: counted per level, logged a line per cap at most every minute
        (hub/identity_limits.py RefusalLog), never a line per message."""
        if admitted:
            self._count_identities()
        for level, count in self.limits.take_refused().items():
            self.metrics.identity_refused.labels(level).inc(count)
        for line in self.limits.log.due(time.time()):
            log.warning("ingest.identity_refused", cap=line.key, refused=line.count,
                        example=line.example, first=line.first,
                        meaning="events of identities past this cap are dead letters "
                                "(hub/README.md, \"Limits\")")

    def _report_dead_letter(self, record: DeadRecord) -> None:
        """One bounded line (prefixes of topic and reason, sizes and hash, never the payload),
        at most DEAD_LETTER_LOGS_PER_S a second: the rest are counted, and the next line says
        how many were not logged. Every one is in the store; the dead-letter topic gets at most
        DEAD_LETTER_PUBLISHES_PER_S a second (paho queues every QoS 1 publish in memory: a
        flood published one by one would grow the hub), the rest counted."""
        if record.reason_code == IDENTITY_LIMIT:  # a flood's worth: a line per cap instead
            return  # (_report_identities), no DLQ message each (paho would queue them all)
        now = time.monotonic()
        allowed, suppressed = self._dead_log_budget.take(now)
        if not allowed:
            self.metrics.dead_letter_logs_suppressed.inc()
        else:
            log.warning("ingest.dead_lettered", dead_letter_id=record.dead_letter_id,
                        reason_code=record.reason_code,
                        topic=clip_text(record.topic, LOG_TOPIC_KEEP)[0],
                        topic_size=record.topic_size,
                        reason=clip_text(record.reason, LOG_REASON_KEEP)[0],
                        reason_size=record.reason_size, size=record.original_size,
                        sha256=record.sha256, suppressed_before=suppressed)
        if not self._dead_publish_budget.take(now)[0]:
            self.metrics.dead_letter_publishes_suppressed.inc()
            return
        if not self.publish(self.topics.deadletter(),
                            record.to_message().model_dump_json().encode()):
            self.metrics.dead_letter_publish_failed.inc()
