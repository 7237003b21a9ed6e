"""Validated identifiers: anything that goes into an MQTT topic is checked when it is made.

An identifier is 1-64 characters of ``A-Z a-z 0-9 _ . -`` and starts with a letter or digit, so it
can never contain the MQTT wildcards ``+`` and ``#``, the level separator ``/``, a NUL, or start
with ``$`` (reserved by brokers) or ``_`` (reserved for the hub's own topics). An event id is 8-64
of ``A-Z a-z 0-9 _ -``. These are the contract's bounds on ids and topic levels (schemas/TOPICS.md,
"Bounds"); an error quotes at most :data:`QUOTE_MAX` characters of what it refused, so a 64 KiB
topic level from the wire never becomes a 64 KiB reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from schemas.errors import InvalidIdentifier

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
EVENT_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
QUOTE_MAX = 80


def quoted(value: object, limit: int = QUOTE_MAX) -> str:
    """``repr(value)``, at most about ``limit`` characters (longer: a prefix, then the length)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_identifier(value: str, what: str = "identifier") -> str:
    """Return ``value`` if it is safe in a topic level, else raise :class:`InvalidIdentifier`."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise InvalidIdentifier(
            f"invalid {what} {quoted(value)}: use 1-64 of A-Z a-z 0-9 _ . - starting with a "
            "letter or digit (no '+', '#', '/', spaces)"
        )
    return value


def check_event_id(value: str) -> str:
    if not isinstance(value, str) or not _EVENT_ID.fullmatch(value):
        raise InvalidIdentifier(f"invalid event id {quoted(value)}: use 8-64 of A-Z a-z 0-9 _ -")
    return value


def _site(value: str) -> str:
    return check_identifier(value, "site")


def _device(value: str) -> str:
    return check_identifier(value, "device id")


def _sensor(value: str) -> str:
    return check_identifier(value, "sensor id")


def _state(value: str) -> str:
    return check_identifier(value, "state name")


class Rule:
    """``Annotated`` metadata: ``check`` runs on a value that is already a ``str``.

    Both validators read it: pydantic (the event models, the hub's config) through
    ``__get_pydantic_core_schema__``, as it would an ``AfterValidator``, and the plain config
    validator (``program_support/plain_config.py``, the agent's config) through ``check``. So
    this module imports no pydantic, and an identifier means the same in an event and in a
    config file."""

    __slots__ = ("check",)

    def __init__(self, check: Callable[[str], str]) -> None:
        self.check = check

    def __repr__(self) -> str:
        return f"Rule({getattr(self.check, '__name__', self.check)})"

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler,
                                     ) -> CoreSchema:
        from pydantic_core import core_schema  # only when pydantic builds a model with it

        return core_schema.no_info_after_validator_function(self.check, handler(source))


SiteId = Annotated[str, Rule(_site)]
DeviceId = Annotated[str, Rule(_device)]
SensorId = Annotated[str, Rule(_sensor)]
StateName = Annotated[str, Rule(_state)]
EventId = Annotated[str, Rule(check_event_id)]
