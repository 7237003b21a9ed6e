"""Home Assistant's MQTT sensor discovery schema, as its documentation states it, to check our
configs against field by field.

Checked against: the "MQTT Sensor" page, ``source/_integrations/sensor.mqtt.markdown`` of
github.com/home-assistant/home-assistant.io at commit 9e4a69ab998700a518e366a7f54551a150fccf94
(the ``{% configuration %}`` block: every key, its type, required or not, and the rules its
descriptions state), and, for the discovery topic, ``source/_integrations/mqtt.markdown`` (node and
object ids of ``[a-zA-Z0-9_-]``; an empty retained config removes the entity). The sensor
documentation's device classes and state classes (``/integrations/sensor/``): ``temperature``
measured in degC, degF or K; state classes ``measurement``, ``total``, ``total_increasing``.

The ``origin`` mapping (``name`` required, ``sw_version``, ``support_url``) is the MQTT integration
page's "Adding information about the origin of a discovery message" (Home Assistant logs it; added
in 2023.9, so 2024.3 has it).

``CURRENT_SENSOR_KEYS`` and :func:`check_current_sensor_config` are the same page and the MQTT
Sensor page as the current release documents them (read through the docs search of this project,
December 2026): ``object_id`` is gone, replaced by ``default_entity_id``; ``platform`` belongs only
in a device-based discovery payload (``<prefix>/device/<id>/config`` with ``components``), whose
root must carry ``device`` and ``origin`` and whose every entity component needs ``platform`` and
``unique_id``; single-component discovery (what the hub publishes) is still documented and
``origin`` is recommended there. :func:`device_discovery_payload` builds the device-based payload
our configs would become, to check that a migration needs nothing they lack.

That Home Assistant renders our templates is checked by a real Home Assistant 2024.3.3 in
``tests/counterparts/``; here, that every ``value_json.<field>`` a template reads is a field of the
state payload.
"""

from __future__ import annotations

import re
from typing import Any

DOCS_SOURCE = ("home-assistant/home-assistant.io@9e4a69ab998700a518e366a7f54551a150fccf94:"
               "source/_integrations/sensor.mqtt.markdown")

STR, INT, BOOL, LIST, MAP, TEMPLATE, ICON, DEVICE_CLASS = (
    "string", "integer", "boolean", "list", "map", "template", "icon", "device_class")

#: key -> (type, required)
SENSOR_KEYS: dict[str, tuple[str | tuple[str, ...], bool]] = {
    "availability": (LIST, False),
    "availability_mode": (STR, False),
    "availability_template": (TEMPLATE, False),
    "availability_topic": (STR, False),
    "device": (MAP, False),
    "device_class": (DEVICE_CLASS, False),
    "enabled_by_default": (BOOL, False),
    "encoding": (STR, False),
    "entity_category": (STR, False),
    "entity_picture": (STR, False),
    "expire_after": (INT, False),
    "force_update": (BOOL, False),
    "icon": (ICON, False),
    "json_attributes_template": (TEMPLATE, False),
    "json_attributes_topic": (STR, False),
    "last_reset_value_template": (TEMPLATE, False),
    "name": (STR, False),
    "object_id": (STR, False),
    "options": (LIST, False),
    "payload_available": (STR, False),
    "payload_not_available": (STR, False),
    # "platform" is "only allowed and required in MQTT auto discovery device messages": our
    # messages are per-entity (component) discovery, where it must not appear
    "suggested_display_precision": (INT, False),
    "qos": (INT, False),
    "state_class": (STR, False),
    "state_topic": (STR, True),
    "unique_id": (STR, False),
    "unit_of_measurement": (STR, False),
    "value_template": (TEMPLATE, False),
    "origin": (MAP, False),
}
#: the current release's MQTT sensor keys: object_id replaced by default_entity_id
CURRENT_SENSOR_KEYS = {**{k: v for k, v in SENSOR_KEYS.items() if k != "object_id"},
                       "default_entity_id": (STR, False)}
ORIGIN_KEYS: dict[str, tuple[str | tuple[str, ...], bool]] = {
    "name": (STR, True), "sw_version": (STR, False), "support_url": (STR, False),
}
#: the root of a device-based discovery payload: shared options, and the components
DEVICE_DISCOVERY_SHARED = ("availability", "availability_mode", "availability_template",
                           "availability_topic", "payload_available", "payload_not_available",
                           "command_topic", "state_topic", "qos", "encoding")
AVAILABILITY_KEYS: dict[str, tuple[str, bool]] = {
    "payload_available": (STR, False), "payload_not_available": (STR, False),
    "topic": (STR, True), "value_template": (TEMPLATE, False),
}
DEVICE_KEYS: dict[str, tuple[str | tuple[str, ...], bool]] = {
    "configuration_url": (STR, False), "connections": (LIST, False), "hw_version": (STR, False),
    "identifiers": ((STR, LIST), False), "manufacturer": (STR, False), "model": (STR, False),
    "model_id": (STR, False), "name": (STR, False), "serial_number": (STR, False),
    "suggested_area": (STR, False), "sw_version": (STR, False), "via_device": (STR, False),
}
AVAILABILITY_MODES = ("all", "any", "latest")
STATE_CLASSES = ("measurement", "total", "total_increasing")
TEMPERATURE_UNITS = ("\u00b0C", "\u00b0F", "K")
HA_ID = re.compile(r"[a-zA-Z0-9_-]+")


def _type_ok(value: Any, kind: str | tuple[str, ...]) -> bool:
    if isinstance(kind, tuple):
        return any(_type_ok(value, k) for k in kind)
    return {
        STR: lambda v: isinstance(v, str),
        INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
        BOOL: lambda v: isinstance(v, bool),
        LIST: lambda v: isinstance(v, list),
        MAP: lambda v: isinstance(v, dict),
        TEMPLATE: lambda v: isinstance(v, str) and "{{" in v and "}}" in v,
        ICON: lambda v: isinstance(v, str) and re.fullmatch(r"mdi:[a-z0-9-]+", v) is not None,
        DEVICE_CLASS: lambda v: v is None or (isinstance(v, str)
                                              and re.fullmatch(r"[a-z_]+", v) is not None),
    }[kind](value)


def _check_keys(where: str, data: dict[str, Any],
                keys: dict[str, tuple[str | tuple[str, ...], bool]]) -> list[str]:
    errors = [f"{where}{k}: not in Home Assistant's schema" for k in data if k not in keys]
    for key, (kind, required) in keys.items():
        if key not in data:
            if required:
                errors.append(f"{where}{key}: required")
        elif not _type_ok(data[key], kind):
            errors.append(f"{where}{key}: {data[key]!r} is not a {kind}")
    return errors


def check_sensor_config(config: dict[str, Any],
                        keys: dict[str, tuple[str | tuple[str, ...], bool]] | None = None,
                        ) -> list[str]:
    """Every way ``config`` breaks the documented MQTT sensor schema; [] when it fits."""
    errors = _check_keys("", config, SENSOR_KEYS if keys is None else keys)
    if "origin" in config:
        errors += _check_keys("origin.", config["origin"], ORIGIN_KEYS)
    if "availability" in config and "availability_topic" in config:
        errors.append("availability: must not be used together with availability_topic")
    for i, item in enumerate(config.get("availability") or []):
        errors += _check_keys(f"availability[{i}].", item, AVAILABILITY_KEYS)
    if config.get("availability_mode", "latest") not in AVAILABILITY_MODES:
        errors.append(f"availability_mode: {config['availability_mode']!r}")
    if "device" in config:
        device = config["device"]
        errors += _check_keys("device.", device, DEVICE_KEYS)
        if "unique_id" not in config:
            errors.append("device: only works when unique_id is set")
        if not device.get("identifiers") and not device.get("connections"):
            errors.append("device: at least one of identifiers or connections must be present")
    if "options" in config:
        if not config["options"]:
            errors.append("options: an empty list is not allowed")
        if config.get("device_class") != "enum":
            errors.append("options: the sensor's device_class must be set to enum")
        for key in ("state_class", "unit_of_measurement"):
            if key in config:
                errors.append(f"options: cannot be used together with {key}")
    if "entity_category" in config and config["entity_category"] != "diagnostic":
        errors.append("entity_category: must be diagnostic for sensors")
    if config.get("qos", 0) not in (0, 1, 2):
        errors.append(f"qos: {config['qos']!r}")
    if "state_class" in config and config["state_class"] not in STATE_CLASSES:
        errors.append(f"state_class: {config['state_class']!r}")
    if (config.get("device_class") == "temperature"
            and config.get("unit_of_measurement") not in TEMPERATURE_UNITS):
        errors.append(f"unit_of_measurement: {config.get('unit_of_measurement')!r} is not a "
                      "temperature unit")
    if "last_reset_value_template" in config and config.get("state_class") != "total":
        errors.append("last_reset_value_template: needs state_class total")
    return errors


def check_discovery_topic(topic: str, prefix: str) -> list[str]:
    """``<prefix>/sensor/[<node_id>/]<object_id>/config`` with ids of ``[a-zA-Z0-9_-]``."""
    levels = topic.split("/")
    head = prefix.split("/")
    if levels[:len(head)] != head or levels[len(head)] != "sensor" or levels[-1] != "config":
        return [f"{topic}: not {prefix}/sensor/.../config"]
    ids = levels[len(head) + 1:-1]
    if len(ids) not in (1, 2):
        return [f"{topic}: needs [node_id/]object_id"]
    return [f"{topic}: id {i!r} has characters outside [a-zA-Z0-9_-]"
            for i in ids if not HA_ID.fullmatch(i)]


def check_current_sensor_config(config: dict[str, Any]) -> list[str]:
    """:func:`check_sensor_config` against the current release's documentation, plus what it
    asks of a single-component discovery payload that is to live on: an ``origin``, and a
    ``unique_id`` and ``device`` (the prerequisites of a migration to device-based discovery)."""
    errors = check_sensor_config(config, CURRENT_SENSOR_KEYS)
    for key in ("origin", "unique_id", "device"):
        if key not in config:
            errors.append(f"{key}: recommended (origin) or needed to move to device-based "
                          "discovery (unique_id, device)")
    return errors


def device_discovery_payload(configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The device-based discovery payload (``<prefix>/device/<node>/config``) that single-
    component ``configs`` (component id -> config) of one device would become: ``device`` and
    ``origin`` at the root, each component with ``platform``."""
    first = next(iter(configs.values()))
    return {"device": first["device"], "origin": first["origin"],
            "components": {cid: {"platform": "sensor",
                                 **{k: v for k, v in c.items()
                                    if k not in ("device", "origin")}}
                           for cid, c in configs.items()}}


def check_device_discovery_payload(payload: dict[str, Any]) -> list[str]:
    """Every way ``payload`` breaks the documented device-based discovery payload."""
    errors = []
    for key in ("device", "origin", "components"):
        if key not in payload:
            errors.append(f"{key}: required at the root")
    device = payload.get("device", {})
    errors += _check_keys("device.", device, DEVICE_KEYS)
    if not device.get("identifiers") and not device.get("connections"):
        errors.append("device: at least one of identifiers or connections must be present")
    errors += _check_keys("origin.", payload.get("origin", {}), ORIGIN_KEYS)
    for cid, comp in payload.get("components", {}).items():
        if not HA_ID.fullmatch(cid):
            errors.append(f"components.{cid}: id outside [a-zA-Z0-9_-]")
        if comp.get("platform") != "sensor":
            errors.append(f"components.{cid}.platform: required (sensor)")
        if "unique_id" not in comp:
            errors.append(f"components.{cid}.unique_id: required for entity components")
        rest = {k: v for k, v in comp.items() if k != "platform"}
        if "device" in rest or "origin" in rest:
            errors.append(f"components.{cid}: device and origin only at the root")
        errors += check_sensor_config(rest, CURRENT_SENSOR_KEYS)
    return errors
