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

No message stops the batch: whatever raises while one message is screened or decided (a bug, an
input nobody planned for) makes that message a dead letter with reason code ``internal_error``
and the exception as its reason (``supervision.describe``: type and message, bounded);
the rest of the batch is decided as usual.

What the hub tells the device (``Decision.held`` and ``Decision.refused``, per device, by seq):
``held`` is what it holds: accepted events and duplicates of events it holds; ``refused`` is the
seq of each payload it dead-lettered on the device's event or summary topic whose ``seq`` could
be read (an int within the contract's range, ``0 .. SEQ_MAX``). A refused seq is never held (the
loss detector does not count it, the receipt names it apart: schemas/TOPICS.md, "Receipts").
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
from program_support.supervision import describe
from schemas.errors import TopicError
from schemas.ids import new_event_id
from schemas.models import SEQ_MAX, DeviceStatus
from schemas.topics import Topics

MAX_SEQ_PROBE = 1 << 20  # a refused payload larger than this is not parsed for its seq
INTERNAL_ERROR = "internal_error"  # the reason code of a message whose decision raised


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
    errors: list[Exception] = field(default_factory=list)  # what raised (``internal_error``)

    def event_ids(self) -> list[str]:
        return [m.event_id for _, m in self.candidates]


@dataclass(slots=True)
class Decision:
    pending: list[Pending]
    seen: list[tuple[str, float]]          # ids that make later copies duplicates
    #: the highest seq per (site, device, sensor), the ones this batch changed
    seq_marks: dict[tuple[str, str, str], int]
    duplicates: int
    dead: list[DeadRecord]
    replays: list[ReplayOutcome]
    live: int
    #: per (site, device), the seqs this batch makes the hub hold: accepted events and
    #: duplicates (held already); what the hub receipts (``ranges``) once recorded
    held: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    own: int = 0  # messages on the hubs' own topics: neither events nor dead letters
    #: per (site, device), the readable seqs of payloads dead-lettered on its event or summary
    #: topics: NOT held (a receipt's ``refused``; the loss detector ignores them)
    refused: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: the exceptions behind this batch's ``internal_error`` dead letters (ingest logs the
    #: first with its traceback and counts them all)
    errors: list[Exception] = field(default_factory=list)


def screen(batch: Iterable[Message], topics: Topics, max_size: int,
           new_id: Callable[[], str], limits: IdentityLimits | None = None) -> Screened:
    """Decode and validate every message against the contract and its topic, then admit its
    identity (``limits``: hub/identity_limits.py; past a cap it is a dead letter)."""
    out = Screened()
    hub_prefix = topics.hub_prefix + "/"  # Topics.is_hub_topic, made once per batch
    candidates = out.candidates
    admit = limits.check if limits is not None else None
    live = own = 0
    for item in batch:
        topic = item.topic
        if item.replay_row is None:
            if topic.startswith(hub_prefix):  # a hub's alert matching a device filter
                own += 1
                continue
            live += 1
        try:
            result: Accepted | Rejection = check_payload(topics, topic, item.payload, max_size)
            if admit is not None and type(result) is not Rejection:
                result = admit(result, item.received_at)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - no input stops the batch: a dead letter
            out.errors.append(exc)
            result = internal_error(exc)
        if type(result) is not Rejection:
            candidates.append((item, result))  # type: ignore[arg-type]  # Accepted here
        else:
            refuse(out, item, result, topics, new_id)
    out.live, out.own = live, own
    if limits is not None and out.dead_seqs:
        # only of admitted devices (this batch's included): receipts and the loss detector
        # keep state per device, and an invented identity must not make any
        out.dead_seqs = [s for s in out.dead_seqs if limits.knows(*s[0])]
    return out


def internal_error(exc: BaseException) -> Rejection:
    """The rejection of a message whose screening or decision raised (the exception, bounded)."""
    return Rejection(INTERNAL_ERROR, f"the hub failed on this message: {describe(exc)}")


def refuse(out: Screened, item: Message, rejection: Rejection, topics: Topics,
           new_id: Callable[[], str]) -> None:
    """``item`` is a dead letter (or, replayed, stays one), with its readable seq noted."""
    if item.replay_row is not None:
        out.replays.append(ReplayOutcome(item.replay_row, False, rejection.code,
                                         rejection.reason))
        return
    out.dead.append(DeadRecord.refused(  # bounded: a prefix, the size and a hash
        new_id(), _received(item.received_at), item.topic, item.payload,
        reason_code=rejection.code, reason=rejection.reason))
    seq = rejected_seq(topics, item.topic, item.payload)
    if seq is not None:
        out.dead_seqs.append(seq)


def _received(received_at: float) -> datetime:
    try:
        return datetime.fromtimestamp(received_at, UTC)
    except (OverflowError, OSError, ValueError):  # a replayed row's time from a broken store
        return datetime.now(UTC)


def rejected_seq(topics: Topics, topic: str, payload: bytes,
                 ) -> tuple[tuple[str, str], int] | None:
    """The device (from its event or summary topic, which the broker's ACL vouches for) and
    ``seq`` of a JSON payload the contract refused, if both can be read and the seq is within
    the contract's range (``0 .. SEQ_MAX``): the receipt names it as ``refused``, so the agent
    learns that this event of its outbox was refused (it keeps it). Anything less readable is
    named nowhere."""
    if not payload.startswith(b"{") or len(payload) > MAX_SEQ_PROBE:
        return None
    try:
        where = topics.parse(topic)
        if where.kind not in ("event", "summary"):
            return None
        seq = json.loads(payload).get("seq")
    except (ValueError, TopicError, AttributeError, RecursionError):  # deep JSON: RecursionError
        return None
    if type(seq) is not int or not 0 <= seq <= SEQ_MAX:
        return None
    return (where.site, where.device_id), seq


def decide(screened: Screened, known: set[str], tracker: OrderTracker,  # noqa: PLR0917
           late_after_s: float, topics: Topics | None = None,
           new_id: Callable[[], str] = new_event_id) -> Decision:
    """Duplicates dropped (``known``: ids the journal already holds), the rest flagged late and
    out of order (``tracker`` remembers the highest seq per sensor across batches). A candidate
    whose decision raises becomes a dead letter (``internal_error``), its seq refused."""
    pending: list[Pending] = []
    seen: list[tuple[str, float]] = []
    held: dict[tuple[str, str], list[int]] = {}
    taken: set[str] = set()
    duplicates = 0
    failed = Screened(dead=screened.dead, dead_seqs=screened.dead_seqs,
                      replays=screened.replays, errors=screened.errors)
    observe = tracker.observe
    from_timestamp = datetime.fromtimestamp
    # messages read together share one receive time (hub/ingest.py, _on_plain_batch): one
    # datetime for them all
    last_at: float | None = None
    received = datetime.min
    for item, message in screened.candidates:
        try:
            event_id = message.event_id
            duplicate = event_id in known or event_id in taken
            status = type(message) is DeviceStatus or isinstance(message, DeviceStatus)
            if duplicate:
                entry = None
            else:
                received_at = item.received_at
                if received_at != last_at:
                    received = from_timestamp(received_at, UTC)
                    last_at = received_at
                out_of_order = not status and observe(
                    message.site, message.device_id,
                    message.sensor_id, message.seq)  # type: ignore[union-attr]
                entry = Pending(message, item.topic, item.payload, received,
                                is_late(message, received, late_after_s), out_of_order,
                                received_at)
            if not status:
                device = (message.site, message.device_id)
                seq = message.seq  # type: ignore[union-attr]  # a SensorEvent here
        except Exception as exc:  # noqa: BLE001 - no input stops the batch: a dead letter
            failed.errors.append(exc)
            refuse(failed, item, internal_error(exc), topics or Topics(), new_id)
            continue
        if item.replay_row is not None:
            failed.replays.append(ReplayOutcome(item.replay_row, True, "accepted",
                                                "accepted on replay (already stored)"
                                                if duplicate else "accepted on replay"))
        if not status:
            seqs = held.get(device)
            if seqs is None:
                held[device] = seqs = []
            seqs.append(seq)
        if entry is None:
            duplicates += 1
            continue
        taken.add(event_id)
        seen.append((event_id, received_at))
        pending.append(entry)
    refused: dict[tuple[str, str], list[int]] = {}
    for key, seq in failed.dead_seqs:
        refused.setdefault(key, []).append(seq)
    return Decision(pending, seen, tracker.take_changes(), duplicates, failed.dead,
                    failed.replays, screened.live, held, screened.own, refused, failed.errors)


def decide_batch(batch: Sequence[Message], topics: Topics, *, max_size: int,
                 late_after_s: float, tracker: OrderTracker,
                 known_ids: Callable[[list[str]], set[str]],
                 new_id: Callable[[], str], limits: IdentityLimits | None = None) -> Decision:
    """Both steps, with ``known_ids`` (the journal's look-up, or a set in a test) between."""
    screened = screen(batch, topics, max_size, new_id, limits)
    return decide(screened, known_ids(screened.event_ids()), tracker, late_after_s, topics,
                  new_id)
