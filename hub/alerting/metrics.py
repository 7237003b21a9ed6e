"""Counters of the alerting consumer: ``stats()`` for the hub's API, and Prometheus counters in the
default registry (``thermopipe_alerts_*``) for ``/metrics``."""

from __future__ import annotations

import threading
from collections import Counter as _Tally
from typing import Any

from prometheus_client import Counter

ALERTS_SENT = Counter("thermopipe_alerts_sent", "Alert notifications delivered", ["notifier"])
ALERTS_FAILED = Counter("thermopipe_alerts_failed",
                        "Alert delivery attempts that failed (retried later)", ["notifier"])
ALERTS_GIVEN_UP = Counter("thermopipe_alerts_given_up",
                          "Alert notifications given up (rejected or too old)", ["notifier"])
ALERTS_SILENCED = Counter("thermopipe_alerts_silenced", "Firing alerts held back by a silence")
ALERTS_FLAPS = Counter("thermopipe_alerts_offline_flaps_suppressed",
                       "Device-offline conditions cancelled: back within offline_for_s")
ALERTS_DECIDED = Counter("thermopipe_alerts_decided", "Alerts decided, by status and lateness",
                         ["status", "late"])


class AlertingStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tally: _Tally[str] = _Tally()

    def _add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._tally[key] += n

    def sent(self, notifier: str) -> None:
        self._add(f"alerts_sent.{notifier}")
        ALERTS_SENT.labels(notifier).inc()

    def failed(self, notifier: str) -> None:
        self._add(f"alerts_failed.{notifier}")
        ALERTS_FAILED.labels(notifier).inc()

    def given_up(self, notifier: str) -> None:
        self._add(f"alerts_given_up.{notifier}")
        ALERTS_GIVEN_UP.labels(notifier).inc()

    def decided(self, status: str, late: bool) -> None:
        self._add(f"alerts_decided.{status}{'.late' if late else ''}")
        ALERTS_DECIDED.labels(status, str(late).lower()).inc()

    def count(self, what: str, n: int) -> None:
        if n:
            self._add(what, n)
            if what == "silenced":
                ALERTS_SILENCED.inc(n)
            elif what == "offline_flaps_suppressed":
                ALERTS_FLAPS.inc(n)

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
