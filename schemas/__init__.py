"""The one event contract shared by the edge agent and the hub.

Import messages, codecs and topics from here; nothing else in the project defines event fields.
``DEFAULT_REGISTRY`` and ``SchemaRegistry`` (Avro) load fastavro, an optional package (the
``avro`` extra), on first use only.
"""

from typing import Any

from schemas.codec import DEFAULT_MAX_PAYLOAD, Encoding, decode, detect_encoding, encode
from schemas.errors import (
    ConfigError,
    ContractError,
    DecodeError,
    DeliveryError,
    InvalidIdentifier,
    InvalidMessage,
    PayloadTooLarge,
    ProtocolError,
    ServerError,
    SourceError,
    SpoofedTopic,
    ThermopipeError,
    TopicError,
    UnknownEncoding,
    UnknownSchema,
)
from schemas.ids import DeviceId, EventId, SensorId, SiteId, StateName, check_identifier
from schemas.models import (
    MODELS,
    Alert,
    DataLoss,
    DeadLetter,
    DeviceStatus,
    FaultCode,
    FaultEvent,
    Message,
    RateAlarmEvent,
    ReadingEvent,
    Receipt,
    SensorEvent,
    SensorInfo,
    SeqRange,
    Severity,
    StateChangeEvent,
    SummaryEvent,
    ThresholdInfo,
    Unit,
)
from schemas.topics import DEFAULT_ROOT, DeviceTopic, Topics, check_topic_matches

__all__ = [
    "DEFAULT_MAX_PAYLOAD", "DEFAULT_REGISTRY", "DEFAULT_ROOT", "MODELS", "Alert", "ConfigError",
    "ContractError", "DataLoss", "DeadLetter", "DecodeError", "DeliveryError", "DeviceId",
    "DeviceStatus", "DeviceTopic", "Encoding", "EventId", "FaultCode", "FaultEvent",
    "InvalidIdentifier", "InvalidMessage", "Message", "PayloadTooLarge", "ProtocolError",
    "RateAlarmEvent", "ReadingEvent", "Receipt", "SchemaRegistry", "SensorEvent", "SensorId",
    "SensorInfo", "SeqRange", "ServerError", "Severity", "SiteId", "SourceError", "SpoofedTopic",
    "StateChangeEvent", "StateName", "SummaryEvent", "ThermopipeError", "ThresholdInfo",
    "TopicError", "Topics", "Unit", "UnknownEncoding", "UnknownSchema", "check_identifier",
    "check_topic_matches", "decode", "detect_encoding", "encode",
]


def __getattr__(name: str) -> Any:
    # Avro needs fastavro, which an agent that sends JSON does not install: load it on first use.
    if name in ("DEFAULT_REGISTRY", "SchemaRegistry"):
        from schemas import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'schemas' has no attribute {name!r}")
