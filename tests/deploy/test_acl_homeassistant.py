"""deploy/mosquitto/acl for Home Assistant discovery, against a real Mosquitto 2.0 with deploy/'s
config and a password file made by deploy/scripts: the hub writes sensor discovery configs and
nothing else under the discovery prefix; Home Assistant's account reads the configs, the hub's
states and the devices' status, and no event; a device writes nothing for Home Assistant."""

from __future__ import annotations

import contextlib
import queue
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.deploy.conftest import DeployCopy
from tests.deploy.mqtt_helpers import NOT_AUTHORIZED, SyncClient
from tests.servers import Mosquitto, require_binary

pytestmark = pytest.mark.servers

SITE, DEV = "lab", "pi-1"
CONFIG = "homeassistant/sensor/thermopipe__lab__pi-1/t1__temperature/config"
STATE = f"thermopipe/_hub/ha/{SITE}/{DEV}/t1"
STATUS = f"thermopipe/{SITE}/{DEV}/status"
EVENT = f"thermopipe/{SITE}/{DEV}/event/t1"


@pytest.fixture
def clients(deploy_copy: DeployCopy, deploy_broker: Callable[[], Mosquitto],
            ) -> Iterator[dict[str, SyncClient]]:
    require_binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    _cfg, device_password = deploy_copy.add_device(SITE, DEV)
    lib = deploy_copy.root / "scripts" / "lib.sh"
    subprocess.run(["bash", "-c", f'. "{lib}"; mqtt_passwd "$1" homeassistant ha-secret',
                    "-", str(deploy_copy.root / "mosquitto" / "passwd")], check=True,
                   capture_output=True, timeout=30)
    server = deploy_broker()
    made = {}
    hub_password = deploy_copy.env()["HUB_MQTT_PASSWORD"]
    for user, password in (("hub", hub_password), ("hub-ha", hub_password),
                           (DEV, device_password), ("homeassistant", "ha-secret")):
        made[user] = SyncClient(server.host, server.port, user, password)
        assert made[user].connect() == 0, user
    yield made
    for c in made.values():
        c.close()


def test_home_assistant_reads_what_discovery_needs_and_nothing_else(
        clients: dict[str, SyncClient]) -> None:
    hub, device, ha = clients["hub"], clients[DEV], clients["homeassistant"]
    # what Home Assistant's MQTT integration subscribes to (discovery), and our topics
    for f in ("homeassistant/#", "thermopipe/_hub/ha/#", "thermopipe/+/+/status",
              "thermopipe/#"):
        assert ha.subscribe(f) < 0x80, f
    assert device.publish(STATUS, b'{"online": true}', retain=True) in (0, 0x10)
    assert device.publish(EVENT, b"{}") in (0, 0x10)
    assert hub.publish(CONFIG, b"{}", retain=True) in (0, 0x10)
    assert hub.publish(STATE, b"{}", retain=True) in (0, 0x10)
    assert ha.publish("homeassistant/status", b"online") in (0, 0x10)
    got = ha.receive_until("homeassistant/status")
    with contextlib.suppress(queue.Empty):
        while True:
            got.append(ha.messages.get(timeout=0.5))
    assert {m.topic for m in got} == {STATUS, CONFIG, STATE, "homeassistant/status"}
    # Home Assistant writes nothing of thermopipe's, nor discovery configs
    for topic in (EVENT, STATUS, STATE, CONFIG, f"thermopipe/{SITE}/{DEV}/cmd/rebirth"):
        assert ha.publish(topic, b"x") == NOT_AUTHORIZED, topic


def test_only_the_hub_writes_sensor_discovery_configs(clients: dict[str, SyncClient]) -> None:
    hub, device = clients["hub"], clients[DEV]
    for topic in (CONFIG, "homeassistant/sensor/x/config", "homeassistant/light/a/b/config",
                  "homeassistant/status"):
        assert device.publish(topic, b"{}") == NOT_AUTHORIZED, topic
    for topic in ("homeassistant/light/a/b/config", "homeassistant/status",
                  "homeassistant/sensor/a/b/c/config"):
        assert hub.publish(topic, b"{}") == NOT_AUTHORIZED, topic
    assert hub.publish(CONFIG, b"", retain=True) in (0, 0x10)  # an empty config: removed


def test_the_hubs_home_assistant_connection_may_ask_a_device_for_a_birth_and_nothing_more(
        clients: dict[str, SyncClient]) -> None:
    """Discovery switched on after a device connected: the hub's hub-ha connection asks it for a
    birth. Refused (before issue 22), the device appeared only at its next periodic status."""
    hub_ha, device = clients["hub-ha"], clients[DEV]
    assert device.subscribe(f"thermopipe/{SITE}/{DEV}/cmd/+") < 0x80
    assert hub_ha.publish(f"thermopipe/{SITE}/{DEV}/cmd/rebirth",
                          b'{"command":"rebirth"}') in (0, 0x10)
    assert [m.topic for m in device.receive_until(f"thermopipe/{SITE}/{DEV}/cmd/rebirth")] == [
        f"thermopipe/{SITE}/{DEV}/cmd/rebirth"]
    assert hub_ha.publish(CONFIG, b"", retain=True) in (0, 0x10)
    assert hub_ha.publish(STATE, b"", retain=True) in (0, 0x10)
    for topic in (f"thermopipe/{SITE}/{DEV}/cmd/identify", f"thermopipe/{SITE}/{DEV}/receipt",
                  EVENT, STATUS, "homeassistant/status"):
        assert hub_ha.publish(topic, b"{}") == NOT_AUTHORIZED, topic


def test_setup_server_adds_the_rebirth_line_to_an_older_acl(deploy_copy: DeployCopy) -> None:
    acl = deploy_copy.root / "mosquitto" / "acl"
    rebirth = "topic write thermopipe/+/+/cmd/rebirth"
    acl.write_text("".join(line for line in acl.read_text().splitlines(keepends=True)
                           if line.strip() != rebirth))
    out = deploy_copy.run("scripts/setup-server.sh").stdout
    assert out.count(f"added '{rebirth}'") == 5  # hub-ha and hub-w0-ha ... hub-w3-ha
    blocks = acl.read_text().split("\nuser ")
    for account in ("hub-ha", "hub-w0-ha", "hub-w3-ha"):
        block = next(b for b in blocks if b.startswith(account + "\n"))
        assert rebirth in block.splitlines(), account
    assert "cmd/rebirth" not in deploy_copy.run("scripts/setup-server.sh").stdout  # once only
