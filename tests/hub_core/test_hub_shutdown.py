"""Shutting the hub down with a paced consumer (storage-like ``max_wait_s``) waiting for company:
the stop wakes it at once, and a consumer thread that outlives the journal gets a JournalError,
never a closed SQLite connection under its feet (that crashed the whole process once: a paced
consumer waited 30 s, the hub's 10 s join gave up and closed the journal under it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.app import Hub
from hub.journal import Journal, JournalError
from schemas.codec import encode
from schemas.topics import Topics
from tests.hub_core.helpers import Publisher, hub_config, reading, wait_until
from tests.hub_core.test_ingest_latency import Stamper

pytestmark = [pytest.mark.servers]


def test_stop_wakes_a_paced_consumer_waiting_for_a_batch_to_fill(
        tmp_path: Path, mosquitto, topic_root) -> None:
    topics = Topics(topic_root)
    paced = Stamper("paced", max_wait_s=60.0)
    config = hub_config(tmp_path, mosquitto, topic_root, journal={"synchronous": "normal"})
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        hub = Hub(config, extra_consumers=[paced])
        with hub:
            wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
            first, second = reading(1), reading(2)
            pub.publish(topics.for_event(first), encode(first))
            paced.wait(first.event_id, 10)  # the first goes at once; the second is paced
            pub.publish(topics.for_event(second), encode(second))
            wait_until(lambda: hub.journal.last_offset >= 2, 10, what="second journaled")
        # stopped within the runner's 10 s join, not after the 60 s pacing: nothing left running
        assert [r.consumer.name for r in hub.runners if r.alive] == []
        assert second.event_id in paced.handed  # the partial batch went over on the way out
    finally:
        pub.close()


def test_a_closed_journal_refuses_instead_of_crashing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "hub.sqlite3")
    journal.register("late")
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.commit_cursor("late", 1)
    with pytest.raises(JournalError, match="closed"):
        journal.read(0, 10)
    assert journal.wait_for(0, 0.01) is False
