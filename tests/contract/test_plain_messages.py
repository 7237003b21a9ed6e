"""The agent's plain twin of the contract (schemas/plain_messages.py) and the pydantic models
(schemas/models.py, the hub's validation) accept and refuse the same messages.

- the committed twin is exactly what ``python -m schemas.generate_plain`` writes now;
- every message the twin accepts, the hub's ``schemas.decode`` accepts from its JSON with equal
  content (and equal to pydantic's own ``model_dump_json``), and its Avro form round-trips
  through fastavro (schemas.registry) to the same message on both sides;
- every input pydantic refuses, the twin refuses (InvalidMessage, naming the same fields), and
  the other way round: inputs are valid messages drawn from the models' own annotations
  (tests/contract/test_contract_models.py's strategies, so a new field is covered at once) with
  some fields replaced by values at and past each field's bounds, read from the same metadata;
- the twin's reader (the agent reads receipts) never accepts a JSON document the hub refuses.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, Literal

import annotated_types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from schemas import ids, plain_messages, plain_runtime
from schemas.codec import decode, encode, invalid_message
from schemas.errors import ContractError, InvalidMessage
from schemas.generate_plain import AGENT_MESSAGES, TARGET, GeneratorError, render
from schemas.ids import Checked, pattern_refusal
from schemas.models import Receipt
from schemas.registry import DEFAULT_REGISTRY
from tests.contract.test_contract_models import model_strategy

EXAMPLES = 150  # per model and property: 4,200 drawn messages in all (28 runs)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PLAIN: dict[type[BaseModel], type[plain_runtime.PlainMessage]] = {
    m: getattr(plain_messages, m.__name__) for m in AGENT_MESSAGES}
WITH_KIND = [m for m in AGENT_MESSAGES if "kind" in m.model_fields]


def _json(data: bytes | str) -> Any:
    return json.loads(data)


# -- the twin cannot drift ---------------------------------------------------------------------

def test_the_committed_twin_is_the_generators_output() -> None:
    assert TARGET.read_text(encoding="utf-8") == render(), (
        "schemas/plain_messages.py differs from the models: run python -m schemas.generate_plain")


def test_the_generator_check_option_fails_on_a_stale_file(tmp_path: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas import generate_plain

    stale = tmp_path / "plain_messages.py"
    stale.write_text(render().replace("'degC', 'degF'", "'degC'"), encoding="utf-8")
    monkeypatch.setattr(generate_plain, "TARGET", stale)
    assert generate_plain.main(["--check"]) == 1
    assert generate_plain.main([]) == 0
    assert generate_plain.main(["--check"]) == 0


def test_the_generator_refuses_a_constraint_it_cannot_write() -> None:
    from schemas import generate_plain

    with pytest.raises(GeneratorError, match="unknown constraint"):
        generate_plain._check_text(int, [annotated_types.MultipleOf(2)], "X.y")
    with pytest.raises(GeneratorError, match="is not a plain function"):
        generate_plain._check_text(str, [Checked(lambda v: v)], "X.y")


_PATTERN_TEXTS = (st.text(max_size=70)
                  | st.from_regex(r"[A-Za-z0-9_.+#/$ \n-]{0,70}", fullmatch=True)
                  | st.sampled_from(["", "a", "a" * 64, "a" * 65, "abcdefg", "abcdefgh", "a\n",
                                     "\na", "a\r", "_a", ".a", "-a", "a b", "\u0661", "\uff41",
                                     "\u212a", "x\udc80", "e" * 64, "e" * 65]))


@pytest.mark.parametrize("marker", [m for t in (ids.SiteId, ids.DeviceId, ids.SensorId,
                                                ids.StateName, ids.EventId)
                                    for m in t.__metadata__], ids=repr)
def test_a_pattern_pydantic_checks_refuses_what_its_check_refuses_in_its_words(
        marker: Checked) -> None:
    """The ids pydantic-core checks by ``pattern`` (Rust regex) are what the twin's ``check``
    (Python re) takes, and the hub's reason for a refusal is the check's own."""
    assert marker.pattern is not None
    adapter: TypeAdapter[str] = TypeAdapter(Annotated[str, marker],
                                            config=ConfigDict(strict=True))

    @SETTINGS
    @given(_PATTERN_TEXTS)
    def same(text: str) -> None:
        try:
            expected: str | None = None
            marker.check(text)
        except ValueError as exc:
            expected = str(exc)
        checks = [adapter.validate_python]
        if not _has_surrogate(text):  # JSON cannot carry a lone one (json_invalid)
            checks.append(lambda t: adapter.validate_json(json.dumps(t)))
        for validate in checks:
            try:
                assert validate(text) == text and expected is None, expected
            except ValidationError as exc:
                (err,) = exc.errors()
                assert err["type"] == marker.error_type, err
                assert pattern_refusal(err["type"], err["input"]) == expected

    same()


def test_the_twin_and_the_agent_side_of_schemas_import_no_pydantic() -> None:
    code = ("import sys, schemas, schemas.plain_messages, schemas.plain_runtime, schemas.topics, "
            "schemas.seq_ranges, schemas.errors, schemas.ids, schemas.serial_protocol; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pydantic', 'pydantic_core', 'fastavro')); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- values at and past each field's bounds, from the models' own metadata ---------------------

_NAIVE = datetime(2026, 1, 1, 12)
_PLUS2 = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))


def _bound(metadata: list[Any], kind: type[Any]) -> int | None:
    attribute = {annotated_types.Ge: "ge", annotated_types.Le: "le",
                 annotated_types.MaxLen: "max_length"}[kind]
    found = [getattr(m, attribute) for m in metadata if isinstance(m, kind)]
    return found[0] if found else None


def hostile(annotation: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    """Values around what the field allows: its bounds and one past, wrong types, odd floats."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    wrong: st.SearchStrategy[Any] = st.sampled_from([None, True, 1, 1.5, "x", [], {}, b"x"])
    if origin in (types.UnionType, typing.Union):
        inner = next(a for a in args if a is not type(None))
        return st.none() | hostile(inner, metadata)
    if origin is Literal:
        return st.sampled_from(args) | st.sampled_from(["", "other", args[0].upper()]) | wrong
    if annotation is bool:
        return st.sampled_from([0, 1, "true", None])
    if annotation is int:
        low = _bound(metadata, annotated_types.Ge)
        high = _bound(metadata, annotated_types.Le)
        edges = [b + d for b in (low, high) if b is not None for d in (-1, 0, 1)]
        return st.sampled_from(edges) | st.integers() | st.sampled_from([True, 1.0, "1"])
    if annotation is float:
        return (st.floats() | st.integers(-(10**400), 10**400)
                | st.sampled_from([math.nan, math.inf, -math.inf, 10**309, True, "1.0", None]))
    if annotation is str:
        most = _bound(metadata, annotated_types.MaxLen)
        texts = st.text(max_size=80) | st.from_regex(r"[A-Za-z0-9_.+#/$ -]{0,70}", fullmatch=True)
        if most is not None:
            texts |= st.sampled_from(["a" * most, "a" * (most + 1), "é" * most])
        return texts | st.sampled_from(["", "a" * 64, "a" * 65, "abcdefg", "abcdefgh",
                                        "x\udc80"]) | wrong  # a lone surrogate
    if annotation is datetime:
        return st.sampled_from([_NAIVE, _PLUS2, "2026-01-01T12:00:00Z", 1.7e9, None])
    if origin is list:
        item: type[BaseModel] = args[0]
        items = _bound(metadata, annotated_types.MaxLen) or 0
        one = model_strategy(item).map(lambda m: m.model_dump(mode="python"))
        return (st.lists(one | hostile_record(item), max_size=3)
                | one.map(lambda d: [d] * (items + 1))
                | st.sampled_from([(), None, "x", [1]]))
    if origin is dict:
        pairs = _bound(metadata, annotated_types.MaxLen) or 0
        keys = st.text(max_size=140) | st.just("\ud800")
        return (st.dictionaries(keys, hostile(float, []), max_size=3)
                | st.just({f"c{i}": 1.0 for i in range(pairs + 1)})
                | st.sampled_from([[], None, {1: 1.0}]))
    raise TypeError(f"no hostile values for {annotation!r}")


def hostile_record(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid message's fields (Python form) with some replaced, removed or added."""
    fields = model.model_fields

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        record = draw(model_strategy(model)).model_dump(mode="python")
        for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
            info = fields[name]
            record[name] = draw(hostile(info.annotation, list(info.metadata)))
        # rarely (hypothesis favours an integer's bounds: a sampled position is near uniform)
        if draw(st.sampled_from(range(10))) == 9:
            record.pop(draw(st.sampled_from(sorted(record))))
        if draw(st.sampled_from(range(20))) == 19:
            record["unknown_field"] = 1
        return dict(record)

    return build()


def _build_both(model: type[BaseModel], record: dict[str, Any]
                ) -> tuple[BaseModel | ValidationError, Any]:
    try:
        expected: BaseModel | ValidationError = model(**record)
    except ValidationError as exc:
        expected = exc
    try:
        got: Any = PLAIN[model](**record)
    except InvalidMessage as exc:
        got = exc
    return expected, got


def _fields_named(exc: ValidationError) -> set[str]:
    return set(invalid_message(exc).fields)


# -- properties --------------------------------------------------------------------------------

@pytest.mark.parametrize("model", AGENT_MESSAGES, ids=lambda m: m.__name__)
def test_what_the_twin_builds_the_hub_accepts_with_equal_content(model: type[BaseModel]) -> None:
    @SETTINGS
    @given(model_strategy(model))
    def same(message: BaseModel) -> None:
        plain = PLAIN[model](**message.model_dump(mode="python"))
        payload = plain.to_json()
        assert _json(payload) == _json(message.model_dump_json())
        assert plain.to_json_dict() == message.model_dump(mode="json")
        assert plain.to_python() == message.model_dump(mode="python")
        if model in WITH_KIND:
            assert decode(payload) == message
            avro = plain_runtime.encode(plain, "avro")
            assert decode(avro, registry=DEFAULT_REGISTRY) == message
            assert avro == encode(message, "avro")
            assert plain_runtime.decode(avro, plain_messages.KINDS) == plain
            assert plain_runtime.decode(payload, plain_messages.KINDS) == plain

    same()


@pytest.mark.parametrize("model", AGENT_MESSAGES, ids=lambda m: m.__name__)
def test_the_twin_refuses_what_pydantic_refuses_and_only_that(model: type[BaseModel]) -> None:
    @SETTINGS
    @given(hostile_record(model))
    def same_verdict(record: dict[str, Any]) -> None:
        expected, got = _build_both(model, record)
        if isinstance(expected, ValidationError):
            assert isinstance(got, InvalidMessage), (record, expected)
            # beyond pydantic's, the twin may name only keys with a lone surrogate (below);
            # pydantic writes such a key's surrogate as U+FFFD in its location, the twin as is
            ours = {_as_pydantic_names(name) for name in got.fields}
            extra = ours - _fields_named(expected)
            assert _fields_named(expected) <= ours, (got, expected)
            assert all("\ufffd" in name for name in extra), (got, expected)
        elif model.model_validate_json(expected.model_dump_json()) != expected:
            # pydantic took it, but its JSON says something else (a counter named with a lone
            # surrogate is sent as U+FFFD): the twin refuses what cannot cross the wire intact
            assert isinstance(got, InvalidMessage), (record, got)
        else:
            assert not isinstance(got, InvalidMessage), (record, got)
            assert _json(got.to_json()) == _json(expected.model_dump_json())
            if model in WITH_KIND:
                assert decode(got.to_json()) == expected

    same_verdict()


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _as_pydantic_names(name: str) -> str:
    return name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat() if value.tzinfo is None else value.isoformat().replace(
            "+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@pytest.mark.parametrize("model", WITH_KIND, ids=lambda m: m.__name__)
def test_the_twins_reader_accepts_nothing_the_hub_refuses(model: type[BaseModel]) -> None:
    """Reading JSON (the agent reads receipts): never looser than the hub; as loose as the hub
    for every document whose times are in the form the contract writes."""

    @SETTINGS
    @given(hostile_record(model), st.booleans())
    def same_verdict(record: dict[str, Any], with_kind: bool) -> None:
        doc = _json_ready(record)
        if with_kind:
            doc["kind"] = model.model_fields["kind"].default
        payload = json.dumps(doc, allow_nan=False).encode()
        try:
            expected: Any = decode(payload)
        except ContractError as exc:
            expected = exc
        try:
            got: Any = plain_runtime.decode(payload, plain_messages.KINDS)
        except ContractError as exc:
            got = exc
        canonical = all(plain_runtime._RFC3339.fullmatch(doc[n]) for n, i in
                        model.model_fields.items()
                        if i.annotation is datetime and isinstance(doc.get(n), str))
        if isinstance(got, plain_runtime.PlainMessage):
            assert not isinstance(expected, Exception), (doc, expected)
            assert _json(got.to_json()) == _json(expected.model_dump_json())
        elif canonical:
            assert isinstance(expected, Exception), (doc, got)

    same_verdict()


def test_receipts_the_hub_writes_are_read_alike() -> None:
    @SETTINGS
    @given(model_strategy(Receipt))
    def read(receipt: BaseModel) -> None:
        for payload in (encode(receipt), encode(receipt, "avro")):  # type: ignore[arg-type]
            got = plain_runtime.decode(payload, {"receipt": plain_messages.Receipt})
            assert got.to_python() == receipt.model_dump(mode="python")

    read()


# -- a few cases said plainly ------------------------------------------------------------------

def test_errors_name_every_offending_field_with_its_path() -> None:
    sensor: Any = {"sensor_id": "a/b", "unit": "K", "source": "x",
                   "thresholds": [{"name": "hi", "direction": "above", "value": math.nan,
                                   "hysteresis": 0, "dwell_s": 0, "severity": "info"}]}
    with pytest.raises(InvalidMessage) as caught:
        plain_messages.DeviceStatus(
            event_id="abc", site="s", device_id="d", time=datetime.now(UTC), clock_synced=True,
            online=True, reason="birth", session=-1, sensors=[sensor])
    assert caught.value.fields == ("event_id", "session", "sensors.0.sensor_id", "sensors.0.unit",
                                   "sensors.0.thresholds.0.value")
    assert "invalid event id 'abc'" in caught.value.reason


def test_a_plain_message_is_immutable_and_replace_checks_again() -> None:
    event = plain_messages.ReadingEvent(
        event_id="e" * 26, site="s", device_id="d", sensor_id="t", seq=1,
        time=datetime(2026, 1, 1, tzinfo=UTC), clock_synced=True, value=1, unit="degC")
    assert event.value == 1.0 and isinstance(event.value, float)
    with pytest.raises(AttributeError):
        event.seq = 2
    assert event.replace(replayed=True).replayed and not event.replayed
    with pytest.raises(InvalidMessage, match="seq"):
        event.replace(seq=-1)
    assert b'"replayed":false' in event.to_json()  # the outbox's replay flag, byte for byte


def test_the_reader_says_what_is_wrong_with_bytes() -> None:
    kinds = {"receipt": plain_messages.Receipt}
    for payload, reason in ((b"{not json", "invalid JSON"), (b'{"site": "s"}', "missing field"),
                            (b'{"kind": "reading"}', "is not one of"), (b"hello", "neither JSON"),
                            (b"{" + b" " * 70000 + b"}", "exceeds the limit")):
        with pytest.raises(ContractError, match=reason):
            plain_runtime.decode(payload, kinds)
