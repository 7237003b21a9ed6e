"""A simulated Linux 1-Wire sysfs tree (``/sys/bus/w1/devices``) fed by the device's Samples.

``render_w1_slave()`` is pure; ``W1Tree`` writes files atomically (temporary file + rename) so
that a reader never sees half a file, as with the kernel's sysfs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from firmware_sim import signals
from firmware_sim.device import Condition, Sample
from schemas.serial_protocol import checksum

_CONFIG = {9: 0x1F, 10: 0x3F, 11: 0x5F, 12: 0x7F}
_TH, _TL = 0x4B, 0x46  # factory alarm registers
MASTER = "w1_bus_master1"


def scratchpad(raw: int, resolution: int = 12, *, power_on: bool = False) -> bytes:
    """The 9 bytes a DS18B20 returns, CRC included, for the raw temperature register."""
    raw &= 0xFFFF
    count_remain = 0x0C if power_on else 0x10 - (raw & 0x0F)
    body = bytes([raw & 0xFF, raw >> 8, _TH, _TL, _CONFIG[resolution], 0xFF, count_remain, 0x10])
    return body + bytes([checksum(body)])


def format_w1_slave(pad: bytes) -> str:
    """What ``w1_therm`` prints for these 9 bytes (``crc=`` is the CRC computed on the host)."""
    crc = checksum(pad[:8])
    verdict = "YES" if crc == pad[8] else "NO"
    hexes = " ".join(f"{b:02x}" for b in pad)
    raw = int.from_bytes(pad[:2], "little", signed=True)
    return f"{hexes} : crc={crc:02x} {verdict}\n{hexes} t={signals.raw_to_milli(raw)}\n"


def render_w1_slave(sample: Sample) -> str | None:
    """The ``w1_slave`` content for a sample, or None when the sensor is off the bus."""
    match sample.condition:
        case Condition.OK:
            raw = signals.milli_to_raw(sample.true_milli)
            return format_w1_slave(scratchpad(raw, sample.resolution))
        case Condition.POWER_ON:
            return format_w1_slave(scratchpad(0x0550, power_on=True))
        case Condition.CRC_ERROR:
            pad = bytearray(scratchpad(signals.milli_to_raw(sample.true_milli),
                                       sample.resolution))
            pad[0] ^= 0x01  # one flipped bit: CRC-8 always catches it
            return format_w1_slave(bytes(pad))
        case Condition.READ_FAILED:
            return format_w1_slave(b"\xff" * 9)  # nobody answered: the bus reads all ones
    return None  # DISCONNECTED / MISSING


def parse_w1_slave(text: str) -> tuple[bool, int]:
    """(crc ok, t=milli-degrees) from a ``w1_slave`` file, as an agent would read it."""
    first, second = text.splitlines()[:2]
    return first.rstrip().endswith("YES"), int(second.rsplit("t=", 1)[1])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="ascii")
    os.replace(tmp, path)


class W1Tree:
    """``root/28-xxxxxxxxxxxx/w1_slave`` files and ``root/w1_bus_master1/w1_master_slaves``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._present: list[str] = []

    def create(self) -> None:
        (self.root / MASTER).mkdir(parents=True, exist_ok=True)
        _write_atomic(self.root / MASTER / "w1_master_slaves", "not found.\n")

    def apply(self, sample: Sample) -> None:
        content = render_w1_slave(sample)
        device = self.root / sample.sensor_id
        if content is None:
            if sample.sensor_id in self._present:
                self._present.remove(sample.sensor_id)
                shutil.rmtree(device, ignore_errors=True)
                self._write_slaves()
            return
        if sample.sensor_id not in self._present:
            device.mkdir(parents=True, exist_ok=True)
            _write_atomic(device / "name", sample.sensor_id + "\n")
            self._present.append(sample.sensor_id)
            self._write_slaves()
        _write_atomic(device / "w1_slave", content)

    def _write_slaves(self) -> None:
        # The kernel says "not found." when the bus is empty.
        listing = "".join(f"{sid}\n" for sid in self._present) or "not found.\n"
        _write_atomic(self.root / MASTER / "w1_master_slaves", listing)

    def remove(self) -> None:
        """Delete everything this tree wrote (the root directory itself is kept)."""
        for sid in self._present:
            shutil.rmtree(self.root / sid, ignore_errors=True)
        shutil.rmtree(self.root / MASTER, ignore_errors=True)
        self._present.clear()
