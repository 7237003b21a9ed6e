"""Pure pieces: stamping drafts, the clock-sync reading, reconnect backoff, the token bucket."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent import clock
from edge_agent.decide.types import Draft
from edge_agent.outbox import Outbox, OutboxSettings
from edge_agent.stamping import EventStamper
from program_support.backoff import TokenBucket, backoff_delay
from schemas.errors import InvalidIdentifier, InvalidMessage
from schemas.plain_messages import FaultEvent, ReadingEvent, SummaryEvent
from tests.agent_delivery.helpers import T0, draft


@pytest.fixture
def outbox(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Outbox(OutboxSettings(path=tmp_path / "o.db", min_free_bytes=0)) as ob:
        yield ob


def test_stamp_gives_identity_unique_ids_and_increasing_seq(outbox: Outbox) -> None:
    stamper = EventStamper("site1", "dev1", outbox)
    a = stamper.stamp(draft("reading", "s1"), clock_synced=True)
    b = stamper.stamp(draft("summary", "s2"), clock_synced=False)
    c = stamper.stamp(draft("fault", "s1"), clock_synced=True)
    assert isinstance(a, ReadingEvent) and isinstance(b, SummaryEvent)
    assert isinstance(c, FaultEvent)
    assert (a.site, a.device_id, a.sensor_id, b.sensor_id) == ("site1", "dev1", "s1", "s2")
    assert a.seq < b.seq < c.seq
    assert len({a.event_id, b.event_id, c.event_id}) == 3
    assert a.time == datetime.fromtimestamp(T0, UTC)
    assert (a.clock_synced, b.clock_synced, a.replayed) == (True, False, False)


def test_stamp_rejects_a_bad_draft_with_the_field_named(outbox: Outbox) -> None:
    stamper = EventStamper("site1", "dev1", outbox)
    with pytest.raises(InvalidMessage) as err:
        stamper.stamp(Draft("reading", "s1", T0, {"value": "hot", "unit": "degC"}), True)
    assert "value" in err.value.fields
    with pytest.raises(InvalidMessage):
        stamper.stamp(Draft("reading", "s1", T0, {"value": 1.0, "unit": "degC", "seq": 5}), True)
    with pytest.raises(InvalidMessage):
        stamper.stamp(Draft("reading", "bad/sensor", T0, {"value": 1.0, "unit": "degC"}), True)
    with pytest.raises(InvalidIdentifier):
        EventStamper("site+", "dev1", outbox)


def test_clock_sync_bits() -> None:
    assert clock.synced_from_adjtimex(0, 0)
    assert not clock.synced_from_adjtimex(clock.TIME_ERROR, 0)
    assert not clock.synced_from_adjtimex(0, clock.STA_UNSYNC)
    assert not clock.synced_from_adjtimex(-1, 0)
    assert isinstance(clock.clock_synchronised(), bool)
    assert clock.clock_synchronised() == clock.clock_synchronised()  # cached


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        cap = min(60.0, 1.0 * 2 ** attempt)
        delays = [backoff_delay(attempt, 1.0, 60.0, rng) for _ in range(200)]
        assert all(0.1 <= d <= cap for d in delays)
        if attempt >= 3:
            assert max(delays) > cap * 0.8 and min(delays) < cap * 0.3  # full jitter spreads


def test_token_bucket_paces_and_unlimited_means_unlimited() -> None:
    bucket = TokenBucket(100.0, burst=10.0, now=0.0)
    assert bucket.available(0.0) == 10
    bucket.take(10, 0.0)
    assert bucket.available(0.0) == 0
    assert bucket.wait_time(0.0) == pytest.approx(0.01)
    assert bucket.available(0.05) == 5
    assert bucket.available(10.0) == 10  # capped at the burst
    free = TokenBucket(0.0)
    assert free.available(0.0) > 10**6 and free.wait_time(0.0) == 0.0


def test_exponential_delay_doubles_from_the_first_retry_and_is_capped() -> None:
    from program_support.backoff import exponential_delay

    assert [exponential_delay(a, 0.5, 30) for a in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert exponential_delay(-3, 1, 10) == 1  # never below the first delay
    assert exponential_delay(10_000, 1) == 2.0 ** 60  # no overflow without a cap
