"""How event ids are made (schemas.ids.new_event_id): the contract's form, unique, in time order
(issue 26: the hub's dedup index takes time-ordered ids near its end, so recording an event costs
the same at any journal size; bench/README.md has the figures)."""

from __future__ import annotations

import uuid
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from schemas import ids
from schemas.ids import check_event_id, new_event_id


def test_an_event_id_is_a_uuid_version_7_in_the_contracts_form() -> None:
    for _ in range(1000):
        made = new_event_id()
        assert check_event_id(made) == made
        assert len(made) == 32 and made == made.lower()
        as_uuid = uuid.UUID(hex=made)
        assert as_uuid.version == 7 and as_uuid.variant == uuid.RFC_4122


def test_ids_are_unique_and_ordered_by_the_millisecond_they_were_made() -> None:
    made = [new_event_id() for _ in range(100_000)]
    assert len(set(made)) == len(made)
    stamps = [int(m[:12], 16) for m in made]
    assert stamps == sorted(stamps)  # within a millisecond the random part decides


@given(millis=st.lists(st.integers(0, 2**48 - 1), min_size=2, max_size=20))
def test_the_first_48_bits_are_the_clock_and_order_the_ids(millis: list[int]) -> None:
    made = []
    for ms in millis:
        with mock.patch.object(ids.time, "time_ns", return_value=ms * 1_000_000 + 999_999):
            made.append(new_event_id())
    assert [int(m[:12], 16) for m in made] == millis
    for a, b, ma, mb in zip(made, made[1:], millis, millis[1:], strict=False):
        if ma != mb:
            assert (a < b) == (ma < mb)  # hex of equal length: text order is time order


def test_a_clock_before_1970_or_past_2_48_ms_still_makes_a_valid_id() -> None:
    for ns in (-5_000_000, 0, 2**48 * 1_000_000 + 7):
        with mock.patch.object(ids.time, "time_ns", return_value=ns):
            made = new_event_id()
        assert check_event_id(made) == made and uuid.UUID(hex=made).version == 7
