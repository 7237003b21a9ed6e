"""How contract messages become InfluxDB points: the one place that defines the stored layout.

Measurements (tags are low-cardinality; ids and free text are fields):

=================  ==================================  =============================================
measurement        tags                                fields
=================  ==================================  =============================================
``sensor_event``   site, device, sensor, kind, state,  value, seq, event_id, replayed,
                   unit                                clock_synced,
                                                       severity, previous_state, threshold, active,
                                                       rate_per_min, limit_per_min, detail
``sensor_summary`` site, device, sensor, unit          min, max, mean, last, count, seq,
                                                       event_id,
                                                       replayed, clock_synced, window_s
``device_status``  site, device                        online (1/0), session, reason, event_id,
                                                       one ``c_<name>`` field per device counter
``alert``          site, device, sensor, rule,         alert_id, summary, late, event_id, firing
                   severity, status
``data_loss``      site, device, seqs                  first_seq, last_seq, count (ints), cause,
                                                       event_id, hub
``hub_health``     hub                                 events_in, duplicates, dead_lettered (ints,
                                                       counted since the process started),
                                                       ``backlog_<consumer>`` (int, one per
                                                       consumer), lag_s (float)
=================  ==================================  =============================================

``kind`` is reading | state_change | rate_alarm | fault; ``state`` is the new band of a state
change,
the fault code of a fault, ``rate`` for a rate alarm and ``value`` for a reading. ``unit`` is the
sensor's unit (``degC`` / ``degF``): Grafana picks each series' unit from it (points written
before it existed have none, and are shown as degC).

Alerts and health points are the hub's own records: the hub appends them to its journal as
``LocalRecord``s (``hub/journal/``), and only the storage consumer takes them, so they are written
like events: durably, in order, retried while the database is down. An ``alert`` point is a
function of the alert alone (decided firing or resolved, late too), so writing it again after a
crash overwrites it with itself. ``hub_health`` is one point per hub process (tag ``hub`` = the
``hub_id``, ``<hub_id>-w<i>`` for ``--workers``) every ``[storage] health_interval_s`` (default
10 s), stamped with the wall clock when it was taken: ``events_in`` MQTT messages received,
``duplicates`` dropped, ``dead_lettered`` (all since the process started: use
``non_negative_derivative`` for rates), ``backlog_<consumer>`` journal rows the consumer has not
handled, ``lag_s`` the age of the oldest journal entry some consumer has not handled yet (0 when
every consumer is idle).

A ``data_loss`` point is the hub's record of a range of a device's events that never arrived
(hub/loss_detector.py), stamped when the hub decided so; ``cause`` is "" when unknown. Every record
is its own point: the tag ``seqs`` (``{first_seq}-{last_seq}``) makes each range of a device its
own series, so records decided in the same instant (one loss check can decide thousands) never
overwrite each other, and a record written twice (a retry after a crash) is the same point again
(idempotent). A device's lost ranges are disjoint: one tag value (one series) per record. Points
written before the tag existed have none (and may have overwritten each other). Query:
``SELECT sum("count") FROM "data_loss" WHERE time > now() - 7d GROUP BY "device"``.

Alerts carry no sequence number: their last three nanosecond digits come from a hash of the
alert id instead, for the same reason.

Time: the event's own time (replayed and late events keep it), in nanoseconds, as
``time_us * 1000 + seq % 1000``. The contract carries microseconds; adding the sequence number's
last three digits as nanoseconds means two events of one device can never share a timestamp in
one series (InfluxDB would otherwise overwrite one with the other).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from hub.records import FieldValue, Point
from schemas.models import (
    Alert,
    DataLoss,
    DeviceStatus,
    FaultEvent,
    Message,
    RateAlarmEvent,
    ReadingEvent,
    StateChangeEvent,
    SummaryEvent,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def time_ns(when: datetime, seq: int = 0) -> int:
    delta = when - EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros * 1000 + seq % 1000


def point_for(message: Message) -> Point | None:
    """The point a message is stored as; ``None`` for messages that are not stored."""
    if isinstance(message, SummaryEvent):
        return _summary(message)
    if isinstance(message, ReadingEvent | StateChangeEvent | RateAlarmEvent | FaultEvent):
        return _sensor_event(message)
    if isinstance(message, DeviceStatus):
        return _status(message)
    if isinstance(message, Alert):
        return _alert(message)
    if isinstance(message, DataLoss):
        return _data_loss(message)
    return None


def _common(event: ReadingEvent | StateChangeEvent | RateAlarmEvent | FaultEvent | SummaryEvent,
            ) -> dict[str, FieldValue]:
    return {"seq": event.seq, "event_id": event.event_id, "replayed": event.replayed,
            "clock_synced": event.clock_synced}


def _sensor_event(event: ReadingEvent | StateChangeEvent | RateAlarmEvent | FaultEvent) -> Point:
    fields: dict[str, FieldValue] = {}
    if isinstance(event, ReadingEvent):
        state = "value"
        fields["value"] = event.value
    elif isinstance(event, StateChangeEvent):
        state = event.new_state
        fields.update(value=event.value, previous_state=event.previous_state,
                      severity=event.severity, dwell_s=event.dwell_s)
        if event.threshold is not None:
            fields["threshold"] = event.threshold
    elif isinstance(event, RateAlarmEvent):
        state = "rate"
        fields.update(value=event.value, rate_per_min=event.rate_per_min,
                      limit_per_min=event.limit_per_min, active=event.active,
                      severity=event.severity)
    else:
        state = event.fault
        fields.update(active=event.active, severity=event.severity, detail=event.detail)
        if event.value is not None:
            fields["value"] = event.value
    fields.update(_common(event))
    tags = {"site": event.site, "device": event.device_id, "sensor": event.sensor_id,
            "kind": event.kind, "state": state, "unit": event.unit}
    return Point("sensor_event", tags, fields, time_ns(event.time, event.seq))


def _summary(event: SummaryEvent) -> Point:
    fields: dict[str, FieldValue] = {"count": event.count,
                                     "window_s": (event.time - event.window_start).total_seconds()}
    for name in ("min", "max", "mean", "last"):
        value = getattr(event, name)
        if value is not None:
            fields[name] = float(value)
    fields.update(_common(event))
    tags = {"site": event.site, "device": event.device_id, "sensor": event.sensor_id,
            "unit": event.unit}
    return Point("sensor_summary", tags, fields, time_ns(event.time, event.seq))


def _status(status: DeviceStatus) -> Point:
    fields: dict[str, FieldValue] = {"online": int(status.online), "session": status.session,
                                     "reason": status.reason, "event_id": status.event_id}
    for name, value in status.counters.items():
        fields[f"c_{name}"] = float(value)
    return Point("device_status", {"site": status.site, "device": status.device_id}, fields,
                 time_ns(status.time))


def _data_loss(loss: DataLoss) -> Point:
    fields: dict[str, FieldValue] = {"first_seq": loss.first_seq, "last_seq": loss.last_seq,
                                     "count": loss.count, "cause": loss.cause or "",
                                     "event_id": loss.event_id, "hub": loss.hub_id}
    tags = {"site": loss.site, "device": loss.device_id,
            "seqs": f"{loss.first_seq}-{loss.last_seq}"}  # one series per record: see above
    return Point("data_loss", tags, fields, time_ns(loss.time))


def _alert(alert: Alert) -> Point:
    tags = {"site": alert.site, "device": alert.device_id, "sensor": alert.sensor_id or "",
            "rule": alert.rule, "severity": alert.severity, "status": alert.status}
    fields: dict[str, FieldValue] = {"alert_id": alert.alert_id, "summary": alert.summary,
                                     "late": alert.late, "event_id": alert.event_id,
                                     "firing": int(alert.status == "firing")}
    # alerts have no seq: a stable tie-breaker from the alert id keeps alerts decided in the same
    # microsecond (one batch) from overwriting each other in one series
    tie = int.from_bytes(hashlib.blake2b(alert.alert_id.encode(), digest_size=4).digest()) % 1000
    return Point("alert", tags, fields, time_ns(alert.time) + tie)


def health_point(hub_id: str, at_ns: int, *, events_in: int, duplicates: int,
                 dead_lettered: int, backlogs: dict[str, int], lag_s: float) -> Point:
    """The ``hub_health`` point of one hub process at ``at_ns`` (see the table above)."""
    fields: dict[str, FieldValue] = {"events_in": int(events_in), "duplicates": int(duplicates),
                                     "dead_lettered": int(dead_lettered)}
    for consumer, backlog in sorted(backlogs.items()):
        fields[f"backlog_{consumer}"] = int(backlog)
    fields["lag_s"] = float(lag_s)  # always a float: InfluxDB fixes a field's type per shard
    return Point("hub_health", {"hub": hub_id}, fields, at_ns)


