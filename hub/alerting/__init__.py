"""Alerting: rules, grouping, silences, late events, and durable, idempotent notifications.

``AlertingConsumer`` is the hub consumer; ``AlertEngine`` the pure decisions behind it.
"""

from hub.alerting.config import AlertingConfig
from hub.alerting.consumer import AlertingConsumer
from hub.alerting.engine import AlertEngine

__all__ = ["AlertEngine", "AlertingConfig", "AlertingConsumer"]
