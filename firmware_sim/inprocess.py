"""The simulator as a sensor source with no tty: decoded frames as they become due.

    sensors = SimulatedSensors(scenario, seed=1, speed=60)
    while not sensors.finished:
        for item in sensors.poll(time.monotonic()):   # Reading | SensorError | Hello | ...
            ...                                        # ProtocolError for damaged lines
        sleep_until(sensors.next_due())

The bytes go through the same FrameDecoder a serial reader uses, so scripted garbage, cut lines
and bad checksums arrive as ProtocolError items and show in ``decoder``'s counters. Time is an
argument: tests pass any clock values they like.
"""

from __future__ import annotations

from firmware_sim.device import Kind, SimulatedDevice
from firmware_sim.scenario import Scenario
from schemas.serial_protocol import Frame, FrameDecoder, HostFrame, ProtocolError, encode


class SimulatedSensors:
    def __init__(self, scenario: Scenario, seed: int | None = None, speed: float = 1.0,
                 start: float = 0.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.device = SimulatedDevice(scenario, seed)
        self.speed = speed
        self.start = start  # the clock value at scenario time 0
        self.decoder = FrameDecoder()
        self.plugged = True

    def scenario_ms(self, now: float) -> int:
        return int((now - self.start) * self.speed * 1000)

    def poll(self, now: float) -> list[Frame | ProtocolError]:
        """Decoded output due by clock value ``now`` (seconds, same clock as ``start``)."""
        out: list[Frame | ProtocolError] = []
        for e in self.device.step_until(self.scenario_ms(now)):
            if e.kind is Kind.UNPLUG:
                self.plugged = False
                self.decoder.reset()  # a reopened port starts clean
            elif e.kind is Kind.REPLUG:
                self.plugged = True
            if e.data:
                out += self.decoder.feed(e.data)
        return out

    def command(self, frame: HostFrame, now: float) -> list[Frame | ProtocolError]:
        """Send a host command at ``now``; returns what is due by then plus the answer."""
        out = self.poll(now)
        return out + self.decoder.feed(self.device.handle_command(encode(frame)))

    def next_due(self) -> float | None:
        """Clock value when poll() next has something, or None when the scenario is over."""
        nxt = self.device.next_event_ms()
        return None if nxt is None else self.start + nxt / 1000 / self.speed

    @property
    def finished(self) -> bool:
        return self.device.finished
