"""Avro schemas by fingerprint, so a reader knows the writer schema from the bytes alone.

Single-object encoding (Avro spec): ``C3 01`` + the writer schema's 8-byte little-endian
CRC-64-AVRO fingerprint + the Avro binary body. The registry holds the current schema of every
message kind (``schemas/avro/*.avsc``) and every earlier version still in the field
(``schemas/avro/history/*.avsc``); an event written with an older schema is resolved against the
current one (Avro schema resolution: added fields take their defaults).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from schemas.avro_header import AVRO_MAGIC

__all__ = ["AVRO_MAGIC", "DEFAULT_REGISTRY", "RegisteredSchema", "SchemaRegistry",
           "load_default_registry", "schema_fingerprint"]

NAMESPACE = "thermopipe"


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """One Avro schema the registry knows, by the fingerprint writers put in their header."""

    kind: str                    # the message kind this schema encodes
    name: str                    # Avro full name, e.g. thermopipe.StateChangeEvent
    fingerprint: bytes           # 8 bytes, little-endian CRC-64-AVRO
    writer: dict[str, Any]       # parsed writer schema
    reader: dict[str, Any]       # parsed current schema for the same name
    current: bool


def _parse(raw: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], parse_schema(raw, _write_hint=False))


def schema_fingerprint(schema: Any) -> bytes:
    canonical = to_parsing_canonical_form(schema)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def _kind_of(schema: dict[str, Any]) -> str:
    for field in schema["fields"]:
        if field["name"] == "kind":
            return cast(str, field["default"])
    raise ValueError(f"schema {schema.get('name')} has no 'kind' field with a default")


def _load_dir(subdir: str) -> list[dict[str, Any]]:
    root = resources.files("schemas").joinpath(subdir)
    out = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".avsc"):
            out.append(cast(dict[str, Any], json.loads(entry.read_text(encoding="utf-8"))))
    return out


class SchemaRegistry:
    """Known Avro writer schemas by fingerprint, and the current schema of each kind."""

    def __init__(self) -> None:
        self._by_fingerprint: dict[bytes, RegisteredSchema] = {}
        self._current_by_kind: dict[str, RegisteredSchema] = {}
        self._current_by_name: dict[str, dict[str, Any]] = {}

    def add_current(self, raw: dict[str, Any]) -> RegisteredSchema:
        parsed = _parse(raw)
        name = cast(str, parsed["name"])
        entry = RegisteredSchema(_kind_of(raw), name, schema_fingerprint(parsed), parsed, parsed,
                                 current=True)
        self._by_fingerprint[entry.fingerprint] = entry
        self._current_by_kind[entry.kind] = entry
        self._current_by_name[name] = parsed
        return entry

    def add_history(self, raw: dict[str, Any]) -> RegisteredSchema:
        """Register an older writer schema; its current version must be registered first."""
        parsed = _parse(raw)
        name = cast(str, parsed["name"])
        if name not in self._current_by_name:
            raise ValueError(f"history schema {name} has no current version")
        entry = RegisteredSchema(_kind_of(raw), name, schema_fingerprint(parsed), parsed,
                                 self._current_by_name[name], current=False)
        self._by_fingerprint[entry.fingerprint] = entry
        return entry

    def by_fingerprint(self, fp: bytes) -> RegisteredSchema | None:
        return self._by_fingerprint.get(fp)

    def current(self, kind: str) -> RegisteredSchema:
        return self._current_by_kind[kind]

    def kinds(self) -> list[str]:
        return sorted(self._current_by_kind)

    def __len__(self) -> int:
        return len(self._by_fingerprint)


def load_default_registry() -> SchemaRegistry:
    registry = SchemaRegistry()
    for raw in _load_dir("avro"):
        registry.add_current(raw)
    for raw in _load_dir("avro/history"):
        registry.add_history(raw)
    return registry


DEFAULT_REGISTRY = load_default_registry()
