"""Building and running one hub from its config: journal, ingest, consumers, dispatch, web.

With storage enabled (any mode), the hub also stores its own records through the journal
(``LocalRecord``, taken by the storage consumer only): every alert the alerting consumer decides
(a listener appends the alert's point, committed before the listener returns) and a
``hub_health`` point every ``[storage] health_interval_s`` (``hub/storage/health.py``).

Every thread of the hub is a component of one :class:`~program_support.supervision.Supervisor` owned
here (ingest and its MQTT network loop, each consumer's runner, the health recorder, the alerting
ticker and notifiers, Home Assistant's connection, the web server): a crash is logged once with
its traceback, counted (``thermopipe_hub_component_crashes_total{component}``), makes
``/healthz`` answer 503 naming the component and the exception, and is restarted with backoff
from durable state. Past the restart budget ``supervisor.fatal`` is set: ``hub run`` then stops
the hub and exits 70 (``EXIT_COMPONENT_FAILED``) for systemd, compose or ``--workers`` to restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import Counter
from starlette.routing import BaseRoute

from hub.config import HubConfig
from hub.consumers.base import Consumer
from hub.dead_letter_api import replay_route
from hub.dispatch import ConsumerRunner
from hub.ingest import Ingest
from hub.journal import Journal
from hub.metrics import HubMetrics
from hub.records import Point
from hub.redact import config_secrets
from hub.storage.health import HealthRecorder
from hub.storage.points import health_point, point_for
from hub.web import WebServer, make_app
from program_support.supervision import Supervisor
from schemas.models import Alert

if TYPE_CHECKING:
    from hub.alerting.consumer import AlertingConsumer

log = structlog.get_logger("hub")


class Hub:
    def __init__(self, config: HubConfig, extra_consumers: Sequence[Consumer] = ()) -> None:
        self.config = config
        self.metrics = HubMetrics()
        crashes = self.metrics.component_crashes
        self.supervisor = Supervisor(on_crash=lambda name, _exc: crashes.labels(name).inc())
        self.metrics.watch_components(self.supervisor.up)
        self.journal = Journal(config.database_path, config.journal.synchronous,
                               dedup_retention_s=config.journal.dedup_retention_days * 86_400,
                               dedup_max_ids=config.journal.dedup_max_ids)
        self.ingest = Ingest(config, self.journal, self.metrics, supervisor=self.supervisor)
        self.alerting: AlertingConsumer | None = None  # set by _build_consumers when enabled
        self.consumers: list[Consumer] = [*self._build_consumers(), *extra_consumers]
        d = config.dispatch
        self.runners = [ConsumerRunner(c, self.journal, self.metrics, batch_size=d.batch_size,
                                       retry_initial_s=d.retry_initial_s,
                                       retry_max_s=d.retry_max_s, supervisor=self.supervisor)
                        for c in self.consumers]
        for runner in self.runners:
            if runner.consumer is self.alerting:  # no will's grace judged past its backlog
                self.alerting.watch_backlog(self._unhandled_since(runner))
        self.metrics.watch_backlog(lambda: {r.consumer.name: r.backlog for r in self.runners})
        self.metrics.watch_lag(self.lag_s)
        self.health_recorder: HealthRecorder | None = None
        if config.storage.enabled:
            self.health_recorder = HealthRecorder(config.storage.health_interval_s,
                                                  self.health_point, self._record_point,
                                                  supervisor=self.supervisor)
        self.web: WebServer | None = None
        self._stopped = threading.Event()
        self._started = False

    def _build_consumers(self) -> list[Consumer]:
        cfg = self.config
        consumers: list[Consumer] = []
        if cfg.storage.enabled and cfg.storage.mode == "sqlite":
            from hub.storage.sqlite_store import SqliteStoreConsumer

            consumers.append(SqliteStoreConsumer(
                cfg.storage.path or cfg.data_dir / "store.sqlite3",
                batch_size=cfg.storage.batch_size, flush_interval_s=cfg.storage.flush_interval_s))
        elif cfg.storage.enabled:
            from hub.storage.consumer import StorageConsumer

            rejected = Counter("thermopipe_hub_storage_rejected",
                               "Points the database refused as malformed",
                               registry=self.metrics.registry)
            consumers.append(StorageConsumer(cfg.storage, rejected))
        alerting = None
        if cfg.alerting.enabled:
            from hub.alerting.consumer import AlertingConsumer

            state_dir = cfg.alerting.state_dir or cfg.data_dir / "alerting"
            alerting = AlertingConsumer(cfg.alerting, mqtt_publish=self.ingest.publish_acked,
                                        topic_root=cfg.mqtt.topic_root, state_dir=state_dir,
                                        registry=self.metrics.registry,
                                        supervisor=self.supervisor)
            consumers.append(alerting)
            self.alerting = alerting
            # the offline grace runs while the hub can hear the broker: deaf since what it
            # last recorded (a restart), until ingest's connection is accepted
            alerting.broker_lost(self.journal.last_received() or time.time())
            self.ingest.on_broker_lost.append(alerting.broker_lost)
            self.ingest.on_broker_heard.append(alerting.broker_heard)
            if cfg.storage.enabled:  # every decided alert is stored, through the journal
                alerting.add_listener(self._store_alert)
        if cfg.dashboard.enabled:
            from hub.dashboard.consumer import DashboardConsumer

            dashboard = DashboardConsumer(cfg.dashboard)
            consumers.append(dashboard)
            if alerting is not None:  # the dashboard shows alerts as alerting decides them
                alerting.add_listener(dashboard.on_alert)
        if cfg.homeassistant.enabled:  # discovery configs and states for Home Assistant
            from hub.homeassistant.consumer import HomeAssistantConsumer

            consumers.append(HomeAssistantConsumer(cfg.homeassistant, cfg.mqtt.account("ha"),
                                                   cfg.client_id,
                                                   cfg.data_dir / "homeassistant.json",
                                                   supervisor=self.supervisor))
        if alerting is not None:  # listeners wired: hand over what a crash kept from them
            alerting.replay_to_listeners()
        return consumers

    # ---- the hub's own records, stored through the journal ---------------------------------
    def _store_alert(self, alert: Alert) -> None:
        """Alerting listener: the alert's point, durably in the journal before we return."""
        point = point_for(alert)
        assert point is not None  # every Alert has a point
        self.journal.append_local([(alert.alert_id, point)])

    def _record_point(self, point: Point) -> None:
        self.journal.append_local([(f"{point.measurement}:{self.config.hub_id}:{point.time_ns}",
                                    point)])

    def _unhandled_since(self, runner: ConsumerRunner) -> Callable[[], datetime | None]:
        """When the first entry ``runner``'s consumer has not handled yet was recorded."""
        return lambda: self.journal.received_after(runner.state.cursor)

    def lag_s(self) -> float:
        """Age of the oldest journal entry some consumer has not handled; 0 when all are idle."""
        cursor = min((r.state.cursor for r in self.runners), default=self.journal.last_offset)
        since = self.journal.received_after(cursor)
        return 0.0 if since is None else max(0.0, time.time() - since.timestamp())

    def health_point(self) -> Point:
        """This process's ``hub_health`` point now (layout: ``hub/storage/points.py``)."""
        return health_point(self.config.hub_id, time.time_ns(), **self.metrics.totals(),
                            backlogs={r.consumer.name: r.backlog for r in self.runners},
                            lag_s=self.lag_s())

    def routes(self) -> list[BaseRoute]:
        # hub dlq replay: a command to this hub, for the dead letters of its own store
        routes: list[BaseRoute] = [replay_route(self.journal.path, self.ingest.replays.submit)]
        for consumer in self.consumers:
            routes.extend(consumer.routes())
        return routes

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports. ``ok``: connected to the broker and every supervised
        component well; ``problems`` names each component that is not (restarting or failed
        after a crash, with the exception; stalled), ``components`` has every one's state."""
        now = time.monotonic()
        problems = self.supervisor.problems()
        consumers = {}
        for r in self.runners:
            s = r.state
            consumers[s.name] = {
                "backlog": r.backlog, "processed": s.processed, "retries": s.retries,
                "failing": s.consecutive_failures > 0 or r.component_name in problems,
                "last_error": problems.get(r.component_name, s.last_error),
                "quarantined": s.quarantined,
                "busy_s": round(now - s.busy_since, 1) if s.busy_since else 0.0}
        connected = self.ingest.connected.is_set()
        fatal = self.supervisor.fatal_reason if self.supervisor.fatal.is_set() else ""
        return {"ok": connected and not problems and not fatal,
                "ingest_failed": problems.get("ingest", ""), "hub_id": self.config.hub_id,
                "mqtt_connected": connected,
                "mqtt_last_error": self.ingest.last_error,
                "problems": problems, "fatal": fatal,
                "components": self.supervisor.health(),
                "journal_last_offset": self.journal.last_offset, "consumers": consumers}

    def start(self) -> None:
        # the HTTP port first: taken, it stops the start-up before anything else has begun
        if self.config.http.enabled:
            token = self.config.http.token
            app = make_app(self.health, self.metrics, self.routes(),
                           token=token.get_secret_value() if token else None,
                           secrets=[self.config.client_id, *config_secrets(self.config)])
            self.web = WebServer(app, self.config.http.host, self.config.http.port,
                                 supervisor=self.supervisor)
            self.web.start()
        for runner in self.runners:
            runner.start()
        self.ingest.start()
        if self.health_recorder is not None:
            self.health_recorder.start()
        self._started = True
        log.info("hub.started", hub_id=self.config.hub_id, data_dir=str(self.config.data_dir),
                 consumers=[c.name for c in self.consumers],
                 shared_group=self.config.mqtt.shared_group)

    def stop(self) -> None:
        """Stop ingest (recording and acking what was received), then consumers, then web."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.supervisor.stop()  # no more restarts: every component ends with its owner's stop
        self.ingest.stop()
        if self.health_recorder is not None:
            self.health_recorder.stop()
        for runner in self.runners:
            runner.stop()
        for consumer in self.consumers:
            try:
                consumer.close()
            except Exception as exc:  # noqa: BLE001 - one bad close must not stop the rest
                log.warning("consumer.close_failed", consumer=consumer.name, error=repr(exc))
        if self.web is not None:
            self.web.stop()
        self.journal.close()
        if self._started:  # a failed start-up is reported by the caller, in one line
            log.info("hub.stopped", hub_id=self.config.hub_id)

    def __enter__(self) -> Hub:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
