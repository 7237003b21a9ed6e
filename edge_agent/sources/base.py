"""The one interface every sensor source satisfies, and what they share.

A source's reading thread runs under the agent's supervisor (``program_support.supervision``) when
``start`` is given one: a reader that raises is logged once with its traceback, the agent's
watchdog stops pinging while it is down, and it is started again after a backoff (its loop opens
the device again). A reader that returns has finished (a simulator that played its scenario).
Without a supervisor (``edge-agent probe``) the thread is a plain one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from edge_agent.decide.types import Reading
from schemas.vocabulary import Unit

if TYPE_CHECKING:
    from program_support.supervision import Supervisor

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

    ``start(sink, supervisor)`` returns at once (the thread runs under ``supervisor`` when one
    is given); ``stop()`` ends the thread and closes what it opened.
    ``sensors`` and ``firmware`` describe what the source found so far (for the birth status);
    ``discovered`` says ``sensors`` is whole: the source has looked (a 1-Wire scan, a HELLO), so
    a sensor it does not list is not there (the birth's ``sensors_complete``);
    ``counters()`` are monotonic numbers for the status message (bad checksums, reconnects...).
    """

    name: str
    kind: str  # serial | onewire | simulator

    def start(self, sink: ReadingSink, supervisor: Supervisor | None = None) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    @property
    def sensors(self) -> list[SensorSpec]: ...

    @property
    def discovered(self) -> bool: ...

    @property
    def firmware(self) -> str: ...

    def counters(self) -> dict[str, float]: ...


_UNITS: dict[str, Unit] = {"C": "degC", "degC": "degC", "F": "degF", "degF": "degF"}


def unit_from_device(unit: str) -> Unit | None:
    """The contract unit for a unit a device announces (``C`` -> ``degC``), None if unknown."""
    return _UNITS.get(unit)


def start_source_thread(name: str, run: Callable[[ReadingSink], None], sink: ReadingSink,
                        current: threading.Thread | None,
                        supervisor: Supervisor | None = None) -> threading.Thread:
    """Start a source's reading thread (every source reads in a thread of its own), as the
    component ``source <name>`` of ``supervisor`` when one is given."""
    if current is not None:
        raise RuntimeError("already started")
    if supervisor is not None:
        component = supervisor.spawn(f"source {name}", lambda: run(sink), may_return=True)
        assert component.thread is not None  # spawned and started
        return component.thread
    thread = threading.Thread(target=run, args=(sink,), daemon=True, name=f"source {name}")
    thread.start()
    return thread
