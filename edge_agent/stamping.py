"""Turning an edge decision (a :class:`Draft`) into a contract event with identity.

The event id is made once, here, and stored with the event in the outbox, so a replay after a
restart carries the same id and the hub can drop duplicates exactly. The sequence number comes
from the outbox database: per device, strictly increasing across restarts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from edge_agent.decide.types import Draft
from edge_agent.outbox import Outbox
from schemas.errors import InvalidMessage
from schemas.ids import check_identifier, new_event_id
from schemas.plain_messages import SENSOR_EVENTS, SensorEvent

log = structlog.get_logger(__name__)

_IDENTITY = frozenset({"event_id", "site", "device_id", "sensor_id", "seq", "clock_synced",
                       "replayed", "kind"})


class EventStamper:
    """Gives drafts their event id, seq, device identity, time and clock-quality flag."""

    def __init__(self, site: str, device_id: str, outbox: Outbox) -> None:
        self.site = check_identifier(site, "site")
        self.device_id = check_identifier(device_id, "device id")
        self._outbox = outbox

    def stamp(self, draft: Draft, clock_synced: bool) -> SensorEvent:
        """Raise :class:`InvalidMessage` (naming the fields) if the draft breaks the contract."""
        model: Any = SENSOR_EVENTS.get(draft.kind)
        if model is None:
            raise InvalidMessage(f"draft kind {draft.kind!r} is not a sensor event", ["kind"])
        clash = _IDENTITY & draft.fields.keys()
        if clash:
            raise InvalidMessage(f"draft fields {sorted(clash)} are set by the stamper",
                                 sorted(clash))
        fields: dict[str, Any] = dict(draft.fields)
        if "time" not in fields:
            fields["time"] = datetime.fromtimestamp(draft.time, UTC)
        seq = self._outbox.reserve_seq()
        try:
            event: SensorEvent = model(event_id=new_event_id(), site=self.site,
                                       device_id=self.device_id, sensor_id=draft.sensor_id,
                                       seq=seq, clock_synced=clock_synced, **fields)
        except InvalidMessage as error:
            # the seq is skipped, which the contract allows (strictly increasing, not dense)
            log.warning("stamp.invalid_draft", sensor=draft.sensor_id, kind=draft.kind,
                        reason=error.reason)
            raise
        return event
