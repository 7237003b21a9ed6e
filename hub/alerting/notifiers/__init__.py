"""Where alerts go. Each notifier sends one alert per call and raises ``DeliveryError`` when it
could not (the outbox retries later) or ``NotifierRejected`` when retrying cannot help."""

from hub.alerting.notifiers.base import Notifier, NotifierRejected
from hub.alerting.notifiers.build import build_notifiers

__all__ = ["Notifier", "NotifierRejected", "build_notifiers"]
