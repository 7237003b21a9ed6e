"""The pure discovery core: which retained messages a sequence of envelopes calls for."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from hub.homeassistant.discovery import Discovery, ha_id
from schemas.models import HomeAssistantState, SensorInfo, ThresholdInfo
from schemas.topics import Topics
from tests.homeassistant.ha_sensor_schema import (
    check_current_sensor_config,
    check_device_discovery_payload,
    check_discovery_topic,
    check_sensor_config,
    device_discovery_payload,
)
from tests.hub_alerting.helpers import Feed, env
from tests.hub_dashboard.ds18b20_trace import SENSOR, trace_envelopes

TOPICS = Topics("tp")
IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)


def _birth(f: Feed, sensors: tuple[str, ...], **kw: object) -> object:
    status = f.status(True, "birth", sensors=sensors, names={"t1": "freezer compartment"})
    high = ThresholdInfo(name="too_warm", direction="above", value=-15.0, hysteresis=1.0,
                         dwell_s=60.0, severity="warning")
    infos = [SensorInfo(sensor_id=s.sensor_id, unit=s.unit, source="onewire", name=s.name,
                        thresholds=[high]) for s in status.sensors]
    return status.model_copy(update={"sensors": infos, "sensors_complete": True, **kw})


@given(IDS, IDS, IDS, IDS)
def test_ha_ids_are_valid_and_one_to_one(a: str, b: str, c: str, d: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]+", ha_id(a, b))
    assert (ha_id(a, b) == ha_id(c, d)) == ((a, b) == (c, d))


def test_a_birth_announces_three_entities_per_sensor_in_home_assistants_schema() -> None:
    disc = Discovery(TOPICS, "homeassistant")
    out = disc.apply([env(_birth(Feed("pi.01", "farm_n"), ("t1", "t2")))])
    configs = {m.topic: json.loads(m.payload) for m in out if m.topic.endswith("/config")}
    assert len(configs) == 6 and all(m.retain for m in out)
    for topic, config in configs.items():
        assert check_discovery_topic(topic, "homeassistant") == []
        assert check_sensor_config(config) == [], topic
    temp = configs["homeassistant/sensor/thermopipe__farm_un__pi_d01/t1__temperature/config"]
    assert (temp["name"], temp["device_class"], temp["state_class"],
            temp["unit_of_measurement"]) == ("freezer compartment", "temperature",
                                             "measurement", "\u00b0C")
    assert temp["unique_id"] == "thermopipe__farm_un__pi_d01__t1__temperature"
    assert temp["device"]["model"] == "thermopipe edge agent (onewire)"
    assert temp["device"]["sw_version"] == "agent 0.1.0; fw-1.2"
    assert temp["availability"][0]["topic"] == "tp/farm_n/pi.01/status"
    band = configs["homeassistant/sensor/thermopipe__farm_un__pi_d01/t1__band/config"]
    assert band["options"] == ["unknown", "normal", "too_warm"]
    # every field a template reads exists in the state payload
    fields = set(HomeAssistantState.model_fields)
    for config in configs.values():
        assert set(re.findall(r"value_json\.(\w+)", config["value_template"])) <= fields
    # a state for each announced sensor, with no temperature yet
    states = [json.loads(m.payload) for m in out if m.topic.startswith("tp/_hub/ha/")]
    assert [(s["temperature"], s["band"], s["fault"]) for s in states] == [
        (None, "unknown", "none")] * 2


def test_the_state_carries_only_accepted_readings_through_a_ds18b20_trace() -> None:
    disc = Discovery(TOPICS)
    f = Feed("pi-7", "cellar")
    disc.apply([env(_birth(f, (SENSOR,)))])
    seen = []
    for label, envs in trace_envelopes("cellar", "pi-7"):
        for m in disc.apply(envs):
            if m.topic == TOPICS.ha_state("cellar", "pi-7", SENSOR):
                s = json.loads(m.payload)
                seen.append((label, s["temperature"], s["fault"]))
    assert seen == [("21.5", 21.5, "none"), ("85.0 power-on", 21.5, "power_on_value"),
                    ("-127.0 disconnected", 21.5, "disconnected"),
                    ("crc failed", 21.5, "crc_error"), ("22.0", 22.0, "none")]


def test_a_removed_sensor_loses_its_entities_and_an_unchanged_birth_publishes_nothing() -> None:
    disc = Discovery(TOPICS)
    f = Feed("pi-1", "lab")
    disc.apply([env(_birth(f, ("t1", "t2")))])
    assert disc.apply([env(_birth(f, ("t1", "t2")))]) == []  # a reconnect: nothing to say
    out = disc.apply([env(_birth(f, ("t1",)))])
    # the configs go first; the retained state only at the next status (issue 22 d: cleared at
    # once, it reached Home Assistant's entity before the entity was gone: a template error)
    assert sorted((m.topic, m.payload) for m in out) == sorted(
        [(f"homeassistant/sensor/thermopipe__lab__pi-1/t2__{e}/config", b"")
         for e in ("temperature", "band", "fault")])
    # and it survives a restart of the hub: the state is dumped and loaded
    again = Discovery(TOPICS)
    again.load(json.loads(json.dumps(disc.dump())))
    assert [(m.topic, m.payload) for m in again.apply([env(_birth(f, ("t1",)))])] == [
        ("tp/_hub/ha/lab/pi-1/t2", b"")]
    assert again.apply([env(_birth(f, ("t1",)))]) == []
    out = again.apply([env(_birth(f, ()))])
    assert sorted(m.topic for m in out if m.payload == b"") == [
        f"homeassistant/sensor/thermopipe__lab__pi-1/t1__{e}/config"
        for e in ("band", "fault", "temperature")]
    assert [(m.topic, m.payload) for m in again.apply([env(_birth(f, ()))])] == [
        ("tp/_hub/ha/lab/pi-1/t1", b"")]


def test_a_status_whose_list_may_still_grow_never_removes_an_entity() -> None:
    """Issue 22 c: an agent's birth sent before its first 1-Wire scan lists no sensors; the hub
    withdrew every config and Home Assistant deleted the entities until the next status."""
    disc = Discovery(TOPICS)
    f = Feed("pi-1", "lab")
    disc.apply([env(_birth(f, ("t1", "t2")))])
    disc.apply([env(f.reading("t1", 20.0))])
    assert disc.apply([env(_birth(f, (), sensors_complete=False))]) == []
    # a partial list adds what is new and keeps the rest, state included
    out = disc.apply([env(_birth(f, ("t3",), sensors_complete=False))])
    assert {m.topic for m in out} == {
        *(f"homeassistant/sensor/thermopipe__lab__pi-1/t3__{e}/config"
          for e in ("temperature", "band", "fault")), "tp/_hub/ha/lab/pi-1/t3"}
    assert all(m.payload for m in out)
    assert json.loads(disc.state(("lab", "pi-1", "t1")))["temperature"] == 20.0
    # the whole list, once the agent has looked: t2 goes, t1 and t3 stay
    out = disc.apply([env(_birth(f, ("t1", "t3")))])
    assert sorted(m.topic for m in out) == [
        f"homeassistant/sensor/thermopipe__lab__pi-1/t2__{e}/config"
        for e in ("band", "fault", "temperature")]


def test_configs_carry_the_origin_and_the_devices_name_for_people() -> None:
    disc = Discovery(TOPICS, hub_version="1.2.3", support_url="https://example.org/help")
    f = Feed("pi-1", "lab")
    out = disc.apply([env(_birth(f, ("t1",), device_name="Freezer"))])
    configs = [json.loads(m.payload) for m in out if m.topic.endswith("/config")]
    assert {c["device"]["name"] for c in configs} == {"Freezer"}
    assert all(c["origin"] == {"name": "thermopipe hub", "sw_version": "1.2.3",
                               "support_url": "https://example.org/help"} for c in configs)
    assert all(check_sensor_config(c) == [] for c in configs)
    # renamed: the configs change; unnamed: the device id
    out = disc.apply([env(_birth(f, ("t1",)))])
    assert {json.loads(m.payload)["device"]["name"] for m in out} == {"pi-1"}
    assert Discovery(TOPICS).origin == {"name": "thermopipe hub"}


def test_a_temperature_not_yet_known_is_json_null_rendered_as_none() -> None:
    """Issue 22 a: the template rendered the string 'null', which Home Assistant refuses for a
    temperature (a traceback per new sensor); JSON null renders as None, shown as unknown."""
    disc = Discovery(TOPICS)
    out = disc.apply([env(_birth(Feed(), ("t1",)))])
    temp = json.loads(next(m.payload for m in out if m.topic.endswith("_temperature/config")))
    assert "null" not in temp["value_template"]
    assert temp["value_template"] == "{{ value_json.temperature }}"


def test_events_from_a_device_without_a_birth_ask_it_for_one_once() -> None:
    disc = Discovery(TOPICS)
    f = Feed("pi-3", "lab")
    out = disc.apply([env(f.reading("t1", 20.0)), env(f.reading("t1", 20.5))])
    out += disc.apply([env(f.reading("t1", 21.0))])
    asks = [m for m in out if m.topic == "tp/lab/pi-3/cmd/rebirth"]
    assert len(asks) == 1 and not asks[0].retain
    # older events never move the state backwards
    disc.apply([env(f.state("t1", "high", value=31.0))])
    late = f.reading("t1", 5.0).model_copy(update={"seq": 1})
    assert disc.apply([env(late)]) == []


def test_the_schema_check_finds_what_breaks_the_documented_schema() -> None:
    disc = Discovery(TOPICS)
    out = disc.apply([env(_birth(Feed(), ("t1",)))])
    config = json.loads(next(m.payload for m in out if m.topic.endswith("_band/config")))
    broken = {**config, "state_class": "measurement", "colour": "red"}
    del broken["state_topic"]
    broken["device"] = {**config["device"], "identifiers": []}
    assert sorted(check_sensor_config(broken)) == sorted([
        "colour: not in Home Assistant's schema", "state_topic: required",
        "options: cannot be used together with state_class",
        "device: at least one of identifiers or connections must be present"])
    assert check_discovery_topic("homeassistant/sensor/a.b/c/config", "homeassistant")


def test_our_configs_have_what_the_current_release_documents() -> None:
    """The payloads against today's documented schema (not only 2024.3's): no ``object_id``
    (replaced by ``default_entity_id``), an ``origin``, and everything a move to device-based
    discovery needs (``unique_id``, ``device``; ``platform`` per component)."""
    disc = Discovery(TOPICS, hub_version="0.1.0")
    out = disc.apply([env(_birth(Feed("pi.01", "farm_n"), ("t1", "t2"),
                                 device_name="Freezer"))])
    configs = {m.topic.split("/")[-2]: json.loads(m.payload) for m in out
               if m.topic.endswith("/config")}
    assert len(configs) == 6
    for cid, config in configs.items():
        assert check_current_sensor_config(config) == [], cid
        assert "object_id" not in config and "default_entity_id" not in config
    payload = device_discovery_payload(configs)
    assert check_device_discovery_payload(payload) == []
    # the checks can fail: an object_id, a missing origin name, a component without platform
    bad = {**configs["t1__temperature"], "object_id": "x", "origin": {"sw_version": "1"}}
    assert sorted(check_current_sensor_config(bad)) == [
        "object_id: not in Home Assistant's schema", "origin.name: required"]
    del payload["components"]["t1__band"]["platform"]
    assert check_device_discovery_payload(payload) == [
        "components.t1__band.platform: required (sensor)"]


def test_a_replayed_state_change_older_than_the_live_readings_still_sets_the_band() -> None:
    """Found by the real Home Assistant (tests/counterparts): an agent's first events wait in
    its outbox until it connects and go out as backlog after the live ones; the hub dropped the
    replayed state change (older seq than the readings shown) and the band stayed unknown."""
    disc = Discovery(TOPICS)
    f = Feed("pi-1", "lab")
    disc.apply([env(_birth(f, ("t1",)))])
    first = f.state("t1", "normal", prev="unknown", value=-18.0)
    live = [f.reading("t1", -18.0), f.reading("t1", -17.5)]
    disc.apply([env(e) for e in live])
    out = disc.apply([env(first.model_copy(update={"replayed": True}))])
    state = json.loads(out[-1].payload)
    assert (state["band"], state["temperature"]) == ("normal", -17.5)  # the band, not the value
    # a replayed fault clears in seq order too; an older duplicate changes nothing
    on = f.fault("t1", "crc_error", True)
    off = f.fault("t1", "crc_error", False)
    disc.apply([env(off)])
    assert disc.apply([env(on)]) == []
    assert json.loads(disc.state(("lab", "pi-1", "t1")))["fault"] == "none"
    again = Discovery(TOPICS)
    again.load(json.loads(json.dumps(disc.dump())))
    assert again.state(("lab", "pi-1", "t1")) == disc.state(("lab", "pi-1", "t1"))
