"""Seq ranges: the one home of the receipts' range arithmetic, for the agent and the hub.

A receipt (schemas/TOPICS.md "Receipts") names a device's seqs as ``(first, last)`` ranges, both
included. Every function here is pure and works on *sorted, disjoint, merged* ranges (no two
ranges overlap or touch: ``(1, 3), (5, 9)``, never ``(1, 3), (4, 9)``), except
:func:`clip_merge`, which makes such ranges of anything a hostile receipt may say.

Two shapes are used, for speed where each is used: tuples ``(first, last)`` for ranges made
once and read (:func:`merge_ranges`, :func:`seq_ranges`, :func:`clip_merge`), and lists
``[first, last]`` for ranges kept and grown in place (:func:`add_range`, :func:`subtract`).
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Sequence

from schemas.vocabulary import SEQ_MAX


def merge_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, disjoint, merged ``(first, last)`` ranges covering ``seqs``."""
    out: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def seq_ranges(seqs: Collection[int]) -> list[tuple[int, int]]:
    """:func:`merge_ranges`, with a fast path for the usual batch: one device's seqs form one
    run (``set``, ``min`` and ``max`` only, no Python loop per seq)."""
    if not seqs:
        return []
    distinct = set(seqs)
    low, high = min(distinct), max(distinct)
    if high - low + 1 == len(distinct):
        return [(low, high)]
    return merge_ranges(distinct)


def add_range(held: list[list[int]], first: int, last: int) -> None:
    """Merge ``first..last`` into the sorted, disjoint ranges ``held`` (in place)."""
    i = bisect.bisect_left(held, [first, first])
    if i > 0 and held[i - 1][1] >= first - 1:
        i -= 1
    j = i
    while j < len(held) and held[j][0] <= last + 1:
        first = min(first, held[j][0])
        last = max(last, held[j][1])
        j += 1
    held[i:j] = [[first, last]]


def subtract(ranges: list[list[int]], minus: list[list[int]]) -> list[list[int]]:
    """``ranges`` without any seq of ``minus`` (both sorted, disjoint ``[first, last]``)."""
    if not minus or not ranges:
        return ranges
    out: list[list[int]] = []
    j = 0
    for start, last in ranges:
        while j < len(minus) and minus[j][1] < start:
            j += 1
        first, k = start, j
        while first <= last and k < len(minus) and minus[k][0] <= last:
            if minus[k][0] > first:
                out.append([first, minus[k][0] - 1])
            first = max(first, minus[k][1] + 1)
            k += 1
        if first <= last:
            out.append([first, last])
    return out


def in_ranges(seq: int, starts: Sequence[int], ends: Sequence[int]) -> bool:
    """``seq`` lies in one of the sorted, disjoint ranges ``starts[i]..ends[i]``."""
    i = bisect.bisect_right(starts, seq) - 1
    return i >= 0 and seq <= ends[i]


def clip_merge(ranges: Iterable[tuple[int, int]], limit: int
               ) -> tuple[list[tuple[int, int]], int, int]:
    """The first ``limit`` of ``ranges`` clipped to ``0..SEQ_MAX``, sorted and merged (a hostile
    receipt's ranges may be anything), the number of ranges past ``limit``, and how many seqs
    those name (without reading more than ``limit`` ranges twice over: the rest is counted)."""
    taken: list[tuple[int, int]] = []
    dropped = dropped_span = 0
    for first, last in ranges:
        low, high = max(first, 0), min(last, SEQ_MAX)
        if len(taken) >= limit:
            dropped += 1
            dropped_span += max(0, high - low + 1)
        elif low <= high:
            taken.append((low, high))
    taken.sort()
    out: list[tuple[int, int]] = []
    for first, last in taken:
        if out and first <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out, dropped, dropped_span


def span(ranges: Iterable[tuple[int, int]]) -> int:
    """How many seqs ``ranges`` name (disjoint ranges: each seq once)."""
    return sum(last - first + 1 for first, last in ranges)
