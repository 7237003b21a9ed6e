"""Line protocol for a message, with a fast path for readings (most of the traffic).

The result is byte-for-byte ``point_for(message).to_line()`` (``hub/storage/points.py`` defines
the layout; ``tests/hub_core/test_hub_units.py`` proves the two agree): the fast path only caches
the escaped tag set per (site, device, sensor), which is where the general path spends its time.
"""

from __future__ import annotations

from functools import lru_cache

from hub.records import esc_key
from hub.storage.points import point_for, time_ns
from schemas.models import Message, ReadingEvent


@lru_cache(maxsize=65_536)
def _reading_prefix(site: str, device: str, sensor: str, unit: str) -> str:
    tags = {"site": site, "device": device, "sensor": sensor, "kind": "reading",
            "state": "value", "unit": unit}
    return "sensor_event" + "".join(f",{esc_key(k)}={esc_key(v)}"
                                    for k, v in sorted(tags.items()) if v != "")


def line_for(message: Message) -> str | None:
    if type(message) is ReadingEvent:
        e = message
        # event_id is [A-Za-z0-9_-]: nothing to escape inside the quotes
        return (f"{_reading_prefix(e.site, e.device_id, e.sensor_id, e.unit)} value={e.value!r},"
                f"seq={e.seq}i,event_id=\"{e.event_id}\","
                f"replayed={'true' if e.replayed else 'false'},"
                f"clock_synced={'true' if e.clock_synced else 'false'} {time_ns(e.time, e.seq)}")
    point = point_for(message)
    return None if point is None else point.to_line()
