"""Checks run after a field's type check, shared by the pydantic models (``schemas/models.py``,
as after-validators) and the agent's plain twin (``schemas/plain_messages.py``).

Plain Python: each takes the typed value and returns it (normalised) or raises ``ValueError``
with the reason, so both validations refuse the same values with the same words.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from schemas.vocabulary import NAME_MAX


def utc_time(value: datetime) -> datetime:
    """Normalise to UTC; the contract carries microseconds, so finer parts cannot exist."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("time must be timezone-aware (UTC)")
    return value.astimezone(UTC)


_Counters = TypeVar("_Counters", bound=dict[str, float])


def counter_names(counters: _Counters) -> _Counters:
    for name in counters:
        if len(name) > NAME_MAX:
            raise ValueError(f"a counter name is at most {NAME_MAX} characters, not {len(name)}")
    return counters


class _Range(Protocol):
    @property
    def first(self) -> int: ...
    @property
    def last(self) -> int: ...


_Ranges = TypeVar("_Ranges", bound=Sequence[_Range])


def ordered_ranges(ranges: _Ranges) -> _Ranges:
    for r in ranges:
        if r.last < r.first:
            raise ValueError(f"range {r.first}-{r.last} ends before it starts")
    for a, b in itertools.pairwise(ranges):
        if b.first <= a.last + 1:
            raise ValueError(f"ranges {a.first}-{a.last} and {b.first}-{b.last} are not "
                             "ascending, disjoint and merged")
    return ranges
