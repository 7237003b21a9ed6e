"""What becomes of each message of an ingest batch, decided without I/O.

The sans-I/O core of :mod:`hub.ingest` (whose thread receives, records and acknowledges). One
batch goes through two pure steps, with one look-up in the journal between them::

    batch ──screen()──▶ candidates ──(journal.known_ids)──▶ decide(known) ──▶ Decision
            │ contract, topic, size                          │ dedup: known ids and the batch's
            ▼                                                │ own repeats, in one place;
          dead letters (reason kept),                        │ late and out-of-order flags
          replay outcomes of rejected dead letters           ▼
                                                   pending (to journal), duplicates, replays

Every message of the batch ends in exactly one place: a pending event, a duplicate (an id the
journal or an earlier message of the batch already has) or a dead letter; a dead letter being
replayed (``replay_row``) also gets its outcome. The ingest thread records the ``Decision`` in
one transaction and only then acknowledges the batch to the broker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from hub.identity_limits import IdentityLimits
from hub.journal import Pending, ReplayOutcome
from hub.records import DeadRecord
from hub.validate import Accepted, OrderTracker, Rejection, check_payload, is_late
from schemas.errors import TopicError
from schemas.models import DeviceStatus
from schemas.topics import Topics

MAX_SEQ_PROBE = 1 << 20  # a refused payload larger than this is not parsed for its seq


class Message(Protocol):
    """One MQTT message as received (``replay_row``: a dead letter an operator replays)."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def received_at(self) -> float: ...
    @property
    def replay_row(self) -> int | None: ...


@dataclass(slots=True)
class Screened:
    """A batch after the contract checks: what may be an event, and what is a dead letter."""

    candidates: list[tuple[Message, Accepted]] = field(default_factory=list)
    dead: list[DeadRecord] = field(default_factory=list)
    dead_seqs: list[tuple[tuple[str, str], int]] = field(default_factory=list)
    replays: list[ReplayOutcome] = field(default_factory=list)
    live: int = 0  # messages from the broker (not replays of dead letters)
    own: int = 0   # messages on the hubs' own topics (``Topics.is_hub_topic``), left alone

    def event_ids(self) -> list[str]:
        return [m.event_id for _, m in self.candidates]


@dataclass(slots=True)
class Decision:
    pending: list[Pending]
    seen: list[tuple[str, float]]          # ids that make later copies duplicates
    seq_marks: dict[tuple[str, str], int]  # the highest seq per (device, sensor), changed ones
    duplicates: int
    dead: list[DeadRecord]
    replays: list[ReplayOutcome]
    live: int
    #: per (site, device), the seqs this batch makes the hub hold: accepted, duplicates (held
    #: already) and dead letters whose seq could be read; what the hub receipts once recorded
    held: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    own: int = 0  # messages on the hubs' own topics: neither events nor dead letters


def screen(batch: Iterable[Message], topics: Topics, max_size: int,
           new_id: Callable[[], str], limits: IdentityLimits | None = None) -> Screened:
    """Decode and validate every message against the contract and its topic, then admit its
    identity (``limits``: hub/identity_limits.py; past a cap it is a dead letter)."""
    out = Screened()
    for item in batch:
        if item.replay_row is None:
            if topics.is_hub_topic(item.topic):  # a hub's alert matching a device filter
                out.own += 1
                continue
            out.live += 1
        result = check_payload(topics, item.topic, item.payload, max_size)
        if limits is not None and not isinstance(result, Rejection):
            result = limits.check(result, item.received_at)
        if not isinstance(result, Rejection):
            out.candidates.append((item, result))
        elif item.replay_row is not None:
            out.replays.append(ReplayOutcome(item.replay_row, False, result.code, result.reason))
        else:
            out.dead.append(DeadRecord.refused(  # bounded: a prefix, the size and a hash
                new_id(), datetime.fromtimestamp(item.received_at, UTC), item.topic,
                item.payload, reason_code=result.code, reason=result.reason))
            held = rejected_seq(topics, item.topic, item.payload)
            # only of admitted devices: the receipts and the loss detector keep state per device
            if held is not None and (limits is None or limits.knows(*held[0])):
                out.dead_seqs.append(held)
    return out


def rejected_seq(topics: Topics, topic: str, payload: bytes,
                 ) -> tuple[tuple[str, str], int] | None:
    """The device (from its topic, which the broker's ACL vouches for) and ``seq`` of a JSON
    payload the contract refused, if both can be read: the dead-letter store holds it, so it is
    receipted and the agent stops sending it again. Anything less readable is not receipted."""
    if not payload.startswith(b"{") or len(payload) > MAX_SEQ_PROBE:
        return None
    try:
        where = topics.parse(topic)
        seq = json.loads(payload).get("seq")
    except (ValueError, TopicError, AttributeError):
        return None
    if where.kind not in ("event", "summary") or type(seq) is not int or seq < 0:
        return None
    return (where.site, where.device_id), seq


def decide(screened: Screened, known: set[str], tracker: OrderTracker,
           late_after_s: float) -> Decision:
    """Duplicates dropped (``known``: ids the journal already holds), the rest flagged late and
    out of order (``tracker`` remembers the highest seq per sensor across batches)."""
    pending: list[Pending] = []
    seen: list[tuple[str, float]] = []
    held: dict[tuple[str, str], list[int]] = {}
    for key, seq in screened.dead_seqs:
        held.setdefault(key, []).append(seq)
    taken: set[str] = set()
    replays = list(screened.replays)
    duplicates = 0
    for item, message in screened.candidates:
        event_id = message.event_id
        duplicate = event_id in known or event_id in taken
        if item.replay_row is not None:
            replays.append(ReplayOutcome(item.replay_row, True, "accepted",
                                         "accepted on replay (already stored)" if duplicate
                                         else "accepted on replay"))
        if not isinstance(message, DeviceStatus):
            key = (message.site, message.device_id)
            seqs = held.get(key)
            if seqs is None:
                held[key] = seqs = []
            seqs.append(message.seq)
        if duplicate:
            duplicates += 1
            continue
        taken.add(event_id)
        received_at = item.received_at
        seen.append((event_id, received_at))
        received = datetime.fromtimestamp(received_at, UTC)
        out_of_order = (not isinstance(message, DeviceStatus)
                        and tracker.observe(message.device_id, message.sensor_id, message.seq))
        pending.append(Pending(message, item.topic, item.payload, received,
                               is_late(message, received, late_after_s), out_of_order,
                               received_at))
    return Decision(pending, seen, tracker.take_changes(), duplicates, screened.dead, replays,
                    screened.live, held, screened.own)


def decide_batch(batch: Sequence[Message], topics: Topics, *, max_size: int,
                 late_after_s: float, tracker: OrderTracker,
                 known_ids: Callable[[list[str]], set[str]],
                 new_id: Callable[[], str], limits: IdentityLimits | None = None) -> Decision:
    """Both steps, with ``known_ids`` (the journal's look-up, or a set in a test) between."""
    screened = screen(batch, topics, max_size, new_id, limits)
    return decide(screened, known_ids(screened.event_ids()), tracker, late_after_s)
