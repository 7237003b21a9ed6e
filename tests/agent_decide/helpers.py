"""Small builders shared by the decide tests."""

from __future__ import annotations

from typing import Any

from edge_agent.decide import Draft, Reading, SensorDecider, SensorRules
from program_support.plain_config import parse

T0 = 1_800_000_000.0  # an epoch time well in the future, aligned to minutes


def decider(unit: str = "degC", **rules: Any) -> SensorDecider:
    return SensorDecider(sensor_id="t1", unit=unit,  # type: ignore[arg-type]
                         rules=parse(rules, SensorRules))


def reading(t: float, value: float | None, fault: Any = None, detail: str = "") -> Reading:
    return Reading(sensor_id="t1", time=T0 + t, value=value, fault=fault, detail=detail)


def feed(d: SensorDecider, samples: list[tuple[float, float | None]]) -> list[Draft]:
    out: list[Draft] = []
    for t, v in samples:
        out += d.on_reading(reading(t, v))
    return out


def kinds(drafts: list[Draft], kind: str) -> list[Draft]:
    return [d for d in drafts if d.kind == kind]


def states(drafts: list[Draft]) -> list[tuple[str, str]]:
    return [(d.fields["previous_state"], d.fields["new_state"])
            for d in kinds(drafts, "state_change")]


HIGH = {"name": "high", "above": 30.0, "hysteresis": 1.0, "dwell_s": 10.0}
HIGH_CRIT = {"name": "high_critical", "above": 40.0, "hysteresis": 1.0, "dwell_s": 0.0,
             "severity": "critical"}
LOW = {"name": "low", "below": 5.0, "hysteresis": 1.0, "dwell_s": 10.0}
