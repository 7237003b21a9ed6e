"""Batching never waits when nothing else is queued (issue 16): a lone event is recorded and
handed to the consumers at once, and a consumer's ``max_wait_s`` paces partial batches instead
of holding a lone event back (for the whole interval only while the consumer is behind).

Timing assertions here have wide margins on purpose (the machine is shared): the strict figures
are in ``bench/latency_bench.py``. Each check either takes the best of many tries (it fails only
if every try is slow) or is a lower bound (load only makes it later).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from hub.app import Hub
from hub.consumers.base import ConsumerDefaults, Envelope
from schemas.codec import encode
from schemas.topics import Topics
from tests.hub_core.helpers import Publisher, hub_config, reading, wait_until

pytestmark = [pytest.mark.servers]


class Stamper(ConsumerDefaults):
    """A consumer that notes when (perf_counter) it was handed each event."""

    def __init__(self, name: str, max_wait_s: float = 0.0) -> None:
        self.name = name
        self.max_wait_s = max_wait_s
        self.handed: dict[str, float] = {}
        self.cond = threading.Condition()

    def handle(self, batch: Sequence[Envelope]) -> None:
        now = time.perf_counter()
        with self.cond:
            for env in batch:
                self.handed[env.message.event_id] = now
            self.cond.notify_all()

    def wait(self, event_id: str, timeout: float) -> float:
        with self.cond:
            assert self.cond.wait_for(lambda: event_id in self.handed, timeout), event_id
            return self.handed[event_id]

    def close(self) -> None:
        pass


def test_a_lone_event_is_handed_over_without_waiting_for_a_batch(
        tmp_path: Path, mosquitto, topic_root) -> None:
    # Ingest used to wait 50 ms for a batch to fill, so no lone event ever took less than
    # 50 ms from publish to a consumer; now it takes about as long as the commit. The best of
    # 20 lone events under 40 ms fails only if every one of them is slow. The journal's
    # synchronous=normal keeps the disk out of it (an fsync on a busy disk is not the subject).
    topics = Topics(topic_root)
    fast = Stamper("fast")
    paced = Stamper("paced", max_wait_s=300.0)  # storage-like pacing, far longer than the test
    config = hub_config(tmp_path, mosquitto, topic_root, journal={"synchronous": "normal"})
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        with Hub(config, extra_consumers=[fast, paced]) as hub:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
            took: list[float] = []
            for seq in range(1, 21):
                event = reading(seq)
                t0 = time.perf_counter()
                pub.publish(topics.for_event(event), encode(event))
                took.append(fast.wait(event.event_id, 10) - t0)
                time.sleep(0.02)
            # the first event after a quiet spell reaches a paced consumer at once, not after
            # its 300 s; the later ones are paced (30 s once it has caught up: IDLE_PACING_FRACTION)
            first_paced = paced.wait(event_id=next(iter(fast.handed)), timeout=10)
            assert len(paced.handed) == 1
    finally:
        pub.close()
    assert min(took) < 0.040, sorted(round(t * 1000, 1) for t in took)
    assert first_paced - min(fast.handed.values()) < 5.0


class GatedStamper(Stamper):
    """A Stamper whose first ``len(gates)`` calls of ``handle`` hold until their gate is set:
    a write still in flight."""

    def __init__(self, name: str, max_wait_s: float, gated_calls: int = 2) -> None:
        super().__init__(name, max_wait_s)
        self.gates = [threading.Event() for _ in range(gated_calls)]
        self.calls = 0

    def handle(self, batch: Sequence[Envelope]) -> None:
        super().handle(batch)
        self.calls += 1
        if self.calls <= len(self.gates):
            assert self.gates[self.calls - 1].wait(30)


def test_a_paced_consumer_that_is_behind_gets_partial_batches_once_per_max_wait(
        tmp_path: Path, mosquitto, topic_root) -> None:
    # Behind (events came in while it handled a batch of more than IDLE_BATCH_MAX): the next
    # partial batch waits out the interval (fewer, larger writes under load). Otherwise (one
    # event that came in during a small write, or one after it has caught up) it waits only
    # IDLE_PACING_FRACTION of it: storage lag with no load (issue 26).
    topics = Topics(topic_root)
    paced = GatedStamper("paced", max_wait_s=3.0)
    config = hub_config(tmp_path, mosquitto, topic_root, journal={"synchronous": "normal"})
    events = [reading(seq) for seq in range(1, 10)]
    pub = Publisher(mosquitto.host, mosquitto.port)

    def journaled(hub: Hub, count: int) -> bool:
        return sum(type(e) is Envelope for e in hub.journal.read(0, 100)) >= count

    try:
        with Hub(config, extra_consumers=[paced]) as hub:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
            pub.publish(topics.for_event(events[0]), encode(events[0]))
            t1 = paced.wait(events[0].event_id, 10)  # alone, at once; its handle holds
            for event in events[1:7]:  # six come in during that small write
                pub.publish(topics.for_event(event), encode(event))
            wait_until(lambda: journaled(hub, 7), 10, what="seven journaled")
            paced.gates[0].set()
            t2 = paced.wait(events[6].event_id, 10)  # the six, in one batch; it holds
            pub.publish(topics.for_event(events[7]), encode(events[7]))  # during that write
            wait_until(lambda: journaled(hub, 8), 10, what="eight journaled")
            paced.gates[1].set()
            t3 = paced.wait(events[7].event_id, 10)
            pub.publish(topics.for_event(events[8]), encode(events[8]))  # it has caught up
            t4 = paced.wait(events[8].event_id, 10)
    finally:
        pub.close()
    assert paced.handed[events[1].event_id] == t2  # the six went over together
    # lower bounds: a loaded machine can only make a hand-over later
    assert t3 - t2 >= 2.9  # behind after a batch of six: the whole interval
    assert t4 - t3 >= 0.29  # caught up: IDLE_PACING_FRACTION (0.1) of 3 s
    # not behind, so not the whole interval (2.7 s of margin for a slow machine): after a
    # batch of one with an event waiting, and after it has caught up
    assert t2 - t1 < 3.0, t2 - t1
    assert t4 - t3 < 3.0, t4 - t3
