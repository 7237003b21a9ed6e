"""The hub's receipt book (hub/receipts.py) without a broker: seqs noted in batches become merged
ranges, at most one receipt per device per interval, at most ``max_ranges`` per receipt, and a
receipt that could not be published is owed again."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub.receipts import ReceiptBook, merge_ranges, seq_ranges

KEY = ("s1", "d1")


@given(st.lists(st.integers(0, 60), max_size=80))
def test_seq_ranges_is_merge_ranges(seqs: list[int]) -> None:
    assert seq_ranges(seqs) == merge_ranges(seqs)


@given(st.lists(st.lists(st.integers(0, 200), min_size=1, max_size=40), max_size=12))
def test_a_receipt_names_exactly_what_the_batches_held(batches: list[list[int]]) -> None:
    book = ReceiptBook("hub", interval_s=1.0)
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
    book = ReceiptBook("hub", interval_s=1.0)
    book.note({KEY: [(1, 10)], ("s1", "d2"): [(5, 5)]})
    assert {r.device_id for r in book.due(100.0)} == {"d1", "d2"}
    book.note({KEY: [(11, 20)]})
    assert book.due(100.5) == []           # within the interval
    assert book.wait_s(100.5) == 0.5
    (receipt,) = book.due(100.5, force=True)  # the hub stopping
    assert [(r.first, r.last) for r in receipt.ranges] == [(11, 20)]
    assert book.wait_s(200.0) is None      # nothing owed


def test_at_most_max_ranges_per_receipt_the_rest_next_time() -> None:
    book = ReceiptBook("hub", interval_s=1.0, max_ranges=3)
    book.note({KEY: [(1, 1), (3, 3), (5, 5), (7, 7), (9, 9)]})
    first = book.due(0.0)[0]
    assert [(r.first, r.last) for r in first.ranges] == [(1, 1), (3, 3), (5, 5)]
    assert book.owed == 2
    second = book.due(1.0)[0]
    assert [(r.first, r.last) for r in second.ranges] == [(7, 7), (9, 9)]


def test_a_receipt_not_published_is_owed_again_merged_with_the_next() -> None:
    book = ReceiptBook("hub", interval_s=1.0)
    book.note({KEY: [(1, 5)]})
    (receipt,) = book.due(0.0)
    book.note({KEY: [(6, 9)]})
    book.requeue(receipt)
    (again,) = book.due(1.0)
    assert [(r.first, r.last) for r in again.ranges] == [(1, 9)]


def test_nothing_noted_for_an_empty_batch() -> None:
    book = ReceiptBook("hub")
    book.note({KEY: []})
    assert book.due(0.0) == []
