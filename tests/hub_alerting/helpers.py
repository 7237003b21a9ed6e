"""Builders of contract messages and envelopes for the alerting and dashboard tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hub.consumers.base import Envelope
from schemas.models import (
    DeviceStatus,
    FaultEvent,
    RateAlarmEvent,
    ReadingEvent,
    SensorInfo,
    StateChangeEvent,
    SummaryEvent,
)

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
_offsets = itertools.count(1)


class Feed:
    """One device's event stream: increasing seq and time, unique event ids."""

    def __init__(self, device: str = "d1", site: str = "s1", start: datetime = T0) -> None:
        self.site = site
        self.device = device
        self.seq = 0
        self.time = start
        self.session = 1

    def _common(self, sensor: str, step_s: float = 1.0) -> dict[str, Any]:
        self.seq += 1
        self.time += timedelta(seconds=step_s)
        return dict(event_id=f"{self.device.replace('.', '-')}-e{self.seq:06d}", site=self.site,
                    device_id=self.device, sensor_id=sensor, seq=self.seq, time=self.time,
                    clock_synced=True)

    def reading(self, sensor: str, value: float, **kw: Any) -> ReadingEvent:
        return ReadingEvent(**self._common(sensor), value=value, unit="degC", **kw)

    def state(self, sensor: str, new: str, prev: str = "normal", severity: str = "warning",
              value: float = 31.0, **kw: Any) -> StateChangeEvent:
        return StateChangeEvent(**self._common(sensor), value=value, unit="degC",
                                previous_state=prev, new_state=new,
                                threshold=None if new == "normal" else 30.0,
                                severity="info" if new == "normal" else severity, **kw)

    def fault(self, sensor: str, code: str, active: bool, **kw: Any) -> FaultEvent:
        return FaultEvent(**self._common(sensor), fault=code, active=active, unit="degC", **kw)

    def rate(self, sensor: str, active: bool, **kw: Any) -> RateAlarmEvent:
        return RateAlarmEvent(**self._common(sensor), value=20.0, unit="degC",
                              rate_per_min=3.0 if active else 0.1, limit_per_min=2.0,
                              active=active, **kw)

    def summary(self, sensor: str, last: float) -> SummaryEvent:
        common = self._common(sensor)
        return SummaryEvent(**common, unit="degC", window_start=common["time"] - timedelta(
            minutes=1), count=3, min=last - 1, max=last + 1, mean=last, last=last)

    def status(self, online: bool, reason: str = "birth", session: int | None = None,
               sensors: tuple[str, ...] = ("t1",),
               names: dict[str, str] | None = None) -> DeviceStatus:
        self.time += timedelta(seconds=1)
        if session is not None:
            self.session = session
        self.seq += 1
        return DeviceStatus(event_id=f"{self.device.replace('.', '-')}-s{self.seq:06d}",
                            site=self.site,
                            device_id=self.device, time=self.time, clock_synced=True,
                            online=online, reason=reason, session=self.session,
                            firmware="fw-1.2", agent_version="0.1.0",
                            sensors=[SensorInfo(sensor_id=s, unit="degC", source="simulator",
                                                name=(names or {}).get(s, ""))
                                     for s in sensors] if online else [],
                            counters={"published": 10.0})


def env(message: Any, *, late: bool = False, out_of_order: bool = False,
        received_at: datetime | None = None, offset: int | None = None) -> Envelope:
    return Envelope(offset=next(_offsets) if offset is None else offset, message=message,
                    topic="x", received_at=received_at or message.time, late=late,
                    out_of_order=out_of_order)
