"""Shared helpers for the source tests: a collecting sink and short scenarios."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from edge_agent.decide.types import Reading
from firmware_sim import scenario as scenarios

# Two sensors, every line fault, sensor faults; 4 scenario minutes.
LINE_FAULTS = """
name = "line_faults"
duration = "4m"
interval = "5s"
seed = 11
device_id = "test-dev"

[[sensors]]
id = "28-0000075a1b2c"
profile = { kind = "sine", mean = 20.0, amplitude = 5.0, period = "4m" }
noise = 0.1

[[sensors]]
id = "28-00000a3f9e21"
profile = { kind = "piecewise", points = [{ at = 0, value = -18 }, { at = "4m", value = 4 }] }

[[faults]]
kind = "power_on"
sensor = "28-0000075a1b2c"
at = "20s"

[[faults]]
kind = "missing"
sensor = "28-0000075a1b2c"
at = "40s"
count = 2

[[faults]]
kind = "crc_error"
sensor = "28-00000a3f9e21"
at = "1m"
count = 2

[[faults]]
kind = "read_failed"
sensor = "28-0000075a1b2c"
at = "1m20s"

[[faults]]
kind = "garbage"
at = "1m40s"
count = 3
bytes = 50

[[faults]]
kind = "cut_line"
at = "2m"
count = 2

[[faults]]
kind = "bad_checksum"
at = "2m30s"
count = 3
"""

UNPLUG = """
name = "unplug"
duration = "3m"
interval = "5s"
seed = 5

[[sensors]]
id = "28-0000056c3d4e"
profile = { kind = "constant", value = -18.5 }

[[faults]]
kind = "unplug"
at = "1m"
duration = "30s"
"""


def load(text: str) -> scenarios.Scenario:
    return scenarios.loads(text, "test.toml")


class Collect:
    """A ReadingSink that keeps everything and lets a test wait for a condition."""

    def __init__(self, accept: bool = True) -> None:
        self.readings: list[Reading] = []
        self.accept = accept
        self._cond = threading.Condition()

    def __call__(self, reading: Reading) -> bool:
        with self._cond:
            if not self.accept:
                return False
            self.readings.append(reading)
            self._cond.notify_all()
        return True

    def wait_for(self, predicate: Callable[[list[Reading]], bool], timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.readings):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True
