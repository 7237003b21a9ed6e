"""Validated identifiers: anything that goes into an MQTT topic is checked when it is made.

An identifier is 1-64 characters of ``A-Z a-z 0-9 _ . -`` and starts with a letter or digit, so it
can never contain the MQTT wildcards ``+`` and ``#``, the level separator ``/``, a NUL, or start
with ``$`` (reserved by brokers) or ``_`` (reserved for the hub's own topics). An event id is 8-64
of ``A-Z a-z 0-9 _ -``. These are the contract's bounds on ids and topic levels (schemas/TOPICS.md,
"Bounds"); an error quotes at most :data:`QUOTE_MAX` characters of what it refused, so a 64 KiB
topic level from the wire never becomes a 64 KiB reason.

This module does not import pydantic (the edge agent runs without it): the annotated types below
carry a :class:`Checked` marker that pydantic turns into an after-validator when a model is built
(pydantic's documented ``__get_pydantic_core_schema__`` hook), and that the agent's plain twin
(``schemas/plain_runtime.py``) calls directly. One check function per identifier, for both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from schemas.errors import InvalidIdentifier

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


def check_site(value: str) -> str:
    return check_identifier(value, "site")


def check_device_id(value: str) -> str:
    return check_identifier(value, "device id")


def check_sensor_id(value: str) -> str:
    return check_identifier(value, "sensor id")


def check_state_name(value: str) -> str:
    return check_identifier(value, "state name")


class Checked:
    """Annotation metadata: ``check`` runs after the type check (a ``ValueError`` is invalid).

    For pydantic it is an after-validator, built only when a model using it is (so importing
    this module loads no pydantic); the plain twin reads ``check`` itself."""

    __slots__ = ("check",)

    def __init__(self, check: Callable[[Any], Any]) -> None:
        self.check = check

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __repr__(self) -> str:
        return f"Checked({self.check.__name__})"


SiteId = Annotated[str, Checked(check_site)]
DeviceId = Annotated[str, Checked(check_device_id)]
SensorId = Annotated[str, Checked(check_sensor_id)]
StateName = Annotated[str, Checked(check_state_name)]
EventId = Annotated[str, Checked(check_event_id)]
