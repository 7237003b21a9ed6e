"""The hub's batch decision without a broker or a database: random batches of good events, repeats
(within the batch and of ids the journal holds), undecodable and spoofed payloads and dead-letter
replays, checked against hub/ingest_decision.py's rules. The real-broker ingest tests stay."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.ingest_decision import decide_batch, rejected_seq
from hub.validate import OrderTracker
from schemas.codec import encode
from schemas.topics import Topics
from tests.hub_core.helpers import BASE_TIME, reading

TOPICS = Topics("t")


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    received_at: float
    replay_row: int | None = None


# one message: (kind, id number, device, sensor, seq, replay row or None, replayed flag)
MESSAGES = st.tuples(
    st.sampled_from(["good", "good", "good", "garbage", "spoofed", "own"]),
    st.integers(0, 15), st.sampled_from(["d1", "d2"]), st.sampled_from(["t1", "t2"]),
    st.integers(0, 30), st.one_of(st.none(), st.integers(1, 5)), st.booleans())


def build(spec: tuple[str, int, str, str, int, int | None, bool]) -> tuple[Msg, str | None]:
    kind, n, device, sensor, seq, replay_row, replayed = spec
    received = (BASE_TIME + timedelta(seconds=seq + 2)).timestamp()
    event = reading(seq, device=device, sensor=sensor, event_id=f"event-{n:04d}", replayed=replayed)
    topic = TOPICS.for_event(event)
    if kind == "garbage":
        return Msg(topic, b"{not json", received, replay_row), None
    if kind == "spoofed":  # a device publishing as another
        other = TOPICS.for_event(event.model_copy(update={"device_id": "intruder"}))
        return Msg(other, encode(event), received, replay_row), None
    if kind == "own":  # a hub's alert for a site named "event" (matches t/+/+/event/+)
        return Msg(f"t/_hub/alerts/event/{device}", encode(event), received, replay_row), None
    return Msg(topic, encode(event), received, replay_row), event.event_id


@settings(max_examples=200, deadline=None)
@given(specs=st.lists(MESSAGES, max_size=40),
       known=st.sets(st.integers(0, 15).map(lambda n: f"event-{n:04d}"), max_size=6),
       marks=st.dictionaries(st.tuples(st.just("s1"), st.sampled_from(["d1", "d2"]),
                                       st.sampled_from(["t1", "t2"])), st.integers(0, 30)))
def test_every_message_ends_in_exactly_one_place(
        specs: list[tuple[str, int, str, str, int, int | None, bool]], known: set[str],
        marks: dict[tuple[str, str, str], int]) -> None:
    built = [build(s) for s in specs]
    batch = [m for m, _ in built]
    ids = itertools.count()
    asked: list[list[str]] = []

    def known_ids(candidates: list[str]) -> set[str]:
        asked.append(candidates)
        return known & set(candidates)

    decision = decide_batch(batch, TOPICS, max_size=4096, late_after_s=600,
                            tracker=OrderTracker(marks), known_ids=known_ids,
                            new_id=lambda: f"dl{next(ids)}")
    good = [(m, eid) for m, eid in built if eid is not None]
    own = [m for m in batch if m.replay_row is None and TOPICS.is_hub_topic(m.topic)]
    live = [m for m in batch if m.replay_row is None and not TOPICS.is_hub_topic(m.topic)]
    replay_items = [m for m in batch if m.replay_row is not None]

    # the journal is asked once, for exactly the decodable messages' ids
    assert asked == [[eid for _, eid in good]]
    # live messages: pending + duplicates + dead letters == all of them; replays get an outcome
    live_good = sum(1 for m, _ in good if m.replay_row is None)
    live_dups = decision.duplicates - sum(
        1 for o in decision.replays if o.reason == "accepted on replay (already stored)")
    assert decision.live == len(live)
    assert decision.own == len(own)  # the hubs' own topics: neither events nor dead letters
    assert len(decision.dead) == len(live) - live_good
    assert len(decision.replays) == len(replay_items)
    assert sum(o.accepted for o in decision.replays) == sum(
        1 for m, _ in good if m.replay_row is not None)
    assert len(decision.pending) + decision.duplicates == len(good)
    assert live_dups >= 0
    # each id is stored at most once, never one the journal has, and becomes a dedup id
    pending_ids = [p.message.event_id for p in decision.pending]
    assert len(pending_ids) == len(set(pending_ids))
    assert not set(pending_ids) & known
    assert [eid for eid, _ in decision.seen] == pending_ids
    # first copy wins: the pending one is the batch's first copy of that id
    firsts = {}
    for m, eid in good:
        firsts.setdefault(eid, m)
    for p in decision.pending:
        assert p.payload == firsts[p.message.event_id].payload
    # out of order: a seq not above the highest already accepted for its sensor
    high = dict(marks)
    for p in decision.pending:
        key = (p.message.site, p.message.device_id, p.message.sensor_id)
        assert p.out_of_order == (key in high and p.message.seq <= high[key])
        if not p.out_of_order:
            high[key] = p.message.seq
        assert p.late == p.message.replayed  # synced clocks, received 2 s after: late = replayed
    assert decision.seq_marks == {k: v for k, v in high.items() if marks.get(k) != v}
    # dead letters keep their reason and the raw bytes
    for d in decision.dead:
        assert d.reason and d.reason_code in ("invalid", "spoofed", "unknown_encoding")
        assert d.payload in {m.payload for m in live}


# ---- refused seqs and internal errors (issue 21) -----------------------------------------------

def _decide(batch: list[Msg], known: frozenset[str] = frozenset()) -> Any:
    ids = itertools.count()
    return decide_batch(batch, TOPICS, max_size=65536, late_after_s=600,
                        tracker=OrderTracker(), known_ids=lambda c: set(c) & known,
                        new_id=lambda: f"dl{next(ids)}")


def test_the_same_device_id_at_two_sites_is_not_out_of_order_against_the_other() -> None:
    """A device id is unique within its site: south's pi-01 starting at seq 1 is not behind
    north's pi-01 at 10 (the marks were kept per device and sensor only: every event of one
    was flagged out of order, counted and shown so)."""
    events = [reading(10, site="north", device="pi-01"), reading(1, site="south", device="pi-01"),
              reading(9, site="north", device="pi-01"), reading(2, site="south", device="pi-01")]
    decision = _decide([Msg(TOPICS.for_event(e), encode(e), 0.0) for e in events])
    assert [p.out_of_order for p in decision.pending] == [False, False, True, False]
    assert decision.seq_marks == {("north", "pi-01", "t1"): 10, ("south", "pi-01", "t1"): 2}


def test_a_refused_payload_with_an_out_of_range_seq_names_no_seq() -> None:
    """Regression (issue 21): seq 2**64 on a device's own topic was read unbounded, so the
    receipt (and the loss detector's DataLoss) could not be built and ingest died."""
    topic = "t/s1/d1/event/t1"
    good = reading(5)
    batch = [Msg(topic, b'{"kind": "reading", "seq": 18446744073709551616}', 0.0),
             Msg(topic, b'{"kind": "reading", "seq": -1}', 0.0),
             Msg(topic, b'{"kind": "reading", "seq": 9223372036854775807}', 0.0),
             Msg(topic, b'{"kind": "reading", "seq": 7.0}', 0.0),
             Msg(topic, b'{"seq": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 0.0),
             Msg("t/s1/d1/status", b'{"kind": "reading", "seq": 3}', 0.0),
             Msg(topic, encode(good), 0.0)]
    assert rejected_seq(TOPICS, topic, batch[0].payload) is None
    decision = _decide(batch)
    assert len(decision.dead) == 6
    assert decision.held == {("s1", "d1"): [5]}
    assert decision.refused == {("s1", "d1"): [2**63 - 1]}  # the only readable, in-range seq


def test_refused_seqs_are_not_held() -> None:
    topic = "t/s1/d1/event/t1"
    decision = _decide([Msg(topic, b'{"kind": "reading", "seq": 9}', 0.0),
                        Msg(topic, encode(reading(10)), 0.0)])
    assert decision.held == {("s1", "d1"): [10]}
    assert decision.refused == {("s1", "d1"): [9]}


def test_a_duplicate_is_held_an_accepted_event_too() -> None:
    event = reading(4, event_id="event-0001")
    msg = Msg(TOPICS.for_event(event), encode(event), 0.0)
    decision = _decide([msg, msg], known=frozenset({"event-0001"}))
    assert decision.duplicates == 2 and decision.held == {("s1", "d1"): [4, 4]}


def test_a_message_whose_decision_raises_is_a_dead_letter_and_the_batch_goes_on(
        monkeypatch: Any) -> None:
    import hub.ingest_decision as module

    real = module.check_payload

    def flaky(topics: Topics, topic: str, payload: bytes, max_size: int) -> Any:
        if b'"poison"' in payload:
            raise RuntimeError("boom " + "x" * 5000)
        return real(topics, topic, payload, max_size)

    monkeypatch.setattr(module, "check_payload", flaky)
    real_late = module.is_late

    def late(message: Any, received: Any, after: float) -> bool:
        if message.seq == 13:
            raise OverflowError("late")
        return real_late(message, received, after)

    monkeypatch.setattr(module, "is_late", late)
    topic = "t/s1/d1/event/t1"
    batch = [Msg(topic, b'{"kind": "poison", "seq": 12}', 0.0),
             Msg(topic, encode(reading(13)), 0.0),
             Msg(topic, encode(reading(14)), 0.0),
             Msg(topic, b'{"kind": "poison"}', 0.0, replay_row=3)]
    decision = _decide(batch)
    assert [p.message.seq for p in decision.pending] == [14]
    assert [d.reason_code for d in decision.dead] == ["internal_error", "internal_error"]
    assert ["RuntimeError: boom" in d.reason for d in decision.dead] == [True, False]
    assert "OverflowError: late" in decision.dead[1].reason
    assert all(len(d.reason) < 400 for d in decision.dead)  # the exception, bounded
    assert [(o.accepted, o.reason_code) for o in decision.replays] == [(False, "internal_error")]
    assert decision.held == {("s1", "d1"): [14]}
    assert decision.refused == {("s1", "d1"): [12, 13]}
    assert len(decision.errors) == 3
