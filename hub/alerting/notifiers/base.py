"""The notifier interface, and building the configured notifiers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hub.alerting.config import (
    AlertingConfig,
    EmailNotifier,
    LogNotifier,
    MqttNotifier,
    WebhookNotifier,
)
from schemas.errors import ConfigError, DeliveryError
from schemas.models import Alert


class NotifierRejected(DeliveryError):
    """The receiver refused the alert for good (e.g. HTTP 400): retrying will not help."""


class Notifier(Protocol):
    name: str

    def send(self, alert: Alert) -> None:
        """Deliver one alert; raise ``DeliveryError`` (retry later) or ``NotifierRejected``."""

    def close(self) -> None:
        """Stop any wait in progress and release connections."""


def build_notifiers(config: AlertingConfig, mqtt_publish: Callable[[str, bytes], None] | None,
                    topic_root: str) -> dict[str, Notifier]:
    # each kind is imported only when configured (the webhook notifier needs httpx)
    out: dict[str, Notifier] = {}
    for name, cfg in config.notifiers.items():
        if isinstance(cfg, WebhookNotifier):
            from hub.alerting.notifiers.webhook import WebhookSender

            out[name] = WebhookSender(name, cfg)
        elif isinstance(cfg, EmailNotifier):
            from hub.alerting.notifiers.email import EmailSender

            out[name] = EmailSender(name, cfg)
        elif isinstance(cfg, MqttNotifier):
            from hub.alerting.notifiers.mqtt import MqttSender

            if mqtt_publish is None:
                raise ConfigError("alerting", [(f"notifiers.{name}",
                                                "an mqtt notifier needs the hub's MQTT "
                                                "connection, and none was given")])
            out[name] = MqttSender(name, mqtt_publish, topic_root)
        elif isinstance(cfg, LogNotifier):
            from hub.alerting.notifiers.log import LogSender

            out[name] = LogSender(name)
    return out
