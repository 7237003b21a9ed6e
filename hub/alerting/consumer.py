"""The alerting consumer: the engine's decisions made durable, then delivered per notifier.

``handle`` runs the pure engine over the batch, then commits the engine state and the new outbox
rows in one SQLite transaction and returns: it never waits on a receiver. Each notifier has its
own worker thread and outbox (see ``outbox.py``), so a hung webhook never delays e-mail or the
log, and never the dispatcher. Restart-safe: the state (open alerts, last-sent times) and the
sent ids survive a SIGKILL, and a redelivered batch decides nothing new.

Timed work (repeats, expired silences, device-offline conditions whose ``offline_for_s`` grace
ran out) runs on the consumer's own ticker thread, every ``tick_interval_s`` and also at the
engine's next offline deadline, so an offline alert fires on time without any new event.

Listeners get each decided alert at least once: the decision's transaction also records the
alert as not yet handed over; once every listener returned, the alert is marked done inside the
next commit (or at ``close``), so this costs no extra commit per event. After a crash, the
owner calls ``replay_to_listeners`` once its listeners are wired, and the alerts still recorded
are handed over again (the stored alert point is idempotent).

The ticker (``alerting-ticker``) and each notifier's worker (``alerting-notifier-<name>``) are
components of the hub's supervisor (``program_support/supervision.py``): one that crashes is logged,
counted and restarted with backoff from the alert store (the durable state).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from hub.alerting.engine import NO_SIGNAL_TYPES, AlertEngine, Outcome
from hub.alerting.metrics import AlertingStats
from hub.alerting.notifiers.build import build_notifiers
from hub.alerting.outbox import NotifierWorker
from hub.alerting.store import AlertStore
from hub.config.alerting import AlertingConfig
from hub.consumers.base import ConsumerDefaults, Envelope
from program_support.supervision import Supervisor
from schemas.errors import ConfigError, DeliveryError
from schemas.models import Alert

log = structlog.get_logger("hub.alerting")
SENT_RETENTION_S = 14 * 24 * 3600.0
#: the ticker never spins faster than this, even when a deadline has passed (a failing commit)
MIN_TICK_WAIT_S = 0.2
#: after the hub is back on the broker, what the broker kept for it (a device's birth in a
#: broker restart) arrives in its first moments: counted as heard while the hub was away
HEARD_SETTLE_S = 1.0

AlertListener = Callable[[Alert], None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AlertingConsumer(ConsumerDefaults):
    name = "alerting"

    def __init__(self, config: AlertingConfig,
                 mqtt_publish: Callable[[str, bytes], None] | None = None,
                 topic_root: str = "thermopipe", *, state_dir: Path | None = None,
                 clock: Callable[[], datetime] = _utcnow, start: bool = True,
                 registry: CollectorRegistry | None = None,
                 supervisor: Supervisor | None = None) -> None:
        self.config = config
        self.supervisor = supervisor or Supervisor()
        directory = state_dir or config.state_dir
        if directory is None:
            raise ConfigError("alerting", [("state_dir", "no directory for the alert state: "
                                                         "set alerting.state_dir")])
        self._clock = clock
        self._lock = threading.Lock()  # handle() and tick() both change the engine
        self._listeners: list[AlertListener] = []
        self._listeners_done: list[str] = []  # alert ids to forget in the next commit
        self.stats_counters = AlertingStats(registry)
        self.store = AlertStore(Path(directory))
        self.engine = AlertEngine(config, self.store.load_snapshot())
        notifiers = build_notifiers(config, mqtt_publish, topic_root)
        self.workers = {
            name: NotifierWorker(n, self.store, self.stats_counters,
                                 retry_initial_s=1.0, retry_max_s=config.retry_max_backoff_s,
                                 give_up_after_s=config.give_up_after_s,
                                 clock=lambda: self._clock().timestamp())
            for name, n in notifiers.items()}
        self._stop = threading.Event()
        self._tick_wake = threading.Event()  # a new offline deadline: re-plan the next tick
        #: the hub's connection to the broker lost / back, as (True: heard, epoch s), told from
        #: paho's thread (broker_lost / broker_heard) and applied to the engine under _lock
        self._hearing: list[tuple[bool, float]] = []
        self._hearing_lock = threading.Lock()
        self._unhandled_since: Callable[[], datetime | None] = lambda: None  # watch_backlog
        self._started = False
        if start:
            self.start()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for worker in self.workers.values():
            worker.start(self.supervisor)
        self.supervisor.spawn("alerting-ticker", self._tick_loop)
        pending = self.store.pending()
        if pending:
            log.info("alerting.outbox_resumed", pending=pending)

    def close(self) -> None:
        self.supervisor.retire("alerting-ticker")
        self._stop.set()
        self._tick_wake.set()
        if self._started:
            self.supervisor.join("alerting-ticker", 5)
            for worker in self.workers.values():
                worker.stop(timeout=10)
        with self._lock:
            try:
                self.store.mark_listeners_done(self._listeners_done)
            except DeliveryError as exc:  # only costs a redelivery to the listeners next start
                log.warning("alerting.listener_record_failed", error=str(exc),
                            count=len(self._listeners_done))
            self._listeners_done = []
        self.store.close()

    def add_listener(self, listener: AlertListener) -> None:
        """Called (from the consumer's thread) with each alert once it is decided and queued,
        e.g. ``DashboardConsumer.on_alert``. A failing listener is logged, never fatal."""
        self._listeners.append(listener)

    def replay_to_listeners(self) -> int:
        """Hand every decided alert that did not reach all listeners before the last stop
        (a crash, a failing listener) to the listeners again; call once, after the last
        ``add_listener``. Returns how many alerts were handed over."""
        with self._lock:
            pending = self.store.listener_pending()
            if not pending:
                return 0
            log.info("alerting.listeners_replayed", count=len(pending))
            for alert_id, payload in pending:
                try:
                    alert = Alert.model_validate_json(payload)
                except ValidationError as exc:  # never saved so; keep it, and say so
                    log.error("alerting.unreadable_saved_alert",
                              alert_id=alert_id, error=str(exc))
                    continue
                if self._tell_listeners(alert):
                    self._listeners_done.append(alert_id)
            try:
                self.store.mark_listeners_done(self._listeners_done)
                self._listeners_done = []
            except DeliveryError as exc:  # kept in memory: the next commit forgets them
                log.warning("alerting.listener_record_failed", error=str(exc))
            return len(pending)

    # -- the hub's hearing (offline grace) -------------------------------------------------------
    def broker_lost(self, at: float) -> None:
        """The hub cannot hear the broker since ``at`` (epoch seconds): no will's grace runs out
        until it hears again (any thread; applied before the next batch or tick)."""
        with self._hearing_lock:
            self._hearing.append((False, at))

    def broker_heard(self, at: float) -> None:
        """The broker accepted the hub's connection again at ``at``: the deaf time, and
        ``HEARD_SETTLE_S`` for what the broker kept meanwhile to come in, is added to every
        grace it cut into. Told before any message of the new connection is handled."""
        with self._hearing_lock:
            self._hearing.append((True, at + HEARD_SETTLE_S))
        self._tick_wake.set()

    def _apply_hearing(self) -> None:
        with self._hearing_lock:
            changes, self._hearing = self._hearing, []
        for heard, at in changes:
            if heard:
                self.engine.heard_again(at)
            else:
                self.engine.deaf(at)

    # -- Consumer ------------------------------------------------------------------------------
    def handle(self, batch: Sequence[Envelope]) -> None:
        if not self.config.enabled:
            return
        with self._lock:
            self._apply_hearing()
            now = self._clock()
            outcome = Outcome()
            for env in batch:
                if type(env.message) not in NO_SIGNAL_TYPES:  # a reading decides nothing
                    outcome.merge(self.engine.process(env, now))
            self._commit(outcome, now)
            if self.engine.pending:
                self._tick_wake.set()

    def tick(self, now: datetime | None = None) -> None:
        """Fire offline conditions whose grace ran out, repeat still-firing groups, release
        groups whose silence ended."""
        with self._lock:
            self._apply_hearing()
            now = now or self._clock()
            unhandled = self._unhandled_since()
            outcome = self.engine.tick(now, None if unhandled is None else unhandled.timestamp())
            self._commit(outcome, now)

    def watch_backlog(self, unhandled_since: Callable[[], datetime | None]) -> None:
        """``unhandled_since()``: when the first journal entry this consumer has not handled yet
        was recorded (None: none). While it lags, a will's grace that ran out after that is not
        judged: a birth received in time may be waiting behind it (the hub's app wires it to
        the journal and this consumer's cursor)."""
        self._unhandled_since = unhandled_since

    def _commit(self, outcome: Outcome, now: datetime) -> None:
        if not outcome.changed:
            self._count(outcome)
            return
        payloads = [(n.alert.alert_id, n.alert.model_dump_json()) for n in outcome.notifications]
        items = [(alert_id, name, payload)
                 for (alert_id, payload), n in zip(payloads, outcome.notifications, strict=True)
                 for name in n.notifiers if name in self.workers]
        try:
            self.store.commit(self.engine.take_changes(), items, now.timestamp(),
                              decided=payloads,
                              listeners_done=self._listeners_done)
            self._listeners_done = []
        except Exception:
            # the engine moved on in memory but nothing was saved: go back to the saved state,
            # so the redelivered batch decides the same again
            hearing = self.engine
            self.engine = AlertEngine(self.config, self.store.load_snapshot())
            self.engine.keep_hearing(hearing)  # in memory only: not in the saved state
            raise
        # the outbox rows are durable: wake their notifiers first, so no listener (the stored
        # alert point, itself a journal commit, and the live page) stands between a decision
        # and its delivery
        for name in {name for n in outcome.notifications for name in n.notifiers}:
            if name in self.workers:
                self.workers[name].wake()
        self._count(outcome)
        for notification in outcome.notifications:
            alert = notification.alert
            self.stats_counters.decided(alert.status, alert.late)
            log.info("alerting.decided", alert_id=alert.alert_id, status=alert.status,
                     severity=alert.severity, late=alert.late, rule=alert.rule,
                     site=alert.site, device=alert.device_id, sensor=alert.sensor_id,
                     event_id=alert.event_id, notifiers=list(notification.notifiers))
            if self._tell_listeners(alert):
                self._listeners_done.append(alert.alert_id)
        for flap in outcome.flaps:
            log.info("alerting.offline_flap_suppressed",
                     site=flap.site, device=flap.device_id, session=flap.session,
                     event_id=flap.will_event_id, back_event_id=flap.back_event_id,
                     offline_s=flap.offline_s, offline_for_s=self.config.offline_for_s)
        for alert in outcome.silenced:
            log.info("alerting.silenced", alert_id=alert.alert_id, rule=alert.rule,
                     site=alert.site, device=alert.device_id, sensor=alert.sensor_id,
                     event_id=alert.event_id)

    def _count(self, outcome: Outcome) -> None:
        self.stats_counters.count("silenced", len(outcome.silenced))
        self.stats_counters.count("deduplicated", outcome.deduplicated)
        self.stats_counters.count("redelivered", outcome.redelivered)
        self.stats_counters.count("out_of_order", outcome.out_of_order)
        self.stats_counters.count("offline_flaps_suppressed", len(outcome.flaps))

    def _tell_listeners(self, alert: Alert) -> bool:
        """True when every listener took the alert; otherwise it is handed over again at the
        next ``replay_to_listeners``."""
        ok = True
        for listener in self._listeners:
            try:
                listener(alert)
            except Exception:  # a display problem must never stop alerting
                ok = False
                log.exception("alerting.listener_failed",
                              listener=repr(listener), alert_id=alert.alert_id)
        return ok

    def _next_tick_in(self) -> float:
        wait = self.config.tick_interval_s
        with self._lock:
            due = self.engine.next_due()
        if due is not None:
            wait = min(wait, due - self._clock().timestamp())
        return max(wait, MIN_TICK_WAIT_S)

    def _tick_loop(self) -> None:
        last_prune = 0.0
        next_at = time.monotonic() + self._next_tick_in()
        while True:
            woken = self._tick_wake.wait(max(next_at - time.monotonic(), 0.0))
            self._tick_wake.clear()
            if self._stop.is_set():
                return
            if woken and time.monotonic() < next_at:
                # a new offline deadline may come sooner; never later (events arriving all
                # the time must not postpone the repeats)
                next_at = min(next_at, time.monotonic() + self._next_tick_in())
                continue
            try:
                self.tick()
                if time.monotonic() - last_prune > 3600:
                    last_prune = time.monotonic()
                    self.store.prune_sent(self._clock().timestamp() - SENT_RETENTION_S)
                next_at = time.monotonic() + self._next_tick_in()
            except Exception:  # keep ticking: the next tick retries the same work
                log.exception("alerting.tick_failed")
                next_at = time.monotonic() + max(self._next_tick_in(), 1.0)

    # -- observability -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        out = self.stats_counters.snapshot()
        out["pending"] = self.store.pending()
        out["open_groups"] = len(self.engine.groups)
        out["offline_pending"] = len(self.engine.pending)
        return out

    def open_alerts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"group_key": g.key, "rule": g.rule, "severity": g.severity,
                     "site": g.site, "device_id": g.device_id, "sensor_id": g.sensor_id,
                     "summary": g.summary, "since_event": g.cause_event_id, "late": g.late,
                     "notified": g.audience} for g in self.engine.groups.values()]

    def wait_delivered(self, timeout: float) -> bool:
        """True once every outbox is empty (tests, and a clean shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.store.pending():
                return True
            time.sleep(0.02)
        return False
