"""Publishes the alert's JSON on ``{root}/_hub/alerts/{site}/{device}`` through the hub's own MQTT
connection (a callable the hub passes in; it raises when the publish is not acknowledged)."""

from __future__ import annotations

from collections.abc import Callable

from schemas.codec import encode
from schemas.errors import DeliveryError, ThermopipeError
from schemas.models import Alert
from schemas.topics import Topics


class MqttSender:
    def __init__(self, name: str, publish: Callable[[str, bytes], None], topic_root: str) -> None:
        self.name = name
        self._publish = publish
        self._topics = Topics(topic_root)

    def send(self, alert: Alert) -> None:
        topic = self._topics.for_alert(alert)
        try:
            self._publish(topic, encode(alert))
        except ThermopipeError:
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            raise DeliveryError(f"mqtt {self.name}: publish on {topic} failed: {exc}") from exc

    def close(self) -> None:
        """The connection belongs to the hub."""
