"""The contract's bounds (schemas/models.py, schemas/TOPICS.md "Bounds"): what a device can send
is bounded once, at validation, in both encodings; the hub's check turns a violation into a
dead letter (reason code ``invalid`` or ``topic``), never an exception."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest

from hub.validate import Rejection, check_payload
from schemas.codec import decode, encode
from schemas.errors import InvalidMessage, TopicError
from schemas.models import DeviceStatus
from schemas.topics import Topics
from tests.hub_core.helpers import reading

TOPICS = Topics("t")
SEQ_MAX = 2**63 - 1  # the contract's (schemas.models.SEQ_MAX, schemas/TOPICS.md "Bounds")
READING = json.loads(encode(reading(5)))
STATUS: dict[str, Any] = {
    "kind": "status", "event_id": "abcdefgh01", "site": "s1", "device_id": "d1",
    "time": "2026-11-26T08:00:00Z", "clock_synced": True, "online": True, "reason": "birth",
    "session": 1}
SENSOR = {"sensor_id": "t1", "unit": "degC", "source": "serial"}
THRESHOLD = {"name": "high", "direction": "above", "value": 30.0, "hysteresis": 0.5,
             "dwell_s": 0.0, "severity": "warning"}


def _raw(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()  # json.dumps writes NaN and Infinity as such


@pytest.mark.parametrize(("change", "field"), [
    ({"seq": SEQ_MAX + 1}, "seq"),
    ({"seq": 2**64}, "seq"),
    ({"seq": -1}, "seq"),
    ({"value": math.nan}, "value"),
    ({"value": math.inf}, "value"),
    ({"value": -math.inf}, "value"),
    ({"site": "s" * 65}, "site"),
    ({"event_id": "e" * 65}, "event_id"),
])
def test_reading_outside_the_bounds_is_invalid(change: dict[str, Any], field: str) -> None:
    payload = _raw({**READING, **change})
    with pytest.raises(InvalidMessage) as info:
        decode(payload)
    assert field in str(info.value)
    result = check_payload(TOPICS, "t/s1/d1/event/t1", payload, 65536)
    assert isinstance(result, Rejection) and result.code in ("invalid", "topic")


def test_1e999_is_infinite_and_refused() -> None:
    payload = encode(reading(5)).replace(b'"value":20.0', b'"value":1e999')
    assert b"1e999" in payload
    with pytest.raises(InvalidMessage, match="value"):
        decode(payload)


def test_the_highest_seq_is_accepted() -> None:
    assert decode(_raw({**READING, "seq": SEQ_MAX})).seq == SEQ_MAX  # type: ignore[union-attr]


@pytest.mark.parametrize(("change", "field"), [
    ({"agent_version": "v" * 129}, "agent_version"),
    ({"firmware": "f" * 1025}, "firmware"),
    ({"session": 2**64}, "session"),
    ({"counters": {"c" * 129: 1.0}}, "counters"),
    ({"counters": {f"c{i}": 1.0 for i in range(257)}}, "counters"),
    ({"counters": {"x": math.nan}}, "counters"),
    ({"sensors": [SENSOR] * 1025}, "sensors"),
    ({"sensors": [{**SENSOR, "name": "n" * 129}]}, "name"),
    ({"sensors": [{**SENSOR, "source": "s" * 129}]}, "source"),
    ({"sensors": [{**SENSOR, "thresholds": [THRESHOLD] * 33}]}, "thresholds"),
    ({"sensors": [{**SENSOR, "thresholds": [{**THRESHOLD, "value": math.inf}]}]}, "value"),
])
def test_status_outside_the_bounds_is_invalid(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode(_raw({**STATUS, **change}))
    assert field in str(info.value)
    assert isinstance(decode(_raw(STATUS)), DeviceStatus)


def test_nan_in_avro_is_refused_too() -> None:
    event = reading(5)
    avro = bytearray(encode(event, "avro"))
    # the value is the only double of a reading equal to 20.0: overwrite it with NaN
    at = bytes(avro).index(struct.pack("<d", 20.0))
    avro[at:at + 8] = struct.pack("<d", math.nan)
    with pytest.raises(InvalidMessage, match="value"):
        decode(bytes(avro))


def test_a_huge_topic_level_is_refused_with_a_bounded_reason() -> None:
    topic = "t/" + "s" * 65_000 + "/d1/event/t1"
    with pytest.raises(TopicError) as info:
        TOPICS.parse(topic)
    assert len(str(info.value)) < 600
    result = check_payload(TOPICS, topic, encode(reading(5)), 65536)
    assert isinstance(result, Rejection) and result.code == "topic" and len(result.reason) < 600


def test_the_agent_config_carries_the_same_bounds() -> None:
    from edge_agent.config import SensorConfig, SensorRules
    from program_support.plain_config import parse
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="name: String should have at most 128 characters"):
        parse({"name": "n" * 129}, SensorConfig)
    with pytest.raises(ConfigError, match=r"thresholds\[0\].above: Input should be a finite"):
        parse({"thresholds": [{"name": "high", "above": math.inf}]}, SensorRules)
    with pytest.raises(ConfigError, match="thresholds: List should have at most 32 items"):
        parse({"thresholds": [{"name": f"h{i}", "above": float(i)} for i in range(33)]},
              SensorRules)
