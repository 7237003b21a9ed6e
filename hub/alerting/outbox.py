"""One worker thread per notifier, draining that notifier's durable outbox.

A slow or hung receiver only holds up its own queue: e-mail, log and MQTT keep their own pace.
A failed send is retried with exponential backoff (capped at ``retry_max_backoff_s``) until
``give_up_after_s``; then the row moves to ``given_up`` with the reason, logged and counted.
Each worker's thread is a component of the hub's supervisor (``alerting-notifier-<name>``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from hub.alerting.metrics import AlertingStats
from hub.alerting.notifiers.base import Notifier, NotifierRejected
from hub.alerting.store import AlertStore, OutboxItem
from program_support.backoff import exponential_delay
from program_support.supervision import Supervisor
from schemas.errors import DeliveryError
from schemas.models import Alert

log = structlog.get_logger("hub.alerting.outbox")


class NotifierWorker:
    def __init__(self, notifier: Notifier, store: AlertStore, stats: AlertingStats, *,
                 retry_initial_s: float, retry_max_s: float, give_up_after_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.notifier = notifier
        self.name = notifier.name
        self._store = store
        self._stats = stats
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._give_up_after_s = give_up_after_s
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self.component = f"alerting-notifier-{self.name}"
        self._supervisor: Supervisor | None = None

    def start(self, supervisor: Supervisor | None = None) -> None:
        self._supervisor = supervisor or Supervisor()
        self._supervisor.spawn(self.component, self._run)

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()

    def stop(self, timeout: float) -> None:
        if self._supervisor is not None:
            self._supervisor.retire(self.component)
        self._stop.set()
        self._wake.set()
        self.notifier.close()  # interrupts a webhook's backoff wait
        if self._supervisor is not None and not self._supervisor.join(self.component, timeout):
            log.warning("alerting.notifier_busy_at_shutdown",
                        notifier=self.name)

    def _run(self) -> None:
        while not self._stop.is_set():
            items = self._store.due(self.name, self._clock())
            if not items:
                next_at = self._store.next_due(self.name)
                if next_at is None:
                    self._idle.set()
                    wait = 5.0
                else:
                    wait = min(max(next_at - self._clock(), 0.01), 5.0)
                self._wake.wait(wait)
                self._wake.clear()
                continue
            for item in items:
                if self._stop.is_set():
                    return
                self._deliver(item)

    def _deliver(self, item: OutboxItem) -> None:
        alert = Alert.model_validate_json(item.payload)
        bound = log.bind(notifier=self.name, alert_id=item.alert_id, site=alert.site,
                         device=alert.device_id, sensor=alert.sensor_id, event_id=alert.event_id)
        started = self._clock()
        try:
            self.notifier.send(alert)
        except NotifierRejected as exc:
            self._store.give_up(item, str(exc), self._clock())
            self._stats.failed(self.name)
            self._stats.given_up(self.name)
            bound.error("alerting.rejected", reason=str(exc))
            return
        except DeliveryError as exc:
            self._failed(item, str(exc), bound)
            return
        except Exception as exc:  # a bug in a notifier must not kill its worker thread
            log.exception("alerting.notifier_crashed", notifier=self.name,
                          alert_id=item.alert_id)
            self._failed(item, f"{type(exc).__name__}: {exc}", bound)
            return
        self._store.mark_sent(item, self._clock())
        self._stats.sent(self.name)
        bound.debug("alerting.delivered", status=alert.status, late=alert.late,
                    seconds=round(self._clock() - started, 3))

    def _failed(self, item: OutboxItem, reason: str, bound: structlog.BoundLogger) -> None:
        if self._stop.is_set():
            return  # interrupted by shutdown: the row stays due for the next start
        now = self._clock()
        self._stats.failed(self.name)
        if now - item.created >= self._give_up_after_s:
            self._store.give_up(item, reason, now)
            self._stats.given_up(self.name)
            bound.error("alerting.given_up", reason=reason, attempts=item.attempts + 1)
            return
        delay = exponential_delay(item.attempts, self._retry_initial_s, self._retry_max_s)
        self._store.mark_failed(item, reason, now + delay)
        bound.warning("alerting.delivery_failed", reason=reason,
                      attempts=item.attempts + 1, retry_in_s=round(delay, 2))

    def wait_idle(self, timeout: float) -> bool:
        return self._idle.wait(timeout)
