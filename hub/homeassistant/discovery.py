"""Home Assistant MQTT discovery as a pure state machine: envelopes in, retained messages out.

For every sensor a device's birth lists, three entities of Home Assistant's MQTT ``sensor``
platform, each with a retained discovery config under ``{prefix}/sensor/{node}/{object}/config``:

- ``{sensor}_temperature``: ``device_class: temperature``, ``state_class: measurement``, the
  sensor's unit (``°C`` / ``°F``), one decimal;
- ``{sensor}_band``: an ``enum`` sensor, the threshold band (``unknown``, ``normal`` or a
  threshold's name from the birth);
- ``{sensor}_fault``: an ``enum`` sensor (diagnostic), the active fault or ``none``.

All three read one retained JSON state per sensor (``schemas.models.HomeAssistantState`` on
``{root}/_hub/ha/{site}/{device}/{sensor}``). Its ``temperature`` is only ever an accepted value:
a reading's, state change's, rate alarm's or summary's ``last``, never a fault's (a DS18B20's
85.0 or -127.0 is the rejected sample itself). Availability needs both the device (its own
retained status topic: the birth says online, the will offline, even while the hub is down) and
the hub's discovery connection (``{root}/_hub/ha/availability``, its will): while the hub is
away the states cannot move, so Home Assistant shows them unavailable rather than frozen.

A sensor leaves Home Assistant only when a status that says its list is whole
(``sensors_complete``: every source of the agent has looked for its sensors) no longer lists it:
then an empty retained config for each of its entities, and, at the device's next status, an
empty retained state. The state waits because Home Assistant removes an entity asynchronously: a
state cleared in the same breath reaches the entity before it is gone and fails its template. A
status whose list may still grow (an agent that has not scanned its 1-Wire bus yet, or one from
before the field) only adds sensors. Configs are published only when they change (a birth on
every reconnect republishes nothing). An event from a device whose birth the hub has not seen
(the hub started after it, or the section was just enabled) asks that device for a new birth
(``cmd/rebirth``), once per device while the hub runs.

Every config carries an ``origin`` (this hub: name, version, optional support URL), as Home
Assistant asks of discovery publishers, and the device's name for people (the agent's ``name``,
else its id).

Ids: Home Assistant accepts ``[a-zA-Z0-9_-]`` in node and object ids; thermopipe ids may also
hold ``.``. :func:`ha_id` escapes ``_`` as ``_u`` and ``.`` as ``_d``, and parts are joined with
``__``, which an escaped id never contains: distinct ids never share a topic or ``unique_id``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

from hub.consumers.base import Envelope
from schemas.models import (
    DataLoss,
    DeviceStatus,
    FaultCode,
    FaultEvent,
    HomeAssistantState,
    SensorInfo,
    StateChangeEvent,
    SummaryEvent,
)
from schemas.topics import Topics

UNITS = {"degC": "\u00b0C", "degF": "\u00b0F"}
FAULTS: tuple[str, ...] = ("none", *get_args(FaultCode))
ENTITIES = ("temperature", "band", "fault")
MANUFACTURER = "thermopipe"
ORIGIN_NAME = "thermopipe hub"


@dataclass(frozen=True, slots=True)
class Publish:
    """One message to send (QoS 1); a retained empty payload removes what the topic held."""

    topic: str
    payload: bytes
    retain: bool = True


def ha_id(*parts: str) -> str:
    """Node/object/unique ids Home Assistant accepts, one-to-one with thermopipe ids."""
    return "__".join(p.replace("_", "_u").replace(".", "_d") for p in parts)


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


@dataclass
class _Sensor:
    unit: str = "degC"
    temperature: float | None = None
    time: datetime | None = None
    band: str = "unknown"
    faults: list[str] = field(default_factory=list)  # active, oldest first
    # The newest seq behind each part of the state: an agent sends its backlog after its live
    # events, so a state change made before a reading can arrive after it and must still count
    seq: int = -1  # the temperature's
    band_seq: int = -1
    fault_seqs: dict[str, int] = field(default_factory=dict)


@dataclass
class _Device:
    birth_seen: bool = False
    configs: dict[str, bytes] = field(default_factory=dict)  # topic -> payload published
    rebirth_asked: bool = False
    #: sensors whose configs were withdrawn: their retained state is cleared at the next status
    clear_states: list[str] = field(default_factory=list)


class Discovery:
    """What Home Assistant should hold, and the messages that make it so. Not thread-safe."""

    def __init__(self, topics: Topics, prefix: str = "homeassistant",
                 expire_after_s: int | None = None, *, hub_version: str = "",
                 support_url: str | None = None) -> None:
        self.topics = topics
        self.prefix = prefix
        self.expire_after_s = expire_after_s
        #: Home Assistant's ``origin``: who publishes these configs (logged by Home Assistant)
        self.origin: dict[str, str] = {"name": ORIGIN_NAME}
        if hub_version:
            self.origin["sw_version"] = hub_version
        if support_url:
            self.origin["support_url"] = support_url
        self.devices: dict[tuple[str, str], _Device] = {}
        self.sensors: dict[tuple[str, str, str], _Sensor] = {}

    # -- input ---------------------------------------------------------------------------------
    def apply(self, batch: Iterable[Envelope]) -> list[Publish]:
        """The messages this batch calls for, in order; the last state per sensor only."""
        out: list[Publish] = []
        dirty: dict[tuple[str, str, str], None] = {}
        for env in batch:
            msg = env.message
            if isinstance(msg, DataLoss):
                continue
            if isinstance(msg, DeviceStatus):
                if msg.online:
                    out += self._birth(msg, dirty)
                continue
            key = (msg.site, msg.device_id, msg.sensor_id)
            device = self.devices.setdefault(key[:2], _Device())
            if not device.birth_seen and not device.rebirth_asked:
                device.rebirth_asked = True
                out.append(Publish(self.topics.command(msg.site, msg.device_id, "rebirth"),
                                   b'{"command":"rebirth"}', retain=False))
            sensor = self.sensors.setdefault(key, _Sensor(unit=msg.unit))
            # never move a part of the state backwards: each moves only for a newer seq
            if isinstance(msg, FaultEvent):
                if msg.seq <= sensor.fault_seqs.get(msg.fault, -1):
                    continue
                sensor.fault_seqs[msg.fault] = msg.seq
                if msg.fault in sensor.faults:
                    sensor.faults.remove(msg.fault)
                if msg.active:
                    sensor.faults.append(msg.fault)
                    sensor.faults.sort(key=lambda f: sensor.fault_seqs[f])
            else:
                value = msg.last if isinstance(msg, SummaryEvent) else msg.value
                newer_value = value is not None and msg.seq > sensor.seq
                newer_band = isinstance(msg, StateChangeEvent) and msg.seq > sensor.band_seq
                if not (newer_value or newer_band):
                    continue
                if newer_value:
                    sensor.temperature, sensor.time = value, msg.time
                    sensor.seq, sensor.unit = msg.seq, msg.unit
                if newer_band:
                    sensor.band = msg.new_state  # type: ignore[union-attr]
                    sensor.band_seq = msg.seq
            dirty[key] = None
        for key in dirty:
            if key in self.sensors:
                out.append(Publish(self.topics.ha_state(*key), self.state(key)))
        return out

    def _birth(self, msg: DeviceStatus, dirty: dict[tuple[str, str, str], None]
               ) -> list[Publish]:
        device = self.devices.setdefault((msg.site, msg.device_id), _Device())
        device.birth_seen = True
        listed = {info.sensor_id for info in msg.sensors}
        # states of sensors withdrawn at an earlier status: Home Assistant has dropped their
        # entities since, so an empty retained state now reaches no template
        out = [Publish(self.topics.ha_state(msg.site, msg.device_id, sid), b"")
               for sid in device.clear_states if sid not in listed]
        device.clear_states = []
        wanted: dict[str, bytes] = {}
        for info in msg.sensors:
            key = (msg.site, msg.device_id, info.sensor_id)
            sensor = self.sensors.get(key)
            if sensor is None or sensor.unit != info.unit:
                # a state for every newly announced sensor, even before it has a value
                sensor = self.sensors.setdefault(key, _Sensor(unit=info.unit))
                sensor.unit = info.unit
                dirty[key] = None
            for entity, config in self.configs(msg, info).items():
                wanted[self.config_topic(msg.site, msg.device_id, info.sensor_id, entity)] = (
                    _json(config))
        out += [Publish(topic, payload) for topic, payload in wanted.items()
                if device.configs.get(topic) != payload]
        unlisted = [k for k in self.sensors if k[:2] == (msg.site, msg.device_id)
                    and k[2] not in listed]
        if not msg.sensors_complete:
            # the list may still grow (a source has not looked for its sensors yet): a sensor
            # missing from it is not gone; keep its entities and its state as they are
            for topic, payload in device.configs.items():
                wanted.setdefault(topic, payload)
            device.configs = wanted
            return out
        for topic in device.configs.keys() - wanted.keys():
            out.append(Publish(topic, b""))  # removed from the device's config: entity gone
        for key in unlisted:
            if any(self.config_topic(*key, e) in device.configs for e in ENTITIES):
                device.clear_states.append(key[2])
            del self.sensors[key]
            dirty.pop(key, None)
        device.configs = wanted
        return out

    # -- output --------------------------------------------------------------------------------
    def state(self, key: tuple[str, str, str]) -> bytes:
        s = self.sensors[key]
        return HomeAssistantState(
            temperature=s.temperature, unit=s.unit,  # type: ignore[arg-type]
            band=s.band, fault=s.faults[-1] if s.faults else "none",  # type: ignore[arg-type]
            faults=list(s.faults),  # type: ignore[arg-type]
            time=s.time).model_dump_json().encode()

    def config_topic(self, site: str, device_id: str, sensor_id: str, entity: str) -> str:
        return Topics.ha_config(self.prefix, ha_id("thermopipe", site, device_id),
                                ha_id(sensor_id, entity))

    def configs(self, status: DeviceStatus, info: SensorInfo) -> dict[str, dict[str, Any]]:
        """The three discovery configs of one sensor (Home Assistant's MQTT sensor schema)."""
        site, device_id, sensor_id = status.site, status.device_id, info.sensor_id
        name = info.name or sensor_id
        sources = sorted({s.source for s in status.sensors if s.source})
        firmware = f"agent {status.agent_version}" if status.agent_version else "agent"
        if status.firmware:
            firmware += f"; {status.firmware}"
        common: dict[str, Any] = {
            "state_topic": self.topics.ha_state(site, device_id, sensor_id),
            "availability": [
                {"topic": self.topics.status(site, device_id),
                 "value_template": "{{ 'online' if value_json.online else 'offline' }}"},
                {"topic": self.topics.ha_status()},
            ],
            "availability_mode": "all",
            "qos": 1,
            "origin": dict(self.origin),
            "device": {
                "identifiers": [ha_id("thermopipe", site, device_id)],
                "name": status.device_name or device_id,
                "manufacturer": MANUFACTURER,
                "model": "thermopipe edge agent" + (f" ({', '.join(sources)})" if sources
                                                    else ""),
                "sw_version": firmware,
                "serial_number": f"{site}/{device_id}",
            },
        }
        unique = ha_id("thermopipe", site, device_id, sensor_id)
        temperature: dict[str, Any] = {
            **common, "name": name, "unique_id": f"{unique}__temperature",
            "device_class": "temperature", "state_class": "measurement",
            "unit_of_measurement": UNITS[info.unit], "suggested_display_precision": 1,
            # JSON null renders as "None", which Home Assistant shows as unknown; anything
            # else that is not a number (the old 'null') is an error with a traceback
            "value_template": "{{ value_json.temperature }}",
        }
        if self.expire_after_s is not None:
            temperature["expire_after"] = self.expire_after_s
        band = {
            **common, "name": f"{name} band", "unique_id": f"{unique}__band",
            "device_class": "enum",
            "options": ["unknown", "normal", *dict.fromkeys(t.name for t in info.thresholds)],
            "value_template": "{{ value_json.band }}", "icon": "mdi:thermometer-alert",
        }
        fault = {
            **common, "name": f"{name} fault", "unique_id": f"{unique}__fault",
            "device_class": "enum", "options": list(FAULTS),
            "value_template": "{{ value_json.fault }}", "icon": "mdi:alert-circle-outline",
            "entity_category": "diagnostic",
        }
        return {"temperature": temperature, "band": band, "fault": fault}

    # -- persistence (the consumer keeps it in a file across hub restarts) ---------------------
    def dump(self) -> dict[str, Any]:
        return {
            "devices": [{"site": s, "device_id": d, "birth_seen": dev.birth_seen,
                         "configs": {t: p.decode() for t, p in dev.configs.items()},
                         "clear_states": list(dev.clear_states)}
                        for (s, d), dev in self.devices.items()],
            "sensors": [{"key": list(k), "unit": v.unit, "temperature": v.temperature,
                         "time": None if v.time is None else v.time.isoformat(),
                         "band": v.band, "faults": list(v.faults), "seq": v.seq,
                         "band_seq": v.band_seq, "fault_seqs": dict(v.fault_seqs)}
                        for k, v in self.sensors.items()],
        }

    def load(self, data: dict[str, Any]) -> None:
        for dev in data.get("devices", []):
            self.devices[(dev["site"], dev["device_id"])] = _Device(
                birth_seen=dev["birth_seen"],
                configs={t: p.encode() for t, p in dev["configs"].items()},
                clear_states=list(dev.get("clear_states", [])))  # older hubs: absent
        for s in data.get("sensors", []):
            site, device_id, sensor_id = s["key"]
            self.sensors[(site, device_id, sensor_id)] = _Sensor(
                unit=s["unit"], temperature=s["temperature"], band=s["band"],
                time=None if s["time"] is None else datetime.fromisoformat(s["time"]),
                faults=list(s["faults"]), seq=s["seq"],
                # files of older hubs had one seq for all three
                band_seq=s.get("band_seq", s["seq"]),
                fault_seqs=s.get("fault_seqs", dict.fromkeys(s["faults"], s["seq"])))
