"""The notifier interface. Each notifier module imports this one; building the configured
notifiers lives in ``build.py``, which imports them, so the arrows run one way."""

from __future__ import annotations

from typing import Protocol

from schemas.errors import DeliveryError
from schemas.models import Alert


class NotifierRejected(DeliveryError):
    """The receiver refused the alert for good (e.g. HTTP 400): retrying will not help."""


class Notifier(Protocol):
    name: str

    def send(self, alert: Alert) -> None:
        """Deliver one alert; raise ``DeliveryError`` (retry later) or ``NotifierRejected``."""

    def close(self) -> None:
        """Stop any wait in progress and release connections."""
