"""The hub's receipt and loss decisions that ingest used to make inline: pure functions, no I/O,
no clock (the time is passed in). hub/ingest.py calls them and does the I/O (the journal, the
broker, logs and metrics); hub/receipts.py (the receipt book) and hub/loss_detector.py (the gap
tracker) keep the state. schemas/TOPICS.md "Receipts" is the contract they implement.

- which inbound messages are receipts (:func:`split_receipts`): every hub's receipts are read by
  the hub that detects losses (``{root}/+/+/receipt``), never decided as events;
- what an agent's status tells the loss detector (:func:`status_report`): the oldest seq its
  outbox holds, whether it is online, and its drop counters as the ``cause`` text of a loss;
- what a loss becomes (:func:`loss_record`): the contract's ``DataLoss``, with an id derived from
  the device and the range (:func:`loss_id`), so the same loss is recorded and alerted once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Protocol, TypeVar

from hub.loss_detector import Loss
from schemas.models import DataLoss, DeviceStatus, Receipt
from schemas.seq_ranges import seq_ranges, span

Key = tuple[str, str]  # (site, device)
RECEIPT_SUFFIX = "/receipt"


class _HasTopic(Protocol):
    @property
    def topic(self) -> str: ...


M = TypeVar("M", bound=_HasTopic)


def is_receipt_topic(topic: str, root: str) -> bool:
    """A receipt's topic: ``{root}/{site}/{device}/receipt``, three levels under the root (the
    event or summary topic of a sensor named ``receipt`` also ends in ``/receipt``, with four)."""
    return (topic.endswith(RECEIPT_SUFFIX) and topic.startswith(root + "/")
            and topic.count("/") == root.count("/") + 3)


def split_receipts(batch: list[M], root: str) -> tuple[list[M], list[M]]:
    """``batch`` as (the messages to decide as events, the receipts), each in order. The batch
    itself is returned as the first when it holds no receipt (the usual batch: no copy)."""
    receipts = [m for m in batch if is_receipt_topic(m.topic, root)]
    if not receipts:
        return batch, []
    return [m for m in batch if not is_receipt_topic(m.topic, root)], receipts


def ranges_by_device(seqs: Mapping[Key, Collection[int]]) -> dict[Key, list[tuple[int, int]]]:
    """Each device's seqs as sorted, disjoint ranges (schemas/seq_ranges.py)."""
    return {key: seq_ranges(device_seqs) for key, device_seqs in seqs.items()}


def receipt_ranges(receipt: Receipt) -> list[tuple[int, int]]:
    """What a receipt says its hub holds (``ranges``; its ``refused`` seqs are not held)."""
    return [(r.first, r.last) for r in receipt.ranges]


def receipt_counts(receipt: Receipt) -> tuple[int, int]:
    """The seqs a receipt names as held, and as refused (for the metrics)."""
    return (span((r.first, r.last) for r in receipt.ranges),
            span((r.first, r.last) for r in receipt.refused))


def drops_text(counters: Mapping[str, float]) -> str:
    """The agent's non-zero ``dropped_by_*`` counters as ``by_x=n, by_y=m`` (sorted): the
    ``cause`` of a loss its outbox evicted."""
    return ", ".join(f"{k.removeprefix('dropped_')}={int(v)}"
                     for k, v in sorted(counters.items())
                     if k.startswith("dropped_by_") and v)


def status_report(status: DeviceStatus) -> tuple[int | None, str] | None:
    """What an agent's status tells the loss detector: ``(oldest_seq, drops)``, or None when it
    tells nothing (it says neither its outbox's oldest seq nor that the agent went offline).
    ``oldest_seq`` is None when the status does not say (a will made at connect time)."""
    c = status.counters
    if "outbox_oldest_seq" not in c and status.online:
        return None
    oldest = c.get("outbox_oldest_seq")
    return (None if oldest is None else int(oldest)), drops_text(c)


def loss_id(loss: Loss) -> str:
    """The same loss always has the same record id (recorded and alerted once)."""
    key = f"data_loss/{loss.site}/{loss.device_id}/{loss.first_seq}-{loss.last_seq}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def loss_record(loss: Loss, when: datetime, hub_id: str) -> DataLoss:
    """The contract's record of a loss the detector decided (raises ValidationError when the
    loss cannot be one: the caller drops the device's state)."""
    return DataLoss(event_id=loss_id(loss), site=loss.site, device_id=loss.device_id,
                    time=when, first_seq=loss.first_seq, last_seq=loss.last_seq,
                    count=loss.last_seq - loss.first_seq + 1, cause=loss.cause, hub_id=hub_id)


def loss_cause(record: DataLoss, gap_timeout_s: float) -> str:
    """The cause a loss's log line gives: the record's, or that it timed out."""
    return record.cause or f"unknown: not received within {gap_timeout_s:g} s"


def new_records(records: Iterable[DataLoss], known: Collection[str]) -> list[DataLoss]:
    """The records not in the journal yet (``known``: their ids that are)."""
    return [r for r in records if r.event_id not in known]
