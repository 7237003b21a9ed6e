"""Writes each alert as one structured log line (event ``alert``)."""

from __future__ import annotations

import structlog

from schemas.models import Alert

log = structlog.get_logger("hub.alerting.log")


class LogSender:
    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, alert: Alert) -> None:
        fields = alert.model_dump(mode="json", exclude={"kind"})
        level = "warning" if alert.status == "firing" and not alert.late else "info"
        getattr(log, level)("alert", notifier=self.name, **fields)

    def close(self) -> None:
        """Nothing to release."""
