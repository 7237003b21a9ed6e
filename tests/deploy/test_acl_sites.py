"""deploy/'s ACL binds each device account to its one site and device (the block
deploy/scripts/add-device.sh writes), against a real Mosquitto with deploy/'s config: a device
account cannot publish for another site, another device, or under the hubs' ``_hub/`` prefix
(it could once invent sites, and the hub keeps state per site, device and sensor); and
add-device.sh refuses hub-like names with one line."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from tests.deploy.conftest import DeployCopy
from tests.deploy.mqtt_helpers import NOT_AUTHORIZED, SyncClient
from tests.servers import Mosquitto

pytestmark = pytest.mark.servers

SITE, DEVICE = "lab", "pi-1"
OTHER_SITE, OTHER_DEVICE = "barn", "pi-2"
# a device named like a hub topic level: with a "+/%u" pattern it could write the hub's alerts
ALERTS = "alerts"


@pytest.fixture
def clients(deploy_copy: DeployCopy, deploy_broker: Callable[[], Mosquitto],
            ) -> Iterator[Callable[[str, MQTTProtocolVersion], SyncClient]]:
    passwords = {"hub": deploy_copy.env()["HUB_MQTT_PASSWORD"]}
    for site, device in ((SITE, DEVICE), (OTHER_SITE, OTHER_DEVICE), (SITE, ALERTS)):
        _config, passwords[device] = deploy_copy.add_device(site, device)
    server = deploy_broker()
    made: list[SyncClient] = []

    def connect(user: str, protocol: MQTTProtocolVersion = mqtt.MQTTv5) -> SyncClient:
        client = SyncClient(server.host, server.port, user, passwords[user], protocol)
        made.append(client)
        assert client.connect() == 0
        return client

    yield connect
    for client in made:
        client.close()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt311"])
def test_a_device_publishes_only_for_its_own_site_and_device(
        clients: Callable[[str, MQTTProtocolVersion], SyncClient],
        protocol: MQTTProtocolVersion) -> None:
    hub = clients("hub", mqtt.MQTTv5)
    assert hub.subscribe("thermopipe/#") < 0x80
    device = clients(DEVICE, protocol)
    alerts = clients(ALERTS, protocol)
    refused = [
        (device, f"thermopipe/{OTHER_SITE}/{DEVICE}/event/t1"),     # its own id, another site
        (device, f"thermopipe/invented/{DEVICE}/status"),           # ... an invented site
        (device, f"thermopipe/{OTHER_SITE}/{DEVICE}/summary/t1"),
        (device, f"thermopipe/{SITE}/{OTHER_DEVICE}/event/t1"),     # its site, another device
        (device, f"thermopipe/{OTHER_SITE}/{OTHER_DEVICE}/status"),
        (device, f"thermopipe/_hub/{DEVICE}/event/t1"),             # under the hubs' prefix
        (device, "thermopipe/_hub/deadletter"),
        (device, f"thermopipe/{SITE}/{DEVICE}/receipt"),            # receipts are the hubs'
        (alerts, "thermopipe/_hub/alerts/event/t1"),  # = the hub's alert topic of site "event"
        (alerts, "thermopipe/_hub/alerts/status"),
    ]
    for client, topic in refused:
        # MQTT 5 says so in the PUBACK; MQTT 3.1.1 has no way to, the broker drops it
        assert client.publish(topic, b"x") == (
            NOT_AUTHORIZED if protocol == mqtt.MQTTv5 else 0), topic
    own = [f"thermopipe/{SITE}/{DEVICE}/event/t1", f"thermopipe/{SITE}/{DEVICE}/summary/t1",
           f"thermopipe/{SITE}/{DEVICE}/status"]
    for topic in own:
        assert device.publish(topic, b"own") == 0, topic
    marker = f"thermopipe/{SITE}/{ALERTS}/event/marker"
    assert alerts.publish(marker, b"marker") == 0
    got = hub.receive_until(marker)
    # the device's own three came; nothing refused did (one publisher's messages keep order:
    # the device's were sent before the marker's, from the same test thread)
    assert sorted(m.topic for m in got if m.topic != marker) == sorted(own)


def test_a_device_moved_to_another_site_loses_the_old_one(
        deploy_copy: DeployCopy, deploy_broker: Callable[[], Mosquitto]) -> None:
    deploy_copy.add_device(SITE, DEVICE)
    _config, password = deploy_copy.add_device(OTHER_SITE, DEVICE)  # the block is replaced
    acl = (deploy_copy.root / "mosquitto" / "acl").read_text()
    assert acl.count(f"user {DEVICE}\n") == 1
    server = deploy_broker()
    client = SyncClient(server.host, server.port, DEVICE, password)
    try:
        assert client.connect() == 0
        assert client.publish(f"thermopipe/{SITE}/{DEVICE}/event/t1", b"x") == NOT_AUTHORIZED
        assert client.publish(f"thermopipe/{OTHER_SITE}/{DEVICE}/event/t1", b"x") in (0, 0x10)
    finally:
        client.close()


@pytest.mark.parametrize(("site", "device", "says"), [
    ("lab", "_hub", "invalid device id '_hub'"),
    ("lab", "_anything", "names starting with '_'"),
    ("_hub", "pi-1", "invalid site '_hub'"),
    ("lab", "hub", "service account"),
    ("lab", "hub-w9", "service account"),        # a future worker's account
    ("lab", "hub-w12-ha", "service account"),
    ("lab", "HUB-w1", "looks like a hub account"),
    ("lab", "hub-backup", "looks like a hub account"),
    ("lab", "hub_2", "looks like a hub account"),
])
def test_add_device_refuses_hub_names_in_one_line(deploy_copy: DeployCopy, site: str,
                                                   device: str, says: str) -> None:
    acl_before = (deploy_copy.root / "mosquitto" / "acl").read_text()
    result = deploy_copy.run("scripts/add-device.sh", site, device, check=False)
    assert result.returncode != 0
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (deploy_copy.root / "mosquitto" / "acl").read_text() == acl_before
    assert not (deploy_copy.root / "devices" / device).exists()
