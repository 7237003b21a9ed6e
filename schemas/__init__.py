"""The one event contract shared by the edge agent and the hub.

Import messages, codecs and topics from here; nothing else in the project defines event fields.
The pydantic models and codecs (``schemas.models``, ``schemas.codec``: the hub's validation) load
on first use of one of their names, so a program that needs only errors, ids, topics or the plain
twin of the messages (``schemas.plain_messages``, the edge agent) never imports pydantic.
``DEFAULT_REGISTRY`` and ``SchemaRegistry`` (Avro) load fastavro, an optional package (the
``avro`` extra), on first use only.
"""

import importlib
from typing import TYPE_CHECKING, Any

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
from schemas.topics import DEFAULT_ROOT, DeviceTopic, Topics, check_topic_matches
from schemas.vocabulary import FaultCode, Severity, Unit

if TYPE_CHECKING:
    from schemas.codec import DEFAULT_MAX_PAYLOAD, Encoding, decode, detect_encoding, encode
    from schemas.models import (
        MODELS,
        Alert,
        DataLoss,
        DeadLetter,
        DeviceStatus,
        FaultEvent,
        Message,
        RateAlarmEvent,
        ReadingEvent,
        Receipt,
        SensorEvent,
        SensorInfo,
        SeqRange,
        StateChangeEvent,
        SummaryEvent,
        ThresholdInfo,
    )
    from schemas.registry import DEFAULT_REGISTRY, SchemaRegistry

#: name -> the module that defines it, imported on first use (pydantic, fastavro)
_LAZY = {
    **dict.fromkeys(("DEFAULT_MAX_PAYLOAD", "Encoding", "decode", "detect_encoding", "encode"),
                    "schemas.codec"),
    **dict.fromkeys(("MODELS", "Alert", "DataLoss", "DeadLetter", "DeviceStatus", "FaultEvent",
                     "Message", "RateAlarmEvent", "ReadingEvent", "Receipt", "SensorEvent",
                     "SensorInfo", "SeqRange", "StateChangeEvent", "SummaryEvent",
                     "ThresholdInfo"), "schemas.models"),
    # Avro needs fastavro, which an agent that sends JSON does not install
    **dict.fromkeys(("DEFAULT_REGISTRY", "SchemaRegistry"), "schemas.registry"),
}

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
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
