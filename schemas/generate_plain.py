"""Write ``schemas/plain_messages.py``, the pydantic-free twin of the messages the agent uses.

    python -m schemas.generate_plain           # rewrite the committed module
    python -m schemas.generate_plain --check   # exit 1 if it differs from what this would write

The pydantic models in ``schemas/models.py`` stay the one source of truth (the hub validates with
them). This reads each model's fields in order, with their types, defaults and constraints
(``Ge``/``Le``, ``MaxLen``, ``Literal`` values, ``X | None``, nested models, the after-checks of
``schemas/ids.py`` and ``schemas/field_checks.py``) and writes one table per message for
``schemas/plain_runtime.py``. A constraint it does not know stops it with the field's name, so a
new kind of bound cannot be dropped on the way: teach this module and the runtime, then run it.
``tests/contract/test_plain_messages.py`` checks that the committed file is this output and
that both validations accept and refuse the same messages.

Development tool only: it imports pydantic; the module it writes does not.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import types
import typing
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AfterValidator, BaseModel

from schemas import field_checks, ids, models, vocabulary
from schemas.ids import Checked

#: the messages the edge agent builds or reads, nested ones before the ones that hold them
AGENT_MESSAGES: tuple[type[BaseModel], ...] = (
    models.ReadingEvent, models.StateChangeEvent, models.RateAlarmEvent, models.FaultEvent,
    models.SummaryEvent, models.ThresholdInfo, models.SensorInfo, models.DeviceStatus,
    models.SeqRange, models.Receipt,
)
#: the kinds the agent sends on its event and summary topics
SENSOR_EVENT_KINDS = ("reading", "state_change", "rate_alarm", "fault", "summary")

TARGET = Path(__file__).with_name("plain_messages.py")
COMMAND = "python -m schemas.generate_plain"

#: after-checks the runtime can call: they must live in a module that does not import pydantic
_PLAIN_CHECK_MODULES = {ids.__name__: "ids", field_checks.__name__: "field_checks"}

#: Literal types written by their contract name
_LITERAL_NAMES = {typing.get_args(t): name for name, t in (
    ("Unit", vocabulary.Unit), ("Severity", vocabulary.Severity),
    ("FaultCode", vocabulary.FaultCode))}


class GeneratorError(Exception):
    """A model uses something this generator cannot write a plain check for."""


#: pydantic's ``Field(ge=..., le=..., max_length=...)`` metadata (annotated_types' classes, read
#: by name: a dependency of pydantic, not of ours) -> the bound each holds
_BOUNDS = {"annotated_types.Ge": "ge", "annotated_types.Le": "le",
           "annotated_types.MaxLen": "max_length"}


def _qualname(meta: object) -> str:
    return f"{type(meta).__module__}.{type(meta).__qualname__}"


def _after_function(meta: object) -> Callable[..., Any] | None:
    if isinstance(meta, Checked):
        return meta.check
    if isinstance(meta, AfterValidator):
        return meta.func
    return None


def _function_ref(func: Callable[..., Any], where: str) -> str:
    module = _PLAIN_CHECK_MODULES.get(func.__module__)
    if module is None or getattr(sys.modules[func.__module__], func.__name__, None) is not func:
        raise GeneratorError(f"{where}: after-check {func.__module__}.{func.__qualname__} is not "
                             f"a plain function of {sorted(_PLAIN_CHECK_MODULES)}: move it there")
    return f"{module}.{func.__name__}"


def _bounds(metadata: list[Any], where: str) -> tuple[dict[str, int], list[str]]:
    """(``ge``/``le``/``max_length`` values, the after-check references) of one field."""
    bounds: dict[str, int] = {}
    after: list[str] = []
    for meta in metadata:
        func = _after_function(meta)
        if func is not None:
            after.append(_function_ref(func, where))
        elif _BOUNDS.get(_qualname(meta)) is not None:
            name = _BOUNDS[_qualname(meta)]
            bounds[name] = int(getattr(meta, name))
        else:
            raise GeneratorError(f"{where}: unknown constraint {meta!r}")
    return bounds, after


def _type_text(annotation: Any) -> str:
    """The annotation as the generated module writes it."""
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        args = typing.get_args(annotation)
        return _LITERAL_NAMES.get(args) or f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_text(a) for a in typing.get_args(annotation))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_text(a) for a in typing.get_args(annotation))}]"
    if isinstance(annotation, type):
        return annotation.__name__
    raise GeneratorError(f"cannot write the type {annotation!r}")


def _check_text(annotation: Any, metadata: list[Any], where: str) -> str:
    """The runtime check (an expression) for one field."""
    bounds, after = _bounds(metadata, where)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    used: set[str] = set()

    def take(*names: str) -> dict[str, int]:
        used.update(names)
        return {n: bounds[n] for n in names if n in bounds}

    if origin in (types.UnionType, typing.Union):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(rest) == len(args):
            raise GeneratorError(f"{where}: only 'X | None' unions are supported, not {annotation}")
        inner = _check_text(rest[0], metadata, where)
        return f"Nullable({inner})"
    if origin is Literal:
        if not all(isinstance(a, str) for a in args):
            raise GeneratorError(f"{where}: Literal of non-strings {args}")
        check = f"OneOf({', '.join(repr(a) for a in args)})"
    elif annotation is bool:
        check = "Boolean()"
    elif annotation is int:
        b = take("ge", "le")
        if set(b) != {"ge", "le"}:
            raise GeneratorError(f"{where}: an int needs both bounds (ge, le), has {b}")
        check = f"Integer({b['ge']}, {b['le']})"
    elif annotation is float:
        check = "Number()"
    elif annotation is str:
        b = take("max_length")
        check = f"Text({b['max_length']})" if b else "Text()"
    elif annotation is datetime:
        check = "Moment()"
    elif origin is list and len(args) == 1 and isinstance(args[0], type) \
            and issubclass(args[0], BaseModel):
        if args[0] not in AGENT_MESSAGES:
            raise GeneratorError(f"{where}: nested model {args[0].__name__} is not generated")
        b = take("max_length")
        if not b:
            raise GeneratorError(f"{where}: a list needs a max_length")
        check = f"ListOf({args[0].__name__}, {b['max_length']})"
    elif origin is dict and args == (str, float):
        b = take("max_length")
        if not b:
            raise GeneratorError(f"{where}: a dict needs a max_length")
        check = f"NumberMap({b['max_length']})"
    else:
        raise GeneratorError(f"{where}: no plain check for the type {annotation!r}")
    unused = set(bounds) - used
    if unused:
        raise GeneratorError(f"{where}: constraints {sorted(unused)} do not apply to {annotation}")
    for ref in after:
        check = f"After({check}, {ref})"
    return check


def _default_text(default: Any, required: bool, where: str) -> str:
    if required:
        return "REQUIRED"
    if default is None or isinstance(default, bool | int | float | str) \
            or (isinstance(default, list | dict) and not default):
        return repr(default)
    raise GeneratorError(f"{where}: cannot write the default {default!r}")


def _class_text(model: type[BaseModel]) -> str:
    name = model.__name__
    rows: list[str] = []
    params: list[str] = []
    attrs: list[str] = []
    for field, info in model.model_fields.items():
        where = f"{name}.{field}"
        if info.alias not in (None, field) or info.default_factory is not None:
            raise GeneratorError(f"{where}: aliases and default factories are not supported")
        type_text = _type_text(info.annotation)
        check = _check_text(info.annotation, list(info.metadata), where)
        default = _default_text(info.default, info.is_required(), where)
        rows.append(f"        ({field!r}, {check}, {default}),")
        attrs.append(f"    {field}: {type_text}")
        params.append(f"{field}: {type_text}" + ("" if default == "REQUIRED" else " = ..."))
    doc = (model.__doc__ or f"The contract's {name}.").strip().split("\n\n")[0]
    doc = "\n    ".join(textwrap.wrap(" ".join(doc.split()), 94))
    signature = ",\n                     ".join(params)
    return "\n".join([
        f"class {name}(PlainMessage):",
        f'    """{doc}"""',
        "",
        f"    __slots__ = ({', '.join(repr(f) for f in sorted(model.model_fields))})",
        "    FIELDS = (",
        *rows,
        "    )",
        *attrs,
        "",
        "    if TYPE_CHECKING:",
        "        def __init__(self, *,",
        f"                     {signature}) -> None: ...",
    ])


def render() -> str:
    """The text of ``schemas/plain_messages.py`` for the models as they are now."""
    kinds = {m.model_fields["kind"].default: m.__name__ for m in AGENT_MESSAGES
             if "kind" in m.model_fields}
    sensor = [kinds[k] for k in SENSOR_EVENT_KINDS]
    classes = "\n\n\n".join(_class_text(m) for m in AGENT_MESSAGES)
    kinds_rows = "\n".join(f"    {k!r}: {v}," for k, v in kinds.items())
    names = "\n".join(f'    "{n}",' for n in ["KINDS", "SENSOR_EVENTS", *sorted(
        ["Message", "SensorEvent", *(m.__name__ for m in AGENT_MESSAGES)])])
    sensor_rows = "\n".join(f"    {k!r}: {kinds[k]}," for k in SENSOR_EVENT_KINDS)
    return f'''# ruff: noqa: E501
"""The messages the edge agent sends and reads, checked without pydantic.

Generated by ``{COMMAND}`` from schemas/models.py: do not edit (run it again
after changing a model; tests/contract/test_plain_messages.py fails until then).
One class per message, with the fields, defaults and bounds of the pydantic model of the same
name; the checks and serialisation are ``schemas/plain_runtime.py``'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from schemas import field_checks, ids
from schemas.plain_runtime import (
    REQUIRED,
    After,
    Boolean,
    Integer,
    ListOf,
    Moment,
    Nullable,
    Number,
    NumberMap,
    OneOf,
    PlainMessage,
    Text,
)
from schemas.vocabulary import FaultCode, Severity, Unit

__all__ = [
{names}
]


{classes}


SensorEvent = {" | ".join(sensor)}
#: every message here that has a kind (travels alone on a topic)
Message = {" | ".join(kinds.values())}

#: kind -> class, for every message here that has a kind
KINDS: dict[str, type[Message]] = {{
{kinds_rows}
}}
#: kind -> class of the events the agent publishes on its event and summary topics
SENSOR_EVENTS: dict[str, type[SensorEvent]] = {{
{sensor_rows}
}}
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed module differs from the models")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is out of date: run {COMMAND}", file=sys.stderr)  # noqa: T201
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
