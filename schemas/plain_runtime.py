"""What the plain twin of the contract runs on: field checks, the message base, JSON and Avro.

``schemas/plain_messages.py`` (generated from the pydantic models by ``python -m
schemas.generate_plain``) declares each message the edge agent sends or reads as a table of
``(name, check, default)``; :class:`PlainMessage` validates keyword arguments (or a decoded
JSON / Avro record) against that table and serialises the result. Standard library only: the
agent on a Pi Zero (armv6l, no pydantic-core wheel) builds every message with this.

Validation follows the models' strict mode: no coercion but int -> float, unknown fields and
missing required fields refused, every float finite, every bound checked. A refusal is one
:class:`~schemas.errors.InvalidMessage` naming every offending field by its path
(``sensors.0.thresholds.1.value``), like the hub's ``schemas.codec.invalid_message``.
Reading JSON accepts times in the one form the contract writes (RFC 3339 with ``Z`` or an
offset, at most microseconds): stricter than pydantic, never looser.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Self, TypeVar

from schemas.avro_header import AVRO_MAGIC
from schemas.errors import InvalidMessage, PayloadTooLarge, UnknownEncoding
from schemas.ids import quoted

#: (field path, reason) pairs collected while checking one message
Problems = list[tuple[str, str]]

#: the default of a required field
REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()

#: as schemas.codec.DEFAULT_MAX_PAYLOAD (which needs pydantic to import)
DEFAULT_MAX_PAYLOAD = 64 * 1024


def _type_name(value: object) -> str:
    return type(value).__name__


class Check:
    """Checks one field's value; ``check`` returns it (normalised) or records a problem."""

    __slots__ = ()

    def check(self, value: Any, at: str, problems: Problems, from_json: bool) -> Any:
        raise NotImplementedError

    def to_json(self, value: Any) -> Any:
        return value

    def to_python(self, value: Any) -> Any:
        return value


class Boolean(Check):
    __slots__ = ()

    def check(self, value: Any, at: str, problems: Problems, from_json: bool) -> Any:
        if not isinstance(value, bool):
            problems.append((at, f"Input should be a valid boolean, not {_type_name(value)}"))
        return value


class Integer(Check):
    __slots__ = ("high", "low")

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def check(self, value: Any, at: str, problems: Problems, from_json: bool) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append((at, f"Input should be a valid integer, not {_type_name(value)}"))
        elif value < self.low:
            problems.append((at, f"Input should be greater than or equal to {self.low}"))
        elif value > self.high:
            problems.append((at, f"Input should be less than or equal to {self.high}"))
        return value


class Number(Check):
    """A finite float (an int is taken as its float, as pydantic's strict mode does)."""

    __slots__ = ()

    def check(self, value: Any, at: str, problems: Problems, from_json: bool) -> Any:
        if not isinstance(value, int | float) or isinstance(value, bool):
            problems.append((at, f"Input should be a valid number, not {_type_name(value)}"))
            return value
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            problems.append((at, "Input should be a finite number"))
        return number


def _unicode(value: str) -> bool:
    """No lone surrogate (``'\\udc80'`` from a ``surrogateescape`` decode): JSON cannot carry
    one. pydantic refuses it in a string field; in a dict key (``counters``) it takes it and
    writes U+FFFD instead, and the twin refuses that too rather than send another name."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_NOT_UNICODE = "Input should be a valid string, unable to parse raw data as a unicode string"


class Text(Check):
    __slots__ = ("max_length",)

    def __init__(self, max_length: int | None = None) -> None:
        self.max_length = max_length

    def check(self, value: Any, at: str, problems: Problems, from_json: bool) -> Any:
        if not isinstance(value, str):
            problems.append((at, f"Input should be a valid string, not {_type_name(value)}"))
        elif not _unicode(value):
            problems.append((at, _NOT_UNICODE))
        elif self.max_length is not None and len(value) > self.max_length:
            problems.append((at, f"String should have at most {self.max_length} characters"))
        return value


class OneOf(Check):
    """A ``Literal``: one of a few strings."""

    __slots__ = ("values",)

    def __init__(self, *values: str) -> None:
        self.values = values

    def check(self, value: Any, at: str, problems: Problems, from_json: bool) -> Any:
        if not isinstance(value, str) or value not in self.values:
            allowed = " or ".join(repr(v) for v in self.values)
            problems.append((at, f"Input should be {allowed}, not {quoted(value)}"))
        return value


#: RFC 3339 as the contract writes it: seconds, at most microseconds, Z or an offset
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")


class Moment(Check):
    """A datetime (from JSON: its RFC 3339 string); serialised as pydantic does (``...Z``)."""

    __slots__ = ()

    def check(self, value: Any, at: str, problems: Problems, from_json: bool) -> Any:
        if from_json and isinstance(value, str):
            if _RFC3339.fullmatch(value):
                try:
                    return datetime.fromisoformat(value)
                except ValueError as exc:
                    problems.append((at, f"Input should be a valid datetime, {exc}"))
                    return value
            problems.append((at, f"Input should be an RFC 3339 date and time, not {quoted(value)}"))
            return value
        if not isinstance(value, datetime):
            problems.append((at, f"Input should be a valid datetime, not {_type_name(value)}"))
        return value

    def to_json(self, value: Any) -> Any:
        text: str = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text


class Nullable(Check):
    __slots__ = ("inner",)

    def __init__(self, inner: Check) -> None:
        self.inner = inner

    def check(self, value: Any, at: str, problems: Problems, from_json: bool) -> Any:
        return None if value is None else self.inner.check(value, at, problems, from_json)

    def to_json(self, value: Any) -> Any:
        return None if value is None else self.inner.to_json(value)

    def to_python(self, value: Any) -> Any:
        return None if value is None else self.inner.to_python(value)


class After(Check):
    """``inner``, then ``then`` (a ``schemas/ids.py`` or ``schemas/field_checks.py`` function
    raising ``ValueError``) when the value passed ``inner``."""

    __slots__ = ("inner", "then")

    def __init__(self, inner: Check, then: Callable[[Any], Any]) -> None:
        self.inner, self.then = inner, then

    def check(self, value: Any, at: str, problems: Problems, from_json: bool) -> Any:
        before = len(problems)
        value = self.inner.check(value, at, problems, from_json)
        if len(problems) == before:
            try:
                return self.then(value)
            except ValueError as exc:
                problems.append((at, str(exc)))
        return value

    def to_json(self, value: Any) -> Any:
        return self.inner.to_json(value)

    def to_python(self, value: Any) -> Any:
        return self.inner.to_python(value)


class ListOf(Check):
    """A list of nested messages (instances, or mappings checked field by field)."""

    __slots__ = ("max_length", "model")

    def __init__(self, model: type[PlainMessage], max_length: int) -> None:
        self.model, self.max_length = model, max_length

    def check(self, value: Any, at: str, problems: Problems, from_json: bool) -> Any:
        if not isinstance(value, list):
            problems.append((at, f"Input should be a valid list, not {_type_name(value)}"))
            return value
        if len(value) > self.max_length:
            problems.append((at, f"List should have at most {self.max_length} items"))
            return value
        model = self.model
        out = []
        for i, item in enumerate(value):
            if isinstance(item, model):
                out.append(item)
            elif isinstance(item, Mapping):
                out.append(model.checked(item, f"{at}.{i}.", problems, from_json))
            else:
                problems.append((f"{at}.{i}", f"Input should be a valid dictionary or instance "
                                              f"of {model.__name__}, not {_type_name(item)}"))
        return out

    def to_json(self, value: Any) -> Any:
        return [item.to_json_dict() for item in value]

    def to_python(self, value: Any) -> Any:
        return [item.to_python() for item in value]


class NumberMap(Check):
    """A ``dict[str, float]`` of at most ``max_length`` items."""

    __slots__ = ("max_length",)

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def check(self, value: Any, at: str, problems: Problems, from_json: bool) -> Any:
        if not isinstance(value, dict):
            problems.append((at, f"Input should be a valid dictionary, not {_type_name(value)}"))
            return value
        if len(value) > self.max_length:
            problems.append((at, f"Dictionary should have at most {self.max_length} items"))
            return value
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append((f"{at}.{key}.[key]", "Input should be a valid string"))
            elif not _unicode(key):
                problems.append((f"{at}.{key}.[key]", _NOT_UNICODE))
            out[key] = _NUMBER.check(item, f"{at}.{key}", problems, from_json)
        return out

    def to_json(self, value: Any) -> Any:
        return dict(value)

    def to_python(self, value: Any) -> Any:
        return dict(value)


_NUMBER = Number()


def _fresh(default: Any) -> Any:
    return default.copy() if isinstance(default, list | dict) else default


class PlainMessage:
    """A contract message checked field by field, immutable once made, cheap (``__slots__``).

    ``Kind(**fields)`` checks like the pydantic model of the same name and raises
    :class:`InvalidMessage` naming every offending field."""

    __slots__ = ()
    #: (name, check, default or REQUIRED), in the pydantic model's field order
    FIELDS: ClassVar[tuple[tuple[str, Check, Any], ...]] = ()
    _NAMES: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._NAMES = frozenset(name for name, _, _ in cls.FIELDS)

    def __init__(self, **fields: Any) -> None:
        problems: Problems = []
        self._fill(fields, "", problems, from_json=False)
        if problems:
            raise invalid(problems)

    def _fill(self, fields: Mapping[str, Any], at: str, problems: Problems,
              from_json: bool) -> None:
        put = object.__setattr__
        for name, check, default in self.FIELDS:
            if name in fields:
                value = check.check(fields[name], at + name, problems, from_json)
            elif default is REQUIRED:
                problems.append((at + name, "Field required"))
                value = None
            else:
                value = _fresh(default)
            put(self, name, value)
        for name in fields.keys() - self._NAMES:
            problems.append((f"{at}{name}", "Extra inputs are not permitted"))

    @classmethod
    def checked(cls, fields: Mapping[str, Any], at: str, problems: Problems,
                from_json: bool) -> Self:
        """A message from ``fields`` whose problems are added to ``problems`` (paths under
        ``at``): how a nested message and a decoded record are read."""
        message = cls.__new__(cls)
        message._fill(fields, at, problems, from_json)
        return message

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, from_json: bool = True) -> Self:
        """A message from a decoded JSON object (``from_json``: times are strings) or an Avro
        record (times are datetimes); :class:`InvalidMessage` names what is wrong."""
        problems: Problems = []
        message = cls.checked(record, "", problems, from_json)
        if problems:
            raise invalid(problems)
        return message

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, checked again (pydantic's ``model_copy(update=...)``)."""
        return type(self)(**{**self.fields(), **changes})

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _, _ in self.FIELDS}

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form as Python objects: what pydantic's ``model_dump(mode="json")`` gives."""
        return {name: check.to_json(getattr(self, name)) for name, check, _ in self.FIELDS}

    def to_json(self) -> bytes:
        """Compact JSON, as pydantic's ``model_dump_json()`` writes it (same keys, same order)."""
        return json.dumps(self.to_json_dict(), ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode()

    def to_python(self) -> dict[str, Any]:
        """Python form (times as datetimes): the record fastavro writes."""
        return {name: check.to_python(getattr(self, name)) for name, check, _ in self.FIELDS}

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: use replace({name}=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n, _, _ in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]  # lists inside: like an unhashable model

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n, _, _ in self.FIELDS)
        return f"{type(self).__name__}({inner})"


def invalid(problems: Problems) -> InvalidMessage:
    """One reason line naming every offending field, as ``schemas.codec.invalid_message``."""
    return InvalidMessage("; ".join(f"{at}: {reason}" for at, reason in problems),
                          [at for at, _ in problems])


_M = TypeVar("_M", bound=PlainMessage)


# -- bytes ------------------------------------------------------------------------------------
def encode(message: PlainMessage, encoding: str = "json") -> bytes:
    """JSON (``to_json``) or Avro single-object (fastavro: the ``avro`` extra) bytes."""
    if encoding == "json":
        return message.to_json()
    if encoding != "avro":
        raise ValueError(f"unknown encoding {encoding!r}: json or avro")
    from schemas.avro_codec import write_avro

    return write_avro(str(getattr(message, "kind")),  # noqa: B009 - every message has kind
                      message.to_python())


def decode(payload: bytes, kinds: Mapping[str, type[_M]], *,
           max_size: int = DEFAULT_MAX_PAYLOAD) -> _M:
    """Bytes (JSON or Avro single-object) -> one of ``kinds``' messages, checked; a
    :class:`~schemas.errors.DecodeError` naming the reason otherwise (as ``schemas.decode``)."""
    if len(payload) > max_size:
        raise PayloadTooLarge(len(payload), max_size)
    from_json = True
    if payload[:2] == AVRO_MAGIC:
        from schemas.avro_codec import read_avro

        record: Any = read_avro(payload)
        from_json = False
    elif payload.lstrip()[:1] == b"{":
        try:
            record = json.loads(payload.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError alike
            raise InvalidMessage(f"invalid JSON: {exc}", ["(message)"]) from None
        if not isinstance(record, dict):
            raise InvalidMessage("invalid JSON: not an object", ["(message)"])
    else:
        raise UnknownEncoding("neither JSON (an object) nor Avro single-object (C3 01 ...)")
    if "kind" not in record:
        raise InvalidMessage("missing field 'kind'", ["kind"])
    model = kinds.get(record["kind"]) if isinstance(record["kind"], str) else None
    if model is None:
        raise InvalidMessage(f"kind: {quoted(record['kind'])} is not one of {sorted(kinds)}",
                             ["kind"])
    return model.from_record(record, from_json=from_json)
