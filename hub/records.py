"""The hub's neutral record types: a measurement (what the journal keeps for the hub's own records
and what storage writes), and a dead letter (what ingest refused, as stored and as listed).

A dead letter is bounded (:meth:`DeadRecord.refused`, :meth:`DeadRecord.bounded`): its payload,
its topic and its reason each keep a prefix (:data:`DEAD_LETTER_KEEP`, :data:`TOPIC_KEEP`,
:data:`REASON_KEEP` bytes) with the size and SHA-256 of the whole, so a stored row is at most
:data:`DEAD_LETTER_ROW_MAX` bytes whatever arrived (a 65 KB topic level, a 10 MB payload, a 1 MB
exception text), and its message on the dead-letter topic is bounded too. Sizes and hashes are
columns of the store and fields of the message; rows written before they existed carry the
payload's in a note at the end of the reason (:data:`_TRUNCATED`), still read back. A dead letter
whose payload or topic was cut cannot be replayed (:attr:`DeadRecord.replayable`).

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
#: the most of its topic (UTF-8 bytes) a dead letter keeps; MQTT allows 65,535
TOPIC_KEEP = 1024
#: the most of its reason (UTF-8 bytes) a dead letter keeps (an exception's text can be huge)
REASON_KEEP = 2048
#: ids and reason codes are the hub's own, short; cut there all the same
ID_KEEP = 64
#: every dead-letter row as SQLite stores it (the record, its header included) is at most this:
#: the three prefixes above, two ids, three hashes, sizes, status and outcome (tests prove it)
DEAD_LETTER_ROW_MAX = 8192

# rows written before the size and hash columns existed end their reason with this note
_TRUNCATED = re.compile(r" \[payload truncated: first (\d+) of (\d+) bytes kept, "
                        r"sha256 ([0-9a-f]{64})\]$")


def _utf8(text: str) -> bytes:
    # a lone surrogate (a str made with surrogateescape) becomes visible text, never an error
    return text.encode("utf-8", "backslashreplace")


def clip_text(text: str, keep: int) -> tuple[str, int, str]:
    """``(prefix, size, sha256)``: the longest prefix of ``text`` within ``keep`` UTF-8 bytes
    (never cut inside a character), and the size and SHA-256 of its whole UTF-8 form."""
    raw = _utf8(text)
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) <= keep and len(raw) == len(text.encode("utf-8", "ignore")):
        return text, len(raw), digest
    return raw[:keep].decode("utf-8", "ignore"), len(raw), digest


def utf8_size(text: str) -> int:
    return len(_utf8(text))


@dataclass(frozen=True, slots=True)
class DeadRecord:
    """A payload the hub refused, with the reason: what ingest records in the dead-letter store,
    what ``hub dlq`` reads back (then ``row_id``, ``status``, ``outcome`` and ``store`` say where
    and how it stands), and, as :meth:`to_message`, what the dead-letter topic carries.

    ``payload``, ``topic`` and ``reason`` are the whole or, when cut, a prefix; ``size`` and
    ``sha256`` (the payload's), ``topic_size``/``topic_sha256`` and ``reason_size``/
    ``reason_sha256`` are those of the whole as received (None: not measured yet, the field is
    whole). Make one with :meth:`refused` (bounded); :meth:`as_stored` reads a stored row's
    back."""

    dead_letter_id: str
    received_at: datetime
    topic: str
    reason_code: str
    reason: str
    payload: bytes
    status: str = "open"   # open | replayed
    outcome: str = ""
    row_id: int = 0        # its row in the store (0: not stored yet)
    store: Path | None = None
    size: int | None = None
    sha256: str | None = None
    topic_size: int | None = None
    topic_sha256: str | None = None
    reason_size: int | None = None
    reason_sha256: str | None = None

    @classmethod
    def refused(cls, dead_letter_id: str, received_at: datetime, topic: str, payload: bytes, *,
                reason_code: str, reason: str, keep: int = DEAD_LETTER_KEEP) -> DeadRecord:
        """A new dead letter, bounded (:meth:`bounded`): a payload over ``keep`` bytes keeps its
        first ``keep`` bytes, a topic or reason over its bound a prefix, each with the size and
        SHA-256 of the whole."""
        return cls(dead_letter_id, received_at, topic, reason_code, reason, payload
                   ).bounded(keep)

    def bounded(self, keep: int = DEAD_LETTER_KEEP) -> DeadRecord:
        """This record measured (sizes and hashes of what it holds whole) and cut to the
        bounds; the store applies it to every record, however it was made."""
        size, sha = self.size, self.sha256
        if size is None or sha is None:
            size, sha = len(self.payload), hashlib.sha256(self.payload).hexdigest()
        topic, t_size, t_sha = clip_text(self.topic, TOPIC_KEEP)
        if self.topic_size is not None and self.topic_sha256 is not None:
            t_size, t_sha = self.topic_size, self.topic_sha256
        reason, r_size, r_sha = clip_text(self.reason, REASON_KEEP)
        if self.reason_size is not None and self.reason_sha256 is not None:
            r_size, r_sha = self.reason_size, self.reason_sha256
        return replace(self, dead_letter_id=clip_text(self.dead_letter_id, ID_KEEP)[0],
                       reason_code=clip_text(self.reason_code, ID_KEEP)[0],
                       topic=topic, reason=reason, payload=self.payload[:keep],
                       size=size, sha256=sha, topic_size=t_size, topic_sha256=t_sha,
                       reason_size=r_size, reason_sha256=r_sha)

    def as_stored(self) -> DeadRecord:
        """This record read back from the store: what its columns did not say (a row written
        before they existed) from the reason's truncation note, else measured from the
        (then whole) stored fields."""
        out = self
        if out.size is None or out.sha256 is None:
            note = _TRUNCATED.search(out.reason)
            if note is not None and int(note.group(1)) == len(out.payload):
                out = replace(out, size=int(note.group(2)), sha256=note.group(3))
            else:
                out = replace(out, size=len(out.payload),
                              sha256=hashlib.sha256(out.payload).hexdigest())
        if out.topic_size is None or out.topic_sha256 is None:
            raw = _utf8(out.topic)
            out = replace(out, topic_size=len(raw), topic_sha256=hashlib.sha256(raw).hexdigest())
        if out.reason_size is None or out.reason_sha256 is None:
            raw = _utf8(out.reason)
            out = replace(out, reason_size=len(raw),
                          reason_sha256=hashlib.sha256(raw).hexdigest())
        return out

    @property
    def original_size(self) -> int:
        """The size of the payload as received."""
        return len(self.payload) if self.size is None else self.size

    @property
    def truncated(self) -> bool:
        """Only a prefix of the payload was kept."""
        return self.original_size > len(self.payload)

    @property
    def topic_truncated(self) -> bool:
        return self.topic_size is not None and self.topic_size > utf8_size(self.topic)

    @property
    def reason_truncated(self) -> bool:
        return self.reason_size is not None and self.reason_size > utf8_size(self.reason)

    @property
    def replayable(self) -> bool:
        """Its whole payload and topic are kept: validation can see it again as it came."""
        return not self.truncated and not self.topic_truncated

    @property
    def stored_bytes(self) -> int:
        """What this row's variable-length columns hold (what ``[dead_letters] max_bytes``
        counts)."""
        hashes = sum(len(h or "") for h in (self.sha256, self.topic_sha256, self.reason_sha256))
        return (len(self.payload) + utf8_size(self.topic) + utf8_size(self.reason)
                + utf8_size(self.dead_letter_id) + utf8_size(self.reason_code)
                + utf8_size(self.status) + utf8_size(self.outcome) + hashes)

    def to_message(self) -> DeadLetter:
        """The dead-topic message: the prefixes kept, with the sizes and the payload's hash."""
        return DeadLetter(dead_letter_id=self.dead_letter_id, received_at=self.received_at,
                          topic=self.topic, reason=self.reason,
                          payload_b64=base64.b64encode(self.payload).decode(),
                          payload_size=self.size, payload_sha256=self.sha256,
                          topic_size=self.topic_size, reason_size=self.reason_size)
