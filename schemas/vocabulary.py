"""The contract's bounds and closed vocabularies, without pydantic.

``schemas/models.py`` (the pydantic contract, the hub's validation) and the edge agent's plain
twin (``schemas/plain_messages.py``) both take them from here, so a bound is written once.
See models.py's docstring for what each bound covers.
"""

from __future__ import annotations

from typing import Literal

#: the highest ``seq`` (and seq range end) the contract allows: a signed 64-bit integer
SEQ_MAX = 2**63 - 1
NAME_MAX = 128      # a name for people, a version, a source kind, a counter's name, a hub id
TEXT_MAX = 1024     # a fault's detail, a loss's cause, a device's firmware line
SENSORS_MAX = 1024  # sensors in one status
THRESHOLDS_MAX = 32  # thresholds of one sensor
COUNTERS_MAX = 256  # counters in one status
RANGES_MAX = 1000   # seq ranges in one receipt (the hub sends at most 500)

Unit = Literal["degC", "degF"]
Severity = Literal["info", "warning", "critical"]
FaultCode = Literal[
    "power_on_value",    # DS18B20 85.0 degC power-on reading
    "disconnected",      # DS18B20 -127 / sensor missing on the bus
    "crc_error",         # 1-Wire 'crc=.. NO' or serial checksum failure on a reading
    "read_failed",       # the firmware or driver reported a failed read
    "out_of_range",      # outside the configured physical range
    "implausible_jump",  # a jump larger than physically plausible between readings
    "stale",             # no good reading for longer than the stale timeout
    "device_lost",       # the serial device disappeared (unplugged, renumbered)
]
