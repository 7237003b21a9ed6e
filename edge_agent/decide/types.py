"""What goes into and comes out of the edge decisions: plain values, no I/O, time as an argument."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.vocabulary import FaultCode

DraftKind = Literal["reading", "state_change", "rate_alarm", "fault", "summary"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample from a source. ``value`` is None when the source reported a fault instead."""

    sensor_id: str
    time: float                      # UTC epoch seconds
    value: float | None
    fault: FaultCode | None = None   # set by the source: crc_error, read_failed, disconnected...
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Draft:
    """An event decided at the edge, before it gets its id, sequence number and device identity.

    ``fields`` uses the contract's field names and final values (datetimes are aware UTC), so
    ``schemas.plain_messages.SENSOR_EVENTS[kind](**identity, **fields)`` makes the contract event.
    """

    kind: DraftKind
    sensor_id: str
    time: float
    fields: dict[str, Any] = field(default_factory=dict)
