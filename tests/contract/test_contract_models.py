"""The Avro schemas and the pydantic models cannot drift apart, and both encodings round-trip."""

from __future__ import annotations

import json
import types
import typing
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas import MODELS, Encoding, decode, encode
from schemas.ids import EVENT_ID_PATTERN, IDENTIFIER_PATTERN
from schemas.models import SeqRange
from tests.contract.avro_expect import AVSC_DIR, FILE_NAMES, record_schema

# -- strategies derived from the models' own annotations, so a new field is covered at once ---

_IDS = st.from_regex(IDENTIFIER_PATTERN, fullmatch=True)
_EVENT_IDS = st.from_regex(EVENT_ID_PATTERN, fullmatch=True)
_TIMES = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                      timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=d.microsecond))
_FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _ranges(bounds: list[int]) -> list[SeqRange]:
    """Pairs of sorted bounds, each range starting at least two past the previous one's end."""
    out: list[SeqRange] = []
    bounds = sorted(bounds)
    for first, last in zip(bounds[::2], bounds[1::2], strict=False):
        if not out or first > out[-1].last + 1:
            out.append(SeqRange(first=first, last=last))
    return out


def _strategy(annotation: Any, metadata: list[Any], name: str) -> st.SearchStrategy[Any]:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        args = get_args(annotation)
        return _strategy(args[0], [*metadata, *args[1:]], name)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return st.none() | _strategy(inner[0], metadata, name)
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    if origin is list and name in ("ranges", "refused"):  # SeqRanges: ascending, disjoint
        return st.lists(st.integers(0, 2**40), max_size=6, unique=True).map(_ranges)
    if origin is list:
        return st.lists(_strategy(get_args(annotation)[0], [], name), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=10), _strategy(get_args(annotation)[1], [], name),
                               max_size=4)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_strategy(annotation)
    validators = " ".join(repr(m) for m in metadata)
    if annotation is str:
        if "check_event_id" in validators:
            return _EVENT_IDS
        if "Checked(" in validators:  # an identifier (schemas.ids)
            return _IDS
        return st.text(max_size=40)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        low = max([0, *(m.ge for m in metadata if hasattr(m, "ge"))])
        return st.integers(min_value=low, max_value=2**63 - 1)
    if annotation is float:
        return _FLOATS
    if annotation is datetime:
        return _TIMES
    raise TypeError(f"no strategy for {name}: {annotation!r}")


def model_strategy(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    fields = {}
    for name, info in model.model_fields.items():
        if name == "kind":
            continue
        fields[name] = _strategy(info.annotation, list(info.metadata), name)
    return st.fixed_dictionaries(fields).map(lambda kw: model(**kw))


# -- drift: the committed .avsc files are exactly what the models say -------------------------

@pytest.mark.parametrize("kind", sorted(MODELS))
def test_avsc_file_matches_model_field_for_field(kind: str) -> None:
    committed = json.loads((AVSC_DIR / FILE_NAMES[kind]).read_text())
    expected = record_schema(MODELS[kind])
    assert [f["name"] for f in committed["fields"]] == [f["name"] for f in expected["fields"]]
    assert committed == expected, (
        f"{FILE_NAMES[kind]} drifted from {MODELS[kind].__name__}; after a deliberate contract "
        "change run: python tests/contract/avro_expect.py (and keep the old file in history/)")


def test_every_avsc_file_is_a_model() -> None:
    on_disk = {p.name for p in AVSC_DIR.glob("*.avsc")}
    assert on_disk == set(FILE_NAMES.values())


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("encoding", [Encoding.JSON, Encoding.AVRO])
def test_generated_instances_round_trip(kind: str, encoding: Encoding) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(model_strategy(MODELS[kind]))
    def round_trip(message: BaseModel) -> None:
        payload = encode(message, encoding)  # type: ignore[arg-type]
        assert decode(payload) == message

    round_trip()


def test_json_time_is_safe_for_javascript_readers() -> None:
    from schemas import ReadingEvent

    event = ReadingEvent(event_id="e" * 26, site="s", device_id="d", sensor_id="t", seq=1,
                         time=datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC),
                         clock_synced=True, value=1.5, unit="degC")
    doc = json.loads(encode(event))
    assert doc["time"] == "2026-11-26T10:00:00.123456Z"  # a string: no 2**53 rounding
    assert all(not isinstance(v, int) or abs(v) < 2**53 for v in doc.values())


def test_times_are_normalised_to_utc_and_naive_times_rejected() -> None:
    from pydantic import ValidationError

    from schemas import ReadingEvent

    base = dict(event_id="e" * 26, site="s", device_id="d", sensor_id="t", seq=1,
                clock_synced=True, value=1.5, unit="degC")
    plus2 = datetime(2026, 1, 1, 12, tzinfo=UTC).astimezone(
        __import__("datetime").timezone(timedelta(hours=2)))
    assert ReadingEvent(**base, time=plus2).time.utcoffset() == timedelta(0)
    with pytest.raises(ValidationError, match="timezone-aware"):
        ReadingEvent(**base, time=datetime(2026, 1, 1, 12))
