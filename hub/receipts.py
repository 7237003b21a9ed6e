"""Receipts: which events of each device this hub holds, told to the device in seq ranges.

Pure (no clock, no uuid: the time and an id factory are passed in): the ingest thread notes
what each recorded batch made the hub hold (accepted events and duplicates of events it holds:
``Decision.held``, turned into ranges once per device and batch by
:func:`schemas.seq_ranges.seq_ranges`) and what it refused (the readable seqs of payloads it
dead-lettered on the device's event and summary topics: ``Decision.refused``) only after the
journal commit, and asks
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

The range arithmetic (merging, subtracting) is schemas/seq_ranges.py, shared with the agent.

Cost: the book keeps merged ranges per device, never one entry per seq, so noting a batch costs
a few operations per device (a device's seqs in one batch are almost always one run), and a
receipt is made from ranges already merged (bench/README.md, "Receipts on and off").

A hub restarted after a crash answers for what its journal holds through the dedup: the agent
sends again what was not receipted, the hub finds it a duplicate, and receipts it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from schemas.models import Receipt, SeqRange
from schemas.seq_ranges import add_range, subtract

Key = tuple[str, str]  # (site, device)


class ReceiptBook:
    """What each device is owed a receipt for, and when to send it."""

    def __init__(self, hub_id: str, new_id: Callable[[], str], interval_s: float = 1.0,
                 max_ranges: int = 500) -> None:
        self.hub_id = hub_id
        self.new_id = new_id  # a receipt's event id (ingest: schemas.ids.new_event_id)
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
        (``(first, last)``, as :func:`schemas.seq_ranges.seq_ranges` makes them): ``held``,
        and ``refused``."""
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
        (``force``: now, as when the hub stops). ``now`` is wall-clock seconds: the receipts'
        ``time``."""
        if not (self._owed or self._refused) or (now < self._next_at and not force):
            return []
        self._next_at = now + self.interval_s
        out = []
        when = datetime.fromtimestamp(now, UTC)
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
                    event_id=self.new_id(), site=key[0], device_id=key[1], time=when,
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

