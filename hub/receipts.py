"""Receipts: which events of each device this hub holds, told to the device in seq ranges.

Pure: the ingest thread notes what each recorded batch made the hub hold (accepted events,
duplicates it already had, dead letters it stored; ``Decision.held``, turned into ranges once per
device and batch by :func:`seq_ranges`) only after the journal commit, and asks
:meth:`ReceiptBook.due` for the receipts to publish. At most one receipt per device per
``interval_s``; a receipt names at most ``max_ranges`` ranges (the rest waits for the next one).
A receipt that could not be published is handed back (:meth:`requeue`).

Cost: the book keeps merged ranges per device, never one entry per seq, so noting a batch costs
a few operations per device (a device's seqs in one batch are almost always one run), and a
receipt is made from ranges already merged (bench/README.md, "Receipts on and off").

A hub restarted after a crash answers for what its journal holds through the dedup: the agent
sends again what was not receipted, the hub finds it a duplicate, and receipts it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime

from hub.loss_detector import add_range
from schemas.models import Receipt, SeqRange

Key = tuple[str, str]  # (site, device)


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


class ReceiptBook:
    """What each device is owed a receipt for, and when to send it."""

    def __init__(self, hub_id: str, interval_s: float = 1.0, max_ranges: int = 500) -> None:
        self.hub_id = hub_id
        self.interval_s = interval_s
        self.max_ranges = max_ranges
        self._owed: dict[Key, list[list[int]]] = {}  # sorted, disjoint [first, last] ranges
        self._next_at = 0.0

    def note(self, held: Mapping[Key, Iterable[tuple[int, int]]]) -> None:
        """A batch is on disk: its devices are owed a receipt for these seq ranges
        (``(first, last)``, as :func:`seq_ranges` makes them)."""
        owed = self._owed
        for key, ranges in held.items():
            book = owed.get(key)
            for first, last in ranges:
                if book is None:
                    owed[key] = book = []
                add_range(book, first, last)

    @property
    def owed(self) -> int:
        """Seqs recorded and not yet receipted."""
        return sum(last - first + 1 for book in self._owed.values() for first, last in book)

    def wait_s(self, now: float) -> float | None:
        """Seconds until receipts are due; ``None`` when nothing is owed."""
        return max(0.0, self._next_at - now) if self._owed else None

    def due(self, now: float, force: bool = False) -> list[Receipt]:
        """The receipts to publish now (one per device owed one), at most every ``interval_s``
        (``force``: now, as when the hub stops)."""
        if not self._owed or (now < self._next_at and not force):
            return []
        self._next_at = now + self.interval_s
        out = []
        when = datetime.now(UTC)
        for (site, device), ranges in list(self._owed.items()):
            now_ranges, later = ranges[:self.max_ranges], ranges[self.max_ranges:]
            if later:
                self._owed[(site, device)] = later
            else:
                del self._owed[(site, device)]
            out.append(Receipt(event_id=uuid.uuid4().hex, site=site, device_id=device,
                               time=when, hub_id=self.hub_id,
                               ranges=[SeqRange(first=a, last=b) for a, b in now_ranges]))
        return out

    def requeue(self, receipt: Receipt) -> None:
        """Not published (no connection): owed again, with the next receipt."""
        self.note({(receipt.site, receipt.device_id): [(r.first, r.last)
                                                       for r in receipt.ranges]})
