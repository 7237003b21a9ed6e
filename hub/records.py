"""The hub's neutral record types: a measurement (what the journal keeps for the hub's own records
and what storage writes), and a dead letter (what ingest refused, as stored and as listed).

A dead letter is bounded (:meth:`DeadRecord.refused`): of a payload longer than
:data:`DEAD_LETTER_KEEP` bytes only that prefix is kept, with the original size and the SHA-256
of the whole payload, so a flood of 10 MB payloads cannot fill the hub's database or be
republished whole on the dead-letter topic. The size and hash travel in the reason, in a note
that :meth:`DeadRecord.as_stored` reads back (the store and the contract have no columns or
fields for them yet); a truncated dead letter cannot be replayed.

A :class:`Point` is a measurement, its tags and fields and a time in nanoseconds, with its InfluxDB
line-protocol form. The journal (``LocalRecord``), the consumer contract and storage all use it;
how a contract message becomes one is storage's business (``hub/storage/points.py``), so the
generic parts of the hub never import a consumer's module.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, replace
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


#: the most of a refused payload a dead letter keeps (the rest: its size and SHA-256)
DEAD_LETTER_KEEP = 4096

_TRUNCATED = re.compile(r" \[payload truncated: first (\d+) of (\d+) bytes kept, "
                        r"sha256 ([0-9a-f]{64})\]$")


def truncation_note(kept: int, size: int, sha256: str) -> str:
    """The note a truncated dead letter's reason ends with (:data:`_TRUNCATED` reads it)."""
    return f" [payload truncated: first {kept} of {size} bytes kept, sha256 {sha256}]"


@dataclass(frozen=True, slots=True)
class DeadRecord:
    """A payload the hub refused, with the reason: what ingest records in the dead-letter store,
    what ``hub dlq`` reads back (then ``row_id``, ``status``, ``outcome`` and ``store`` say where
    and how it stands), and, as :meth:`to_message`, what the dead-letter topic carries.

    ``payload`` is the whole payload or, when :attr:`truncated`, its first bytes; ``size`` and
    ``sha256`` are those of the whole payload as received (None: not known, ``payload`` is
    whole). Make one with :meth:`refused` (bounded); :meth:`as_stored` reads a stored row's back."""

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
    size: int | None = None
    sha256: str | None = None

    @classmethod
    def refused(cls, dead_letter_id: str, received_at: datetime, topic: str, payload: bytes, *,
                reason_code: str, reason: str, keep: int = DEAD_LETTER_KEEP) -> DeadRecord:
        """A new dead letter, bounded: a payload over ``keep`` bytes keeps its first ``keep``
        bytes, and the reason says so with the original size and SHA-256."""
        digest = hashlib.sha256(payload).hexdigest()
        if len(payload) > keep:
            reason += truncation_note(keep, len(payload), digest)
        return cls(dead_letter_id, received_at, topic, reason_code, reason, payload[:keep],
                   size=len(payload), sha256=digest)

    def as_stored(self) -> DeadRecord:
        """This record read back from the store: size and hash from the reason's truncation
        note, else those of the stored (whole) payload."""
        note = _TRUNCATED.search(self.reason)
        if note is not None and int(note.group(1)) == len(self.payload):
            return replace(self, size=int(note.group(2)), sha256=note.group(3))
        return replace(self, size=len(self.payload),
                       sha256=hashlib.sha256(self.payload).hexdigest())

    @property
    def original_size(self) -> int:
        """The size of the payload as received."""
        return len(self.payload) if self.size is None else self.size

    @property
    def truncated(self) -> bool:
        """Only a prefix of the payload was kept: it cannot be replayed."""
        return self.original_size > len(self.payload)

    def to_message(self) -> DeadLetter:
        return DeadLetter(dead_letter_id=self.dead_letter_id, received_at=self.received_at,
                          topic=self.topic, reason=self.reason,
                          payload_b64=base64.b64encode(self.payload).decode())
