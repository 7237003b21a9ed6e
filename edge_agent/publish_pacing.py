"""What to publish next, decided without I/O: live first, the backlog paced, the in-flight cap.
One job of the delivery policy (:mod:`edge_agent.delivery_policy`, which wires it to
:mod:`edge_agent.receipt_policy`); time is an argument.

The rules (the delivery module's docstring tells the why):

- live: rows committed while connected, published at once (``replayed = false``), in seq order,
  and before any backlog row;
- backlog: everything else, read from the outbox in seq order from a cursor that restarts at the
  oldest row on every (re)connect, published ``replayed = true`` only while no live row waits, at
  most ``backlog_rate_per_s`` per second (a token bucket; 0 = unlimited), never while stopping,
  nor while the caller says the backlog is paused (the receipt window is full);
- at most ``max_inflight`` publishes unacknowledged; a row already in flight or waiting live is
  never published a second time from the backlog (after a reconnect paho resends what it holds),
  nor one the caller withholds (awaiting a receipt, or refused and held back);
- a disconnect forgets the live queue (those rows go out later as backlog); what is in flight
  stays in flight (the client resends it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

from program_support.backoff import TokenBucket

#: most backlog rows asked for in one read
READ_BATCH = 500


class Row(Protocol):
    @property
    def seq(self) -> int: ...


R = TypeVar("R", bound=Row)


class PublishPacing(Generic[R]):
    """One device's live queue, backlog scan and in-flight window; called from one thread."""

    def __init__(self, max_inflight: int, backlog_rate_per_s: float, now: float,
                 read_batch: int = READ_BATCH) -> None:
        self.max_inflight = max_inflight
        self.read_batch = read_batch
        # the backlog is topped up once a quarter of the in-flight window is free, not after
        # every PUBACK: one outbox read per many rows instead of one per row (the window stays
        # at least three quarters full, so the broker is never left waiting)
        self.refill = max(1, min(max_inflight, read_batch) // 4)
        self.bucket = TokenBucket(backlog_rate_per_s, now=now)
        self.is_connected = False
        self.cursor = -1                  # the backlog scan's position (last seq read)
        self.backlog_done = False         # the scan found nothing after the cursor
        self._stopping = False
        self._live: deque[R] = deque()
        self._live_seqs: set[int] = set()
        self._inflight: dict[int, tuple[int, bool]] = {}  # mid -> (seq, replayed)
        self.inflight_seqs: set[int] = set()  # read, never changed, by the receipt policy

    # -- what happened ------------------------------------------------------------------------
    def connected(self) -> None:
        """The link is up (a new connection): the backlog scan starts again from the oldest."""
        self.is_connected = True
        self.cursor = -1
        self.backlog_done = False

    def disconnected(self) -> None:
        """The link is down: rows not yet handed to the client wait for the backlog scan."""
        self.is_connected = False
        self._live.clear()
        self._live_seqs.clear()

    def committed(self, rows: Iterable[R]) -> None:
        """Rows just stored in the outbox (seq order): live if connected, else backlog."""
        rows = list(rows)
        if not rows:
            return
        if self.is_connected:
            self._live.extend(rows)
            self._live_seqs.update(r.seq for r in rows)
        else:
            self.backlog_done = False

    def stopping(self) -> None:
        """Shutting down: live rows still go out, the backlog waits for the next start."""
        self._stopping = True

    def sent(self, seq: int, mid: int, replayed: bool, now: float) -> None:
        """The client took the publish of ``seq`` as message id ``mid``."""
        self._inflight[mid] = (seq, replayed)
        self.inflight_seqs.add(seq)
        if replayed:
            self.bucket.take(1, now)

    def send_failed(self, seq: int) -> None:
        """The client refused the publish: the row stays in the outbox for a later scan."""
        self.backlog_done = False

    def acked(self, mid: int) -> tuple[int, bool] | None:
        """The broker acknowledged ``mid``: its ``(seq, replayed)``, or ``None`` for a message
        id this pacing did not send (the retained status, say)."""
        entry = self._inflight.pop(mid, None)
        if entry is not None:
            self.inflight_seqs.discard(entry[0])
        return entry

    def rescan_from(self, seq: int) -> None:
        """A row at ``seq`` went back to the backlog: the scan passes there again."""
        self.cursor = min(self.cursor, seq - 1)
        self.backlog_done = False

    # -- what to do -------------------------------------------------------------------------------
    def next_live(self) -> list[R]:
        """Live rows to publish now, oldest first, within the in-flight cap."""
        out: list[R] = []
        while self._live and len(self._inflight) + len(out) < self.max_inflight:
            row = self._live.popleft()
            self._live_seqs.discard(row.seq)
            if row.seq not in self.inflight_seqs:
                out.append(row)
        return out

    def _backlog_open(self, paused: bool) -> bool:
        """The backlog may go out now but for its rate: connected, not stopping, the scan not
        done, no live row waiting, a refill's room in flight, not ``paused``."""
        return (self.is_connected and not self._stopping and not self.backlog_done
                and not self._live and not paused
                and self.max_inflight - len(self._inflight) >= self.refill)

    def backlog_wanted(self, now: float, paused: bool = False) -> int:
        """How many backlog rows (after :attr:`cursor`) to read now; 0 = none."""
        if not self._backlog_open(paused):
            return 0
        room = self.max_inflight - len(self._inflight)
        return max(0, min(self.bucket.available(now), room, self.read_batch))

    def backlog_read(self, rows: Sequence[R],
                     withheld: Iterable[Collection[int]] = ()) -> list[R]:
        """The outbox's answer to :meth:`backlog_wanted` (rows after the cursor, seq order):
        those to publish as replayed, without the seqs in ``withheld``. An empty answer ends
        the scan until something changes."""
        if not rows:
            self.backlog_done = True
            return []
        self.cursor = rows[-1].seq
        inflight, live = self.inflight_seqs, self._live_seqs
        out = [r for r in rows if r.seq not in inflight and r.seq not in live]
        for seqs in withheld:
            if seqs:
                out = [r for r in out if r.seq not in seqs]
        return out

    def wake_in(self, now: float, paused: bool = False) -> float | None:
        """Seconds until backlog tokens allow another publish; ``None`` when nothing waits on
        the bucket (the loop then sleeps until the next event or timer)."""
        if not self._backlog_open(paused):
            return None
        return max(0.005, self.bucket.wait_time(now))

    # -- for counters and the shutdown ---------------------------------------------------------
    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def live_waiting(self) -> int:
        return len(self._live)
