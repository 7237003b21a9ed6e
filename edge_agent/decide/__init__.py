"""Decisions at the edge: readings in, event drafts out. Pure code: no I/O, no clock, no threads.

Time is always an argument (UTC epoch seconds). One :class:`SensorDecider` per sensor composes
small state machines, each in its own module:

- :mod:`.validate`: physical range, DS18B20 glitch values, implausible jumps -> fault codes
- :mod:`.faults`: fault episodes (one active draft per episode, one recovery draft)
- :mod:`.smoothing`: optional median / moving average
- :mod:`.bands`: threshold bands with hysteresis and dwell time
- :mod:`.rate`: rate-of-change alarm
- :mod:`.deadband`: report by exception with a heartbeat
- :mod:`.summary`: periodic min/max/mean/last/count windows
- :mod:`.stale`: no good reading for too long
- :mod:`.decider`: the composition and the ordering of what they emit (read its docstring for the
  complete event semantics)
"""

from edge_agent.config.rules import NORMAL, UNKNOWN, SensorRules, Smoothing, Threshold
from edge_agent.decide.decider import SensorDecider
from edge_agent.decide.events import draft_to_event, epoch_to_utc
from edge_agent.decide.types import Draft, DraftKind, Reading

__all__ = [
    "NORMAL",
    "UNKNOWN",
    "Draft",
    "DraftKind",
    "Reading",
    "SensorDecider",
    "SensorRules",
    "Smoothing",
    "Threshold",
    "draft_to_event",
    "epoch_to_utc",
]
