"""The hub's neutral record types: a measurement (what the journal keeps for the hub's own records
and what storage writes), and a dead letter (what ingest refused, as stored and as listed).

A :class:`Point` is a measurement, its tags and fields and a time in nanoseconds, with its InfluxDB
line-protocol form. The journal (``LocalRecord``), the consumer contract and storage all use it;
how a contract message becomes one is storage's business (``hub/storage/points.py``), so the
generic parts of the hub never import a consumer's module.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from schemas.models import DeadLetter

FieldValue = float | int | bool | str


@dataclass(frozen=True, slots=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int

    def to_line(self) -> str:
        tags = "".join(f",{esc_key(k)}={esc_key(v)}" for k, v in sorted(self.tags.items())
                       if v != "")
        fields = ",".join(f"{esc_key(k)}={esc_field(v)}" for k, v in self.fields.items())
        return f"{esc_key(self.measurement)}{tags} {fields} {self.time_ns}"


def esc_key(value: str) -> str:
    """A measurement, tag key, tag value or field key, escaped for the line protocol."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")


def esc_field(value: FieldValue) -> str:
    """A field value in the line protocol: true/false, 5i, 5.0, "text"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True, slots=True)
class DeadRecord:
    """A payload the hub refused, with the reason: what ingest records in the dead-letter store,
    what ``hub dlq`` reads back (then ``row_id``, ``status``, ``outcome`` and ``store`` say where
    and how it stands), and, as :meth:`to_message`, what the dead-letter topic carries."""

    dead_letter_id: str
    received_at: datetime
    topic: str
    reason_code: str
    reason: str
    payload: bytes
    status: str = "open"   # open | replay_requested | replayed
    outcome: str = ""
    row_id: int = 0        # its row in the store (0: not stored yet)
    store: Path | None = None

    def to_message(self) -> DeadLetter:
        return DeadLetter(dead_letter_id=self.dead_letter_id, received_at=self.received_at,
                          topic=self.topic, reason=self.reason,
                          payload_b64=base64.b64encode(self.payload).decode())
