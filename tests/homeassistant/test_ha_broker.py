"""Home Assistant discovery through the real hub and a real private Mosquitto.

A "device" publishes its birth and the DS18B20 trace (21.5, 85.0, -127.0, a CRC failure, 22.0)
as the agent would; the hub (in-process, ``[homeassistant] enabled``) ingests them; independent
subscribers see the retained discovery configs and states, each config checked field by field
against Home Assistant's documented MQTT sensor schema (``ha_sensor_schema.DOCS_SOURCE``). Then the
device drops a sensor from its config: its entities go (empty retained configs), across a hub
restart too.
"""

from __future__ import annotations

import json
import queue
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.app import Hub
from hub.homeassistant.discovery import ha_id
from schemas.codec import encode
from schemas.models import DeviceStatus, HomeAssistantState, SensorInfo
from schemas.topics import Topics
from tests.deploy.mqtt_helpers import SyncClient
from tests.homeassistant.ha_sensor_schema import check_discovery_topic, check_sensor_config
from tests.hub_core.helpers import hub_config
from tests.hub_dashboard.ds18b20_trace import SENSOR, T0, trace_envelopes
from tests.servers import Mosquitto

pytestmark = pytest.mark.servers

SITE, DEVICE = "cellar", "pi-7"
ENTITIES = ("temperature", "band", "fault")


def _birth(session: int, sensors: tuple[str, ...]) -> DeviceStatus:
    from datetime import UTC, datetime
    return DeviceStatus(
        event_id=f"birth-{session:04d}-{uuid.uuid4().hex[:8]}", site=SITE, device_id=DEVICE,
        time=datetime.fromtimestamp(T0 - 60 + session, UTC), clock_synced=True, online=True,
        reason="birth", session=session, agent_version="0.1.0", firmware="",
        sensors_complete=True,
        sensors=[SensorInfo(sensor_id=s, unit="degC", source="onewire",
                            name={SENSOR: "freezer compartment"}.get(s, "")) for s in sensors])


def _subscriber(broker: Mosquitto, *filters: str) -> SyncClient:
    sub = SyncClient(broker.host, broker.port, None, None)
    assert sub.connect() == 0
    for f in filters:
        assert sub.subscribe(f) < 0x80
    return sub


def _collect_until(sub: SyncClient, done: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Messages by topic (the last one wins) until ``done(latest)`` holds."""
    latest: dict[str, Any] = {}
    while not done(latest):
        try:
            msg = sub.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"gave up waiting; got {sorted(latest)}") from None
        latest[msg.topic] = msg
    return latest


def _next_state(sub: SyncClient, topic: str, timeout: float = 30,
                ) -> tuple[Any, str, str]:
    """The next state published on ``topic``: (temperature, fault, band)."""
    while True:
        msg = sub.messages.get(timeout=timeout)
        if msg.topic == topic:
            state = HomeAssistantState.model_validate_json(msg.payload)
            return state.temperature, state.fault, state.band


def _states_until(sub: SyncClient, topic: str, final: tuple[Any, ...],
                  ) -> list[tuple[Any, str, str]]:
    """Every state published on ``topic`` up to and including ``final`` (or the last one seen
    when it never comes, so the comparison shows what Home Assistant was left with)."""
    states: list[tuple[Any, str, str]] = []
    while not states or states[-1] != final:
        try:
            states.append(_next_state(sub, topic, timeout=10))
        except queue.Empty:
            if not states:
                raise AssertionError(f"no state on {topic}") from None
            break
    return states


@pytest.fixture
def prefix() -> str:
    return f"ha{uuid.uuid4().hex[:8]}"


@pytest.fixture
def start_hub(tmp_path: Path, mosquitto: Mosquitto, topic_root: str, prefix: str,
              ) -> Iterator[Any]:
    hubs: list[Hub] = []

    def start() -> Hub:
        cfg = hub_config(tmp_path, mosquitto, topic_root,
                         homeassistant={"enabled": True, "discovery_prefix": prefix},
                         alerting={"enabled": False}, dashboard={"enabled": False},
                         http={"enabled": False})
        hub = Hub(cfg)
        hub.start()
        hubs.append(hub)
        assert hub.ingest.subscribed.wait(15), "the hub did not subscribe"
        return hub

    yield start
    for hub in hubs:
        hub.stop()


def test_home_assistant_sees_retained_configs_and_only_accepted_temperatures(
        mosquitto: Mosquitto, topic_root: str, prefix: str, start_hub: Any) -> None:
    topics = Topics(topic_root)
    state_topic = topics.ha_state(SITE, DEVICE, SENSOR)
    node = ha_id("thermopipe", SITE, DEVICE)
    configs = {e: f"{prefix}/sensor/{node}/{ha_id(SENSOR, e)}/config" for e in ENTITIES}
    door = {e: f"{prefix}/sensor/{node}/{ha_id('t-door', e)}/config" for e in ENTITIES}
    live = _subscriber(mosquitto, f"{prefix}/#", f"{topic_root}/_hub/ha/#")
    hub = start_hub()
    device = SyncClient(mosquitto.host, mosquitto.port, None, None)
    assert device.connect() == 0
    try:
        assert device.publish(topics.status(SITE, DEVICE), encode(_birth(1, (SENSOR, "t-door"))),
                              retain=True) == 0
        assert _next_state(live, state_topic)[:2] == (None, "none")  # announced, no value
        # the trace, one step at a time: Home Assistant's temperature is never a rejected value.
        # A step of several events (a fault's recovery, then the next fault) may reach the hub in
        # one batch or in two, so Home Assistant may see an intermediate state; every state seen
        # counts for the "never rejected" check, and the step's last one must be what it shows.
        expected = [("21.5", 21.5, "none", "normal"),
                    ("85.0 power-on", 21.5, "power_on_value", "normal"),
                    ("-127.0 disconnected", 21.5, "disconnected", "normal"),
                    ("crc failed", 21.5, "crc_error", "normal"),
                    ("22.0", 22.0, "none", "normal")]
        shown, seen = [], []
        for (label, envs), (_, *final) in zip(trace_envelopes(SITE, DEVICE), expected,
                                              strict=True):
            for e in envs:
                assert device.publish(topics.for_event(e.message), encode(e.message)) == 0
            states = _states_until(live, state_topic, tuple(final))
            seen += states
            shown.append((label, *states[-1]))
        assert shown == expected
        assert {s[0] for s in seen} <= {21.5, 22.0}, seen

        # a subscriber that comes later (Home Assistant starting) gets it all, retained
        late = _subscriber(mosquitto, f"{prefix}/#", f"{topic_root}/_hub/ha/#",
                           topics.status(SITE, DEVICE))
        got = _collect_until(late, lambda seen: all(
            t in seen for t in [*configs.values(), *door.values(), state_topic,
                                topics.ha_status(), topics.status(SITE, DEVICE)]))
        assert [t for t, m in got.items() if not m.retain] == []
        for topic in [*configs.values(), *door.values()]:
            assert check_discovery_topic(topic, prefix) == []
            assert check_sensor_config(json.loads(got[topic].payload)) == [], topic
        temp = json.loads(got[configs["temperature"]].payload)
        assert (temp["name"], temp["device_class"], temp["state_class"],
                temp["unit_of_measurement"], temp["device"]["name"]) == (
            "freezer compartment", "temperature", "measurement", "\u00b0C", DEVICE)
        assert temp["state_topic"] == state_topic
        # availability: the device's own retained status, and the hub's
        assert [a["topic"] for a in temp["availability"]] == [topics.status(SITE, DEVICE),
                                                               topics.ha_status()]
        assert json.loads(got[topics.status(SITE, DEVICE)].payload)["online"] is True
        assert got[topics.ha_status()].payload == b"online"
        state = HomeAssistantState.model_validate_json(got[state_topic].payload)
        assert (state.temperature, state.band, state.fault) == (22.0, "normal", "none")
        late.close()

        # the device drops t-door from its config: Home Assistant removes its entities
        assert device.publish(topics.status(SITE, DEVICE), encode(_birth(2, (SENSOR,))),
                              retain=True) == 0
        _collect_until(live, lambda seen: all(
            t in seen and seen[t].payload == b"" for t in door.values()))
        # Mosquitto sends a subscription's retained messages before it reads the next
        # SUBSCRIBE: the hub's availability (second filter) comes after all the configs
        later = _subscriber(mosquitto, f"{prefix}/#", topics.ha_status())
        kept = _collect_until(later, lambda seen: topics.ha_status() in seen)
        assert set(configs.values()) <= set(kept)
        assert not set(door.values()) & set(kept)  # gone from the broker, not only announced
        later.close()

        # ...and a hub restarted later still knows what it announced
        hub.stop()
        after = _subscriber(mosquitto, topics.ha_status())
        assert _collect_until(after, lambda s: topics.ha_status() in s)[
            topics.ha_status()].payload == b"offline"
        after.close()
        start_hub()
        assert device.publish(topics.status(SITE, DEVICE), encode(_birth(3, ())),
                              retain=True) == 0
        _collect_until(live, lambda seen: all(
            t in seen and seen[t].payload == b"" for t in configs.values()))
        # the retained state is cleared at the device's next status, after Home Assistant has
        # dropped the entities (cleared with the configs, it reached them first: issue 22 d)
        assert device.publish(topics.status(SITE, DEVICE), encode(_birth(4, ())),
                              retain=True) == 0
        _collect_until(live, lambda seen: state_topic in seen
                       and seen[state_topic].payload == b"")
        # nothing of this device is left for a newcomer but the hub's status
        final = _subscriber(mosquitto, f"{prefix}/#", f"{topic_root}/_hub/ha/#")
        left = _collect_until(final, lambda s: topics.ha_status() in s)
        assert sorted(left) == [topics.ha_status()]
        final.close()
    finally:
        device.close()
        live.close()
