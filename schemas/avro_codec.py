"""Avro single-object bodies: ``C3 01`` + the writer schema's fingerprint + the Avro binary.

The part of the codec that does not need pydantic, shared by the hub's codec (``schemas.codec``)
and the agent's plain twin (``schemas.plain_runtime``): records in and out are plain dicts in
Python form (times as aware datetimes). fastavro is optional (the ``avro`` extra): it is
imported on first use, and its absence is a :class:`MissingDependency` naming the extra.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from schemas.avro_header import AVRO_MAGIC
from schemas.errors import DecodeError, MissingDependency, UnknownSchema

if TYPE_CHECKING:
    from schemas.registry import SchemaRegistry

_avro: SchemaRegistry | None = None


def avro_registry() -> SchemaRegistry:
    """The registry of the shipped Avro schemas; raises MissingDependency without fastavro."""
    global _avro
    if _avro is None:
        # Each program checks its role's packages at start (program_support.extras) and names
        # the install command there; this is the contract's own last word, with no arrow back.
        try:
            from schemas.registry import DEFAULT_REGISTRY
        except ModuleNotFoundError as exc:
            raise MissingDependency("Avro encoding", [exc.name or "fastavro"], "avro") from None

        _avro = DEFAULT_REGISTRY
    return _avro


def write_avro(kind: str, record: dict[str, Any], registry: SchemaRegistry | None = None
               ) -> bytes:
    """``record`` (Python form) as Avro single-object bytes of the current schema of ``kind``."""
    from fastavro import schemaless_writer

    schema = (registry or avro_registry()).current(kind)
    buf = io.BytesIO()
    buf.write(AVRO_MAGIC)
    buf.write(schema.fingerprint)
    schemaless_writer(buf, schema.writer, record)
    return buf.getvalue()


def read_avro(payload: bytes, registry: SchemaRegistry | None = None) -> dict[str, Any]:
    """The record of an Avro single-object payload, resolved to the current schema of its name."""
    fp = payload[2:10]
    if len(fp) != 8:
        raise DecodeError("Avro single-object payload shorter than its 10-byte header")
    schema = (registry or avro_registry()).by_fingerprint(fp)
    if schema is None:
        raise UnknownSchema(fp)
    from fastavro import schemaless_reader

    body = io.BytesIO(payload[10:])
    try:
        record = schemaless_reader(body, schema.writer, schema.reader)
    except (EOFError, ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError,
            OverflowError) as exc:
        raise DecodeError(f"Avro body does not match schema {schema.name}: {exc!r}") from None
    if body.read(1):
        raise DecodeError(f"trailing bytes after the Avro body of {schema.name}")
    if not isinstance(record, dict):
        raise DecodeError(f"Avro body of {schema.name} is not a record")
    return record
