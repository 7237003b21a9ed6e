"""Turning a :class:`Draft` into the contract event, once it has its identity (id, seq, device)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edge_agent.decide.types import Draft
from schemas.plain_messages import SENSOR_EVENTS, SensorEvent


def epoch_to_utc(t: float) -> datetime:
    """UTC epoch seconds -> aware UTC datetime (microsecond precision, like the contract)."""
    return datetime.fromtimestamp(t, UTC)


def draft_to_event(draft: Draft, *, event_id: str, site: str, device_id: str, seq: int,
                   clock_synced: bool, replayed: bool = False) -> SensorEvent:
    """Build and check the contract event for ``draft`` (raises InvalidMessage)."""
    model: Any = SENSOR_EVENTS[draft.kind]
    event: SensorEvent = model(event_id=event_id, site=site, device_id=device_id,
                               sensor_id=draft.sensor_id, seq=seq, time=epoch_to_utc(draft.time),
                               clock_synced=clock_synced, replayed=replayed, **draft.fields)
    return event
