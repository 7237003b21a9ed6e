"""The one-line status a person reads, from the agent's counters. Pure: printing is cli.py's.

    pi-01 | mqtt up | 4 sensors | 1,234 readings | 57 events | outbox 0 (0 s) | drops 0 | ...
"""

from __future__ import annotations

from collections.abc import Mapping


def age_text(seconds: float) -> str:
    """An age for people: 42 s, 17 min, 3 h."""
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h"


def status_line(device_id: str, connected: bool, sensors: int,
                counters: Mapping[str, float]) -> str:
    def n(key: str) -> int:
        return int(counters.get(key, 0))

    drops = n("dropped_readings_queue") + sum(
        int(v) for k, v in counters.items() if k.startswith("dropped_by_"))
    parts = [
        device_id,
        f"mqtt {'up' if connected else 'DOWN'}",
        f"{sensors} sensor{'s' if sensors != 1 else ''}",
        f"{n('readings'):,} readings",
        f"{n('events'):,} events",
        f"outbox {n('outbox_depth'):,} ({age_text(counters.get('outbox_oldest_age_s', 0))})",
        f"drops {drops:,}",
        f"reconnects {n('reconnects') + n('device_reconnects'):,}",
    ]
    faults = n("faults_active")
    if faults:
        parts.append(f"{faults} fault{'s' if faults != 1 else ''} active")
    bad = n("bad_checksum")
    if bad:
        parts.append(f"bad checksums {bad:,}")
    return " | ".join(parts)
