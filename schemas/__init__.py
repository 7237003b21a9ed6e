"""The one event contract shared by the edge agent and the hub.

Import messages, codecs and topics from here; nothing else in the project defines event fields.
``DEFAULT_REGISTRY`` and ``SchemaRegistry`` (Avro) load fastavro, an optional package (the
``avro`` extra), on first use only.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


# Each name from the module that defines it, on first use: ``from schemas.errors import
# ConfigError`` or ``from schemas.topics import Topics`` then loads neither the pydantic models nor
# the codecs (the agent's config loader imports no pydantic), and ``from schemas import decode``
# loads what decode needs. Avro needs fastavro, which an agent that sends JSON does not install.
_HOMES = {
    "DEFAULT_MAX_PAYLOAD": "schemas.codec",
    "Encoding": "schemas.codec",
    "decode": "schemas.codec",
    "detect_encoding": "schemas.codec",
    "encode": "schemas.codec",
    "ConfigError": "schemas.errors",
    "ContractError": "schemas.errors",
    "DecodeError": "schemas.errors",
    "DeliveryError": "schemas.errors",
    "InvalidIdentifier": "schemas.errors",
    "InvalidMessage": "schemas.errors",
    "PayloadTooLarge": "schemas.errors",
    "ProtocolError": "schemas.errors",
    "ServerError": "schemas.errors",
    "SourceError": "schemas.errors",
    "SpoofedTopic": "schemas.errors",
    "ThermopipeError": "schemas.errors",
    "TopicError": "schemas.errors",
    "UnknownEncoding": "schemas.errors",
    "UnknownSchema": "schemas.errors",
    "DeviceId": "schemas.ids",
    "EventId": "schemas.ids",
    "SensorId": "schemas.ids",
    "SiteId": "schemas.ids",
    "StateName": "schemas.ids",
    "check_identifier": "schemas.ids",
    "Alert": "schemas.models",
    "DataLoss": "schemas.models",
    "DeadLetter": "schemas.models",
    "DeviceStatus": "schemas.models",
    "FaultCode": "schemas.models",
    "FaultEvent": "schemas.models",
    "MODELS": "schemas.models",
    "Message": "schemas.models",
    "RateAlarmEvent": "schemas.models",
    "ReadingEvent": "schemas.models",
    "Receipt": "schemas.models",
    "SensorEvent": "schemas.models",
    "SensorInfo": "schemas.models",
    "SeqRange": "schemas.models",
    "Severity": "schemas.models",
    "StateChangeEvent": "schemas.models",
    "SummaryEvent": "schemas.models",
    "ThresholdInfo": "schemas.models",
    "Unit": "schemas.models",
    "DEFAULT_ROOT": "schemas.topics",
    "DeviceTopic": "schemas.topics",
    "Topics": "schemas.topics",
    "check_topic_matches": "schemas.topics",
    "DEFAULT_REGISTRY": "schemas.registry",
    "SchemaRegistry": "schemas.registry",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
