"""The event contract: every message that crosses the wire, as pydantic v2 models.

Each model matches one Avro schema in ``schemas/avro/`` field for field (``tests/schemas`` proves it
for generated instances). Time is UTC with microsecond precision: an integer number of microseconds
since the epoch (about 1.8e15 today) stays below 2**53, so JavaScript readers of the JSON form never
round it, and the hub adds ``seq % 1000`` as nanoseconds so no two events of one device can share an
InfluxDB timestamp (see ``hub/storage``).

Field meanings shared by the device events:

- ``event_id``: made once when the event is created and stored with it in the agent's outbox, so a
  replay after a restart carries the same id; the hub drops duplicates by it. Any string of the
  id's form will do; the agent makes time-ordered ones (``schemas.ids.new_event_id``, a UUID
  version 7 in hex), which the hub's dedup index records at a cost that does not grow with it.
- ``seq``: per-device sequence number, persisted by the agent, strictly increasing across restarts.
- ``clock_synced``: the device clock was NTP-synchronised when the event was made (a Raspberry Pi
  has no RTC: times made before sync may be wrong, the hub flags them).
- ``replayed``: sent from the outbox backlog after an outage or restart, not live.

Bounds (schemas/TOPICS.md, "Bounds"): everything read from the wire is bounded here, once, for
both encodings (the Avro schemas have no bounds; a payload is validated by these models whichever
encoding carried it), so the rest of the hub can trust a message it holds: ``seq`` (and every seq
range) is ``0 .. SEQ_MAX`` (2**63 - 1: a signed 64-bit integer, as SQLite, Avro ``long`` and
InfluxDB store it); identifiers are ``schemas/ids.py``'s; free text is at most ``NAME_MAX`` (names,
versions, sources, counter names) or ``TEXT_MAX`` (details, causes, firmware) characters; lists
and maps have a most (``SENSORS_MAX``, ``THRESHOLDS_MAX``, ``COUNTERS_MAX``, ``RANGES_MAX``); every
float is finite (no NaN, no infinity: JSON's ``NaN``/``Infinity``/``1e999`` and Avro's NaN alike).
A payload outside a bound fails validation like any other invalid payload: a dead letter.

The edge agent does not import these models (pydantic-core has no wheel for a Pi Zero): it builds
the messages it sends, and reads receipts, with ``schemas/plain_messages.py``, generated from
them by ``python -m schemas.generate_plain``. Run it after changing a model;
``tests/contract/test_plain_messages.py`` fails until then, and proves both accept and refuse
the same messages. The bounds above live in ``schemas/vocabulary.py``, the after-checks in
``schemas/field_checks.py`` and ``schemas/ids.py``: plain Python that both validations call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.field_checks import counter_names, ordered_ranges, utc_time
from schemas.ids import DeviceId, EventId, SensorId, SiteId, StateName

# the bounds and vocabularies: plain Python beside, for the agent's twin; re-exported (__all__)
from schemas.vocabulary import (
    COUNTERS_MAX,
    NAME_MAX,
    RANGES_MAX,
    SENSORS_MAX,
    SEQ_MAX,
    TEXT_MAX,
    THRESHOLDS_MAX,
    FaultCode,
    Severity,
    Unit,
)

Seq = Annotated[int, Field(ge=0, le=SEQ_MAX)]
Count = Annotated[int, Field(ge=0, le=SEQ_MAX)]
Name = Annotated[str, Field(max_length=NAME_MAX)]
Text = Annotated[str, Field(max_length=TEXT_MAX)]


UtcTime = Annotated[datetime, AfterValidator(utc_time)]


class _Message(BaseModel):
    # strict: a mistyped field is an error, never coerced; forbid: a misspelt field is an error,
    # never silently ignored (newer writers are handled by the Avro registry / DLQ replay).
    # allow_inf_nan=False: every float of every message is finite (NaN and inf are refused).
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)


class _DeviceEvent(_Message):
    event_id: EventId
    site: SiteId
    device_id: DeviceId
    sensor_id: SensorId
    seq: Seq
    time: UtcTime
    clock_synced: bool
    replayed: bool = False


class ReadingEvent(_DeviceEvent):
    """Report by exception: the value moved by more than the deadband since the last report."""

    kind: Literal["reading"] = "reading"
    value: float
    unit: Unit


class StateChangeEvent(_DeviceEvent):
    """The sensor entered another threshold band after hysteresis and dwell time."""

    kind: Literal["state_change"] = "state_change"
    value: float
    unit: Unit
    previous_state: StateName
    new_state: StateName
    threshold: float | None = None  # the threshold crossed; None when returning to normal
    severity: Severity = "info"
    dwell_s: float = 0.0


class RateAlarmEvent(_DeviceEvent):
    """The rate of change passed its limit (active) or came back under it (not active)."""

    kind: Literal["rate_alarm"] = "rate_alarm"
    value: float
    unit: Unit
    rate_per_min: float
    limit_per_min: float
    active: bool
    severity: Severity = "warning"


class FaultEvent(_DeviceEvent):
    """A sensor fault began (``active``) or recovered (not ``active``)."""

    kind: Literal["fault"] = "fault"
    fault: FaultCode
    active: bool
    value: float | None = None
    unit: Unit
    detail: Text = ""
    severity: Severity = "warning"


class SummaryEvent(_DeviceEvent):
    """Statistics of the good readings over ``[window_start, time)``; empty windows have count 0."""

    kind: Literal["summary"] = "summary"
    unit: Unit
    window_start: UtcTime
    count: Count
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    last: float | None = None


class ThresholdInfo(_Message):
    name: StateName
    direction: Literal["above", "below"]
    value: float
    hysteresis: float
    dwell_s: float
    severity: Severity


class SensorInfo(_Message):
    sensor_id: SensorId
    unit: Unit
    source: Name  # serial | onewire | simulator
    thresholds: Annotated[list[ThresholdInfo], Field(max_length=THRESHOLDS_MAX)] = []
    #: a name for people ("freezer compartment": the agent's ``[sensors.<id>] name``), or ""
    name: Name = ""


class DeviceStatus(_Message):
    """Retained on the device's status topic: the birth (online) and the will (offline)."""

    kind: Literal["status"] = "status"
    event_id: EventId
    site: SiteId
    device_id: DeviceId
    time: UtcTime
    clock_synced: bool
    online: bool
    reason: Literal["birth", "will", "shutdown", "update"]
    session: Count  # increments on every connect (Sparkplug's bdSeq)
    agent_version: Name = ""
    firmware: Text = ""
    sensors: Annotated[list[SensorInfo], Field(max_length=SENSORS_MAX)] = []
    counters: Annotated[dict[str, float], Field(max_length=COUNTERS_MAX),
                        AfterValidator(counter_names)] = {}
    #: a name for people ("Freezer": the agent's ``name``), or "" (then shown as the device id)
    device_name: Name = ""
    #: True when ``sensors`` is the device's whole list: every source has looked for its sensors
    #: (a 1-Wire bus scanned, a serial device's HELLO read), so a sensor missing from it is gone.
    #: False while a source may still add sensors, and for an agent from before this field: a
    #: reader must not take a sensor missing from such a list as removed.
    sensors_complete: bool = False


class Alert(_Message):
    """A notification the hub's alerting consumer sends (also published on the alert topic)."""

    kind: Literal["alert"] = "alert"
    alert_id: EventId  # idempotency key: the same notification always has the same id
    group_key: str
    status: Literal["firing", "resolved"]
    severity: Severity
    rule: str
    site: SiteId
    device_id: DeviceId
    sensor_id: SensorId | None = None
    summary: str
    event_id: EventId
    event_time: UtcTime
    late: bool = False  # the cause was replayed or old: reported as late, not paged as new
    time: UtcTime


class DeadLetter(_Message):
    """A payload the hub could not accept, kept with the reason and where it came from."""

    kind: Literal["dead_letter"] = "dead_letter"
    dead_letter_id: EventId
    received_at: UtcTime
    topic: str  # at most hub.records.TOPIC_KEEP bytes of it: topic_size says when cut
    reason: str  # likewise REASON_KEEP bytes
    payload_b64: str  # likewise DEAD_LETTER_KEEP bytes
    #: the sizes (bytes) of payload, topic and reason as received, and the payload's SHA-256
    #: (None: a message from before they existed)
    payload_size: int | None = None
    payload_sha256: str | None = None
    topic_size: int | None = None
    reason_size: int | None = None


class HomeAssistantState(_Message):
    """Retained per sensor on ``{root}/_hub/ha/{site}/{device}/{sensor}`` for Home Assistant's
    MQTT discovery entities (``hub/homeassistant``). Not an event: the hub's current view.

    ``temperature`` is the last ACCEPTED value (a reading, state change, rate alarm or summary;
    never a fault's rejected sample), None before the first; ``band`` the threshold band;
    ``fault`` the newest active fault or ``"none"``, ``faults`` every active one.
    """

    kind: Literal["ha_state"] = "ha_state"
    temperature: float | None = None
    unit: Unit
    band: StateName = "unknown"
    fault: FaultCode | Literal["none"] = "none"
    faults: list[FaultCode] = []
    time: UtcTime | None = None  # when the temperature was measured


class SeqRange(_Message):
    """Sequence numbers ``first`` through ``last`` (both included) of one device."""

    first: Seq
    last: Seq


SeqRanges = Annotated[list[SeqRange], Field(max_length=RANGES_MAX),
                      AfterValidator(ordered_ranges)]


class Receipt(_Message):
    """The hub -> one device, on ``{root}/{site}/{device}/receipt``: in ``ranges`` the events of
    this device (by ``seq``) that the hub ``hub_id`` holds durably (journaled, or a duplicate of
    one it holds; never a payload it refused). The agent deletes them from its outbox; whatever is
    not receipted in time is sent again. Several hubs (workers) each receipt what they hold; the
    agent merges them. ``refused``: see below and schemas/TOPICS.md, "Receipts"."""

    kind: Literal["receipt"] = "receipt"
    event_id: EventId
    site: SiteId
    device_id: DeviceId
    time: UtcTime
    hub_id: Name
    ranges: SeqRanges
    #: seqs of payloads this hub refused (dead-lettered) on the device's event or summary topic,
    #: whose ``seq`` it could read: NOT held, and never in ``ranges`` of the same receipt. The
    #: agent logs and counts them and keeps its rows (they never leave the outbox on this).
    refused: SeqRanges = []


class DataLoss(_Message):
    """The hub's record of events of one device that never arrived: ``seq`` ``first_seq``
    through ``last_seq`` stayed missing for the gap timeout (or the agent said its outbox
    evicted them). ``event_id`` is derived from the device and the range, so the record is
    made once. ``cause`` is None when unknown."""

    kind: Literal["data_loss"] = "data_loss"
    event_id: EventId
    site: SiteId
    device_id: DeviceId
    time: UtcTime  # when the hub decided the range was lost
    first_seq: Seq
    last_seq: Seq
    count: Annotated[int, Field(ge=1, le=SEQ_MAX)]
    cause: Text | None = None
    hub_id: Name = ""


SensorEvent = ReadingEvent | StateChangeEvent | RateAlarmEvent | FaultEvent | SummaryEvent
Message = Annotated[
    ReadingEvent
    | StateChangeEvent
    | RateAlarmEvent
    | FaultEvent
    | SummaryEvent
    | DeviceStatus
    | Alert
    | DeadLetter
    | Receipt
    | DataLoss,
    Field(discriminator="kind"),
]
MessageModel = type[_Message]

#: kind -> model, and the Avro schema file that defines each kind.
MODELS: dict[str, type[Any]] = {
    "reading": ReadingEvent,
    "state_change": StateChangeEvent,
    "rate_alarm": RateAlarmEvent,
    "fault": FaultEvent,
    "summary": SummaryEvent,
    "status": DeviceStatus,
    "alert": Alert,
    "dead_letter": DeadLetter,
    "receipt": Receipt,
    "data_loss": DataLoss,
}

__all__ = [
    "COUNTERS_MAX", "MODELS", "NAME_MAX", "RANGES_MAX", "SENSORS_MAX", "SEQ_MAX", "TEXT_MAX",
    "THRESHOLDS_MAX", "Alert", "Count", "DataLoss", "DeadLetter", "DeviceStatus", "FaultCode",
    "FaultEvent", "HomeAssistantState", "Message", "MessageModel", "Name", "RateAlarmEvent",
    "ReadingEvent", "Receipt", "SensorEvent", "SensorInfo", "Seq", "SeqRange", "SeqRanges",
    "Severity", "StateChangeEvent", "SummaryEvent", "Text", "ThresholdInfo", "Unit", "UtcTime",
]
