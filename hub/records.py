"""The hub's neutral measurement type: what the journal keeps for the hub's own records and what
storage writes.

A :class:`Point` is a measurement, its tags and fields and a time in nanoseconds, with its InfluxDB
line-protocol form. The journal (``LocalRecord``), the consumer contract and storage all use it;
how a contract message becomes one is storage's business (``hub/storage/points.py``), so the
generic parts of the hub never import a consumer's module.
"""

from __future__ import annotations

from dataclasses import dataclass

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
