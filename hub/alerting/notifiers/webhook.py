"""JSON POST of the alert, with ``Idempotency-Key: <alert_id>``.

The same alert always carries the same key (also on a resend after a hub crash), so a receiver
that remembers keys it has seen drops the rare duplicate. 2xx is delivered; 408, 429 and 5xx are
retried here ``max_retries`` times with exponential backoff, then left to the outbox (which retries
later); other 4xx are a permanent rejection. Every request is bounded by ``timeout_s``, so a hung
receiver only delays this notifier's own queue.
"""

from __future__ import annotations

import threading

import httpx
import structlog

from hub.alerting.notifiers.base import NotifierRejected
from hub.config.alerting import WebhookNotifier
from program_support.backoff import exponential_delay
from schemas.errors import DeliveryError
from schemas.models import Alert

log = structlog.get_logger("hub.alerting.webhook")
RETRYABLE_4XX = (408, 425, 429)


class WebhookSender:
    def __init__(self, name: str, config: WebhookNotifier) -> None:
        self.name = name
        self.config = config
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(config.timeout_s),
                                    follow_redirects=False)

    def send(self, alert: Alert) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "thermopipe-hub",
                   **self.config.headers, "Idempotency-Key": alert.alert_id}
        body = alert.model_dump_json().encode()
        last = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt and self._stop.wait(exponential_delay(attempt - 1,
                                                             self.config.retry_backoff_s)):
                break  # closing: leave it to the outbox
            try:
                resp = self._client.post(self.config.url, content=body, headers=headers)
            except httpx.TimeoutException as exc:
                last = f"timed out after {self.config.timeout_s:g}s ({type(exc).__name__})"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.is_success:
                    return
                last = f"HTTP {resp.status_code}"
                if 400 <= resp.status_code < 500 and resp.status_code not in RETRYABLE_4XX:
                    raise NotifierRejected(f"webhook {self.name} refused the alert: {last} "
                                           f"{resp.text[:200]!r}")
            log.warning("alerting.webhook_attempt_failed", notifier=self.name,
                        alert_id=alert.alert_id, attempt=attempt + 1, error=last)
        raise DeliveryError(f"webhook {self.name}: {last}")

    def close(self) -> None:
        self._stop.set()
        self._client.close()
