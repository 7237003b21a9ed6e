"""What the Avro schema of a pydantic model must be, derived from the model's annotations.

Used by the drift test (the committed ``.avsc`` must equal this) and, run as a script, to write the
``.avsc`` files after a deliberate contract change: ``python tests/contract/avro_expect.py``.
"""

from __future__ import annotations

import json
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

NAMESPACE = "thermopipe"
AVSC_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
FILE_NAMES = {
    "reading": "reading_event.avsc",
    "state_change": "state_change_event.avsc",
    "rate_alarm": "rate_alarm_event.avsc",
    "fault": "fault_event.avsc",
    "summary": "summary_event.avsc",
    "status": "device_status.avsc",
    "alert": "alert.avsc",
    "dead_letter": "dead_letter.avsc",
    "receipt": "receipt.avsc",
    "data_loss": "data_loss.avsc",
}


def _strip_annotated(tp: Any) -> Any:
    while get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    return tp


def avro_type(tp: Any, seen: set[str]) -> Any:
    tp = _strip_annotated(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        assert len(args) == 1, f"only Optional unions are supported, got {tp}"
        return ["null", avro_type(args[0], seen)]
    if origin is Literal:
        assert all(isinstance(a, str) for a in get_args(tp))
        return "string"
    if origin is list:
        return {"type": "array", "items": avro_type(get_args(tp)[0], seen)}
    if origin is dict:
        key, value = get_args(tp)
        assert key is str
        return {"type": "map", "values": avro_type(value, seen)}
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return record_schema(tp, seen)
    simple = {str: "string", bool: "boolean", int: "long", float: "double"}
    if tp in simple:
        return simple[tp]
    if tp is datetime:
        return {"type": "long", "logicalType": "timestamp-micros"}
    raise TypeError(f"no Avro mapping for {tp!r}")


def _default(value: Any) -> Any:
    if isinstance(value, (list, dict, str, bool, int, float)) or value is None:
        return value
    raise TypeError(f"unsupported default {value!r}")


def record_schema(model: type[BaseModel], seen: set[str] | None = None) -> Any:
    seen = set() if seen is None else seen
    name = f"{NAMESPACE}.{model.__name__}"
    if name in seen:
        return name
    seen.add(name)
    fields = []
    for field_name, info in model.model_fields.items():
        annotation = info.annotation
        if info.metadata:  # Annotated[...] constraints are kept outside the annotation
            annotation = typing.Annotated[(annotation, *info.metadata)]
        entry: dict[str, Any] = {"name": field_name, "type": avro_type(annotation, seen)}
        default = info.get_default(call_default_factory=True)
        if default is not PydanticUndefined:
            entry["default"] = _default(default)
        fields.append(entry)
    return {"type": "record", "name": model.__name__, "namespace": NAMESPACE, "fields": fields}


def write_all() -> None:
    from schemas.models import MODELS

    for kind, model in MODELS.items():
        path = AVSC_DIR / FILE_NAMES[kind]
        path.write_text(json.dumps(record_schema(model), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    write_all()
