"""The MQTT topic namespace; ``schemas/TOPICS.md`` documents it for people. Keep both in step.

    {root}/{site}/{device}/event/{sensor}    QoS 1  not retained  reading|state_change|rate_alarm
                                                                   |fault
    {root}/{site}/{device}/summary/{sensor}  QoS 1  not retained  summary
    {root}/{site}/{device}/status            QoS 1  retained      status (birth; will = offline)
    {root}/{site}/{device}/cmd/{command}      QoS 1  not retained  JSON command to the device
    {root}/_hub/alerts/{site}/{device}        QoS 1  not retained  alert
    {root}/_hub/deadletter                    QoS 1  not retained  dead_letter
    {root}/_hub/ha/{site}/{device}/{sensor}   QoS 1  retained      ha_state (Home Assistant)
    {root}/_hub/ha/availability               QoS 1  retained      online | offline (its will)
    {prefix}/sensor/{node}/{object}/config    QoS 1  retained      Home Assistant discovery
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from schemas.errors import SpoofedTopic, TopicError
from schemas.ids import check_identifier, quoted

if TYPE_CHECKING:  # for types only: the agent builds its messages without pydantic
    from schemas.models import Alert


class _FromDevice(Protocol):
    """A device's message, pydantic's or the agent's plain twin (``schemas/plain_messages.py``)."""

    @property
    def site(self) -> str: ...
    @property
    def device_id(self) -> str: ...


class _FromSensor(_FromDevice, Protocol):
    @property
    def sensor_id(self) -> str: ...
    @property
    def kind(self) -> str: ...

DEFAULT_ROOT = "thermopipe"
TopicKind = Literal["event", "summary", "status", "cmd", "receipt"]
COMMANDS = ("rebirth", "identify")
#: what Home Assistant accepts as a discovery node id or object id
HA_ID = re.compile(r"[A-Za-z0-9_-]+")


def check_levels(path: str, what: str) -> str:
    """A topic prefix of one or more identifier levels (``thermopipe``, ``site-a/thermopipe``)."""
    for level in path.split("/"):
        check_identifier(level, what)
    return path


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic of the namespace: its pattern, QoS, retain flag and payload (TOPICS.md)."""

    pattern: str
    qos: int
    retain: bool
    payload: str


SPECS: dict[str, TopicSpec] = {
    "event": TopicSpec("{root}/{site}/{device}/event/{sensor}", 1, False,
                       "reading | state_change | rate_alarm | fault"),
    "summary": TopicSpec("{root}/{site}/{device}/summary/{sensor}", 1, False, "summary"),
    "status": TopicSpec("{root}/{site}/{device}/status", 1, True,
                        "status (birth online=true; will/shutdown online=false)"),
    "cmd": TopicSpec("{root}/{site}/{device}/cmd/{command}", 1, False,
                     'JSON object, e.g. {"command": "rebirth"}'),
    "receipt": TopicSpec("{root}/{site}/{device}/receipt", 1, False,
                         "receipt (the seq ranges of this device a hub holds)"),
    "alerts": TopicSpec("{root}/_hub/alerts/{site}/{device}", 1, False, "alert"),
    "deadletter": TopicSpec("{root}/_hub/deadletter", 1, False, "dead_letter"),
    "ha_state": TopicSpec("{root}/_hub/ha/{site}/{device}/{sensor}", 1, True, "ha_state"),
    "ha_status": TopicSpec("{root}/_hub/ha/availability", 1, True, "online | offline"),
    "ha_config": TopicSpec("{prefix}/sensor/{node}/{object}/config", 1, True,
                           "Home Assistant MQTT sensor discovery config (empty: removed)"),
}


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """What a device topic says: which device, which kind of payload, which sensor or command."""

    root: str
    kind: TopicKind
    site: str
    device_id: str
    sensor_id: str | None = None
    command: str | None = None


@dataclass(frozen=True, slots=True)
class Topics:
    """Builds and parses topics under one root (``thermopipe`` unless configured)."""

    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        check_levels(self.root, "topic root level")

    def is_hub_topic(self, topic: str) -> bool:
        """A topic under ``{root}/_hub/``: the hubs' own (alerts, dead letters, Home Assistant
        states). ``{root}/_hub/alerts/event/{device}`` (a site named ``event``) matches the
        hub's ``{root}/+/+/event/+`` filter, so the hub meets its own alerts there."""
        return topic.startswith(self.hub_prefix + "/")

    @property
    def hub_prefix(self) -> str:
        """``{root}/_hub``: where the hubs publish (devices' ids never start with ``_``)."""
        return f"{self.root}/_hub"

    def event(self, site: str, device_id: str, sensor_id: str) -> str:
        return f"{self.device_prefix(site, device_id)}/event/{check_identifier(sensor_id)}"

    def summary(self, site: str, device_id: str, sensor_id: str) -> str:
        return f"{self.device_prefix(site, device_id)}/summary/{check_identifier(sensor_id)}"

    def for_event(self, event: _FromSensor) -> str:
        if event.kind == "summary":
            return self.summary(event.site, event.device_id, event.sensor_id)
        return self.event(event.site, event.device_id, event.sensor_id)

    def status(self, site: str, device_id: str) -> str:
        return f"{self.device_prefix(site, device_id)}/status"

    def for_status(self, status: _FromDevice) -> str:
        return self.status(status.site, status.device_id)

    def command(self, site: str, device_id: str, command: str) -> str:
        return f"{self.device_prefix(site, device_id)}/cmd/{check_identifier(command, 'command')}"

    def alerts(self, site: str, device_id: str) -> str:
        return f"{self.hub_prefix}/alerts/{check_identifier(site)}/{check_identifier(device_id)}"

    def for_alert(self, alert: Alert) -> str:
        return self.alerts(alert.site, alert.device_id)

    def deadletter(self) -> str:
        return f"{self.hub_prefix}/deadletter"

    def data_loss(self, site: str, device_id: str) -> str:
        """The topic a hub's ``data_loss`` record is journalled under (never published: the
        journal's consumers get it like an event). The ids come from a validated DataLoss."""
        return f"{self.hub_prefix}/data_loss/{site}/{device_id}"

    def ha_state(self, site: str, device_id: str, sensor_id: str) -> str:
        return (f"{self.hub_prefix}/ha/{check_identifier(site, 'site')}/"
                f"{check_identifier(device_id, 'device id')}/{check_identifier(sensor_id)}")

    def ha_status(self) -> str:
        return f"{self.hub_prefix}/ha/availability"

    @staticmethod
    def ha_config(prefix: str, node_id: str, object_id: str) -> str:
        """Home Assistant's discovery topic; node and object ids are ``[a-zA-Z0-9_-]+``."""
        for name, value in (("node id", node_id), ("object id", object_id)):
            if not HA_ID.fullmatch(value):
                raise TopicError(f"Home Assistant {name} {value!r}: use A-Z a-z 0-9 _ -")
        prefix = check_levels(prefix, "discovery prefix level")
        return f"{prefix}/sensor/{node_id}/{object_id}/config"

    def device_prefix(self, site: str, device_id: str) -> str:
        site = check_identifier(site, "site")
        return f"{self.root}/{site}/{check_identifier(device_id, 'device id')}"

    # Subscriptions -------------------------------------------------------------------------
    def hub_filters(self, shared_group: str | None = None) -> list[str]:
        """What a hub subscribes to; with a group, an MQTT 5 shared subscription."""
        filters = [f"{self.root}/+/+/event/+", f"{self.root}/+/+/summary/+",
                   f"{self.root}/+/+/status"]
        if shared_group:
            check_identifier(shared_group, "shared subscription group")
            return [f"$share/{shared_group}/{f}" for f in filters]
        return filters

    def command_filter(self, site: str, device_id: str) -> str:
        return f"{self.device_prefix(site, device_id)}/cmd/+"

    def receipt(self, site: str, device_id: str) -> str:
        """Where the hub tells one device which of its events it holds (``Receipt``)."""
        return f"{self.device_prefix(site, device_id)}/receipt"

    def receipt_filter(self) -> str:
        """Every device's receipts: what the hub's loss detector reads (from every hub)."""
        return f"{self.root}/+/+/receipt"

    # Parsing -------------------------------------------------------------------------------
    def parse(self, topic: str) -> DeviceTopic:
        """Parse a device topic; raise :class:`TopicError` with the reason if it is not one."""
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            raise TopicError(f"topic {quoted(topic)} is outside the namespace {self.root!r}")
        levels = topic[len(prefix):].split("/")
        try:
            if len(levels) == 3 and levels[2] == "status":
                return DeviceTopic(self.root, "status", check_identifier(levels[0], "site"),
                                   check_identifier(levels[1], "device id"))
            if len(levels) == 4 and levels[2] in ("event", "summary"):
                kind: TopicKind = "event" if levels[2] == "event" else "summary"
                return DeviceTopic(self.root, kind, check_identifier(levels[0], "site"),
                                   check_identifier(levels[1], "device id"),
                                   sensor_id=check_identifier(levels[3], "sensor id"))
            if len(levels) == 3 and levels[2] == "receipt":
                return DeviceTopic(self.root, "receipt", check_identifier(levels[0], "site"),
                                   check_identifier(levels[1], "device id"))
            if len(levels) == 4 and levels[2] == "cmd":
                return DeviceTopic(self.root, "cmd", check_identifier(levels[0], "site"),
                                   check_identifier(levels[1], "device id"),
                                   command=check_identifier(levels[3], "command"))
        except ValueError as exc:
            raise TopicError(f"topic {quoted(topic)}: {exc}") from None
        raise TopicError(f"topic {quoted(topic)} is not a device event, summary, status, cmd or "
                         "receipt topic")


def check_topic_matches(topic: DeviceTopic, site: str, device_id: str,
                        sensor_id: str | None, kind: str) -> None:
    """A device cannot speak for another: the payload must name the device of its topic."""
    if (topic.site, topic.device_id) != (site, device_id):
        raise SpoofedTopic(
            f"payload is from {site}/{device_id} but was published on the topic of "
            f"{topic.site}/{topic.device_id}")
    if topic.kind in ("event", "summary") and topic.sensor_id != sensor_id:
        raise TopicError(f"payload is for sensor {sensor_id!r} but the topic names "
                         f"{topic.sensor_id!r}")
    expected = {"event": ("reading", "state_change", "rate_alarm", "fault"),
                "summary": ("summary",), "status": ("status",), "cmd": (),
                "receipt": ("receipt",)}[topic.kind]
    if kind not in expected:
        raise TopicError(f"a {kind!r} message does not belong on a {topic.kind} topic")
