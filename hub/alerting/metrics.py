"""Counters of the alerting consumer: ``stats()`` for the hub's API, and the Prometheus counters
``thermopipe_alerts_*`` in the hub's registry, which ``/metrics`` serves (hub/metrics.py)."""

from __future__ import annotations

import threading
from collections import Counter as _Tally
from typing import Any

from prometheus_client import CollectorRegistry, Counter


class AlertingStats:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._lock = threading.Lock()
        self._tally: _Tally[str] = _Tally()
        # a registry per hub (tests run several hubs in one process); None: counted, not exported
        r = registry if registry is not None else CollectorRegistry()
        self._sent = Counter("thermopipe_alerts_sent", "Alert notifications delivered",
                             ["notifier"], registry=r)
        self._failed = Counter("thermopipe_alerts_failed",
                               "Alert delivery attempts that failed (retried later)",
                               ["notifier"], registry=r)
        self._given_up = Counter("thermopipe_alerts_given_up",
                                 "Alert notifications given up (rejected or too old)",
                                 ["notifier"], registry=r)
        self._silenced = Counter("thermopipe_alerts_silenced",
                                 "Firing alerts held back by a silence", registry=r)
        self._flaps = Counter("thermopipe_alerts_offline_flaps_suppressed",
                              "Device-offline conditions cancelled: back within offline_for_s",
                              registry=r)
        self._decided = Counter("thermopipe_alerts_decided",
                                "Alerts decided, by status and lateness", ["status", "late"],
                                registry=r)

    def _add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._tally[key] += n

    def sent(self, notifier: str) -> None:
        self._add(f"alerts_sent.{notifier}")
        self._sent.labels(notifier).inc()

    def failed(self, notifier: str) -> None:
        self._add(f"alerts_failed.{notifier}")
        self._failed.labels(notifier).inc()

    def given_up(self, notifier: str) -> None:
        self._add(f"alerts_given_up.{notifier}")
        self._given_up.labels(notifier).inc()

    def decided(self, status: str, late: bool) -> None:
        self._add(f"alerts_decided.{status}{'.late' if late else ''}")
        self._decided.labels(status, str(late).lower()).inc()

    def count(self, what: str, n: int) -> None:
        if n:
            self._add(what, n)
            if what == "silenced":
                self._silenced.inc(n)
            elif what == "offline_flaps_suppressed":
                self._flaps.inc(n)

    def snapshot(self) -> dict[str, Any]:
        """{'alerts_sent': {'webhook': 3}, 'silenced': 1, ...}: flat and nested by notifier."""
        out: dict[str, Any] = {}
        with self._lock:
            items = list(self._tally.items())
        for key, value in items:
            head, _, tail = key.partition(".")
            if tail:
                out.setdefault(head, {})[tail] = value
            else:
                out[head] = value
        return out
