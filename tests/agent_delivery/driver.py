"""A small agent stand-in for the crash tests: stamp, submit, flush, report, publish.

    python -m tests.agent_delivery.driver --host H --port P --root R --db PATH [--events N]
        [--batch B] [--interval S] [--drain]

After each batch is committed (``Delivery.flush`` returned) it prints ``durable seq:id ...`` on
stdout, so the parent knows exactly which events the outbox promised to deliver before it sends
SIGKILL. With ``--drain`` it waits until the outbox is empty, prints ``drained`` and stops.
Logs go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import structlog

from edge_agent.delivery import Delivery
from edge_agent.mqtt_link import MqttSettings
from edge_agent.outbox import Outbox, OutboxSettings
from edge_agent.stamping import EventStamper
from schemas.plain_messages import SensorInfo
from tests.agent_delivery.helpers import draft


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--device", default="dev1")
    p.add_argument("--events", type=int, default=0)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--drain", action="store_true")
    args = p.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    outbox = Outbox(OutboxSettings(path=args.db, min_free_bytes=0, backlog_rate_per_s=500))
    stamper = EventStamper("site1", args.device, outbox)
    sensors = [SensorInfo(sensor_id="s1", unit="degC", source="simulator")]
    delivery = Delivery(outbox, MqttSettings(host=args.host, port=args.port, topic_root=args.root,
                                             reconnect_min_s=0.2, reconnect_max_s=1.0,
                                             receipts="off"),
                        "site1", args.device,
                        lambda: {"agent_version": "test", "sensors": sensors})
    delivery.start()
    made = 0
    value = 0.0
    while made < args.events:
        batch = []
        for _ in range(min(args.batch, args.events - made)):
            value += 0.1
            batch.append(stamper.stamp(draft("reading", "s1", time.time(), value), True))
        delivery.submit(batch)
        delivery.flush()
        made += len(batch)
        sys.stdout.write("durable " + " ".join(f"{e.seq}:{e.event_id}" for e in batch) + "\n")
        sys.stdout.flush()
        time.sleep(args.interval)
    if args.drain:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            c = delivery.counters()
            if c["outbox_depth"] == 0 and c["outbox_staged"] == 0 and c["inflight"] == 0:
                break
            time.sleep(0.1)
        sys.stdout.write(f"drained {delivery.counters()}\n")
        sys.stdout.flush()
    delivery.stop(5)
    outbox.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
