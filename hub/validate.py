"""Pure ingest decisions: is a payload acceptable, is it late, is it out of order.

No I/O and no clock: the received time is an argument. ``hub/ingest.py`` feeds MQTT messages
through these and records the outcome; ``hub dlq replay`` feeds dead letters through the same
code, so a fixed hub accepts what it once rejected.

Lateness (documented for operators and the alerting consumer):

- ``late`` is true when the agent marked the event ``replayed`` (sent from its outbox backlog),
  or when its clock was synchronised and the event time is more than ``late_after_s`` before the
  hub received it. Events made before the device clock was synchronised are not judged by age:
  their time may be wrong in either direction, and a live event must not be muted as late.
  A will (``status``, ``online: false``, ``reason: will``) is never late by age: see ``is_will``.
- ``out_of_order`` is true when the event's ``seq`` is not above the highest ``seq`` already
  accepted for the same site, device and sensor (``seq`` is per device and strictly increasing
  across agent restarts; a device id is unique within its site). Such events are stored with
  their own time; consumers that keep a current state must not let them move it backwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import get_args

from pydantic import TypeAdapter, ValidationError

from schemas.codec import decode, invalid_message
from schemas.errors import (
    ContractError,
    DecodeError,
    InvalidIdentifier,
    InvalidMessage,
    PayloadTooLarge,
    SpoofedTopic,
    TopicError,
    UnknownEncoding,
    UnknownSchema,
)
from schemas.models import DataLoss, DeviceStatus, Message, ReadingEvent, SensorEvent
from schemas.topics import DeviceTopic, Topics, check_topic_matches

Accepted = SensorEvent | DeviceStatus


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a payload was refused: ``code`` is a short label for metrics, ``reason`` for people."""

    code: str
    reason: str


# the reason code of a rejection, by the error's type (most specific first)
_CODES: tuple[tuple[type[ContractError], str], ...] = (
    (PayloadTooLarge, "too_large"), (UnknownEncoding, "unknown_encoding"),
    (UnknownSchema, "unknown_schema"), (InvalidMessage, "invalid"), (SpoofedTopic, "spoofed"),
    (TopicError, "topic"), (InvalidIdentifier, "topic"), (DecodeError, "undecodable"))


def reason_code(exc: ContractError) -> str:
    return next((code for kind, code in _CODES if isinstance(exc, kind)), "invalid")


#: the sensor events' classes (``type(message) in`` this: the cheap test of the usual case)
SENSOR_TYPES = frozenset(get_args(SensorEvent))
#: what a device topic may carry, by class
_ACCEPTED_TYPES = frozenset((*SENSOR_TYPES, DeviceStatus))

#: the contract's ``Message`` union, as ``schemas.codec.decode`` validates JSON with it, called
#: without its wrappers (about 0.7 us of the hub's per-event time)
_VALIDATE_JSON = TypeAdapter(Message).validator.validate_json


def _parse_topic(topics: Topics, topic: str) -> DeviceTopic:
    return _parse_cached(topics.root, topic)


@lru_cache(maxsize=8_192)
def _parse_cached(root: str, topic: str) -> DeviceTopic:
    # A hub sees the same few hundred topics over and over (4.5 us to parse, 0.1 cached);
    # failures are not cached. An entry is about 500 bytes: the size bounds what a flood of
    # invented topics can take (4 MB), before hub/identity_limits.py refuses their events.
    # Keyed by the root string, not the frozen ``Topics`` (hashed by a Python-level
    # ``__hash__`` on every call).
    return Topics(root).parse(topic)


def check_payload(topics: Topics, topic: str, payload: bytes, max_size: int,
                  ) -> Accepted | Rejection:
    """Decode and validate one payload against its topic: the contract message, or why not."""
    try:
        parsed = _parse_topic(topics, topic)
        if payload[:1] == b"{" and len(payload) <= max_size:  # JSON: what decode() would do
            try:
                message: Message = _VALIDATE_JSON(payload)
            except ValidationError as exc:
                raise invalid_message(exc) from None
        else:  # Avro, too large, unknown: decode() says which
            message = decode(payload, max_size=max_size)
        kind = type(message)
        if kind not in _ACCEPTED_TYPES and not isinstance(message, SensorEvent | DeviceStatus):
            return Rejection("wrong_kind",
                             f"a {message.kind!r} message is not accepted from a device topic")
        accepted: Accepted = message  # type: ignore[assignment]  # checked on the line above
        sensor = None if kind is DeviceStatus or isinstance(accepted, DeviceStatus) \
            else accepted.sensor_id
        if not (kind is ReadingEvent and parsed.kind == "event" and accepted.site == parsed.site
                and accepted.device_id == parsed.device_id and sensor == parsed.sensor_id):
            # the usual reading on its own topic needs no more; anything else is checked
            check_topic_matches(parsed, accepted.site, accepted.device_id, sensor, accepted.kind)
    except ContractError as exc:
        reason = exc.reason if isinstance(exc, DecodeError) else str(exc)
        return Rejection(reason_code(exc), reason)
    return accepted


def is_will(message: Accepted | DataLoss) -> bool:
    """The broker's announcement that the device's connection died (its MQTT will).

    Its ``time`` is when that session *connected* (the agent sets the will before connecting),
    not when the device was lost: the broker publishes it the moment the connection dies, so it
    is live news whenever it arrives, however old its time. Only a replayed event is late, and
    the agent cannot replay its own will. Judging it by age would mute the death of any device
    that had been up longer than ``late_after_s`` (late alerts are not paged).
    """
    return isinstance(message, DeviceStatus) and not message.online and message.reason == "will"


def is_late(message: Accepted, received_at: datetime, late_after_s: float) -> bool:
    # the exact type first: isinstance against the SensorEvent union costs a walk of its
    # members, once per event
    if type(message) in SENSOR_TYPES or isinstance(message, SensorEvent):
        if message.replayed:  # type: ignore[union-attr]  # a SensorEvent here
            return True
    elif is_will(message):
        return False  # judged by when the broker delivered it: see is_will
    return message.clock_synced and (received_at - message.time).total_seconds() > late_after_s


class OrderTracker:
    """Highest ``seq`` seen per (site, device, sensor); says whether an event arrived out of
    order. A device id is unique within its site only: two sites may each have a ``pi-01``."""

    def __init__(self, known: dict[tuple[str, str, str], int] | None = None) -> None:
        self._high: dict[tuple[str, str, str], int] = dict(known or {})
        self.changed: dict[tuple[str, str, str], int] = {}

    def observe(self, site: str, device: str, sensor: str, seq: int) -> bool:
        """Record ``seq``; True when it is not above the highest already seen (out of order)."""
        key = (site, device, sensor)
        high = self._high.get(key)
        if high is not None and seq <= high:
            return True
        self._high[key] = seq
        self.changed[key] = seq
        return False

    def take_changes(self) -> dict[tuple[str, str, str], int]:
        changes, self.changed = self.changed, {}
        return changes
