"""Validated identifiers: anything that goes into an MQTT topic is checked when it is made.

An identifier is 1-64 characters of ``A-Z a-z 0-9 _ . -`` and starts with a letter or digit, so it
can never contain the MQTT wildcards ``+`` and ``#``, the level separator ``/``, a NUL, or start
with ``$`` (reserved by brokers) or ``_`` (reserved for the hub's own topics). An event id is 8-64
of ``A-Z a-z 0-9 _ -``. These are the contract's bounds on ids and topic levels (schemas/TOPICS.md,
"Bounds"); an error quotes at most :data:`QUOTE_MAX` characters of what it refused, so a 64 KiB
topic level from the wire never becomes a 64 KiB reason.

This module does not import pydantic (the edge agent runs without it): the annotated types below
carry a :class:`Checked` marker that pydantic turns into a check when a model is built (pydantic's
documented ``__get_pydantic_core_schema__`` hook), and that the agent's plain twin
(``schemas/plain_runtime.py``) calls directly. One check function per identifier, for both; for
pydantic the same regular expression runs in pydantic-core (Rust: no Python call per field, the
hub validates every event's ids), and :func:`pattern_refusal` words a refusal as the check does.
"""

from __future__ import annotations

import os
import re
import time
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


IDENTIFIER_RULE = ("use 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit "
                   "(no '+', '#', '/', spaces)")
EVENT_ID_RULE = "use 8-64 of A-Z a-z 0-9 _ -"


def check_identifier(value: str, what: str = "identifier") -> str:
    """Return ``value`` if it is safe in a topic level, else raise :class:`InvalidIdentifier`."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise InvalidIdentifier(f"invalid {what} {quoted(value)}: {IDENTIFIER_RULE}")
    return value


def check_event_id(value: str) -> str:
    if not isinstance(value, str) or not _EVENT_ID.fullmatch(value):
        raise InvalidIdentifier(f"invalid event id {quoted(value)}: {EVENT_ID_RULE}")
    return value


def check_site(value: str) -> str:
    return check_identifier(value, "site")


def check_device_id(value: str) -> str:
    return check_identifier(value, "device id")


def check_sensor_id(value: str) -> str:
    return check_identifier(value, "sensor id")


def check_state_name(value: str) -> str:
    return check_identifier(value, "state name")


#: the pydantic error type of each :class:`Checked` pattern -> its check (see pattern_refusal)
_PATTERN_CHECKS: dict[str, Callable[[Any], Any]] = {}


class Checked:
    """Annotation metadata: ``check`` runs after the type check (a ``ValueError`` is invalid).

    The plain twin reads ``check`` itself. For pydantic (the schema is built only when a model
    using it is, so importing this module loads no pydantic): without ``pattern`` an
    after-validator calling ``check``; with it, ``check`` must be exactly "the value matches
    ``pattern``" (tests/contract/test_plain_messages.py holds it), and pydantic-core matches the
    pattern itself, refusing with the error type ``invalid_<what>`` and the message
    ``invalid <what>: <rule>``."""

    __slots__ = ("check", "pattern", "rule", "what")

    def __init__(self, check: Callable[[Any], Any], pattern: str | None = None,
                 what: str = "", rule: str = "") -> None:
        self.check, self.pattern, self.what, self.rule = check, pattern, what, rule
        if pattern is not None:
            _PATTERN_CHECKS[self.error_type] = check

    @property
    def error_type(self) -> str:
        return "invalid_" + self.what.replace(" ", "_")

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        if self.pattern is None:
            return core_schema.no_info_after_validator_function(self.check, handler(source))
        # the type check first (its own error for a non-string), then the pattern (Rust regex:
        # ^ and $ anchor the whole text, like the check's fullmatch)
        return core_schema.chain_schema([handler(source), core_schema.custom_error_schema(
            core_schema.str_schema(pattern=self.pattern), custom_error_type=self.error_type,
            custom_error_message=f"invalid {self.what}: {self.rule}")])

    def __repr__(self) -> str:
        return f"Checked({self.check.__name__})"


def pattern_refusal(error_type: str, value: object) -> str | None:
    """The words of the check behind a :class:`Checked` pattern's pydantic error (``invalid site
    'a/b': use ...``, as the plain twin says it), or None for any other error type."""
    check = _PATTERN_CHECKS.get(error_type)
    if check is None:
        return None
    try:
        check(value)
    except ValueError as exc:
        return str(exc)
    return None


SiteId = Annotated[str, Checked(check_site, IDENTIFIER_PATTERN, "site", IDENTIFIER_RULE)]
DeviceId = Annotated[str, Checked(check_device_id, IDENTIFIER_PATTERN, "device id",
                                  IDENTIFIER_RULE)]
SensorId = Annotated[str, Checked(check_sensor_id, IDENTIFIER_PATTERN, "sensor id",
                                  IDENTIFIER_RULE)]
StateName = Annotated[str, Checked(check_state_name, IDENTIFIER_PATTERN, "state name",
                                   IDENTIFIER_RULE)]
EventId = Annotated[str, Checked(check_event_id, EVENT_ID_PATTERN, "event id", EVENT_ID_RULE)]


def new_event_id() -> str:
    """A new event id: 32 hex characters laid out as a UUID version 7 (RFC 9562): the Unix time
    in milliseconds (48 bits), then 74 random bits (with the version and variant bits).

    Unique without coordination like a random UUID, and in time order: the hub's dedup index
    (hub/journal/dedup.py, a B-tree keyed by event id) takes new ids near its end instead of at
    random pages all over it, so recording an event costs the same at any journal size
    (bench/README.md, issue 26: with random ids the journal's cost per event nearly doubled
    between 30,000 and 150,000 ids). The hub needs nothing of this: any id of the contract's
    form is deduplicated exactly (an older agent's random ids too, just at the old cost). A
    clock that is wrong or steps back (a Pi before NTP) only costs that order, never uniqueness.
    """
    millis = time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 + 62 are used
    value = (millis << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62
             | rand & 0x3FFF_FFFF_FFFF_FFFF)
    return f"{value:032x}"
