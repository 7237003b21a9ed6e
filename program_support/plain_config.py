"""A TOML config checked against typed dataclasses, with the standard library alone.

The agent runs on boards where pydantic cannot be installed (pydantic-core is compiled and has no
armv6l wheel), so its config sections are frozen dataclasses with type hints, and this module
walks the TOML tables against them. What it reports is what the hub's pydantic models report, in
the same layout (``program_support.config_loading.format_config_error``): every problem at once,
each as ``(key path, reason)``; an unknown key with the closest known one; the bounds in
pydantic's words, so a reason reads the same in both programs' files and journals.

A section::

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Smoothing:
        kind: Literal["median", "mean"] = "median"
        window: Annotated[int, Range(ge=1, le=1000)] = 3

        def __post_init__(self) -> None:   # cross-field checks: ValueError -> "smoothing: ..."
            ...

What a field may be: ``str``, ``int``, ``float``, ``bool``, ``Path``, ``Literal[...]``,
:class:`Secret`, ``list[X]``, ``dict[str, X]``, another section, ``X | None``, and a union of
sections told apart by a tag key (``Annotated[A | B, Tagged("kind", "source kind")]``; a
section's tag may be a ``Literal`` of several names). ``Annotated`` metadata adds rules, checked
in order after the type (:class:`Before` turns the value before, and may refuse it with
``ValueError``): :class:`Range`, :class:`Length`, :class:`Pattern`, and any object with a
``check(value) -> value`` method that raises ``ValueError`` (``schemas.ids.Rule``: the
contract's identifiers, :class:`Check`).

:class:`Wording` says how a missing key, an unknown key and an unknown tag read: by default as the
hub's config errors read (the agent's config); firmware-sim's scenario files keep their shorter
words (``colour: unknown key``).

Values are read as pydantic reads them in its default (lax) mode, so a file the hub's models
accept is accepted here with the same values: ``"5"`` and ``5.0`` are the integer 5, ``1`` and
``"yes"`` are true, ``3`` is the float 3.0 (``tests/agent_config`` holds the property test).
A section class may set ``FINITE_ONLY = True`` (its floats refuse inf and nan) and
``OLD_KEYS = (("old", "new"),)`` (an old key still read, with a deprecation note).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from program_support.config_loading import deprecated, key_path, read_toml, secret_value
from schemas.errors import ConfigError

T = TypeVar("T")
Loc = tuple[int | str, ...]

MISSING = "missing (this key is required)"
NOT_A_TABLE = "Input should be a table ([section] or { key = value })"


# -- the rules a field's Annotated metadata may carry ---------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """Bounds of a number, said as pydantic says them (``Input should be greater than 0``)."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def check(self, value: float) -> float:
        if self.gt is not None and not value > self.gt:
            raise ValueError(f"Input should be greater than {self.gt}")
        if self.ge is not None and not value >= self.ge:
            raise ValueError(f"Input should be greater than or equal to {self.ge}")
        if self.lt is not None and not value < self.lt:
            raise ValueError(f"Input should be less than {self.lt}")
        if self.le is not None and not value <= self.le:
            raise ValueError(f"Input should be less than or equal to {self.le}")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class Length:
    """Bounds of a string's characters or a list's items."""

    min: int | None = None
    max: int | None = None

    def check(self, value: str | list[Any]) -> str | list[Any]:
        size = len(value)
        if isinstance(value, str):
            if self.min is not None and size < self.min:
                raise ValueError(f"String should have at least {_count(self.min, 'character')}")
            if self.max is not None and size > self.max:
                raise ValueError(f"String should have at most {_count(self.max, 'character')}")
            return value
        if self.min is not None and size < self.min:
            raise ValueError(f"List should have at least {_count(self.min, 'item')} after "
                             f"validation, not {size}")
        if self.max is not None and size > self.max:
            raise ValueError(f"List should have at most {_count(self.max, 'item')} after "
                             f"validation, not {size}")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class Pattern:
    """A string that matches ``regex`` whole, said as pydantic says it (``String should match
    pattern '^28-[0-9a-f]{12}$'``). Anchored with ``^`` and ``$``: pydantic searches with Rust's
    regex, whose ``$`` is the end of the text, and ``re.fullmatch`` reads such a pattern alike
    (a final newline does not match)."""

    regex: str

    def __post_init__(self) -> None:
        if not (self.regex.startswith("^") and self.regex.endswith("$")):
            raise ValueError(f"pattern {self.regex!r} must be anchored with ^ and $")

    def check(self, value: str) -> str:
        if re.fullmatch(self.regex, value) is None:
            raise ValueError(f"String should match pattern {self.regex!r}")
        return value


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """Any rule of one value: ``check`` returns it or raises ``ValueError`` with the reason."""

    check: Callable[[Any], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Before:
    """Turns a value before its type is checked (``protocol = 5`` read as ``"5"``)."""

    turn: Callable[[Any], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Tagged:
    """A union of sections told apart by the value of one key (``kind``); ``what`` names the
    tag in a reason (``unknown source kind 'usb'; one of: serial, onewire, simulator``)."""

    key: str
    what: str


@dataclasses.dataclass(frozen=True, slots=True)
class Wording:
    """How a file's problems of shape read: a required key not there, a key no section has
    (``{key}``, and ``{hint}``: `` (did you mean 'interval'?)`` or nothing), a tag naming no
    section (``{what}`` of :class:`Tagged`, ``{name}``, ``{hint}``, ``{known}``: the names)."""

    missing: str = MISSING
    unknown_key: str = "unknown key {key!r}{hint}"
    #: the path of an unknown key's problem: its own (``colour``) or its section's (``""``)
    unknown_key_at_key: bool = False
    unknown_tag: str = "unknown {what} {name!r}{hint}; one of: {known}"


class FieldProblem(ValueError):
    """Raised by a section's ``__post_init__`` to put its reason on one key of the section."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


class Secret:
    """A secret read from ``env:NAME`` or ``file:/path``: prints as ``**********``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# -- entry points ---------------------------------------------------------------------------------
def load(path: str | Path, section: type[T], wording: Wording | None = None) -> T:
    """Read a TOML file into ``section``; raise :class:`ConfigError` with every problem."""
    return parse(read_toml(path), section, str(path), wording)


def parse(data: Any, section: type[T], source: str = "config",
          wording: Wording | None = None) -> T:
    """Check ``data`` (TOML tables) against ``section``; raise :class:`ConfigError` listing every
    problem as ``(key path, reason)``."""
    problems: list[tuple[str, str]] = []
    value = _Walk(problems, wording or _DEFAULT_WORDING).value(section, data, ())
    if problems or value is _INVALID:
        raise ConfigError(source, problems or [("", "invalid")])
    return typing.cast("T", value)


# -- the walk -------------------------------------------------------------------------------------
class _Invalid:
    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Any = _Invalid()
_DEFAULT_WORDING = Wording()
_ASCII_INT = re.compile(r"[+-]?\d+(?:_\d+)*", re.ASCII)
_ASCII_INT_POINT_ZERO = re.compile(r"([+-]?\d+(?:_\d+)*)\.0+", re.ASCII)
_ASCII_NUMBER = re.compile(r"[+-]?(?:\d+(?:_\d+)*(?:\.(?:\d+(?:_\d+)*)?)?|\.\d+(?:_\d+)*)"
                           r"(?:[eE][+-]?\d+(?:_\d+)*)?|[+-]?(?:inf|infinity|nan)",
                           re.ASCII | re.IGNORECASE)
# pydantic reads a float as an integer only inside a signed 64-bit integer's range
_INT_FROM_FLOAT = 2.0**63
_TOO_LARGE = "Input should be a valid integer, this number is too large"
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _choices(options: tuple[Any, ...]) -> str:
    shown = [repr(o) for o in options]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def _did_you_mean(word: str, known: list[str]) -> str:
    import difflib  # only for a config with a mistake in it

    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def fields_of(section: type[Any]) -> dict[str, Any]:
    """A section's keys and their types (``Annotated`` kept), in declaration order (read once
    per class: resolving the hints compiles each one)."""
    known = _FIELDS.get(section)
    if known is None:
        hints = typing.get_type_hints(section, include_extras=True)
        known = _FIELDS[section] = {f.name: hints[f.name] for f in dataclasses.fields(section)
                                    if f.init}
    return known


_FIELDS: dict[type[Any], dict[str, Any]] = {}


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


class _Walk:
    def __init__(self, problems: list[tuple[str, str]], wording: Wording) -> None:
        self.problems = problems
        self.wording = wording
        self.finite = False  # the FINITE_ONLY of the section being read

    def problem(self, loc: Loc, reason: str) -> Any:
        self.problems.append((key_path(loc), reason))
        return _INVALID

    def value(self, tp: Any, value: Any, loc: Loc) -> Any:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            base, *rules = typing.get_args(tp)
            tagged = next((r for r in rules if isinstance(r, Tagged)), None)
            if tagged is not None:
                return self.tagged(base, tagged, value, loc)
            for rule in rules:
                if isinstance(rule, Before):
                    try:
                        value = rule.turn(value)
                    except ValueError as exc:
                        return self.problem(loc, str(exc))
            result = self.value(base, value, loc)
            for rule in rules:
                if isinstance(rule, Before):
                    continue
                if result is _INVALID or result is None:
                    break
                if not callable(getattr(rule, "check", None)):
                    raise TypeError(f"{rule!r} at {key_path(loc)} is no rule (no check method)")
                try:
                    result = rule.check(result)
                except ValueError as exc:
                    return self.problem(loc, str(exc))
            return result
        if origin is typing.Union or isinstance(tp, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if value is None and len(members) < len(typing.get_args(tp)):
                return None
            if len(members) != 1:
                raise TypeError(f"untagged union {tp!r} at {key_path(loc)}: use Tagged")
            return self.value(members[0], value, loc)
        if origin is typing.Literal:
            options = typing.get_args(tp)
            for option in options:
                if type(value) is type(option) and value == option:
                    return option
            return self.problem(loc, f"Input should be {_choices(options)}")
        if origin is list:
            if not isinstance(value, list):
                return self.problem(loc, "Input should be a valid list")
            (item,) = typing.get_args(tp)
            items = [self.value(item, v, (*loc, i)) for i, v in enumerate(value)]
            return _INVALID if any(v is _INVALID for v in items) else items
        if origin is dict:
            return self.mapping(tp, value, loc)
        if is_section(tp):
            return self.section(tp, value, loc)
        if tp is Secret:
            return self.secret(value, loc)
        if tp is bool:
            return self.boolean(value, loc)
        if tp is int:
            return self.integer(value, loc)
        if tp is float:
            return self.number(value, loc)
        if tp is str:
            return value if isinstance(value, str) else self.problem(
                loc, "Input should be a valid string")
        if tp is Path:
            return Path(value) if isinstance(value, str | Path) else self.problem(
                loc, "Input should be a path (a string)")
        raise TypeError(f"no rule for {tp!r} at {key_path(loc)}")

    # -- scalars, read as pydantic's lax mode reads them ------------------------------------------
    def boolean(self, value: Any, loc: Loc) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int | str):
            return self.problem(loc, "Input should be a valid boolean, unable to interpret input")
        return self.problem(loc, "Input should be a valid boolean")

    def integer(self, value: Any, loc: Loc) -> Any:
        if isinstance(value, int):  # bool too: True is 1
            return int(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                return self.problem(loc, "Input should be a finite number")
            if not value.is_integer():
                return self.problem(loc, "Input should be a valid integer, got a number with a "
                                         "fractional part")
            if not -_INT_FROM_FLOAT < value < _INT_FROM_FLOAT:
                return self.problem(loc, _TOO_LARGE)
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            whole = _ASCII_INT.fullmatch(text) or _ASCII_INT_POINT_ZERO.fullmatch(text)
            if whole:
                try:
                    return int(whole[1] if whole.re is _ASCII_INT_POINT_ZERO else text)
                except ValueError:  # more digits than Python converts (sys.int_info)
                    return self.problem(loc, _TOO_LARGE)
            return self.problem(loc, "Input should be a valid integer, unable to parse string as "
                                     "an integer")
        return self.problem(loc, "Input should be a valid integer")

    def number(self, value: Any, loc: Loc) -> Any:
        if isinstance(value, int | float):
            result = float(value)
        elif isinstance(value, str) and _ASCII_NUMBER.fullmatch(value.strip()):
            result = float(value.strip())
        elif isinstance(value, str):
            return self.problem(loc, "Input should be a valid number, unable to parse string as "
                                     "a number")
        else:
            return self.problem(loc, "Input should be a valid number")
        if self.finite and not math.isfinite(result):
            return self.problem(loc, "Input should be a finite number")
        return result

    def secret(self, value: Any, loc: Loc) -> Any:
        if not isinstance(value, str):
            return self.problem(loc, "a secret is written 'env:VARIABLE' or 'file:/path'")
        try:
            text = secret_value(value)
        except ValueError as exc:
            return self.problem(loc, str(exc))
        return None if text is None else Secret(text)

    # -- tables -----------------------------------------------------------------------------------
    def mapping(self, tp: Any, value: Any, loc: Loc) -> Any:
        if not isinstance(value, dict):
            return self.problem(loc, "Input should be a valid dictionary")
        key_type, item_type = typing.get_args(tp)
        out: dict[Any, Any] = {}
        invalid = False
        for key, item in value.items():
            checked_key = self.value(key_type, key, loc)
            checked = self.value(item_type, item, (*loc, key))
            invalid = invalid or checked_key is _INVALID or checked is _INVALID
            out[checked_key if checked_key is not _INVALID else key] = checked
        return _INVALID if invalid else out

    def tagged(self, union: Any, tag: Tagged, value: Any, loc: Loc) -> Any:
        sections: dict[str, type[Any]] = {}
        for section in typing.get_args(union):
            for name in typing.get_args(fields_of(section)[tag.key]):
                sections[name] = section
        if not isinstance(value, dict):
            return self.problem(loc, NOT_A_TABLE)
        if tag.key not in value:
            return self.problem((*loc, tag.key), self.wording.missing)
        name = value[tag.key]
        if not isinstance(name, str) or name not in sections:
            known = list(sections)
            reason = self.wording.unknown_tag.format(
                what=tag.what, name=str(name), hint=_did_you_mean(str(name), known),
                known=", ".join(known))
            return self.problem((*loc, tag.key), reason)
        return self.section(sections[name], value, loc)

    def section(self, section: type[Any], value: Any, loc: Loc) -> Any:
        if isinstance(value, section):  # made in code (a test), checked when it was made
            return value
        if not isinstance(value, dict):
            return self.problem(loc, NOT_A_TABLE)
        value = self.old_keys(section, value, loc)
        if value is _INVALID:
            return _INVALID
        known = fields_of(section)
        before = len(self.problems)
        outer, self.finite = self.finite, bool(getattr(section, "FINITE_ONLY", False))
        values: dict[str, Any] = {}
        try:
            for name, tp in known.items():
                if name in value:
                    values[name] = self.value(tp, value[name], (*loc, name))
                elif _required(section, name):
                    self.problem((*loc, name), self.wording.missing)
        finally:
            self.finite = outer
        for key in value:
            if key not in known:
                reason = self.wording.unknown_key.format(
                    key=key, hint=_did_you_mean(str(key), list(known)))
                self.problem((*loc, key) if self.wording.unknown_key_at_key else loc, reason)
        if len(self.problems) > before or any(v is _INVALID for v in values.values()):
            return _INVALID
        try:
            return section(**values)
        except FieldProblem as exc:
            return self.problem((*loc, exc.key), str(exc))
        except ValueError as exc:
            return self.problem(loc, str(exc))

    def old_keys(self, section: type[Any], value: dict[str, Any], loc: Loc) -> Any:
        renamed: tuple[tuple[str, str], ...] = getattr(section, "OLD_KEYS", ())
        for old, new in renamed:
            if old in value:
                if new in value:
                    return self.problem(loc, f"{old} is the old name of {new}: keep one")
                value = {(new if k == old else k): v for k, v in value.items()}
                deprecated(key_path((*loc, old)), f"renamed {new} (same meaning)")
        return value


def _required(section: type[Any], name: str) -> bool:
    field = next(f for f in dataclasses.fields(section) if f.name == name)
    return (field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING)
