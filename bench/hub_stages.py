"""Where a hub process spends its time per event, stage by stage, in one thread (no servers).

    python bench/hub_stages.py [--events 30000] [--rounds 3] [--profile FILE]

The same backlog as bench/hub_bench.py (JSON readings of 16 devices x 2 sensors) goes through
the hub's own code, in batches of ``BATCH_MAX`` as a backlog arrives, one stage after the other
in this thread, each timed with ``time.thread_time`` (the CPU this thread spent: on a machine
shared with other work, wall time says more about the neighbours than about the hub; the
journal's fsync wait is therefore not counted), the best and the median of ``--rounds`` passes,
each with a fresh journal in a temporary directory:

- receive: PUBLISH packets read by the hub's client (``hub.mqtt_client.BufferedClient``, from a
  socket-like object holding the batch's bytes), queued by ingest and taken as one batch;
- decide: ``hub.ingest_decision.decide_batch`` (topic, decode + validation, identity caps,
  dedup look-up in the journal, late / out-of-order flags);
- journal: ``Journal.record`` (one SQLite transaction, ``synchronous = "full"``: its fsync
  included) and the tail handed to the consumers;
- ingest rest: receipts noted, ack packet, counters (``Ingest.process`` minus the two above);
- storage encode: line protocol of every envelope (not the HTTP write: InfluxDB's side);
- alerting: ``AlertingConsumer.handle`` (the default rule; no crossing in this backlog);
- dashboard: ``DashboardConsumer.handle``;
- dispatch: a runner's bookkeeping per batch (``ConsumerRunner._handled``) for the 3 consumers.

It does not measure what the threads cost each other (the GIL hand-overs, paho's loop and
socket reads, the HTTP write): bench/hub_bench.py measures the whole; this says which part of
the hub's own work is worth making cheaper. ``--profile FILE`` writes a cProfile of one pass.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hub_bench import add_random_ids_option, make_messages  # beside this script

from hub.app import Hub
from hub.config import HubConfig
from hub.consumers.base import Envelope
from hub.ingest import BATCH_MAX
from hub.mqtt_client import BufferedSocket
from hub.storage.lines import line_for

STAGES = ("receive", "decide", "journal", "ingest rest", "storage encode", "alerting",
          "dashboard", "dispatch")


def publish_packet(topic: str, payload: bytes, mid: int) -> bytes:
    """An MQTT 5 PUBLISH (QoS 1, no properties) as the broker forwards it."""
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + mid.to_bytes(2, "big") + b"\x00" + payload
    size, length = len(body), bytearray()
    while True:
        size, digit = divmod(size, 128)
        length.append(digit | (0x80 if size else 0))
        if not size:
            return bytes([0x32]) + bytes(length) + body


class Wire:
    """The broker's side of the socket: what the hub's client reads, in 64 KiB reads."""

    def __init__(self) -> None:
        self.data = b""
        self.pos = 0

    def recv(self, size: int) -> bytes:
        if self.pos >= len(self.data):
            raise BlockingIOError
        out = self.data[self.pos:self.pos + size]
        self.pos += len(out)
        return out

    def pending(self) -> int:
        return 0

    def setsockopt(self, *_option: int) -> None:
        """The quick ACK after each read: one system call per 64 KiB read on a real socket
        (a few hundred messages), left out here."""

    def close(self) -> None:
        pass


def one_pass(messages: list[tuple[str, bytes]], workdir: Path) -> dict[str, float]:
    config = HubConfig.model_validate({
        "hub_id": "stages", "data_dir": str(workdir),
        "mqtt": {"host": "127.0.0.1", "port": 1, "topic_root": "bench", "client_id": "stages"},
        "storage": {"enabled": True, "mode": "v1", "url": "http://127.0.0.1:1",
                    "database": "x"},
        "alerting": {"state_dir": str(workdir / "alerting")},
        "http": {"enabled": False}})
    hub = Hub(config)
    gc.freeze()  # as `hub run` does (hub/cli.py)
    gc.set_threshold(20_000, 20, 50)
    ingest = hub.ingest
    alerting, dashboard = hub.consumers[1:3]  # storage's part: its line protocol only

    spent = dict.fromkeys(STAGES, 0.0)
    packets = [publish_packet(t, p, (i % 65535) + 1) for i, (t, p) in enumerate(messages)]
    wire = Wire()
    client = ingest._client
    client._sock = BufferedSocket(wire)  # as if connected: paho reads the wire above
    record = hub.journal.record
    envelopes: list[Any] = []

    def timed_record(batch: Any) -> Any:
        t = time.thread_time()
        out = record(batch)
        spent["journal"] += time.thread_time() - t
        envelopes.extend(out)
        return out

    hub.journal.record = timed_record  # type: ignore[method-assign]
    import hub.ingest as ingest_module

    decide_batch = ingest_module.decide_batch

    def timed_decide(*a: Any, **kw: Any) -> Any:
        t = time.thread_time()
        out = decide_batch(*a, **kw)
        spent["decide"] += time.thread_time() - t
        return out

    ingest_module.decide_batch = timed_decide  # type: ignore[assignment]
    for runner in hub.runners:
        runner.state.cursor = runner._committed = hub.journal.register(runner.consumer.name)
    try:
        for start in range(0, len(packets), BATCH_MAX):
            t0 = time.thread_time()
            wire.data, wire.pos = b"".join(packets[start:start + BATCH_MAX]), 0
            while client.loop_read() == 0 and client._sock.pending():
                pass
            batch = ingest._take_batch()
            assert len(batch) == min(BATCH_MAX, len(packets) - start), len(batch)
            t1 = time.thread_time()
            spent["receive"] += t1 - t0
            before = spent["decide"] + spent["journal"]
            envelopes.clear()
            ingest.process(batch)
            spent["ingest rest"] += (time.thread_time() - t1
                                     - (spent["decide"] + spent["journal"] - before))
            events = [e for e in envelopes if type(e) is Envelope]
            t = time.thread_time()
            for e in events:
                line_for(e.message)
            t2 = time.thread_time()
            spent["storage encode"] += t2 - t
            alerting.handle(events)
            t3 = time.thread_time()
            spent["alerting"] += t3 - t2
            dashboard.handle(events)
            t4 = time.thread_time()
            spent["dashboard"] += t4 - t3
            for runner in hub.runners[:3]:
                runner._handled(events, events[-1].offset)
            spent["dispatch"] += time.thread_time() - t4
    finally:
        client._sock = None
        ingest_module.decide_batch = decide_batch  # type: ignore[assignment]
        for consumer in hub.consumers:
            consumer.close()
        hub.journal.close()
    return spent


gc_spent = [0.0]
gc_counts = [0, 0, 0]
_gc_start = [0.0]


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_start[0] = time.thread_time()
    else:
        gc_spent[0] += time.thread_time() - _gc_start[0]
        gc_counts[info["generation"]] += 1


def main() -> None:
    gc.callbacks.append(_gc_timer)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    add_random_ids_option(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of one pass to this file")
    args = parser.parse_args()
    messages = make_messages(args.events, random_ids=args.random_ids)
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="hub-stages-") as tmp:
            if args.profile and r == 0:
                prof = cProfile.Profile()
                prof.enable()
                rounds.append(one_pass(messages, Path(tmp)))
                prof.disable()
                prof.dump_stats(args.profile)
                continue
            rounds.append(one_pass(messages, Path(tmp)))
    n = args.events
    print(f"garbage collection: {gc_spent[0] / max(1, len(rounds)) / n * 1e6:.2f} us per event "
          f"(in the stages above), collections per generation: {gc_counts}")
    timed = rounds[1:] if args.profile and len(rounds) > 1 else rounds
    print(f"{n:,} events, {len(timed)} passes; us per event (best / median of the passes)")
    total_best = total_med = 0.0
    for stage in STAGES:
        values = [p[stage] / n * 1e6 for p in timed]
        best, med = min(values), statistics.median(values)
        total_best += best
        total_med += med
        print(f"  {stage:<15} {best:7.2f}  {med:7.2f}")
    print(f"  {'total':<15} {total_best:7.2f}  {total_med:7.2f}")


if __name__ == "__main__":
    main()
