"""Encodings, schema evolution, topics and bad input: every rejection is typed and has a reason."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastavro import schemaless_writer
from fastavro.schema import parse_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    DEFAULT_REGISTRY,
    DecodeError,
    DeviceStatus,
    Encoding,
    InvalidIdentifier,
    InvalidMessage,
    PayloadTooLarge,
    ReadingEvent,
    StateChangeEvent,
    TopicError,
    Topics,
    UnknownEncoding,
    UnknownSchema,
    check_topic_matches,
    decode,
    detect_encoding,
    encode,
)
from schemas.registry import AVRO_MAGIC, schema_fingerprint

NOW = datetime(2026, 11, 26, 10, 0, 0, 250000, tzinfo=UTC)


def reading(**over: object) -> ReadingEvent:
    fields: dict[str, object] = dict(event_id="01JD0000000000000000000000", site="greenhouse",
                                     device_id="pi-01", sensor_id="t1", seq=7, time=NOW,
                                     clock_synced=True, value=21.375, unit="degC")
    fields.update(over)
    return ReadingEvent(**fields)  # type: ignore[arg-type]


def test_avro_single_object_header_names_the_writer_schema() -> None:
    payload = encode(reading(), Encoding.AVRO)
    assert payload[:2] == AVRO_MAGIC == b"\xc3\x01"
    assert payload[2:10] == DEFAULT_REGISTRY.current("reading").fingerprint
    assert detect_encoding(payload) is Encoding.AVRO
    assert detect_encoding(encode(reading())) is Encoding.JSON


def test_fingerprint_is_crc64_avro_little_endian() -> None:
    # The Avro specification's known value for the schema "null": 0x63dd24e7cc258f8a.
    assert schema_fingerprint(parse_schema("null")) == bytes.fromhex("8a8f25cce724dd63")


def test_event_written_with_previous_schema_version_is_read_by_current_reader() -> None:
    old = json.loads((Path(__file__).parents[2] / "schemas/avro/history/"
                      "state_change_event.v1.avsc").read_text())
    old_parsed = parse_schema(old)
    record = dict(event_id="abcdefgh12345678", site="s1", device_id="pi-01", sensor_id="t1",
                  seq=3, time=NOW, clock_synced=False, replayed=True, kind="state_change",
                  value=9.25, unit="degC", previous_state="normal", new_state="high",
                  threshold=8.0)
    buf = io.BytesIO()
    buf.write(AVRO_MAGIC + schema_fingerprint(old_parsed))
    schemaless_writer(buf, old_parsed, record)
    event = decode(buf.getvalue())
    assert isinstance(event, StateChangeEvent)
    assert (event.new_state, event.threshold, event.replayed) == ("high", 8.0, True)
    assert (event.severity, event.dwell_s) == ("info", 0.0)  # fields added in v2 take defaults


def test_a_status_written_before_sensors_had_names_is_read_with_empty_names() -> None:
    old = parse_schema(json.loads((Path(__file__).parents[2] / "schemas/avro/history/"
                                   "device_status.v1.avsc").read_text()))
    record = dict(kind="status", event_id="abcdefgh12345678", site="s1", device_id="pi-01",
                  time=NOW, clock_synced=True, online=True, reason="birth", session=2,
                  agent_version="0.1.0", firmware="", counters={},
                  sensors=[dict(sensor_id="28-0000", unit="degC", source="onewire",
                                thresholds=[])])
    buf = io.BytesIO()
    buf.write(AVRO_MAGIC + schema_fingerprint(old))
    schemaless_writer(buf, old, record)
    status = decode(buf.getvalue())
    assert isinstance(status, DeviceStatus)
    assert [(s.sensor_id, s.name) for s in status.sensors] == [("28-0000", "")]


@pytest.mark.parametrize(("payload", "error", "needle"), [
    (b"", UnknownEncoding, "neither JSON"),
    (b"\x00\x01garbage", UnknownEncoding, "neither JSON"),
    (b"[1, 2]", UnknownEncoding, "neither JSON"),
    (b"{not json", InvalidMessage, "invalid JSON"),
    (AVRO_MAGIC + b"\x01\x02\x03\x04\x05\x06\x07\x08body", UnknownSchema, "0102030405060708"),
    (AVRO_MAGIC + b"\x01\x02", DecodeError, "shorter than its 10-byte header"),
    (b'{"kind": "reading"}', InvalidMessage, "reading.event_id: Field required"),
    (b'{"kind": "teapot"}', InvalidMessage, "does not match any of the expected tags"),
    (b'{"value": 1}', InvalidMessage, "missing field 'kind'"),
])
def test_bad_payloads_raise_typed_errors_with_reasons(payload: bytes, error: type[Exception],
                                                      needle: str) -> None:
    with pytest.raises(error) as info:
        decode(payload)
    assert needle in str(info.value)


def test_mistyped_and_misspelt_fields_are_named() -> None:
    doc = json.loads(encode(reading()))
    doc["value"] = "21.5"  # a string: strict, never coerced
    with pytest.raises(InvalidMessage) as info:
        decode(json.dumps(doc).encode())
    assert info.value.fields == ("reading.value",)
    doc = json.loads(encode(reading()))
    doc["replyed"] = True
    with pytest.raises(InvalidMessage, match="replyed"):
        decode(json.dumps(doc).encode())
    doc = json.loads(encode(reading()))
    doc["device_id"] = "pi/01"
    with pytest.raises(InvalidMessage, match="device_id"):
        decode(json.dumps(doc).encode())


def test_truncated_avro_body_is_rejected() -> None:
    payload = encode(reading(), Encoding.AVRO)
    with pytest.raises(DecodeError, match="does not match schema"):
        decode(payload[:-5])
    with pytest.raises(DecodeError, match="trailing bytes"):
        decode(payload + b"\x00")


def test_oversized_payload_rejected_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 1024"):
        decode(b"{" + b" " * 2000 + b"}", max_size=1024)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.binary(max_size=200).map(lambda b: AVRO_MAGIC + b)
       | st.builds(lambda p, cut, junk: p[:cut] + junk,
                   st.sampled_from([encode(reading(), Encoding.AVRO), encode(reading())]),
                   st.integers(0, 200), st.binary(max_size=8)))
def test_decoder_never_crashes_on_random_or_mutated_bytes(payload: bytes) -> None:
    try:
        decode(payload)
    except DecodeError as exc:
        assert exc.reason


# -- topics -----------------------------------------------------------------------------------

def test_topics_build_and_parse() -> None:
    topics = Topics("thermopipe")
    event = reading()
    topic = topics.for_event(event)
    assert topic == "thermopipe/greenhouse/pi-01/event/t1"
    parsed = topics.parse(topic)
    assert (parsed.kind, parsed.site, parsed.device_id, parsed.sensor_id) == (
        "event", "greenhouse", "pi-01", "t1")
    check_topic_matches(parsed, event.site, event.device_id, event.sensor_id, event.kind)
    assert topics.parse(topics.status("g", "d")).kind == "status"
    assert topics.hub_filters("hubs")[0] == "$share/hubs/thermopipe/+/+/event/+"


@pytest.mark.parametrize("bad", ["a+b", "a#", "a/b", "", "$SYS", "_hub", "x" * 65, "sp ace"])
def test_identifiers_that_would_break_topics_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidIdentifier):
        Topics().event("site", bad, "t1")


def test_a_device_cannot_speak_for_another() -> None:
    topics = Topics()
    spoofed = topics.parse("thermopipe/greenhouse/pi-02/event/t1")
    with pytest.raises(TopicError, match="pi-01.*pi-02"):
        check_topic_matches(spoofed, "greenhouse", "pi-01", "t1", "reading")
    with pytest.raises(TopicError, match="does not belong"):
        check_topic_matches(topics.parse("thermopipe/greenhouse/pi-01/event/t1"),
                            "greenhouse", "pi-01", "t1", "summary")
    with pytest.raises(TopicError, match="outside the namespace"):
        topics.parse("other/greenhouse/pi-01/status")
