"""Receipts: which events of each device this hub holds, told to the device in seq ranges.

Pure: the ingest thread notes what each recorded batch made the hub hold (accepted events and
duplicates of events it holds: ``Decision.held``, turned into ranges once per device and batch by
:func:`seq_ranges`) and what it refused (the readable seqs of payloads it dead-lettered on the
device's event and summary topics: ``Decision.refused``) only after the journal commit, and asks
:meth:`ReceiptBook.due` for the receipts to publish. At most one receipt per device per
``interval_s``; a receipt names at most ``max_ranges`` ranges in ``ranges`` and as many in
``refused`` (the rest waits for the next one). A receipt that could not be published is handed
back (:meth:`requeue`).

``ranges`` name only what the hub holds; ``refused`` is what it does not: a refused seq is never
in ``ranges`` of the same receipt (it is taken out when it is also held: a hostile payload that
reuses a seq the device sent whole). The agent keeps the rows ``refused`` names (it logs and
counts them: schemas/TOPICS.md "Receipts"), so refused seqs are only news for it: past
``max_ranges`` owed refused ranges per device, the newest are dropped (counted in
:attr:`ReceiptBook.refused_dropped`), never merged into ranges the hub did not refuse.

A receipt that cannot be made (a bug; the contract refuses it) is not retried forever: the
device's owed ranges are dropped and the failure listed in :attr:`ReceiptBook.failures` for
ingest to log (with its traceback) and count; the agent sends those events again and they are
receipted as duplicates.

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
        self._refused: dict[Key, list[list[int]]] = {}  # the same, of refused seqs
        self._next_at = 0.0
        self.refused_dropped = 0  # refused seqs never named (past max_ranges per device)
        #: devices whose receipt could not be made (their owed ranges were dropped), with the
        #: exception, since ingest last took them
        self.failures: list[tuple[Key, Exception]] = []

    def note(self, held: Mapping[Key, Iterable[tuple[int, int]]],
             refused: Mapping[Key, Iterable[tuple[int, int]]] | None = None) -> None:
        """A batch is on disk: its devices are owed a receipt for these seq ranges
        (``(first, last)``, as :func:`seq_ranges` makes them): ``held``, and ``refused``."""
        owed = self._owed
        for key, ranges in held.items():
            book = owed.get(key)
            for first, last in ranges:
                if book is None:
                    owed[key] = book = []
                add_range(book, first, last)
        for key, ranges in (refused or {}).items():
            book = self._refused.get(key)
            for first, last in ranges:
                if book is None:
                    self._refused[key] = book = []
                add_range(book, first, last)
            if book is not None and len(book) > self.max_ranges:
                self.refused_dropped += sum(b - a + 1 for a, b in book[self.max_ranges:])
                del book[self.max_ranges:]

    @property
    def owed(self) -> int:
        """Seqs recorded and not yet receipted."""
        return sum(last - first + 1 for book in self._owed.values() for first, last in book)

    def wait_s(self, now: float) -> float | None:
        """Seconds until receipts are due; ``None`` when nothing is owed."""
        return max(0.0, self._next_at - now) if self._owed or self._refused else None

    def due(self, now: float, force: bool = False) -> list[Receipt]:
        """The receipts to publish now (one per device owed one), at most every ``interval_s``
        (``force``: now, as when the hub stops)."""
        if not (self._owed or self._refused) or (now < self._next_at and not force):
            return []
        self._next_at = now + self.interval_s
        out = []
        when = datetime.now(UTC)
        for key in list(self._owed.keys() | self._refused.keys()):
            held = self._owed.pop(key, [])
            refused = subtract(self._refused.pop(key, []), held)
            if len(held) > self.max_ranges:
                self._owed[key] = held[self.max_ranges:]
            if len(refused) > self.max_ranges:
                self._refused[key] = refused[self.max_ranges:]
            if not held and not refused:
                continue
            try:
                out.append(Receipt(
                    event_id=uuid.uuid4().hex, site=key[0], device_id=key[1], time=when,
                    hub_id=self.hub_id,
                    ranges=[SeqRange(first=a, last=b) for a, b in held[:self.max_ranges]],
                    refused=[SeqRange(first=a, last=b)
                             for a, b in refused[:self.max_ranges]]))
            except Exception as exc:  # noqa: BLE001 - one device's receipt stops no other
                self._owed.pop(key, None)
                self._refused.pop(key, None)
                self.failures.append((key, exc))
        return out

    def requeue(self, receipt: Receipt) -> None:
        """Not published (no connection): owed again, with the next receipt."""
        key = (receipt.site, receipt.device_id)
        self.note({key: [(r.first, r.last) for r in receipt.ranges]},
                  {key: [(r.first, r.last) for r in receipt.refused]})


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
