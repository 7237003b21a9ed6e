"""One sensor's edge decisions (skeleton: the full implementation follows)."""

from __future__ import annotations

from edge_agent.decide.rules import UNKNOWN, SensorRules
from edge_agent.decide.types import Draft, Reading
from schemas.ids import check_identifier
from schemas.models import ThresholdInfo, Unit


class SensorDecider:
    def __init__(self, sensor_id: str, unit: Unit, rules: SensorRules) -> None:
        self.sensor_id = check_identifier(sensor_id, "sensor id")
        self.unit: Unit = unit
        self.rules = rules
        self._state = UNKNOWN

    @property
    def state(self) -> str:
        return self._state

    def on_reading(self, reading: Reading) -> list[Draft]:
        return []

    def on_tick(self, now: float) -> list[Draft]:
        return []

    def thresholds_info(self) -> list[ThresholdInfo]:
        return [ThresholdInfo(name=t.name, direction=t.direction, value=t.value,
                              hysteresis=t.hysteresis, dwell_s=t.dwell_s, severity=t.severity)
                for t in self.rules.thresholds]
