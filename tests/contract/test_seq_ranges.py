"""schemas/seq_ranges.py, the one home of the receipts' range arithmetic (the agent's and the
hub's), against the obvious model: a set of seqs."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from schemas.models import SEQ_MAX
from schemas.seq_ranges import (
    add_range,
    clip_merge,
    in_ranges,
    merge_ranges,
    seq_ranges,
    span,
    subtract,
)

seqs_st = st.sets(st.integers(0, 120), max_size=60)
pair_st = st.tuples(st.integers(0, 120), st.integers(0, 30)).map(lambda t: (t[0], t[0] + t[1]))


def members(ranges: object) -> set[int]:
    return {s for a, b in ranges for s in range(a, b + 1)}  # type: ignore[attr-defined]


def is_canonical(ranges: list[tuple[int, int]] | list[list[int]]) -> bool:
    """Sorted, disjoint, merged: each range well formed, a hole between any two."""
    return (all(a <= b for a, b in ranges)
            and all(prev[1] + 1 < nxt[0] for prev, nxt in itertools.pairwise(ranges)))


@given(st.lists(st.integers(0, 120), max_size=80))
def test_merge_ranges_covers_exactly_the_seqs(seqs: list[int]) -> None:
    ranges = merge_ranges(seqs)
    assert is_canonical(ranges)
    assert members(ranges) == set(seqs)
    assert span(ranges) == len(set(seqs))


@given(st.lists(st.integers(0, 120), max_size=80))
def test_seq_ranges_is_merge_ranges(seqs: list[int]) -> None:
    assert seq_ranges(seqs) == merge_ranges(seqs)


@given(st.lists(pair_st, max_size=30))
def test_add_range_keeps_ranges_canonical_and_covers_their_union(pairs: list[tuple[int, int]]
                                                                 ) -> None:
    held: list[list[int]] = []
    for first, last in pairs:
        add_range(held, first, last)
        assert is_canonical(held)
    assert members(held) == members(pairs)
    assert [tuple(r) for r in held] == merge_ranges(members(pairs))


@given(seqs_st, seqs_st)
def test_subtract_is_set_difference(a: set[int], b: set[int]) -> None:
    ranges = [list(r) for r in merge_ranges(a)]
    minus = [list(r) for r in merge_ranges(b)]
    out = subtract(ranges, minus)
    assert is_canonical(out)
    assert members(out) == a - b


@given(seqs_st, st.integers(-5, 130))
def test_in_ranges_is_membership(seqs: set[int], seq: int) -> None:
    ranges = merge_ranges(seqs)
    assert in_ranges(seq, [a for a, _ in ranges], [b for _, b in ranges]) == (seq in seqs)


any_pair = st.tuples(st.integers(-(2**64), 2**64), st.integers(-(2**64), 2**64))


@given(st.lists(any_pair, max_size=20), st.integers(0, 25))
def test_clip_merge_reads_only_the_first_limit_ranges_clipped_to_the_contract(
        pairs: list[tuple[int, int]], limit: int) -> None:
    out, dropped, dropped_span = clip_merge(pairs, limit)
    assert is_canonical(out)
    assert all(0 <= a <= b <= SEQ_MAX for a, b in out)
    # the model: the first ``limit`` ranges that name a seq once clipped are read, the rest
    # are counted (ranges naming nothing before the limit is reached are skipped)
    clipped = [(max(a, 0), min(b, SEQ_MAX)) for a, b in pairs]
    taken: list[tuple[int, int]] = []
    rest: list[tuple[int, int]] = []
    for a, b in clipped:
        if len(taken) >= limit:
            rest.append((a, b))
        elif a <= b:
            taken.append((a, b))
    assert out == _merge_pairs(taken)
    assert dropped == len(rest)
    assert dropped_span == sum(max(0, b - a + 1) for a, b in rest)

def _merge_pairs(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The model for huge ranges (no set of members): merge sorted pairs that touch."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(pairs):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out
