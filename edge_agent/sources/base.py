"""The one interface every sensor source satisfies, and what they share."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from edge_agent.decide.types import Reading
from schemas.models import Unit

#: Where a source puts its readings. Returns False when the reading was dropped (queue full);
#: the source counts that, the agent logs it. Must never block for long.
ReadingSink = Callable[[Reading], bool]


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """A sensor a source knows about: its id and the unit its values are in."""

    sensor_id: str
    unit: Unit = "degC"


@runtime_checkable
class SensorSource(Protocol):
    """A thread that reads sensors and hands readings to the agent.

    ``start(sink)`` returns at once; ``stop()`` ends the thread and closes what it opened.
    ``sensors`` and ``firmware`` describe what the source found so far (for the birth status);
    ``counters()`` are monotonic numbers for the status message (bad checksums, reconnects...).
    """

    name: str
    kind: str  # serial | onewire | simulator

    def start(self, sink: ReadingSink) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    @property
    def sensors(self) -> list[SensorSpec]: ...

    @property
    def firmware(self) -> str: ...

    def counters(self) -> dict[str, float]: ...


_UNITS: dict[str, Unit] = {"C": "degC", "degC": "degC", "F": "degF", "degF": "degF"}


def unit_from_device(unit: str) -> Unit | None:
    """The contract unit for a unit a device announces (``C`` -> ``degC``), None if unknown."""
    return _UNITS.get(unit)


def start_source_thread(name: str, run: Callable[[ReadingSink], None], sink: ReadingSink,
                        current: threading.Thread | None) -> threading.Thread:
    """Start a source's reading thread (every source reads in a thread of its own)."""
    if current is not None:
        raise RuntimeError("already started")
    thread = threading.Thread(target=run, args=(sink,), daemon=True, name=f"source {name}")
    thread.start()
    return thread
