"""The one interface every hub consumer satisfies (storage, alerting, dashboard...).

The dispatcher gives each consumer the accepted events in journal order, in batches, from the
consumer's own durable cursor. ``handle`` returning normally advances the cursor past the batch;
raising makes the dispatcher retry the same batch later with backoff, without blocking the other
consumers: ``DeliveryError`` for expected outages (retried for as long as they last); anything
else twice in a row, and the batch is handed over one entry at a time, an entry that raises on
its own being dead-lettered for this consumer and skipped (``hub/dispatch.py``). After a hub
crash a batch may be handed over again, so ``handle`` must be idempotent (keyed by ``event_id``
or ``offset``).

The journal also holds records the hub makes itself (``LocalRecord``: its alerts and its
``hub_health`` points, each a ready point to store). Only a consumer whose class says
``accepts_local = True`` (storage) gets them in its batches; every other consumer never sees
them (the alerting consumer never sees its own alerts), and its cursor simply moves past them.

Every attribute of the contract is explicit in :class:`Consumer` (the hub reads them, never probes
for them); :class:`ConsumerDefaults` gives the optional ones their usual values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from hub.records import Point
from schemas.models import DataLoss, DeviceStatus, SensorEvent

if TYPE_CHECKING:
    from starlette.routing import BaseRoute


class Envelope(NamedTuple):
    """One accepted event as the journal hands it to consumers (immutable: every consumer gets
    the same object). A named tuple, not a frozen dataclass: the journal makes one per event,
    and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) costs 1.3 us
    against 0.3 us."""

    offset: int                          # position in the hub journal, strictly increasing
    message: SensorEvent | DeviceStatus | DataLoss  # a contract message (DataLoss: the hub's)
    topic: str
    received_at: datetime                # when the hub accepted it (UTC)
    late: bool                           # replayed by the agent, or older than the late limit
    out_of_order: bool                   # seq below the last seen for this device and sensor


@dataclass(frozen=True, slots=True)
class LocalRecord:
    """A point the hub made itself (an alert it decided, its own health), for storage only."""

    offset: int
    point: Point
    received_at: datetime  # when the hub recorded it (UTC)


#: What the journal hands out: events from MQTT, and the hub's own records.
JournalEntry = Envelope | LocalRecord


@runtime_checkable
class Consumer(Protocol):
    name: str

    @property
    def batch_size(self) -> int | None:
        """Most entries per ``handle`` call; ``None``: the hub's ``[dispatch] batch_size``."""

    @property
    def max_wait_s(self) -> float:
        """Pacing: at most one partial batch per ``max_wait_s`` while the consumer is behind,
        counted from the last hand-over (an event after a quiet spell goes at once; once it
        has caught up, a tenth of it: ``IDLE_PACING_FRACTION`` in hub/dispatch.py); 0: what is
        there, at once."""

    @property
    def accepts_local(self) -> bool:
        """True: the hub's own records (``LocalRecord``) come in the batches too."""

    def routes(self) -> list[BaseRoute]:
        """HTTP routes the consumer serves on the hub's web server (``[]`` for none)."""

    def handle(self, batch: Sequence[Envelope]) -> None:
        """Process a batch; raise to have the same batch retried later.

        A consumer with ``accepts_local = True`` gets ``LocalRecord`` items in the batch too
        (declare ``handle(self, batch: Sequence[JournalEntry])``)."""

    def close(self) -> None:
        """Release resources; called once on shutdown."""


class ConsumerDefaults:
    """The optional parts of :class:`Consumer` with their usual values, for consumers to inherit."""

    batch_size: int | None = None
    max_wait_s: float = 0.0
    accepts_local: bool = False

    def routes(self) -> list[BaseRoute]:
        return []
