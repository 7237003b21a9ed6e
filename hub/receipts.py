"""Receipts: which events of each device this hub holds, told to the device in seq ranges.

Pure: the ingest thread notes what each recorded batch made the hub hold (accepted events,
duplicates it already had, dead letters it stored; ``Decision.held``) only after the journal
commit, and asks :meth:`ReceiptBook.due` for the receipts to publish. At most one receipt per
device per ``interval_s``; a receipt names at most ``max_ranges`` ranges (the rest waits for
the next one). A receipt that could not be published is handed back (:meth:`requeue`).

A hub restarted after a crash answers for what its journal holds through the dedup: the agent
sends again what was not receipted, the hub finds it a duplicate, and receipts it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

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


class ReceiptBook:
    """What each device is owed a receipt for, and when to send it."""

    def __init__(self, hub_id: str, interval_s: float = 1.0, max_ranges: int = 500) -> None:
        self.hub_id = hub_id
        self.interval_s = interval_s
        self.max_ranges = max_ranges
        self._owed: dict[Key, set[int]] = {}
        self._next_at = 0.0

    def note(self, held: Mapping[Key, Iterable[int]]) -> None:
        """A batch is on disk: its devices are owed a receipt for these seqs."""
        for key, seqs in held.items():
            self._owed.setdefault(key, set()).update(seqs)

    @property
    def owed(self) -> int:
        """Seqs recorded and not yet receipted."""
        return sum(len(s) for s in self._owed.values())

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
        for (site, device), seqs in list(self._owed.items()):
            ranges = merge_ranges(seqs)
            now_ranges, later = ranges[:self.max_ranges], ranges[self.max_ranges:]
            if later:
                self._owed[(site, device)] = {s for a, b in later for s in range(a, b + 1)}
            else:
                del self._owed[(site, device)]
            out.append(Receipt(event_id=uuid.uuid4().hex, site=site, device_id=device,
                               time=when, hub_id=self.hub_id,
                               ranges=[SeqRange(first=a, last=b) for a, b in now_ranges]))
        return out

    def requeue(self, receipt: Receipt) -> None:
        """Not published (no connection): owed again, with the next receipt."""
        self._owed.setdefault((receipt.site, receipt.device_id), set()).update(
            s for r in receipt.ranges for s in range(r.first, r.last + 1))
