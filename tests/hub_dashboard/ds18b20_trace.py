"""The DS18B20 trace of issue 14 through the real parts, file by file: firmware_sim renders each
``w1_slave`` file, the agent's 1-Wire parser reads it, the agent's decider judges it, and the
drafts become contract events in envelopes, as the hub hands them to its consumers.

Trace: 21.5, 85.0 (the power-on value), -127.0 (disconnected), a CRC-failed read, 22.0.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime

from edge_agent.decide import SensorDecider, SensorRules, draft_to_event
from edge_agent.sources.onewire import parse_w1_slave
from firmware_sim.device import Condition, Sample
from firmware_sim.signals import milli_to_raw
from firmware_sim.w1_tree import format_w1_slave, render_w1_slave, scratchpad
from hub.consumers.base import Envelope
from schemas import decode

SENSOR = "28-0316a2795cff"
T0 = 1_800_000_000.0


def _w1(milli: int, condition: Condition = Condition.OK) -> str:
    if condition is Condition.OK and milli == -127_000:
        # what a DS18B20 that lost its data line returns through some bus masters: a "valid"
        # scratchpad saying -127 degC (its CRC is fine; only the value gives it away)
        return format_w1_slave(scratchpad(milli_to_raw(milli)))
    text = render_w1_slave(Sample(0, SENSOR, condition, milli, milli))
    assert text is not None
    return text


#: (what the step is, the w1_slave file the agent reads)
STEPS: list[tuple[str, str]] = [
    ("21.5", _w1(21_500)),
    ("85.0 power-on", _w1(85_000, Condition.POWER_ON)),
    ("-127.0 disconnected", _w1(-127_000)),
    ("crc failed", _w1(22_000, Condition.CRC_ERROR)),
    ("22.0", _w1(22_000)),
]


def trace_envelopes(site: str, device: str, sensor: str = SENSOR,
                    ) -> Iterator[tuple[str, list[Envelope]]]:
    """Per step: its label and the envelopes the hub would hand over for it."""
    decider = SensorDecider(sensor, "degC", SensorRules(deadband=0.0))
    seq = itertools.count(1)
    offsets = itertools.count(1)
    for i, (label, text) in enumerate(STEPS):
        reading = parse_w1_slave(sensor, text, T0 + 5 * i)
        envs = []
        for draft in decider.on_reading(reading):
            n = next(seq)
            event = draft_to_event(draft, event_id=f"{device}-trace-{n:04d}", site=site,
                                   device_id=device, seq=n, clock_synced=True)
            # what the agent publishes, as the hub reads it
            envs.append(Envelope(offset=next(offsets), message=decode(event.to_json()), topic="x",
                                 received_at=datetime.fromtimestamp(T0 + 5 * i, UTC),
                                 late=False, out_of_order=False))
        yield label, envs
