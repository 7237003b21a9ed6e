"""Building the configured notifiers: the one module that knows every kind."""

from __future__ import annotations

from collections.abc import Callable

from hub.alerting.notifiers.base import Notifier
from hub.config.alerting import (
    AlertingConfig,
    EmailNotifier,
    LogNotifier,
    MqttNotifier,
    WebhookNotifier,
)
from schemas.errors import ConfigError


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
