"""What to publish next, decided without I/O: live first, the backlog paced, the in-flight cap.

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

The rules (the delivery module's docstring tells the why):

- live: rows committed while connected, published at once (``replayed = false``), in seq order,
  and before any backlog row;
- backlog: everything else, read from the outbox in seq order from a cursor that restarts at the
  oldest row on every (re)connect, published ``replayed = true`` only while no live row waits, at
  most ``backlog_rate_per_s`` per second (a token bucket; 0 = unlimited), never while stopping;
- at most ``max_inflight`` publishes unacknowledged; a row already in flight or waiting live is
  never published a second time from the backlog (after a reconnect paho resends what it holds);
- a disconnect forgets the live queue (those rows go out later as backlog); what is in flight
  stays in flight (the client resends it).

Receipts (schemas/TOPICS.md, "Receipts"): a broker PUBACK only says the broker has an event, and
brokers lose queues. With receipts on, a PUBACK moves the event to *awaiting receipt* (it stays in
the outbox) and a hub's receipt deletes it. An awaiting event is sent again, through the backlog
(so live rows still go first and the rate cap applies):

- *timeout*: not receipted ``timeout_s`` after its PUBACK. While no receipt arrives at all (the hub
  is down and the broker keeps the queue), each round doubles the timeout, up to ``max_backoff``
  times, so an outage does not become a resend storm; any receipt restores it;
- *overtaken* (counted as ``resent_gap``; config ``receipt_gap_s``): a receipt covered an event
  acknowledged more than ``overtaken_s`` after this one: the hub has moved past it, so it was
  lost on the way (a broker that lost its queue, a hub session taken over). Not the hub's *gap*
  (a missing seq range, schemas/TOPICS.md "Receipts", glossary);
- *session*: a reconnect whose session the broker no longer had (it lost everything it held).

What a receipt deletes, stated honestly: a receipt is a message anyone allowed on the device's
receipt topic can publish, so it only ever deletes rows this policy *sent in this run and saw
acknowledged* by the broker (a PUBACK with success): awaiting a receipt, waiting to be sent again
(timed out, lost with the session, pushed out of the window, refused), or in flight again (those
leave at their PUBACK: a receipt may overtake it). Every other seq it names is ignored and
counted (``Receipted.ignored``): rows never published, published and not acknowledged (or
refused by the broker), rows of an earlier run not sent again yet, seqs deleted already (a
duplicate receipted twice) or never made. So a receipt that names the whole seq space deletes
what the broker acknowledged, never the unsent backlog. What it cannot tell: whether a hub really
holds an acknowledged row it names (a forged receipt for it deletes it; the broker has it, and a
hub that missed it never says so). A receipt's first ``max_ranges`` ranges are read, the rest
ignored (a hub sends at most 500 by default), so what one receipt costs is bounded:
``O(ranges log ranges)``, plus ``O(min(seqs named, rows sent and not receipted))``.

``refused``: the hub dead-lettered a payload carrying these seqs (a payload it cannot take, or
someone else's payload with this device's seqs). Rows this run sent and saw acknowledged among
them stay in the outbox, are not awaited any more, and are sent again after a backoff of their
own (``refused_backoff_s``, doubling per refusal, at most ``refused_max_s``), so a payload the hub
always refuses is not dead-lettered every minute; a receipt naming them in ``ranges`` (the hub
holds the seq after all) deletes them as usual; the outbox's bounds may drop them like any row
(counted). Seqs it names that this run did not send are ignored (``Receipted.refused_ignored``).

Memory: at most ``window`` events await a receipt, ``window`` more wait to be sent again and
``window`` carry a refusal count; past those bounds the oldest is forgotten, which costs a
duplicate (a late receipt for it is ignored and it is sent again) or a shorter refusal backoff,
never a row. Past ``window`` awaiting, the oldest goes back to the backlog (to be sent again once
receipts catch up) and the backlog waits, so memory stays bounded during a long hub outage.
``mode = "auto"`` waits for receipts once this outbox has ever seen one; before that, if none
arrives within ``detect_s`` of the first PUBACK, it takes the hub for one that sends none and
deletes on PUBACK (``Tick.fell_back``) until a receipt arrives.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, NamedTuple, Protocol, TypeVar

from program_support.backoff import TokenBucket
from schemas.seq_ranges import clip_merge, in_ranges

#: most backlog rows asked for in one read
READ_BATCH = 500


class Row(Protocol):
    @property
    def seq(self) -> int: ...


R = TypeVar("R", bound=Row)


class Acked(NamedTuple):
    """What a broker acknowledgement was for; ``delete``: the row may leave the outbox now (no
    receipts awaited, or a receipt already covered it). A tuple: one is made per PUBACK."""

    seq: int
    replayed: bool
    ok: bool
    delete: bool = True


@dataclass(frozen=True, slots=True)
class ReceiptRules:
    """When to send again what no receipt covered (``[mqtt] receipt*`` in the agent's config)."""

    mode: Literal["auto", "on", "off"] = "auto"
    timeout_s: float = 60.0
    overtaken_s: float = 10.0  # ``receipt_gap_s``: resend what a later receipted ack overtook
    detect_s: float = 600.0
    window: int = 10_000
    max_backoff: int = 16
    refused_backoff_s: float = 60.0   # a refused row is sent again this long after the refusal,
    refused_max_s: float = 3600.0     # doubling per refusal, up to this
    max_ranges: int = 1024            # ranges read from a receipt's ``ranges`` and ``refused``


@dataclass(slots=True)
class Tick:
    """What :meth:`DeliveryPolicy.tick` decided: rows to delete now, and how many rows went back
    to the backlog to be sent again, by reason."""

    delete: list[int] = field(default_factory=list)
    resent: dict[str, int] = field(default_factory=dict)
    fell_back: bool = False
    timeout_s: float = 0.0  # the receipt timeout now (it doubles while no receipt arrives)


@dataclass(slots=True)
class Receipted:
    """What :meth:`DeliveryPolicy.receipted` decided about one receipt.

    ``delete``: rows to delete now (sent in this run, acknowledged, named in ``ranges``);
    ``at_puback``: rows in flight it named, deleted when their PUBACK comes back ok;
    ``ignored``: seqs named in ``ranges`` that this run has not sent and seen acknowledged,
    including the seqs of ranges past ``max_ranges`` (``ranges_dropped`` of them);
    ``refused``: rows kept and held back (``retry_in_s``: the shortest of their backoffs);
    ``refused_again``: refused rows named again before they were sent again (left as they are);
    ``refused_ignored``: seqs named in ``refused`` that this run did not send."""

    delete: list[int] = field(default_factory=list)
    at_puback: int = 0
    ignored: int = 0
    ranges_dropped: int = 0
    refused: list[int] = field(default_factory=list)
    refused_again: int = 0
    refused_ignored: int = 0
    retry_in_s: float = 0.0


def _among(seqs: Collection[int], ranges: Sequence[tuple[int, int]], starts: Sequence[int],
           ends: Sequence[int], span: int) -> list[int]:
    """Which members of ``seqs`` lie in ``ranges`` (``span`` seqs in all): walks the ranges when
    they name fewer seqs than ``seqs`` holds, ``seqs`` otherwise, so a receipt naming millions of
    seqs costs what the agent awaits, not what it names."""
    if not seqs or not ranges:
        return []
    if span <= len(seqs):
        return [s for a, b in ranges for s in range(a, b + 1) if s in seqs]
    return [s for s in seqs if in_ranges(s, starts, ends)]


class DeliveryPolicy(Generic[R]):
    """One device's publishing decisions; every method is called from one thread."""

    def __init__(self, max_inflight: int, backlog_rate_per_s: float, now: float,
                 read_batch: int = READ_BATCH, *, receipts: ReceiptRules | None = None,
                 receipts_seen: bool = False) -> None:
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
        self._inflight_seqs: set[int] = set()
        # receipts
        self.rules = receipts or ReceiptRules(mode="off")
        self.receipts_seen = receipts_seen   # this outbox has ever had a receipt (persisted)
        self.fell_back = False               # auto mode decided the hub sends no receipts
        self._awaiting: OrderedDict[int, float] = OrderedDict()  # seq -> PUBACK time, in order
        # acknowledged in this run, left _awaiting to be sent again, not sent yet (a receipt
        # may still delete them: the hub may hold the first copy)
        self._to_resend: OrderedDict[int, None] = OrderedDict()
        self._receipted_inflight: set[int] = set()  # receipted before its PUBACK came back
        # refused: seq -> refusals so far (insertion order: the oldest is forgotten first);
        # _held: refused rows waiting out their backoff (seq -> when it ends), not sent before
        # it; _held_due: the same as a heap (entries of rows no longer held are skipped)
        self._refusals: OrderedDict[int, int] = OrderedDict()
        self._held: dict[int, float] = {}
        self._held_due: list[tuple[float, int]] = []
        self._refused_inflight: set[int] = set()  # refused before its PUBACK came back
        self._timeout = self.rules.timeout_s
        self._receipt_since_round = True
        self._newest_receipted_ack = float("-inf")
        self._first_ack_at: float | None = None
        self.resent: dict[str, int] = dict.fromkeys(("timeout", "gap", "session", "window"), 0)
        self.receipts = 0

    # -- what happened ------------------------------------------------------------------------
    def connected(self, session_present: bool = True) -> None:
        """The link is up (a new connection): the backlog scan starts again from the oldest.
        Without the session, the broker lost what it held: everything awaiting a receipt goes
        back to the backlog."""
        self.is_connected = True
        self.cursor = -1
        self.backlog_done = False
        if not session_present and self._awaiting:
            self.resent["session"] += len(self._awaiting)
            for seq in self._awaiting:
                self._resend_later(seq)
            self._awaiting.clear()

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
        self._inflight_seqs.add(seq)
        if self._to_resend:
            self._to_resend.pop(seq, None)
        if replayed:
            self.bucket.take(1, now)

    def send_failed(self, seq: int) -> None:
        """The client refused the publish: the row stays in the outbox for a later scan."""
        self.backlog_done = False

    def acked(self, mid: int, ok: bool, now: float = 0.0) -> Acked | None:
        """The broker acknowledged ``mid`` (``ok`` False: a failure reason code). ``None`` for a
        message id this policy did not send (the retained status, say). With receipts awaited,
        the row stays in the outbox until a receipt covers it (``delete`` False)."""
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return None
        seq, replayed = entry
        self._inflight_seqs.discard(seq)
        if not ok:  # not acknowledged: no receipt deletes it (it is sent again after a reconnect)
            if self._receipted_inflight:
                self._receipted_inflight.discard(seq)
            if self._refused_inflight:
                self._refused_inflight.discard(seq)
            return Acked(seq, replayed, ok=False, delete=False)
        if self._receipted_inflight and seq in self._receipted_inflight:
            self._receipted_inflight.discard(seq)
            self._refused_inflight.discard(seq)
            self._gone(seq)
            return Acked(seq, replayed, ok=True, delete=True)
        if not self.awaiting_receipts:
            if self._refusals:
                self._gone(seq)
            return Acked(seq, replayed, ok=True, delete=True)
        if self._refused_inflight and seq in self._refused_inflight:
            self._refused_inflight.discard(seq)
            self._hold(seq, now)
            return Acked(seq, replayed, ok=True, delete=False)
        self._awaiting[seq] = now
        self._awaiting.move_to_end(seq)
        if self._first_ack_at is None:
            self._first_ack_at = now
        if len(self._awaiting) > self.rules.window:
            # bounded memory: the oldest goes back to the backlog (its row stays on disk)
            oldest, _ = self._awaiting.popitem(last=False)
            self.resent["window"] += 1
            self._resend_later(oldest)
            self._rescan_from(oldest)
        return Acked(seq, replayed, ok=True, delete=False)

    def receipted(self, ranges: Iterable[tuple[int, int]], now: float,
                  refused: Iterable[tuple[int, int]] = ()) -> Receipted:
        """A hub says it holds the seqs in ``ranges`` and refused payloads carrying the seqs in
        ``refused`` (ranges of ``(first, last)``, both included; anything at all: they come from
        the wire). Decides which rows leave the outbox (the caller deletes ``delete``) and which
        are held back as refused; every seq this run did not send and see acknowledged is
        ignored and counted. See the module docstring."""
        self.receipts += 1
        self.receipts_seen = True
        self.fell_back = False
        self._timeout = self.rules.timeout_s
        self._receipt_since_round = True
        out = Receipted()
        if self.rules.mode == "off":  # deleted at the PUBACK: receipts are not read
            return out
        holds, dropped, dropped_span = clip_merge(ranges, self.rules.max_ranges)
        named = sum(b - a + 1 for a, b in holds) + dropped_span
        out.ranges_dropped = dropped
        if holds:
            starts = [a for a, _ in holds]
            ends = [b for _, b in holds]
            span = named - dropped_span
            awaiting = self._awaiting
            hits = _among(awaiting, holds, starts, ends, span)
            newest = self._newest_receipted_ack
            for seq in hits:
                newest = max(newest, awaiting.pop(seq))
            self._newest_receipted_ack = newest
            for pool in (self._to_resend, self._held):
                if pool:
                    more = _among(pool, holds, starts, ends, span)
                    for seq in more:
                        del pool[seq]
                    hits.extend(more)
            if self._refusals:
                for seq in hits:
                    self._gone(seq)
            later = _among(self._inflight_seqs, holds, starts, ends, span)
            if later:
                self._receipted_inflight.update(later)
            out.delete = hits
            out.at_puback = len(later)
        out.ignored = named - len(out.delete) - out.at_puback
        self._note_refused(refused, now, out)
        return out

    def _note_refused(self, ranges: Iterable[tuple[int, int]], now: float, out: Receipted) -> None:
        refused, _, dropped_span = clip_merge(ranges, self.rules.max_ranges)
        named = sum(b - a + 1 for a, b in refused) + dropped_span
        if not refused:
            out.refused_ignored = named
            return
        starts = [a for a, _ in refused]
        ends = [b for _, b in refused]
        span = named - dropped_span
        again = len(_among(self._held, refused, starts, ends, span))  # not sent again yet
        out.refused_again = again
        sent = 0
        for pool in (self._awaiting, self._to_resend):
            hits = _among(pool, refused, starts, ends, span)
            for seq in hits:
                del pool[seq]
                self._hold(seq, now)
            out.refused.extend(hits)
            sent += len(hits)
        inflight = _among(self._inflight_seqs, refused, starts, ends, span)
        receipted = self._receipted_inflight
        kept = [s for s in inflight if s not in receipted] if receipted else inflight
        self._refused_inflight.update(kept)
        out.refused.extend(kept)
        # sent, and named in ``ranges`` too (the hub holds the seq after all): deleted, not kept
        deleted = sum(1 for s in out.delete if in_ranges(s, starts, ends)) if out.delete else 0
        out.refused_ignored = named - sent - again - len(inflight) - deleted
        if out.refused:
            out.retry_in_s = min(self._backoff(self._refusals.get(s, 0) or 1)
                                 for s in out.refused[:64])

    def _backoff(self, refusals: int) -> float:
        rules = self.rules
        return min(rules.refused_backoff_s * 2.0 ** min(refusals - 1, 60), rules.refused_max_s)

    def _hold(self, seq: int, now: float) -> None:
        """``seq`` (sent and acknowledged) was refused: not sent again before its backoff ends."""
        refusals = self._refusals.pop(seq, 0) + 1
        self._refusals[seq] = refusals
        due = now + self._backoff(refusals)
        self._held[seq] = due
        heapq.heappush(self._held_due, (due, seq))
        if len(self._refusals) > self.rules.window:
            # bounded memory: the oldest refused row is forgotten (sent again when the backlog
            # scan reaches it; a later refusal starts its backoff over)
            oldest, _ = self._refusals.popitem(last=False)
            if self._held.pop(oldest, None) is not None:
                self._resend_later(oldest)
                self._rescan_from(oldest)
        if len(self._held_due) > 2 * len(self._held) + 64:  # entries of rows no longer held
            self._held_due = [(d, s) for s, d in self._held.items()]
            heapq.heapify(self._held_due)

    def _resend_later(self, seq: int) -> None:
        """``seq`` (acknowledged in this run) goes back to the backlog; a receipt still deletes
        it until it is sent again. Bounded: the oldest is forgotten (a late receipt for it is
        then ignored, and it is sent again: a duplicate)."""
        self._to_resend[seq] = None
        if len(self._to_resend) > self.rules.window:
            self._to_resend.popitem(last=False)

    def _gone(self, seq: int) -> None:
        """``seq`` leaves the outbox: its refusal count goes with it."""
        if self._refusals and self._refusals.pop(seq, None) is not None:
            self._held.pop(seq, None)

    def forget(self, seqs: Iterable[int]) -> None:
        """Rows the outbox dropped (its bounds): nothing is awaited for them any more."""
        for seq in seqs:
            self._awaiting.pop(seq, None)
            self._to_resend.pop(seq, None)
            self._receipted_inflight.discard(seq)
            self._refused_inflight.discard(seq)
            self._gone(seq)

    def tick(self, now: float) -> Tick:
        """Send again what no receipt covered in time (back to the backlog), and in auto mode
        decide whether the hub sends receipts at all."""
        out = Tick(timeout_s=self._timeout)
        due = self._held_due
        if due and due[0][0] <= now:
            first_held: int | None = None
            while due and due[0][0] <= now:
                at, seq = heapq.heappop(due)
                if self._held.get(seq) == at:  # else no longer held (deleted, or held anew)
                    del self._held[seq]
                    self._resend_later(seq)
                    first_held = seq if first_held is None else min(first_held, seq)
            if first_held is not None:
                self._rescan_from(first_held)
        if not self.is_connected or not self._awaiting:
            return out
        if (self.rules.mode == "auto" and not self.receipts_seen and not self.fell_back
                and self._first_ack_at is not None
                and now - self._first_ack_at >= self.rules.detect_s):
            self.fell_back = True
            out.fell_back = True
            out.delete = list(self._awaiting)
            self._awaiting.clear()
            for seq in out.delete:
                self._gone(seq)
            return out
        by_timeout = now - self._timeout
        by_overtaken = self._newest_receipted_ack - self.rules.overtaken_s
        limit = max(by_timeout, by_overtaken)
        first: int | None = None
        while self._awaiting:
            seq, at = next(iter(self._awaiting.items()))
            if at >= limit:
                break
            del self._awaiting[seq]
            self._resend_later(seq)
            reason = "timeout" if at < by_timeout else "gap"  # the status counter's name
            out.resent[reason] = out.resent.get(reason, 0) + 1
            self.resent[reason] += 1
            first = seq if first is None else min(first, seq)
        if first is not None:
            self._rescan_from(first)
        if out.resent.get("timeout"):
            if not self._receipt_since_round:  # a whole round without any receipt: back off
                self._timeout = min(self._timeout * 2,
                                    self.rules.timeout_s * self.rules.max_backoff)
            self._receipt_since_round = False
        out.timeout_s = self._timeout
        return out

    def _rescan_from(self, seq: int) -> None:
        self.cursor = min(self.cursor, seq - 1)
        self.backlog_done = False

    # -- what to do -------------------------------------------------------------------------------
    def next_live(self) -> list[R]:
        """Live rows to publish now, oldest first, within the in-flight cap."""
        out: list[R] = []
        while self._live and len(self._inflight) + len(out) < self.max_inflight:
            row = self._live.popleft()
            self._live_seqs.discard(row.seq)
            if row.seq not in self._inflight_seqs:
                out.append(row)
        return out

    def backlog_wanted(self, now: float) -> int:
        """How many backlog rows (after :attr:`cursor`) to read now; 0 = none."""
        if (not self.is_connected or self._stopping or self.backlog_done or self._live
                or len(self._awaiting) >= self.rules.window):
            return 0
        room = self.max_inflight - len(self._inflight)
        if room < self.refill:
            return 0
        return max(0, min(self.bucket.available(now), room, self.read_batch))

    def backlog_read(self, rows: Sequence[R]) -> list[R]:
        """The outbox's answer to :meth:`backlog_wanted` (rows after the cursor, seq order):
        those to publish as replayed. An empty answer ends the scan until something changes."""
        if not rows:
            self.backlog_done = True
            return []
        self.cursor = rows[-1].seq
        inflight, live, awaiting, held = \
            self._inflight_seqs, self._live_seqs, self._awaiting, self._held
        if held:  # refused rows wait out their backoff (tick() rescans when it ends)
            return [r for r in rows
                    if r.seq not in inflight and r.seq not in live and r.seq not in awaiting
                    and r.seq not in held]
        return [r for r in rows
                if r.seq not in inflight and r.seq not in live and r.seq not in awaiting]

    def wake_in(self, now: float) -> float | None:
        """Seconds until backlog tokens allow another publish; ``None`` when nothing waits on
        the bucket (the loop then sleeps until the next event or timer)."""
        waits: list[float] = []
        if (self.is_connected and not self._stopping and not self.backlog_done
                and not self._live and self.max_inflight - len(self._inflight) >= self.refill
                and len(self._awaiting) < self.rules.window):
            waits.append(max(0.005, self.bucket.wait_time(now)))
        if self.is_connected and self._awaiting:
            oldest = next(iter(self._awaiting.values()))
            due = oldest + self._timeout
            if self.rules.mode == "auto" and not self.receipts_seen and not self.fell_back \
                    and self._first_ack_at is not None:
                due = min(due, self._first_ack_at + self.rules.detect_s)
            waits.append(max(0.05, due - now))
        if self._held_due:
            waits.append(max(0.05, self._held_due[0][0] - now))
        return min(waits) if waits else None

    # -- for counters and the shutdown ---------------------------------------------------------
    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def live_waiting(self) -> int:
        return len(self._live)

    @property
    def awaiting_receipts(self) -> bool:
        """PUBACKed rows stay until a receipt covers them (else they are deleted at the PUBACK)."""
        mode = self.rules.mode
        return mode == "on" or (mode == "auto" and (self.receipts_seen or not self.fell_back))

    @property
    def awaiting(self) -> int:
        """Rows acknowledged by the broker and not yet receipted by a hub."""
        return len(self._awaiting)

    @property
    def refused_waiting(self) -> int:
        """Refused rows waiting out their backoff before they are sent again."""
        return len(self._held)

    def awaiting_oldest_age(self, now: float) -> float:
        return now - next(iter(self._awaiting.values())) if self._awaiting else 0.0
