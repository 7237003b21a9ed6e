"""hub/receipt_core.py, the receipt and loss decisions ingest calls (pure: no broker, no
journal, no clock): which messages are receipts, what a status tells the loss detector, what a
loss becomes, and on which topic it is journalled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hub.loss_detector import Loss
from hub.receipt_core import (
    drops_text,
    is_receipt_topic,
    loss_cause,
    loss_id,
    loss_record,
    new_records,
    ranges_by_device,
    receipt_counts,
    receipt_ranges,
    split_receipts,
    status_report,
)
from schemas.models import SEQ_MAX, DeviceStatus, Receipt, SeqRange
from schemas.seq_ranges import merge_ranges
from schemas.topics import Topics

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Msg:
    topic: str
    n: int = 0


def status(online: bool = True, **counters: float) -> DeviceStatus:
    return DeviceStatus(event_id="e" * 32, site="s1", device_id="d1", time=WHEN,
                        clock_synced=True, online=online,
                        reason="update" if online else "shutdown", session=1,
                        counters=counters)


def test_receipts_are_told_apart_by_their_topic() -> None:
    for root in ("tp", "a/b"):
        topics = Topics(root)
        assert is_receipt_topic(topics.receipt("s1", "d1"), root)
        assert is_receipt_topic(topics.receipt("s1", "event"), root)  # a device named event
        # a sensor named receipt: its event and summary topics end in /receipt too
        for other in (topics.event("s1", "d1", "t"), topics.event("s1", "d1", "receipt"),
                      topics.summary("s1", "d1", "receipt"), topics.status("s1", "d1"),
                      topics.deadletter()):
            assert not is_receipt_topic(other, root), other


@given(st.lists(st.booleans(), max_size=20))
def test_split_receipts_keeps_each_kind_in_order(kinds: list[bool]) -> None:
    batch = [Msg("tp/s/d/receipt" if r else "tp/s/d/event/t", i) for i, r in enumerate(kinds)]
    events, receipts = split_receipts(batch, "tp")
    assert [m.n for m in events] == [i for i, r in enumerate(kinds) if not r]
    assert [m.n for m in receipts] == [i for i, r in enumerate(kinds) if r]
    if not any(kinds):
        assert events is batch  # the usual batch is not copied


def test_ranges_by_device_merges_each_devices_seqs() -> None:
    assert ranges_by_device({("s", "a"): [3, 1, 2, 7], ("s", "b"): set()}) == {
        ("s", "a"): [(1, 3), (7, 7)], ("s", "b"): []}


def test_a_receipts_held_ranges_and_counts() -> None:
    receipt = Receipt(event_id="r" * 32, site="s1", device_id="d1", time=WHEN, hub_id="h",
                      ranges=[SeqRange(first=1, last=5), SeqRange(first=9, last=9)],
                      refused=[SeqRange(first=6, last=7)])
    assert receipt_ranges(receipt) == [(1, 5), (9, 9)]  # refused seqs are not held
    assert receipt_counts(receipt) == (6, 2)


def test_drops_text_names_the_nonzero_drop_counters_sorted() -> None:
    assert drops_text({"dropped_by_size": 3.0, "dropped_by_age": 0, "sent": 9,
                       "dropped_by_count": 2}) == "by_count=2, by_size=3"
    assert drops_text({"sent": 1}) == ""


def test_a_status_tells_the_detector_its_oldest_seq_or_that_it_went_offline() -> None:
    assert status_report(status(sent=4)) is None  # says nothing of the outbox, and online
    assert status_report(status(outbox_oldest_seq=17, dropped_by_age=2)) == (17, "by_age=2")
    assert status_report(status(online=False)) == (None, "")  # a will: the agent went offline


def test_a_loss_record_has_a_stable_id_and_the_contracts_fields() -> None:
    loss = Loss("s1", "d1", 6, 8, "not in the agent's outbox any more")
    record = loss_record(loss, WHEN, "hub-a")
    assert record.event_id == loss_id(loss) == loss_id(Loss("s1", "d1", 6, 8, None))
    assert record.event_id != loss_id(Loss("s1", "d1", 6, 9, None))
    assert len(record.event_id) == 32
    assert (record.site, record.device_id, record.first_seq, record.last_seq, record.count,
            record.cause, record.hub_id, record.time) == (
        "s1", "d1", 6, 8, 3, "not in the agent's outbox any more", "hub-a", WHEN)
    assert loss_cause(record, 300) == "not in the agent's outbox any more"
    assert loss_cause(loss_record(Loss("s1", "d1", 6, 8, None), WHEN, ""), 300) == (
        "unknown: not received within 300 s")
    assert new_records([record], {record.event_id}) == []
    assert new_records([record], set()) == [record]


def test_a_loss_the_contract_cannot_hold_raises() -> None:
    """Ingest drops the device's state then (hub/ingest.py ``_record_losses``)."""
    with pytest.raises(ValidationError):
        loss_record(Loss("s1", "d1", 0, SEQ_MAX + 1, None), WHEN, "")


def test_the_data_loss_topic_is_under_the_hubs_prefix() -> None:
    assert Topics("tp").data_loss("s1", "d1") == "tp/_hub/data_loss/s1/d1"
    assert Topics("tp").is_hub_topic(Topics("tp").data_loss("s1", "d1"))


@given(st.sets(st.integers(0, 50)))
def test_ranges_by_device_is_merge_ranges(seqs: set[int]) -> None:
    assert ranges_by_device({("s", "d"): seqs})[("s", "d")] == merge_ranges(seqs)
