"""A stand-in hub process for the SIGKILL test: an AlertingConsumer fed a fixed event stream.

    python3 -m tests.hub_alerting.alert_child STATE_DIR WEBHOOK_URL

Handles the stream in batches (as the dispatcher would, from the start: the worst case of a
redelivery after a crash), prints ``handled N`` after each, waits until every alert is delivered,
prints ``done``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hub.alerting.consumer import AlertingConsumer
from hub.config.alerting import AlertingConfig
from hub.consumers.base import Envelope
from tests.hub_alerting.helpers import Feed, env


def config(url: str) -> AlertingConfig:
    return AlertingConfig.model_validate({
        "notifiers": {"hook": {"type": "webhook", "url": url, "timeout_s": 30,
                               "max_retries": 0}, "log": {"type": "log"}},
        "rules": [{"name": "all", "match": {"severity_at_least": "warning"},
                   "notifiers": ["hook", "log"]}]})


def events() -> list[Envelope]:
    out: list[Envelope] = []
    for i, device in enumerate(("d1", "d2", "d3")):
        f = Feed(device)
        out += [env(f.state("t1", "high"), offset=10 * i + 1),
                env(f.reading("t1", 33.0), offset=10 * i + 2),
                env(f.fault("t2", "disconnected", True), offset=10 * i + 3),
                env(f.state("t1", "normal", prev="high"), offset=10 * i + 4)]
    return out


def main() -> int:
    state_dir, url = Path(sys.argv[1]), sys.argv[2]
    consumer = AlertingConsumer(config(url), state_dir=state_dir)
    stream = events()
    for n, start in enumerate(range(0, len(stream), 2), start=1):
        consumer.handle(stream[start:start + 2])
        print(f"handled {n}", flush=True)
        time.sleep(0.3)
    ok = consumer.wait_delivered(60)
    print("done" if ok else "undelivered", flush=True)
    consumer.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
