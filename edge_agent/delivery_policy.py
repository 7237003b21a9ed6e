"""What to publish and what to delete, decided without I/O: the two jobs of the delivery, wired.

The sans-I/O core of :mod:`edge_agent.delivery` (in the style of the ``decide/`` package). It
holds no socket, no database and no clock: the delivery thread feeds it what happened (a commit,
the link up or down, a publish handed to the client, a broker acknowledgement, a hub's receipt)
with the time as an argument, asks it what to publish and what to delete, and carries the answer
out::

    committed(rows)      ─┐                        ┌─▶ next_live()        rows to publish now
    connected(now)        │                        │
    disconnected()        ├──▶  DeliveryPolicy  ───┼─▶ backlog_wanted(now) how many backlog rows
    sent(seq, mid, ...)   │     (state, no I/O)    │   backlog_read(rows)  which of them to send
    send_failed(seq)      │                        ├─▶ acked(mid, ok)      which event, delete it?
    stopping()            │                        ├─▶ receipted(...)      rows to delete, refused
    forget(seqs)         ─┘                        ├─▶ tick(now)           what to send again
                                                   └─▶ wake_in(now)        when to ask again

Each job is its own state machine, with its rules in its module's docstring:

- :class:`~edge_agent.publish_pacing.PublishPacing`: live first, the backlog scan paced by a
  token bucket, the in-flight cap;
- :class:`~edge_agent.receipt_policy.ReceiptPolicy`: what awaits a hub's receipt, what a receipt
  deletes, what is sent again (timeout, overtaken, session, window, refused) and when.

This class only wires them: an acknowledgement is the pacing's (which message) and then the
receipt policy's (delete or await); the backlog skips what the receipt policy withholds and
pauses while its window is full; a row going back to the backlog restarts the pacing's scan there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Generic, NamedTuple

from edge_agent.publish_pacing import READ_BATCH, PublishPacing, R
from edge_agent.receipt_policy import Receipted, ReceiptPolicy, ReceiptRules, Tick

__all__ = ["AckOutcome", "DeliveryPolicy", "ReceiptRules", "Receipted", "Tick"]


class AckOutcome(NamedTuple):
    """What a broker acknowledgement was for; ``delete``: the row may leave the outbox now (no
    receipts awaited, or a receipt already covered it). A tuple: one is made per PUBACK."""

    seq: int
    replayed: bool
    ok: bool
    delete: bool = True


class DeliveryPolicy(Generic[R]):
    """One device's publishing decisions; every method is called from one thread."""

    def __init__(self, max_inflight: int, backlog_rate_per_s: float, now: float,
                 read_batch: int = READ_BATCH, *, receipts: ReceiptRules | None = None,
                 receipts_seen: bool = False) -> None:
        self.pacing: PublishPacing[R] = PublishPacing(max_inflight, backlog_rate_per_s, now,
                                                      read_batch)
        self.receipt = ReceiptPolicy(receipts or ReceiptRules(mode="off"), receipts_seen,
                                     rescan=self.pacing.rescan_from)

    # -- what happened ------------------------------------------------------------------------
    def connected(self, session_present: bool = True) -> None:
        """The link is up (a new connection); without the session, what awaited a receipt
        goes back to the backlog."""
        self.pacing.connected()
        self.receipt.connected(session_present)

    def disconnected(self) -> None:
        self.pacing.disconnected()

    def committed(self, rows: Iterable[R]) -> None:
        self.pacing.committed(rows)

    def stopping(self) -> None:
        self.pacing.stopping()

    def sent(self, seq: int, mid: int, replayed: bool, now: float) -> None:
        self.pacing.sent(seq, mid, replayed, now)
        self.receipt.sent(seq)

    def send_failed(self, seq: int) -> None:
        self.pacing.send_failed(seq)

    def acked(self, mid: int, ok: bool, now: float = 0.0) -> AckOutcome | None:
        """The broker acknowledged ``mid`` (``ok`` False: a failure reason code). ``None`` for a
        message id this policy did not send (the retained status, say). With receipts awaited,
        the row stays in the outbox until a receipt covers it (``delete`` False)."""
        entry = self.pacing.acked(mid)
        if entry is None:
            return None
        seq, replayed = entry
        return AckOutcome(seq, replayed, ok, self.receipt.acked(seq, ok, now))

    def receipted(self, ranges: Iterable[tuple[int, int]], now: float,
                  refused: Iterable[tuple[int, int]] = ()) -> Receipted:
        """A hub's receipt (:meth:`ReceiptPolicy.receipted`)."""
        return self.receipt.receipted(ranges, now, refused, self.pacing.inflight_seqs)

    def forget(self, seqs: Iterable[int]) -> None:
        """Rows the outbox dropped (its bounds): nothing is awaited for them any more."""
        self.receipt.forget(seqs)

    def tick(self, now: float) -> Tick:
        """Send again what no receipt covered in time (:meth:`ReceiptPolicy.tick`)."""
        return self.receipt.tick(now, self.pacing.is_connected)

    # -- what to do -------------------------------------------------------------------------------
    def next_live(self) -> list[R]:
        return self.pacing.next_live()

    def backlog_wanted(self, now: float) -> int:
        return self.pacing.backlog_wanted(now, paused=self.receipt.window_full)

    def backlog_read(self, rows: Sequence[R]) -> list[R]:
        return self.pacing.backlog_read(rows, self.receipt.withheld())

    def wake_in(self, now: float) -> float | None:
        """Seconds until something is due (backlog tokens, a receipt timer, a refusal's
        backoff); ``None`` when nothing is."""
        waits = [w for w in (self.pacing.wake_in(now, paused=self.receipt.window_full),
                             self.receipt.wake_in(now, self.pacing.is_connected))
                 if w is not None]
        return min(waits) if waits else None

    # -- state, for the delivery loop and its counters -------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self.pacing.is_connected

    @property
    def cursor(self) -> int:
        return self.pacing.cursor

    @property
    def backlog_rate_per_s(self) -> float:
        return self.pacing.bucket.rate

    @property
    def inflight(self) -> int:
        return self.pacing.inflight

    @property
    def live_waiting(self) -> int:
        return self.pacing.live_waiting

    @property
    def receipts_seen(self) -> bool:
        return self.receipt.receipts_seen

    @property
    def receipts(self) -> int:
        """Receipts read."""
        return self.receipt.received

    @property
    def resent(self) -> dict[str, int]:
        return self.receipt.resent

    @property
    def awaiting_receipts(self) -> bool:
        return self.receipt.awaiting_receipts

    @property
    def awaiting(self) -> int:
        return self.receipt.awaiting

    @property
    def refused_waiting(self) -> int:
        return self.receipt.refused_waiting

    def awaiting_oldest_age(self, now: float) -> float:
        return self.receipt.awaiting_oldest_age(now)
