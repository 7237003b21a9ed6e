"""Encode and decode contract messages as JSON or Avro single-object; the bytes tell which.

``decode`` never crashes on bad input and never fills in a silent default: every failure is a
:class:`~schemas.errors.DecodeError` subclass whose ``reason`` says what was wrong (and, for
:class:`~schemas.errors.InvalidMessage`, which fields).
"""

from __future__ import annotations

import io
import json
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from schemas.avro_header import AVRO_MAGIC
from schemas.errors import (
    DecodeError,
    InvalidMessage,
    MissingDependency,
    PayloadTooLarge,
    UnknownEncoding,
    UnknownSchema,
)
from schemas.models import Message, _Message

if TYPE_CHECKING:  # fastavro is optional (the 'avro' extra): imported only when Avro is used
    from schemas.registry import SchemaRegistry

#: Generous for a temperature event (a few hundred bytes), small enough to stop abuse.
DEFAULT_MAX_PAYLOAD = 64 * 1024

_MESSAGE: TypeAdapter[Message] = TypeAdapter(Message)


class Encoding(StrEnum):
    JSON = "json"
    AVRO = "avro"


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


def encode(message: _Message, encoding: Encoding | str = Encoding.JSON,
           registry: SchemaRegistry | None = None) -> bytes:
    if Encoding(encoding) is Encoding.JSON:
        return message.model_dump_json().encode()
    from fastavro import schemaless_writer

    registry = registry or avro_registry()
    schema = registry.current(str(getattr(message, "kind")))  # noqa: B009 - every model has kind
    buf = io.BytesIO()
    buf.write(AVRO_MAGIC)
    buf.write(schema.fingerprint)
    schemaless_writer(buf, schema.writer, message.model_dump(mode="python"))
    return buf.getvalue()


def detect_encoding(payload: bytes) -> Encoding:
    if payload[:2] == AVRO_MAGIC:
        return Encoding.AVRO
    if payload.lstrip()[:1] == b"{":
        return Encoding.JSON
    raise UnknownEncoding("neither JSON (an object) nor Avro single-object (C3 01 ...)")


def decode(payload: bytes, *, max_size: int = DEFAULT_MAX_PAYLOAD,
           registry: SchemaRegistry | None = None) -> Message:
    """Bytes -> a validated contract message, or a :class:`DecodeError` naming the reason."""
    if len(payload) > max_size:
        raise PayloadTooLarge(len(payload), max_size)
    encoding = detect_encoding(payload)
    if encoding is Encoding.AVRO:
        return _validate(_avro_record(payload, registry or avro_registry()), from_json=False)
    return _validate(payload, from_json=True)


def _avro_record(payload: bytes, registry: SchemaRegistry) -> dict[str, Any]:
    fp = payload[2:10]
    if len(fp) != 8:
        raise DecodeError("Avro single-object payload shorter than its 10-byte header")
    schema = registry.by_fingerprint(fp)
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


def _validate(data: bytes | dict[str, Any], *, from_json: bool) -> Message:
    try:
        if from_json:
            assert isinstance(data, bytes)
            return _MESSAGE.validate_json(data)
        return _MESSAGE.validate_python(data)
    except ValidationError as exc:
        raise invalid_message(exc) from None


def invalid_message(exc: ValidationError) -> InvalidMessage:
    """Turn pydantic's report into one reason line that names every offending field."""
    fields: list[str] = []
    parts: list[str] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        fields.append(loc)
        if err["type"] == "json_invalid":
            parts.append(f"invalid JSON: {err['msg']}")
        elif err["type"] == "union_tag_not_found":
            parts.append("missing field 'kind'")
        else:
            parts.append(f"{loc}: {err['msg']}")
    return InvalidMessage("; ".join(parts), fields)


def to_json_dict(message: _Message) -> dict[str, Any]:
    """The JSON form as a Python dict (for APIs that embed messages)."""
    result: dict[str, Any] = json.loads(message.model_dump_json())
    return result
