"""What the dashboard shows, built from envelopes and alerts with no I/O (pure, testable).

Every ``apply``/``apply_batch`` returns the changes it made (``{"type":
"device"|"sensor"|"event"|"alert", ...}``; one per device and sensor per batch, with its final
values), which the consumer streams to browsers; ``snapshot`` is the whole state for
``/api/state``. A redelivered envelope (same event id) changes nothing, and an envelope older than
what a sensor already shows (lower ``seq``) is listed as an event but never overwrites its value.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from hub.consumers.base import Envelope
from schemas.models import (
    Alert,
    DeviceStatus,
    FaultEvent,
    RateAlarmEvent,
    ReadingEvent,
    StateChangeEvent,
    SummaryEvent,
)

Change = dict[str, Any]
SEEN_IDS = 5_000  # a retried batch comes again (<= batch_size); the journal drops other dups


def _iso(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


class DashboardState:
    def __init__(self, recent_events: int = 50, recent_alerts: int = 50) -> None:
        self.version = 0
        self.devices: dict[str, dict[str, Any]] = {}
        self.sensors: dict[str, dict[str, Any]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=recent_events)
        self.alerts: deque[dict[str, Any]] = deque(maxlen=recent_alerts)
        self.open_alerts: dict[str, dict[str, Any]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._status_order: dict[str, tuple[int, int, Any]] = {}
        # the same dicts as devices / sensors, keyed by id tuples: no key string per event
        self._devices_by_id: dict[tuple[str, str], dict[str, Any]] = {}
        self._sensors_by_id: dict[tuple[str, str, str], dict[str, Any]] = {}

    # -- input ---------------------------------------------------------------------------------
    def apply(self, env: Envelope) -> list[Change]:
        return self.apply_batch((env,))

    def apply_batch(self, batch: Iterable[Envelope]) -> list[Change]:
        """Apply a batch; return ONE change per device and sensor it touched (their final
        values: a browser only ever shows the latest), then the listed events in order.

        Readings, nearly all the traffic, take a fast path: only the newest reading per sensor
        and the last arrival per device are remembered while the batch runs, and turned into
        display values once at the end, so the work per batch is bounded by the number of
        devices and sensors, not of events."""
        seen = self._seen
        devices = self._devices_by_id
        sensors = self._sensors_by_id
        touched_devices: dict[str, dict[str, Any]] = {}
        touched_sensors: dict[str, dict[str, Any]] = {}
        events: list[dict[str, Any]] = []
        # latest arrival per device, newest reading per sensor (keyed by the dicts' "key")
        arrivals: dict[str, datetime] = {}
        newest: dict[str, tuple[Any, Envelope]] = {}
        for env in batch:
            msg = env.message
            event_id = msg.event_id
            if event_id in seen:
                continue
            seen[event_id] = None
            if len(seen) > SEEN_IDS:
                seen.popitem(last=False)
            if type(msg) is ReadingEvent:
                device = devices.get((msg.site, msg.device_id))
                if device is None:
                    device = self._device(msg.site, msg.device_id)
                sensor = sensors.get((msg.site, msg.device_id, msg.sensor_id))
                if sensor is None:  # a known sensor is already listed on its device
                    sensor = self._sensor(msg.site, msg.device_id, msg.sensor_id)
                    if sensor["key"] not in device["sensors"]:
                        device["sensors"].append(sensor["key"])
                dkey = device["key"]
                device["events"] += 1
                arrivals[dkey] = env.received_at
                touched_devices[dkey] = device
                skey = sensor["key"]
                if msg.seq > sensor["seq"]:
                    sensor["seq"] = msg.seq
                    newest[skey] = (sensor, env)
                    touched_sensors[skey] = sensor
                continue
            # anything else: settle the pending readings first, so it sees (and may change)
            # the values as they are at this point of the batch
            self._settle(arrivals, newest)
            self._apply_one(env, touched_devices, touched_sensors, events)
        self._settle(arrivals, newest)
        changes = [self._change("device", d) for d in touched_devices.values()]
        changes += [self._change("sensor", s) for s in touched_sensors.values()]
        changes += [self._change("event", item) for item in events]
        return changes

    def _settle(self, arrivals: dict[str, datetime],
                newest: dict[str, tuple[Any, Envelope]]) -> None:
        for dkey, received_at in arrivals.items():
            self.devices[dkey]["last_seen"] = _iso(received_at)
        for sensor, env in newest.values():
            self._apply_sensor(sensor, env.message, env)
        arrivals.clear()
        newest.clear()

    def _apply_one(self, env: Envelope, touched_devices: dict[str, dict[str, Any]],
                   touched_sensors: dict[str, dict[str, Any]],
                   events: list[dict[str, Any]]) -> None:
        msg = env.message
        device = self._device(msg.site, msg.device_id)
        device["last_seen"] = _iso(env.received_at)
        device["events"] += 1
        touched_devices[device["key"]] = device
        if isinstance(msg, DeviceStatus):
            self._apply_status(device, msg, touched_sensors)
        else:
            sensor = self._sensor(msg.site, msg.device_id, msg.sensor_id)
            if sensor["key"] not in device["sensors"]:
                device["sensors"].append(sensor["key"])
            if msg.seq > sensor["seq"]:
                self._apply_sensor(sensor, msg, env)
                touched_sensors[sensor["key"]] = sensor
        if not isinstance(msg, ReadingEvent | SummaryEvent):
            item = self._event_item(env)
            self.events.appendleft(item)
            events.append(item)

    def apply_alert(self, alert: Alert) -> list[Change]:
        item = {**alert.model_dump(mode="json"), "key": alert.alert_id}
        if any(a["alert_id"] == alert.alert_id for a in self.alerts):
            return []
        self.alerts.appendleft(item)
        if alert.status == "firing" and not alert.late:
            self.open_alerts[alert.group_key] = item
        elif alert.status == "resolved":
            self.open_alerts.pop(alert.group_key, None)
        return [self._change("alert", item)]

    # -- output --------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"version": self.version,
                "devices": sorted(self.devices.values(), key=lambda d: d["key"]),
                "sensors": sorted(self.sensors.values(), key=lambda s: s["key"]),
                "events": list(self.events), "alerts": list(self.alerts),
                "open_alerts": sorted(self.open_alerts.values(), key=lambda a: a["group_key"])}

    # -- internals -----------------------------------------------------------------------------
    def _change(self, kind: str, data: dict[str, Any]) -> Change:
        self.version += 1
        return {"type": kind, "version": self.version, "data": dict(data)}

    def _device(self, site: str, device_id: str) -> dict[str, Any]:
        known = self._devices_by_id.get((site, device_id))
        if known is not None:
            return known
        key = f"{site}/{device_id}"
        if key not in self.devices:
            self.devices[key] = {"key": key, "site": site, "device_id": device_id,
                                 "online": None, "reason": None, "session": None,
                                 "firmware": "", "agent_version": "", "counters": {},
                                 "last_seen": None, "status_time": None, "events": 0,
                                 "sensors": []}
        self._devices_by_id[(site, device_id)] = self.devices[key]
        return self.devices[key]

    def _sensor(self, site: str, device_id: str, sensor_id: str) -> dict[str, Any]:
        known = self._sensors_by_id.get((site, device_id, sensor_id))
        if known is not None:
            return known
        key = f"{site}/{device_id}/{sensor_id}"
        if key not in self.sensors:
            self.sensors[key] = {"key": key, "site": site, "device_id": device_id,
                                 "sensor_id": sensor_id, "value": None, "unit": None,
                                 "state": "unknown", "severity": "info", "value_time": None,
                                 "last_seen": None, "faults": [], "stale": False,
                                 "rate_alarm": False, "seq": -1, "summary": None,
                                 "thresholds": [], "source": None}
        self._sensors_by_id[(site, device_id, sensor_id)] = self.sensors[key]
        return self.sensors[key]

    def _apply_status(self, device: dict[str, Any], msg: DeviceStatus,
                      touched_sensors: dict[str, dict[str, Any]]) -> None:
        # a will carries the time its session connected: within one session, offline ranks
        # after online, whatever the times say
        order = (msg.session, 0 if msg.online else 1, msg.time)
        current = self._status_order.get(device["key"])
        if current is not None and order < current:
            return  # an older status (out of order) must not flip online/offline
        self._status_order[device["key"]] = order
        device.update(online=msg.online, reason=msg.reason, session=msg.session,
                      status_time=_iso(msg.time))
        if msg.online:
            device.update(firmware=msg.firmware, agent_version=msg.agent_version,
                          counters=dict(msg.counters))
            for info in msg.sensors:
                sensor = self._sensor(msg.site, msg.device_id, info.sensor_id)
                sensor.update(unit=info.unit, source=info.source,
                              thresholds=[t.model_dump(mode="json") for t in info.thresholds])
                if sensor["key"] not in device["sensors"]:
                    device["sensors"].append(sensor["key"])
                touched_sensors[sensor["key"]] = sensor

    @staticmethod
    def _apply_sensor(sensor: dict[str, Any], msg: Any, env: Envelope) -> None:
        sensor["seq"] = msg.seq
        sensor["last_seen"] = _iso(env.received_at)
        sensor["unit"] = msg.unit
        value = getattr(msg, "value", None)
        if isinstance(msg, SummaryEvent):
            value = msg.last
            sensor["summary"] = {"count": msg.count, "min": msg.min, "max": msg.max,
                                 "mean": msg.mean, "window_start": _iso(msg.window_start),
                                 "time": _iso(msg.time)}
        if value is not None:
            sensor["value"] = value
            sensor["value_time"] = _iso(msg.time)
        if isinstance(msg, StateChangeEvent):
            sensor["state"] = msg.new_state
            sensor["severity"] = msg.severity
        elif isinstance(msg, FaultEvent):
            faults = set(sensor["faults"])
            (faults.add if msg.active else faults.discard)(msg.fault)
            sensor["faults"] = sorted(faults)
            sensor["stale"] = "stale" in faults
        elif isinstance(msg, RateAlarmEvent):
            sensor["rate_alarm"] = msg.active

    @staticmethod
    def _event_item(env: Envelope) -> dict[str, Any]:
        msg = env.message
        item: dict[str, Any] = {
            "event_id": msg.event_id, "kind": msg.kind, "site": msg.site,
            "device_id": msg.device_id, "sensor_id": getattr(msg, "sensor_id", None),
            "time": _iso(msg.time), "received_at": _iso(env.received_at),
            "late": env.late or bool(getattr(msg, "replayed", False)),
            "out_of_order": env.out_of_order, "severity": getattr(msg, "severity", "info")}
        if isinstance(msg, StateChangeEvent):
            item["text"] = (f"{msg.previous_state} \u2192 {msg.new_state} at "
                            f"{msg.value:g} {msg.unit}")
        elif isinstance(msg, FaultEvent):
            item["text"] = f"fault {msg.fault} {'active' if msg.active else 'recovered'}" + (
                f": {msg.detail}" if msg.detail else "")
        elif isinstance(msg, RateAlarmEvent):
            item["text"] = (f"rate {msg.rate_per_min:g} {msg.unit}/min "
                            f"{'above' if msg.active else 'back under'} {msg.limit_per_min:g}")
        elif isinstance(msg, DeviceStatus):
            item["text"] = (f"{'online' if msg.online else 'offline'} ({msg.reason}, "
                            f"session {msg.session})")
            item["severity"] = "info" if msg.online or msg.reason != "will" else "critical"
        return item
