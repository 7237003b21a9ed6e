"""Receipts on the agent's side, decided without I/O: which acknowledged events a hub's receipt
lets the outbox delete, which to send again, and when. One job of the delivery policy
(:mod:`edge_agent.delivery_policy`, which wires it to :mod:`edge_agent.publish_pacing`); time is an
argument.

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
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from schemas.seq_ranges import clip_merge, in_ranges


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
    """What :meth:`ReceiptPolicy.tick` decided: rows to delete now, and how many rows went back
    to the backlog to be sent again, by reason."""

    delete: list[int] = field(default_factory=list)
    resent: dict[str, int] = field(default_factory=dict)
    fell_back: bool = False
    timeout_s: float = 0.0  # the receipt timeout now (it doubles while no receipt arrives)


@dataclass(slots=True)
class Receipted:
    """What :meth:`ReceiptPolicy.receipted` decided about one receipt.

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


class ReceiptPolicy:
    """What awaits a receipt, what goes again and what is held back as refused, for one device.

    ``rescan(seq)`` is called when a row at or after ``seq`` goes back to the backlog (the
    publish pacing's scan restarts there). Every method is called from one thread."""

    def __init__(self, rules: ReceiptRules, receipts_seen: bool = False, *,
                 rescan: Callable[[int], None]) -> None:
        self.rules = rules
        self.receipts_seen = receipts_seen   # this outbox has ever had a receipt (persisted)
        self.fell_back = False               # auto mode decided the hub sends no receipts
        self._rescan = rescan
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
        self._timeout = rules.timeout_s
        self._receipt_since_round = True
        self._newest_receipted_ack = float("-inf")
        self._first_ack_at: float | None = None
        self.resent: dict[str, int] = dict.fromkeys(("timeout", "gap", "session", "window"), 0)
        self.received = 0  # receipts read

    # -- the two predicates ---------------------------------------------------------------------
    @property
    def awaiting_receipts(self) -> bool:
        """PUBACKed rows stay until a receipt covers them (else they are deleted at the PUBACK)."""
        mode = self.rules.mode
        return mode == "on" or (mode == "auto" and (self.receipts_seen or not self.fell_back))

    def _detect_due(self) -> float | None:
        """When auto mode stops waiting for a first receipt; ``None`` when it is not waiting
        (another mode, a receipt seen, fallen back already, or nothing acknowledged yet)."""
        if (self.rules.mode != "auto" or self.receipts_seen or self.fell_back
                or self._first_ack_at is None):
            return None
        return self._first_ack_at + self.rules.detect_s

    @property
    def window_full(self) -> bool:
        """As many rows await a receipt as the window holds: the backlog waits."""
        return len(self._awaiting) >= self.rules.window

    # -- what happened --------------------------------------------------------------------------
    def connected(self, session_present: bool) -> None:
        """A new connection. Without the session the broker lost what it held: everything
        awaiting a receipt goes back to the backlog (whose scan starts again from the oldest)."""
        if not session_present and self._awaiting:
            self.resent["session"] += len(self._awaiting)
            for seq in self._awaiting:
                self._resend_later(seq)
            self._awaiting.clear()

    def sent(self, seq: int) -> None:
        """``seq`` was handed to the client (again)."""
        if self._to_resend:
            self._to_resend.pop(seq, None)

    def acked(self, seq: int, ok: bool, now: float) -> bool:
        """The broker acknowledged ``seq`` (``ok`` False: a failure reason code); whether its
        row may leave the outbox now (no receipts awaited, or a receipt already covered it)."""
        if not ok:  # not acknowledged: no receipt deletes it (it is sent again after a reconnect)
            if self._receipted_inflight:
                self._receipted_inflight.discard(seq)
            if self._refused_inflight:
                self._refused_inflight.discard(seq)
            return False
        if self._receipted_inflight and seq in self._receipted_inflight:
            self._receipted_inflight.discard(seq)
            self._refused_inflight.discard(seq)
            self._gone(seq)
            return True
        if not self.awaiting_receipts:
            if self._refusals:
                self._gone(seq)
            return True
        if self._refused_inflight and seq in self._refused_inflight:
            self._refused_inflight.discard(seq)
            self._hold(seq, now)
            return False
        self._awaiting[seq] = now
        self._awaiting.move_to_end(seq)
        if self._first_ack_at is None:
            self._first_ack_at = now
        if len(self._awaiting) > self.rules.window:
            # bounded memory: the oldest goes back to the backlog (its row stays on disk)
            oldest, _ = self._awaiting.popitem(last=False)
            self.resent["window"] += 1
            self._resend_later(oldest)
            self._rescan(oldest)
        return False

    def receipted(self, ranges: Iterable[tuple[int, int]], now: float,
                  refused: Iterable[tuple[int, int]] = (),
                  inflight: Collection[int] = ()) -> Receipted:
        """A hub says it holds the seqs in ``ranges`` and refused payloads carrying the seqs in
        ``refused`` (ranges of ``(first, last)``, both included; anything at all: they come from
        the wire). Decides which rows leave the outbox (the caller deletes ``delete``) and which
        are held back as refused; every seq this run did not send and see acknowledged is
        ignored and counted; ``inflight``: the seqs published and not yet acknowledged. See the
        module docstring."""
        self.received += 1
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
            later = _among(inflight, holds, starts, ends, span)
            if later:
                self._receipted_inflight.update(later)
            out.delete = hits
            out.at_puback = len(later)
        out.ignored = named - len(out.delete) - out.at_puback
        self._note_refused(refused, now, out, inflight)
        return out

    def _note_refused(self, ranges: Iterable[tuple[int, int]], now: float, out: Receipted,
                      inflight_seqs: Collection[int]) -> None:
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
        inflight = _among(inflight_seqs, refused, starts, ends, span)
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
                self._rescan(oldest)
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

    def tick(self, now: float, connected: bool) -> Tick:
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
                self._rescan(first_held)
        if not connected or not self._awaiting:
            return out
        detect_due = self._detect_due()
        if detect_due is not None and now >= detect_due:
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
            self._rescan(first)
        if out.resent.get("timeout"):
            if not self._receipt_since_round:  # a whole round without any receipt: back off
                self._timeout = min(self._timeout * 2,
                                    self.rules.timeout_s * self.rules.max_backoff)
            self._receipt_since_round = False
        out.timeout_s = self._timeout
        return out

    # -- what to do -----------------------------------------------------------------------------
    def withheld(self) -> tuple[Collection[int], ...]:
        """Seqs the backlog must not send now: awaiting a receipt, or refused and held back."""
        return (self._awaiting, self._held) if self._held else (self._awaiting,)

    def wake_in(self, now: float, connected: bool) -> float | None:
        """Seconds until :meth:`tick` has something to do; ``None``: nothing is timed."""
        waits: list[float] = []
        if connected and self._awaiting:
            oldest = next(iter(self._awaiting.values()))
            due = oldest + self._timeout
            detect_due = self._detect_due()
            if detect_due is not None:
                due = min(due, detect_due)
            waits.append(max(0.05, due - now))
        if self._held_due:
            waits.append(max(0.05, self._held_due[0][0] - now))
        return min(waits) if waits else None

    # -- for counters ---------------------------------------------------------------------------
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
