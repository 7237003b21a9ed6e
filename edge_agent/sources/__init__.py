"""Sensor sources: one interface (:class:`SensorSource`), three kinds.

    serial     a microcontroller speaking schemas/SERIAL_PROTOCOL.md over USB serial (or a URL)
    onewire    DS18B20 sensors under the Linux w1 sysfs tree
    simulator  firmware_sim in-process, for demos and tests

Each source runs its own thread and hands :class:`~edge_agent.decide.types.Reading` values to a
sink the agent owns (a bounded queue); nothing a source does can stall the agent.
"""

from edge_agent.sources.base import ReadingSink, SensorSource, SensorSpec, unit_from_device

__all__ = ["ReadingSink", "SensorSource", "SensorSpec", "unit_from_device"]
