"""deploy/mosquitto's ACL against a real Mosquitto 2.0, with the password file that
deploy/scripts/setup-server.sh and add-device.sh made: each device publishes only below its own
id and reads only its own commands; the hub reads everything."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from tests.deploy.conftest import DeployCopy
from tests.deploy.mqtt_helpers import NOT_AUTHORIZED, SyncClient
from tests.servers import Mosquitto

pytestmark = pytest.mark.servers

SITE_A, DEV_A = "lab", "pi.lab-1"
SITE_B, DEV_B = "barn", "pi-barn"


@pytest.fixture
def broker(deploy_copy: DeployCopy, deploy_broker: Callable[[], Mosquitto],
           ) -> tuple[Mosquitto, dict[str, str]]:
    passwords = {"hub": deploy_copy.env()["HUB_MQTT_PASSWORD"]}
    for site, device in ((SITE_A, DEV_A), (SITE_B, DEV_B)):
        _config, passwords[device] = deploy_copy.add_device(site, device)
    return deploy_broker(), passwords


@pytest.fixture
def connect(broker: tuple[Mosquitto, dict[str, str]]) -> Iterator[Callable[..., SyncClient]]:
    server, passwords = broker
    clients: list[SyncClient] = []

    def make(user: str | None, protocol: MQTTProtocolVersion = mqtt.MQTTv5,
             password: str | None = None, refused: bool = False) -> SyncClient:
        c = SyncClient(server.host, server.port, user,
                       password if password is not None else passwords.get(user or ""),
                       protocol)
        clients.append(c)
        rc = c.connect()
        # refusals: 0x86 bad user name or password / 0x87 not authorized (Mosquitto 2.0.11 says
        # 0x87 for both over MQTT 5)
        assert (rc in (0x86, 0x87)) if refused else rc == 0, f"CONNACK {rc:#x} for {user}"
        return c

    yield make
    for c in clients:
        c.close()


def test_devices_publish_their_own_topics_and_the_hub_reads_them(connect: Callable[..., SyncClient]
                                                                 ) -> None:
    hub = connect("hub")
    assert hub.subscribe("thermopipe/#") < 0x80
    dev = connect(DEV_A)
    for topic in (f"thermopipe/{SITE_A}/{DEV_A}/event/tank",
                  f"thermopipe/{SITE_A}/{DEV_A}/summary/tank",
                  f"thermopipe/{SITE_A}/{DEV_A}/status"):
        assert dev.publish(topic, b"{}") == 0
        assert hub.receive_until(topic)[-1].payload == b"{}"


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt311"])
def test_a_device_cannot_publish_as_another(connect: Callable[..., SyncClient],
                                            protocol: MQTTProtocolVersion) -> None:
    hub = connect("hub")
    assert hub.subscribe("thermopipe/#") < 0x80
    spoofer = connect(DEV_A, protocol)
    spoofed = [f"thermopipe/{SITE_B}/{DEV_B}/event/tank",   # another device's events
               f"thermopipe/{SITE_B}/{DEV_B}/status",        # ...its status
               f"thermopipe/{SITE_A}/{DEV_B}/summary/tank",  # another device, own site
               "thermopipe/_hub/alerts/lab/pi.lab-1",        # the hub's topics
               f"thermopipe/{SITE_A}/{DEV_A}/cmd/rebirth",   # commands are for the hub to send
               "elsewhere/anything"]                         # outside the namespace
    for topic in spoofed:
        rc = spoofer.publish(topic, b"spoofed")
        # MQTT 5 says so in the PUBACK; MQTT 3.1.1 has no way to, the broker just drops it
        assert rc == (NOT_AUTHORIZED if protocol == mqtt.MQTTv5 else 0), topic
    # Messages of one publisher arrive in order: once the marker is in, nothing spoofed came.
    marker = f"thermopipe/{SITE_A}/{DEV_A}/event/marker"
    assert spoofer.publish(marker, b"marker") == 0
    got = hub.receive_until(marker)
    assert [m.topic for m in got] == [marker]


def test_devices_read_only_their_own_commands(connect: Callable[..., SyncClient]) -> None:
    a = connect(DEV_A)
    b = connect(DEV_B)
    hub = connect("hub")
    assert a.subscribe(f"thermopipe/{SITE_A}/{DEV_A}/cmd/+") < 0x80
    # Mosquitto 2.0 grants any subscription and checks "read" per message at delivery: whatever
    # A subscribes to, nothing of another device reaches it.
    for other in (f"thermopipe/{SITE_B}/{DEV_B}/cmd/+", f"thermopipe/{SITE_B}/{DEV_B}/event/+",
                  "thermopipe/#", "#"):
        a.subscribe(other)
    assert b.publish(f"thermopipe/{SITE_B}/{DEV_B}/event/tank", b"b's reading") == 0
    assert hub.publish(f"thermopipe/{SITE_B}/{DEV_B}/cmd/identify", b"{}") == 0
    assert hub.publish(f"thermopipe/{SITE_A}/{DEV_A}/cmd/rebirth", b"{}") == 0
    own = f"thermopipe/{SITE_A}/{DEV_A}/cmd/rebirth"
    got = a.receive_until(own)
    # overlapping subscriptions deliver one copy each: drain them, all must be A's own command
    with contextlib.suppress(queue.Empty):
        while True:
            got.append(a.messages.get(timeout=0.5))
    assert {m.topic for m in got} == {own}


def test_the_hub_reads_everything_through_a_shared_subscription(
        connect: Callable[..., SyncClient]) -> None:
    hub = connect("hub")
    for f in ("$share/hubs/thermopipe/+/+/event/+", "$share/hubs/thermopipe/+/+/status"):
        assert hub.subscribe(f) < 0x80, f
    for dev, site in ((DEV_A, SITE_A), (DEV_B, SITE_B)):
        topic = f"thermopipe/{site}/{dev}/event/tank"
        assert connect(dev).publish(topic, b"x") == 0
        assert hub.receive_until(topic)[-1].topic == topic
    # the hub publishes alerts and dead letters under _hub, and nothing as a device
    assert hub.publish("thermopipe/_hub/deadletter", b"{}") < 0x80  # 0x10: no subscribers
    assert hub.publish(f"thermopipe/{SITE_A}/{DEV_A}/event/tank", b"x") == NOT_AUTHORIZED


def test_no_anonymous_clients_and_no_wrong_passwords(connect: Callable[..., SyncClient]) -> None:
    connect(None, refused=True)                      # anonymous
    connect(DEV_A, password="wrong", refused=True)
    connect("nobody", password="x", refused=True)
    connect(DEV_A, mqtt.MQTTv311, password="wrong", refused=True)  # 3.1.1: return code 4/5


def test_rotating_a_password_with_add_device(deploy_copy: DeployCopy,
                                             deploy_broker: Callable[[], Mosquitto]) -> None:
    _cfg, first = deploy_copy.add_device(SITE_A, DEV_A)
    _cfg, second = deploy_copy.add_device(SITE_A, DEV_A)  # running it again rotates
    assert first != second
    server = deploy_broker()
    for password, accepted in ((first, False), (second, True)):
        c = SyncClient(server.host, server.port, DEV_A, password)
        try:
            assert (c.connect() == 0) is accepted
        finally:
            c.close()


def test_the_optional_tls_listener(deploy_copy: DeployCopy,
                                   deploy_broker: Callable[[], Mosquitto]) -> None:
    """conf.d/tls.conf.example, enabled as the README says, serves MQTT over TLS with the same
    passwords and ACL."""
    import ssl

    import trustme

    from tests.servers import free_port

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    mosq = deploy_copy.root / "mosquitto"
    certs = mosq / "certs"
    certs.mkdir()
    ca.cert_pem.write_to_path(str(certs / "ca.crt"))
    cert.cert_chain_pems[0].write_to_path(str(certs / "server.crt"))
    cert.private_key_pem.write_to_path(str(certs / "server.key"))
    port = free_port()
    example = (mosq / "conf.d" / "tls.conf.example").read_text()
    (mosq / "conf.d" / "tls.conf").write_text(
        example.replace("listener 8883", f"listener {port} 127.0.0.1")
        .replace("/mosquitto/config", str(mosq)))
    _cfg, password = deploy_copy.add_device(SITE_A, DEV_A)
    deploy_broker()
    client = SyncClient("127.0.0.1", port, DEV_A, password)
    client.client.tls_set(ca_certs=str(certs / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
    try:
        assert client.connect() == 0
        # 0x10: accepted, no subscriber yet
        assert client.publish(f"thermopipe/{SITE_A}/{DEV_A}/event/tank", b"{}") in (0, 0x10)
        assert client.publish(f"thermopipe/{SITE_B}/{DEV_B}/event/tank", b"{}") == NOT_AUTHORIZED
    finally:
        client.close()
