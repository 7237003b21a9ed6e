"""Shared helpers for the firmware_sim tests (imported by path-relative name, no package)."""

from __future__ import annotations

import threading

import serial

from firmware_sim import scenario as scenarios
from schemas.serial_protocol import Frame, FrameDecoder, ProtocolError

# Ten minutes, two sensors, every stream and sensor fault except unplug.
ALL_FAULTS = """
name = "all_faults"
duration = "10m"
interval = "5s"
seed = 11
device_id = "test-dev"

[[sensors]]
id = "28-0000075a1b2c"
profile = { kind = "sine", mean = 20.0, amplitude = 5.0, period = "10m", peak_at = "2m" }
noise = 0.1
spikes = { probability = 0.05, magnitude = 6.0 }

[[sensors]]
id = "28-00000a3f9e21"
profile = { kind = "piecewise", points = [{ at = 0, value = -18 }, { at = "10m", value = 4 }] }

[[faults]]
kind = "power_on"
sensor = "28-0000075a1b2c"
at = "30s"

[[faults]]
kind = "disconnected"
sensor = "28-00000a3f9e21"
at = "1m"
duration = "20s"

[[faults]]
kind = "missing"
sensor = "28-0000075a1b2c"
at = "2m"
count = 2

[[faults]]
kind = "crc_error"
sensor = "28-00000a3f9e21"
at = "2m30s"
count = 2

[[faults]]
kind = "read_failed"
sensor = "28-0000075a1b2c"
at = "3m"

[[faults]]
kind = "garbage"
at = "3m30s"
count = 3
bytes = 50

[[faults]]
kind = "cut_line"
at = "4m"
count = 2

[[faults]]
kind = "bad_checksum"
at = "5m"
count = 3

[[faults]]
kind = "stall"
at = "6m"
duration = "40s"

[[faults]]
kind = "clock_jump"
at = "7m"
by = "-1h"
"""

UNPLUG = """
name = "unplug"
duration = "20m"
interval = "10s"
seed = 5

[[sensors]]
id = "28-0000056c3d4e"
profile = { kind = "constant", value = -18.5 }

[[faults]]
kind = "unplug"
at = "8m"
duration = "4m"
"""


def load(text: str) -> scenarios.Scenario:
    return scenarios.loads(text, "test.toml")


class Collector:
    """Reads a pyserial port in a thread until the port errors out (closed or unplugged)."""

    def __init__(self, ser: serial.SerialBase) -> None:
        self.ser = ser
        self.data = bytearray()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                # Only what is there: pyserial's read(n) drops bytes it collected when the
                # port dies mid-call, and we want every byte before an unplug.
                self.data += self.ser.read(self.ser.in_waiting or 1)
        except (serial.SerialException, OSError) as exc:
            self.error = exc

    def join(self, timeout: float = 20) -> bytes:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the port never closed"
        return bytes(self.data)


def decode(data: bytes) -> tuple[list[Frame], FrameDecoder]:
    decoder = FrameDecoder()
    items = decoder.feed(data)
    return [i for i in items if not isinstance(i, ProtocolError)], decoder
