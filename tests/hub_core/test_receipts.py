"""The hub's receipt book (hub/receipts.py) without a broker: seqs noted in batches become merged
ranges, at most one receipt per device per interval, at most ``max_ranges`` per receipt, and a
receipt that could not be published is owed again."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from hub.receipts import ReceiptBook
from schemas.seq_ranges import merge_ranges, seq_ranges

KEY = ("s1", "d1")
_ids = itertools.count()


def new_id() -> str:
    """The book's id factory (ingest passes uuid4 hex): a counter, so ids are predictable."""
    return f"{next(_ids):032x}"


@given(st.lists(st.integers(0, 60), max_size=80))
def test_seq_ranges_is_merge_ranges(seqs: list[int]) -> None:
    assert seq_ranges(seqs) == merge_ranges(seqs)


@given(st.lists(st.lists(st.integers(0, 200), min_size=1, max_size=40), max_size=12))
def test_a_receipt_names_exactly_what_the_batches_held(batches: list[list[int]]) -> None:
    book = ReceiptBook("hub", new_id, interval_s=1.0)
    for seqs in batches:
        book.note({KEY: seq_ranges(seqs)})
    want = {s for seqs in batches for s in seqs}
    assert book.owed == len(want)
    receipts = book.due(0.0)
    if not want:
        assert receipts == []
        return
    (receipt,) = receipts
    ranges = [(r.first, r.last) for r in receipt.ranges]
    assert ranges == merge_ranges(want)  # sorted, disjoint, merged
    assert (receipt.site, receipt.device_id, receipt.hub_id) == ("s1", "d1", "hub")
    assert book.owed == 0


def test_one_receipt_per_device_per_interval() -> None:
    book = ReceiptBook("hub", new_id, interval_s=1.0)
    book.note({KEY: [(1, 10)], ("s1", "d2"): [(5, 5)]})
    assert {r.device_id for r in book.due(100.0)} == {"d1", "d2"}
    book.note({KEY: [(11, 20)]})
    assert book.due(100.5) == []           # within the interval
    assert book.wait_s(100.5) == 0.5
    (receipt,) = book.due(100.5, force=True)  # the hub stopping
    assert [(r.first, r.last) for r in receipt.ranges] == [(11, 20)]
    assert book.wait_s(200.0) is None      # nothing owed


def test_at_most_max_ranges_per_receipt_the_rest_next_time() -> None:
    book = ReceiptBook("hub", new_id, interval_s=1.0, max_ranges=3)
    book.note({KEY: [(1, 1), (3, 3), (5, 5), (7, 7), (9, 9)]})
    first = book.due(0.0)[0]
    assert [(r.first, r.last) for r in first.ranges] == [(1, 1), (3, 3), (5, 5)]
    assert book.owed == 2
    second = book.due(1.0)[0]
    assert [(r.first, r.last) for r in second.ranges] == [(7, 7), (9, 9)]


def test_a_receipt_not_published_is_owed_again_merged_with_the_next() -> None:
    book = ReceiptBook("hub", new_id, interval_s=1.0)
    book.note({KEY: [(1, 5)]})
    (receipt,) = book.due(0.0)
    book.note({KEY: [(6, 9)]})
    book.requeue(receipt)
    (again,) = book.due(1.0)
    assert [(r.first, r.last) for r in again.ranges] == [(1, 9)]


def test_nothing_noted_for_an_empty_batch() -> None:
    book = ReceiptBook("hub", new_id)
    book.note({KEY: []})
    assert book.due(0.0) == []


# ---- refused seqs (issue 21): receipts say only what the hub holds ----------------------------

@given(held=st.lists(st.integers(0, 80), max_size=40),
       refused=st.lists(st.integers(0, 80), max_size=40))
def test_refused_seqs_are_named_apart_and_never_in_ranges(held: list[int],
                                                           refused: list[int]) -> None:
    book = ReceiptBook("hub", new_id, interval_s=1.0)
    book.note({KEY: seq_ranges(held)}, {KEY: seq_ranges(refused)})
    receipts = book.due(0.0)
    if not held and not refused:
        assert receipts == []
        return
    (receipt,) = receipts
    named = {s for r in receipt.ranges for s in range(r.first, r.last + 1)}
    named_refused = {s for r in receipt.refused for s in range(r.first, r.last + 1)}
    assert named == set(held)                       # ranges: only what the hub holds
    assert named_refused == set(refused) - set(held)  # refused: the rest, apart
    assert book.wait_s(5.0) is None


def test_a_refused_seq_held_later_is_named_in_ranges_then() -> None:
    book = ReceiptBook("hub", new_id, interval_s=1.0)
    book.note({}, {KEY: [(7, 9)]})
    (first,) = book.due(0.0)
    assert ([(r.first, r.last) for r in first.ranges],
            [(r.first, r.last) for r in first.refused]) == ([], [(7, 9)])
    book.note({KEY: [(8, 8)]})
    (second,) = book.due(1.0)
    assert [(r.first, r.last) for r in second.ranges] == [(8, 8)] and second.refused == []


def test_a_receipt_not_published_keeps_its_refused_ranges() -> None:
    book = ReceiptBook("hub", new_id, interval_s=1.0)
    book.note({KEY: [(1, 2)]}, {KEY: [(5, 5)]})
    (receipt,) = book.due(0.0)
    book.requeue(receipt)
    (again,) = book.due(1.0)
    assert [(r.first, r.last) for r in again.refused] == [(5, 5)]


def test_refused_ranges_past_max_ranges_are_dropped_and_counted() -> None:
    book = ReceiptBook("hub", new_id, interval_s=1.0, max_ranges=3)
    book.note({}, {KEY: [(1, 1), (3, 3), (5, 5), (7, 8), (10, 10)]})
    assert book.refused_dropped == 3
    (receipt,) = book.due(0.0)
    assert [(r.first, r.last) for r in receipt.refused] == [(1, 1), (3, 3), (5, 5)]
    assert book.due(1.0) == []


def test_a_receipt_that_cannot_be_made_is_dropped_and_reported_not_retried_forever() -> None:
    """A device's receipt that fails to build (here: a hub id beyond the contract's bound)
    is listed in ``failures`` and its owed ranges dropped; other devices get theirs."""
    book = ReceiptBook("h" * 500, new_id, interval_s=1.0)
    book.note({KEY: [(1, 3)]})
    assert book.due(0.0) == []
    ((key, exc),) = book.failures
    assert key == KEY and "hub_id" in str(exc)
    assert book.wait_s(1.0) is None  # nothing owed: it does not fail again


def test_seqs_of_the_hubs_receipt_stay_within_the_contract() -> None:
    """Regression (issue 21): a refused payload's seq 2**64 made the receipt fail to build and
    killed ingest. Seqs beyond SEQ_MAX never reach the book (the decision drops them); a
    receipt of the highest allowed seq builds."""
    book = ReceiptBook("hub", new_id, interval_s=1.0)
    book.note({KEY: [(2**63 - 1, 2**63 - 1)]}, {KEY: [(2**63 - 2, 2**63 - 2)]})
    (receipt,) = book.due(0.0)
    assert receipt.ranges[0].last == 2**63 - 1 and receipt.refused[0].first == 2**63 - 2


def test_a_receipt_takes_its_time_and_id_from_the_caller() -> None:
    """The book reads no clock and makes no uuid: ``now`` is the receipt's time, the id comes
    from the factory it was given."""
    book = ReceiptBook("hub", lambda: "a" * 32, interval_s=1.0)
    book.note({KEY: [(1, 3)]})
    (receipt,) = book.due(1_800_000_000.25)
    assert receipt.event_id == "a" * 32
    assert receipt.time == datetime.fromtimestamp(1_800_000_000.25, UTC)
