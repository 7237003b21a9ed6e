"""What the dashboard shows, built from envelopes and alerts with no I/O (pure, testable).

Every ``apply``/``apply_batch`` returns the changes it made (``{"type":
"device"|"sensor"|"event"|"alert", ...}``; one per device and sensor per batch, with its final
values), which the consumer streams to browsers; ``snapshot`` is the whole state for
``/api/state``. A redelivered envelope (same event id) changes nothing. Each part of a sensor's
row (its value, band, rate alarm, each fault code, its summary) moves forward on its own order,
the ``seq`` of the event that last set it: an envelope older than one already shown is listed as
an event and sets only what nothing newer has set, so a late band change is not lost behind a
newer reading, and nothing ever moves back. ``leaving`` says when the newest value is already
out of the band shown (the agent leaves a band only after its dwell). Every accepted value also
goes to the sensor's trend ring (``trend.py``), in the snapshot as ``trends``.

A sensor's ``value`` is only ever an accepted temperature: a reading's, a state change's or a rate
alarm's (the agent's smoothed good values) or a summary's ``last`` (its last good reading). A
``fault`` event never sets it, whatever its ``value`` says (a DS18B20's 85.0 or -127.0 is the
rejected sample itself): the fault is listed in ``faults`` and the page shows it as a badge next
to the last accepted value and its time (``value_time``).

Event lines are made here, in one number format (one decimal, then the unit: ``-18.5 °C``), with
a short ``title`` and a ``text`` for people; ``detail`` keeps the agent's own words. A device's
periodic status updates (``reason = "update"``) fold into one line per device (``count``), which
replaces the previous one (same ``key``) instead of filling the list. ``apply_data_loss`` shows a
``data_loss`` record (a range of a device's events that never arrived) as a critical line and a
count on the device.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from hub.consumers.base import Envelope
from hub.dashboard.trend import Trend
from schemas.models import (
    Alert,
    DataLoss,
    DeviceStatus,
    FaultEvent,
    RateAlarmEvent,
    ReadingEvent,
    StateChangeEvent,
    SummaryEvent,
)

Change = dict[str, Any]
SEEN_IDS = 5_000  # a retried batch comes again (<= batch_size); the journal drops other dups

UNITS = {"degC": "\u00b0C", "degF": "\u00b0F"}
FAULT_NAMES = {
    "power_on_value": "power-on value", "disconnected": "sensor disconnected",
    "crc_error": "CRC error", "read_failed": "read failed", "out_of_range": "out of range",
    "implausible_jump": "implausible jump", "stale": "no fresh reading",
    "device_lost": "device lost",
}
OFFLINE_REASONS = {"will": "connection lost", "shutdown": "clean shutdown"}


def _iso(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


def temperature(value: float, unit: str) -> str:
    """The one number format of the page: one decimal, then the unit (``-18.5 \u00b0C``)."""
    return f"{value:.1f} {UNITS.get(unit, unit)}"


def fault_name(code: str) -> str:
    return FAULT_NAMES.get(code, code.replace("_", " "))


def band_name(name: str) -> str:
    """A band as the page shows it everywhere: ``too_hot`` reads ``too hot``."""
    return name.replace("_", " ")


def leaving(state: str, value: float | None, thresholds: list[dict[str, Any]]) -> Any:
    """Whether the shown value is already out of the shown band, and how the band ends.

    The band is the agent's decision, and it leaves a band only after the value stayed out of
    it (past the hysteresis) for the threshold's dwell: for those seconds the newest value and
    the band disagree (after the demo's scenario loops, -18.1 \u00b0C with ``thawing``). The
    page then says so: ``{"band": ..., "dwell_s": ...}``; None while the value is in its band,
    or when the band is ``normal``/``unknown`` or its threshold is not known (no birth yet)."""
    if value is None:
        return None
    for t in thresholds:
        if t.get("name") != state:
            continue
        slack = float(t.get("hysteresis", 0.0))
        inside = (value > t["value"] - slack if t.get("direction") == "above"
                  else value < t["value"] + slack)
        return None if inside else {"band": state, "dwell_s": t.get("dwell_s", 0.0)}
    return None


class DashboardState:
    def __init__(self, recent_events: int = 50, recent_alerts: int = 50,
                 trend_window_s: float = 3600.0, trend_points: int = 360) -> None:
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
        # per (site, device, sensor): what a reading touches (device, sensor, their keys, the
        # trend), found with one look-up on the hot path (nothing here is ever removed)
        self._reading_slots: dict[tuple[str, str, str],
                                  tuple[dict[str, Any], dict[str, Any], str, str, Trend]] = {}
        # each sensor's recent values for its chart (a fixed ring: see trend.py), by sensor key
        self.trends: dict[str, Trend] = {}
        # per sensor key, the seq of the event that last set each part (value, band, rate,
        # fault.<code>, summary): see _apply_sensor
        self._order: dict[str, dict[str, int]] = {}
        self.trend_window_s = trend_window_s
        self._trend_points = trend_points

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
        slots = self._reading_slots
        touched_devices: dict[str, dict[str, Any]] = {}
        touched_sensors: dict[str, dict[str, Any]] = {}
        events: list[dict[str, Any]] = []
        # latest arrival per device, newest reading per sensor (keyed by the dicts' "key")
        arrivals: dict[str, datetime] = {}
        newest: dict[str, tuple[int, Any, Envelope]] = {}
        losses: list[Change] = []
        for env in batch:
            msg = env.message
            event_id = msg.event_id
            if event_id in seen:
                continue
            seen[event_id] = None
            if len(seen) > SEEN_IDS:
                seen.popitem(last=False)
            if type(msg) is ReadingEvent:
                slot = slots.get((msg.site, msg.device_id, msg.sensor_id))
                if slot is None:
                    slot = self._reading_slot(msg.site, msg.device_id, msg.sensor_id)
                device, sensor, dkey, skey, trend = slot
                device["events"] += 1
                arrivals[dkey] = env.received_at
                touched_devices[dkey] = device
                # every reading goes to the chart, not only the batch's newest
                trend.add(msg.time.timestamp(), msg.value)
                seq = msg.seq
                pending = newest.get(skey)
                if pending is not None:
                    best = pending[0]
                else:
                    order = self._order.get(skey)
                    best = order.get("value", -1) if order is not None else -1
                if seq > best:  # newer than the value shown (or about to be)
                    newest[skey] = (seq, sensor, env)
                    touched_sensors[skey] = sensor
                sensor["seq"] = max(sensor["seq"], seq)
                continue
            # anything else: settle the pending readings first, so it sees (and may change)
            # the values as they are at this point of the batch
            self._settle(arrivals, newest)
            if isinstance(msg, DataLoss):
                losses += self.apply_data_loss(msg)
                continue
            self._apply_one(env, touched_devices, touched_sensors, events)
        self._settle(arrivals, newest)
        changes = [self._change("device", d) for d in touched_devices.values()]
        changes += [self._change("sensor", s) for s in touched_sensors.values()]
        changes += [self._change("event", item) for item in events]
        return changes + losses

    def _reading_slot(self, site: str, device_id: str, sensor_id: str,
                      ) -> tuple[dict[str, Any], dict[str, Any], str, str, Trend]:
        device = self._device(site, device_id)
        sensor = self._sensor(site, device_id, sensor_id)
        if sensor["key"] not in device["sensors"]:
            device["sensors"].append(sensor["key"])
        slot = (device, sensor, device["key"], sensor["key"], self._trend(sensor["key"]))
        self._reading_slots[(site, device_id, sensor_id)] = slot
        return slot

    def _settle(self, arrivals: dict[str, datetime],
                newest: dict[str, tuple[int, Any, Envelope]]) -> None:
        for dkey, received_at in arrivals.items():
            self.devices[dkey]["last_seen"] = _iso(received_at)
        for _seq, sensor, env in newest.values():
            self._apply_sensor(sensor, env.message, env, charted=True)
        arrivals.clear()
        newest.clear()

    def _apply_one(self, env: Envelope, touched_devices: dict[str, dict[str, Any]],
                   touched_sensors: dict[str, dict[str, Any]],
                   events: list[dict[str, Any]]) -> None:
        msg = env.message
        assert not isinstance(msg, DataLoss), "apply() shows data_loss records itself"
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
            sensor["seq"] = max(sensor["seq"], msg.seq)
            self._apply_sensor(sensor, msg, env)
            touched_sensors[sensor["key"]] = sensor
        if not isinstance(msg, ReadingEvent | SummaryEvent):
            item = self._event_item(env)
            if item.get("sensor_id"):
                item["sensor_name"] = self._sensor(msg.site, msg.device_id,
                                                   item["sensor_id"])["name"]
            if isinstance(msg, DeviceStatus) and msg.reason == "update":
                self._fold(item)
            self.events.appendleft(item)
            events.append(item)

    def _fold(self, item: dict[str, Any]) -> None:
        """A device's periodic status updates: one line per device, the newest on top."""
        item["key"] = f"status-update/{item['site']}/{item['device_id']}"
        previous = next((e for e in self.events if e["key"] == item["key"]), None)
        count = 1
        if previous is not None:
            self.events.remove(previous)
            count += previous["count"]
        item["count"] = count
        item["text"] = ("status update" if count == 1 else f"{count:,} status updates") + (
            " (counters refreshed)")

    def apply_data_loss(self, loss: DataLoss) -> list[Change]:
        """Show a ``data_loss`` record once: a critical line, and the count on its device."""
        key = f"data-loss/{loss.site}/{loss.device_id}/{loss.first_seq}-{loss.last_seq}"
        if any(e["key"] == key for e in self.events) or key in self._seen:
            return []
        self._seen[key] = None
        lost = loss.last_seq - loss.first_seq + 1
        device = self._device(loss.site, loss.device_id)
        device["data_loss"] += lost
        span = (f"event {loss.first_seq:,}" if lost == 1
                else f"events {loss.first_seq:,}\u2013{loss.last_seq:,}")
        item = {"key": key, "event_id": key, "kind": "data_loss", "site": loss.site,
                "device_id": loss.device_id, "sensor_id": None, "time": _iso(loss.time),
                "received_at": _iso(loss.time), "late": False, "out_of_order": False,
                "severity": "critical", "title": "data loss",
                "text": f"{span} never arrived ({lost:,} lost)"
                        + (f": {loss.cause}" if loss.cause else ""),
                "detail": loss.cause or "", "first_seq": loss.first_seq,
                "last_seq": loss.last_seq}
        self.events.appendleft(item)
        return [self._change("device", device), self._change("event", item)]

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
                "trends": {key: trend.as_json() for key, trend in self.trends.items()},
                "trend_window_s": self.trend_window_s,
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
                                 "sensors": [], "data_loss": 0}
        self._devices_by_id[(site, device_id)] = self.devices[key]
        return self.devices[key]

    def _sensor(self, site: str, device_id: str, sensor_id: str) -> dict[str, Any]:
        known = self._sensors_by_id.get((site, device_id, sensor_id))
        if known is not None:
            return known
        key = f"{site}/{device_id}/{sensor_id}"
        if key not in self.sensors:
            self.sensors[key] = {"key": key, "site": site, "device_id": device_id,
                                 "sensor_id": sensor_id, "name": sensor_id,
                                 "value": None, "unit": None,
                                 "state": "unknown", "severity": "info", "value_time": None,
                                 "last_seen": None, "faults": [], "stale": False,
                                 "rate_alarm": False, "seq": -1, "summary": None,
                                 "thresholds": [], "source": None, "state_time": None,
                                 "fault_since": {}, "fault_names": {}, "leaving": None}
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
                sensor.update(unit=info.unit, source=info.source, name=info.name or info.sensor_id,
                              thresholds=[t.model_dump(mode="json") for t in info.thresholds])
                sensor["leaving"] = leaving(sensor["state"], sensor["value"],
                                            sensor["thresholds"])
                if sensor["key"] not in device["sensors"]:
                    device["sensors"].append(sensor["key"])
                touched_sensors[sensor["key"]] = sensor

    def _apply_sensor(self, sensor: dict[str, Any], msg: Any, env: Envelope, *,
                      charted: bool = False) -> None:
        """One event's effect on its sensor. Each part of the picture moves forward on its own
        order (the device's ``seq`` of the event that last set it): the value, the band, the
        rate alarm and each fault code. So an event that arrives late (older than one already
        shown) still sets what nothing newer has set (a late band change is not lost behind a
        newer reading), and never moves anything back (a late reading never replaces a newer
        value, a late band change never a newer band)."""
        order = self._order.setdefault(sensor["key"], {})
        seq = msg.seq
        sensor["last_seen"] = _iso(env.received_at)
        if sensor["unit"] is None or seq >= sensor["seq"]:
            sensor["unit"] = msg.unit
        # only accepted values: a fault's value is the rejected sample (or nothing)
        value = None if isinstance(msg, FaultEvent) else getattr(msg, "value", None)
        if isinstance(msg, SummaryEvent):
            value = msg.last
            if seq > order.get("summary", -1):
                order["summary"] = seq
                sensor["summary"] = {"count": msg.count, "min": msg.min, "max": msg.max,
                                     "mean": msg.mean, "window_start": _iso(msg.window_start),
                                     "time": _iso(msg.time)}
        if value is not None:
            if not charted:
                self._trend(sensor["key"]).add(msg.time.timestamp(), value)
            if seq > order.get("value", -1):
                order["value"] = seq
                sensor["value"] = value
                sensor["value_time"] = _iso(msg.time)
        if isinstance(msg, StateChangeEvent):
            if seq > order.get("band", -1):
                order["band"] = seq
                sensor["state"] = msg.new_state
                sensor["severity"] = msg.severity
                sensor["state_time"] = _iso(msg.time)
        elif isinstance(msg, FaultEvent):
            self._trend(sensor["key"]).fault(msg.time.timestamp(), msg.fault, msg.active)
            if seq > order.get("fault." + msg.fault, -1):
                order["fault." + msg.fault] = seq
                since = dict(sensor["fault_since"])
                if msg.active:
                    since.setdefault(msg.fault, _iso(msg.time))
                else:
                    since.pop(msg.fault, None)
                sensor["fault_since"] = since
                sensor["faults"] = sorted(since)
                sensor["fault_names"] = {code: fault_name(code) for code in since}
                sensor["stale"] = "stale" in since
        elif isinstance(msg, RateAlarmEvent) and seq > order.get("rate", -1):
            order["rate"] = seq
            sensor["rate_alarm"] = msg.active
        sensor["leaving"] = leaving(sensor["state"], sensor["value"], sensor["thresholds"])

    def _trend(self, key: str) -> Trend:
        trend = self.trends.get(key)
        if trend is None:
            trend = self.trends[key] = Trend(self._trend_points,
                                             self.trend_window_s / self._trend_points)
        return trend

    @staticmethod
    def _event_item(env: Envelope) -> dict[str, Any]:
        msg = env.message
        item: dict[str, Any] = {
            "key": msg.event_id, "event_id": msg.event_id, "kind": msg.kind, "site": msg.site,
            "device_id": msg.device_id, "sensor_id": getattr(msg, "sensor_id", None),
            "time": _iso(msg.time), "received_at": _iso(env.received_at),
            "late": env.late or bool(getattr(msg, "replayed", False)),
            "out_of_order": env.out_of_order, "severity": getattr(msg, "severity", "info"),
            "detail": getattr(msg, "detail", "")}
        if isinstance(msg, StateChangeEvent):
            item["title"] = "state"
            item["text"] = (f"{band_name(msg.previous_state)} \u2192 {band_name(msg.new_state)}"
                            f" at {temperature(msg.value, msg.unit)}")
        elif isinstance(msg, FaultEvent):
            name = fault_name(msg.fault)
            if msg.active:
                item["title"] = "fault"
                item["text"] = name + (f": {temperature(msg.value, msg.unit)} rejected"
                                       if msg.value is not None else "")
            else:
                item["title"] = "recovered"
                item["severity"] = "info"
                successor = msg.detail.removeprefix("superseded by ")
                item["text"] = (f"{name} ended, now {fault_name(successor)}"
                                if successor != msg.detail else f"{name} cleared")
        elif isinstance(msg, RateAlarmEvent):
            unit = UNITS.get(msg.unit, msg.unit)
            item["title"] = "rate"
            item["text"] = (f"changing {msg.rate_per_min:.1f} {unit}/min, above the limit "
                            f"{msg.limit_per_min:.1f}" if msg.active else
                            f"back under {msg.limit_per_min:.1f} {unit}/min")
        elif isinstance(msg, DeviceStatus):
            if msg.online:
                item["title"] = "online"
                item["text"] = f"online (session {msg.session})"
            else:
                item["title"] = "offline"
                item["text"] = f"offline: {OFFLINE_REASONS.get(msg.reason, msg.reason)}"
            if msg.reason == "update":
                item["title"] = "status"
            item["severity"] = "info" if msg.online or msg.reason != "will" else "critical"
        return item
