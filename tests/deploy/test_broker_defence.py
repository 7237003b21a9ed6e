"""Defence in depth in deploy/ (issue 12, item 4), against a real Mosquitto 2.0 started with
deploy/'s mosquitto.conf, ACL and the password file that deploy/scripts made:

a. the client id is the username (``use_username_as_clientid``): a device that connects with the
   hub's client id and a clean start no longer wipes the hub's session and queue (the issue's
   attack, repeated; the same attack without the option loses the queue: the control);
b. the broker refuses a publish above its size limits (``message_size_limit``, ``max_packet_size``)
   and passes one between the hub's limit and its own, for the hub to dead-letter;
c. two hub workers, each with its own account (``mqtt.account_per_connection``), Home Assistant
   connections included, connect without taking over each other's session and share the load;
d. an oversized payload becomes a bounded dead letter (a 4 KiB prefix, its size and SHA-256) in
   the hub's store and on the dead-letter topic, and ``hub dlq`` shows it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.harness.mqtt_clients import stop_client
from hub.records import DEAD_LETTER_KEEP, DeadRecord
from schemas.codec import DEFAULT_MAX_PAYLOAD, encode
from schemas.models import DeadLetter
from schemas.topics import Topics
from tests.deploy.conftest import DeployCopy
from tests.deploy.mqtt_helpers import SyncClient
from tests.hub_core.helpers import reading, wait_until, write_toml
from tests.servers import Mosquitto, free_port, require_binary

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[2]
SITE_A, DEV_A = "lab", "pi-a"
SITE_B, DEV_B = "barn", "pi-b"
# the hub's client id before this change: public (thermopipe-hub-{hub_id} of deploy's hub.toml)
GUESSABLE_HUB_ID = "thermopipe-hub-hub-1"


def conf_value(name: str) -> int:
    text = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    found = re.search(rf"^{name} (\d+)$", text, re.MULTILINE)
    assert found, f"deploy/mosquitto/mosquitto.conf sets no {name}"
    return int(found.group(1))


class BrokerLog:
    """The broker's log as a file it writes as it goes (its stdout is block-buffered)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self, config: list[str]) -> list[str]:
        return [*config, f"log_dest file {self.path}"]

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""


@pytest.fixture
def broker_log(tmp_path: Path) -> BrokerLog:
    return BrokerLog(tmp_path / "broker.log")


@pytest.fixture
def deploy_server(deploy_copy: DeployCopy, accounts: dict[str, str], broker_log: BrokerLog,
                  mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """deploy/'s broker, started after the accounts were made."""
    return mosquitto_factory(extra_config=broker_log.lines(deploy_copy.broker_config()))


@pytest.fixture
def accounts(deploy_copy: DeployCopy) -> dict[str, str]:
    """Passwords of the hub's accounts and of two devices made by add-device.sh."""
    hub_password = deploy_copy.env()["HUB_MQTT_PASSWORD"]
    passwd = (deploy_copy.root / "mosquitto" / "passwd").read_text()
    out = {line.split(":")[0]: hub_password for line in passwd.splitlines()
           if line.startswith("hub")}
    for site, device in ((SITE_A, DEV_A), (SITE_B, DEV_B)):
        _cfg, out[device] = deploy_copy.add_device(site, device)
    return out


class Queue:
    """A hub-like subscriber: persistent session (clean start off, one hour expiry), QoS 1."""

    def __init__(self, server: Mosquitto, user: str, password: str, client_id: str) -> None:
        self.got: list[bytes] = []
        self.session_present: bool | None = None
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._ready.set()
        self.client.on_message = lambda _c, _u, m: self.got.append(m.payload)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect(server.host, server.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self._ready.wait(10), "no SUBACK"

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        assert not reason.is_failure, reason
        self.session_present = bool(flags.session_present)
        client.subscribe("thermopipe/#", qos=1)

    def close(self) -> None:
        stop_client(self.client)


def _publish_events(server: Mosquitto, device: str, password: str, first: int, n: int) -> None:
    pub = SyncClient(server.host, server.port, device, password)
    assert pub.connect() == 0
    try:
        for i in range(first, first + n):
            # 0x10: no subscriber (the control, once the attack wiped the hub's session)
            assert pub.publish(f"thermopipe/{SITE_A}/{device}/event/tank",
                               str(i).encode()) in (0, 0x10)
    finally:
        pub.close()


@pytest.mark.parametrize("defended", [True, False], ids=["deploy-config", "without-the-option"])
def test_a_device_with_the_hubs_client_id_cannot_wipe_the_hubs_queue(
        deploy_copy: DeployCopy, accounts: dict[str, str],
        mosquitto_factory: Callable[..., Mosquitto], broker_log: BrokerLog,
        defended: bool) -> None:
    mosquitto_sub = require_binary("mosquitto_sub", "/usr/bin/mosquitto_sub")
    config = deploy_copy.broker_config()
    assert "use_username_as_clientid true" in config
    if not defended:
        config = [line for line in config if not line.startswith("use_username_as_clientid")]
    server = mosquitto_factory(extra_config=broker_log.lines(config))
    hub = Queue(server, "hub", accounts["hub"], GUESSABLE_HUB_ID)
    hub.close()  # the hub goes offline; the broker queues for its session
    made = 0
    for _attack in range(3):  # events flow; another device takes the hub's client id between
        _publish_events(server, DEV_A, accounts[DEV_A], made, 40)
        made += 40
        attack = subprocess.run(
            [mosquitto_sub, "-h", server.host, "-p", str(server.port), "-u", DEV_B, "-P",
             accounts[DEV_B], "-i", GUESSABLE_HUB_ID, "-t", "thermopipe/#", "-W", "1"],
            capture_output=True, text=True, timeout=20, check=False)
        assert attack.returncode in (0, 27), attack.stderr  # 27: its -W timeout
    _publish_events(server, DEV_A, accounts[DEV_A], made, 40)
    made += 40
    hub = Queue(server, "hub", accounts["hub"], GUESSABLE_HUB_ID)
    try:
        if defended:
            wait_until(lambda: len(hub.got) >= made, 20, what="the hub's queued events")
        else:
            time.sleep(2)
    finally:
        hub.close()
    received = {int(p) for p in hub.got}
    lost = made - len(received)
    print(f"\n[takeover, {'deploy config' if defended else 'without use_username_as_clientid'}]"
          f" events made {made}, distinct received by the hub {len(received)}, lost {lost}, "
          f"hub session present after the attacks: {hub.session_present}")
    log = broker_log.text()
    if defended:
        assert lost == 0 and received == set(range(made))
        assert hub.session_present is True
        # the attacker's client id was replaced by its username; the hub's id never appears
        assert f"as {DEV_B} (p2, c1" in log
        assert f"as {GUESSABLE_HUB_ID}" not in log
    else:  # the control: the attack works on a broker without the option (issue 12)
        assert hub.session_present is False
        assert lost > 0


def test_the_broker_refuses_publishes_above_its_size_limits(
        deploy_server: Mosquitto, accounts: dict[str, str], broker_log: BrokerLog) -> None:
    limit, packet_limit = conf_value("message_size_limit"), conf_value("max_packet_size")
    # consistent with the hub: room above its payload limit (those reach the hub and become
    # visible dead letters), and a dead letter's own message fits well below it
    assert limit >= 2 * DEFAULT_MAX_PAYLOAD
    assert packet_limit >= limit + 1024  # topic and properties of a payload at the limit
    biggest_dead_letter = DeadRecord.refused(
        "0" * 32, datetime.now(UTC), "t" * 200, b"\xff" * limit,
        reason_code="too_large", reason="x" * 200).to_message().model_dump_json()
    assert len(biggest_dead_letter) < 2 * DEAD_LETTER_KEEP < limit

    server = deploy_server
    hub = SyncClient(server.host, server.port, "hub", accounts["hub"])
    assert hub.connect() == 0
    assert hub.subscribe("thermopipe/#") < 0x80
    topic = f"thermopipe/{SITE_A}/{DEV_A}/event/tank"
    cases: list[tuple[str, MQTTProtocolVersion, int, bool]] = [
        ("between the hub's limit and the broker's", mqtt.MQTTv5, 3 * DEFAULT_MAX_PAYLOAD, True),
        ("over message_size_limit, MQTT 3.1.1", mqtt.MQTTv311, limit + 1, False),
        ("over message_size_limit, MQTT 5", mqtt.MQTTv5, limit + 1, False),
        ("over max_packet_size (10 MB), MQTT 3.1.1", mqtt.MQTTv311, 10 * 1024 * 1024, False),
    ]
    try:
        for i, (what, protocol, size, delivered) in enumerate(cases):
            big = SyncClient(server.host, server.port, DEV_A, accounts[DEV_A], protocol)
            assert big.connect() == 0
            big.client.publish(topic, b"x" * size, qos=1)
            time.sleep(0.5)
            big.close()
            marker = SyncClient(server.host, server.port, DEV_A, accounts[DEV_A])
            assert marker.connect() == 0
            marker_topic = f"thermopipe/{SITE_A}/{DEV_A}/status"
            assert marker.publish(marker_topic, f"marker {i}".encode()) == 0
            marker.close()
            got = [m for m in hub.receive_until(marker_topic) if m.topic == topic]
            sizes = [len(m.payload) for m in got]
            print(f"\n[size limit] {what}: {size} bytes published, delivered: {sizes}")
            assert sizes == ([size] if delivered else []), what
    finally:
        hub.close()
    # (the drop over message_size_limit is logged at debug level only: not in deploy's log)
    assert f"Client {DEV_A} disconnected due to oversize packet" in broker_log.text()


# --- the hub itself on deploy's broker ------------------------------------------------------

def _hub_toml(path: Path, server: Mosquitto, data_dir: Path, http_port: int,
              **mqtt_extra: Any) -> Path:
    """deploy/hub/hub.toml's [mqtt] (account per connection, no client id), on this broker."""
    shipped = (ROOT / "deploy" / "hub" / "hub.toml").read_text()
    assert "account_per_connection = true" in shipped
    return write_toml(path, {
        "hub_id": "hub-1", "data_dir": str(data_dir),
        "mqtt": {"host": server.host, "port": server.port, "username": "hub",
                 "password": "env:HUB_MQTT_PASSWORD", "topic_root": "thermopipe",
                 "account_per_connection": True, **mqtt_extra},
        "storage": {"enabled": False},
        "http": {"host": "127.0.0.1", "port": http_port},
        "homeassistant": {"enabled": True},
        "log": {"format": "json", "level": "info"}})


@contextlib.contextmanager
def _hub_process(config: Path, log: Path, password: str, *args: str) -> Iterator[None]:
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "-c", str(config), *args],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "HUB_MQTT_PASSWORD": password})
    try:
        yield
    finally:
        proc.terminate()
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        assert code == 0, log.read_text()[-3000:]


def _accepted(http_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("thermopipe_hub_events_accepted_total{"))


def test_two_hub_workers_with_their_own_accounts_share_the_load(
        tmp_path: Path, deploy_server: Mosquitto, accounts: dict[str, str],
        broker_log: BrokerLog) -> None:
    server = deploy_server
    port = free_port()
    config = _hub_toml(tmp_path / "hub.toml", server, tmp_path / "hub", port,
                       shared_group="hubs")
    log = tmp_path / "hub.log"
    n = 400
    topics = Topics("thermopipe")
    events = [reading(i, site=SITE_A, device=DEV_A, sensor=f"t{i % 2}") for i in range(1, n + 1)]
    with _hub_process(config, log, accounts["hub"], "--workers", "2"):
        try:
            wait_until(lambda: log.read_text().count("mqtt.connected") >= 2, 30,
                       what="both workers connected")
        except AssertionError as exc:  # say why: the hub's and the broker's own words
            raise AssertionError(f"{exc}\nhub log:\n{log.read_text()[-4000:]}\nbroker log:\n"
                                 f"{broker_log.text()[-3000:]}") from None
        wait_until(lambda: all(f"as hub-w{i}-ha (" in broker_log.text() for i in (0, 1)), 30,
                   what="both workers' Home Assistant connections")
        pub = SyncClient(server.host, server.port, DEV_A, accounts[DEV_A])
        assert pub.connect() == 0
        try:
            for e in events:
                assert pub.publish(topics.for_event(e), encode(e)) == 0
        finally:
            pub.close()
        wait_until(lambda: _accepted(port) + _accepted(port + 1) >= n, 30,
                   what="the events accepted by the workers")
        shares = [_accepted(port), _accepted(port + 1)]
    print(f"\n[workers] events made {n}, accepted per worker {shares}")
    assert sum(shares) == n
    assert all(share >= n // 10 for share in shares), shares
    broker_log = broker_log.text()
    for account in ("hub-w0", "hub-w1", "hub-w0-ha", "hub-w1-ha"):
        assert f"as {account} (p5" in broker_log, account
    assert "already connected" not in broker_log  # no connection took over another's session
    hub_log = log.read_text()
    kept = (tmp_path / "hub" / "client_id").read_text().strip()
    assert kept.startswith("thermopipe-hub-hub-1-")
    assert f'"client_id": "{kept}-w0"' in hub_log and f'"client_id": "{kept}-w1"' in hub_log
    assert "mqtt.client_id_clash" not in hub_log


def test_an_oversized_payload_becomes_a_bounded_dead_letter(
        tmp_path: Path, deploy_server: Mosquitto, accounts: dict[str, str]) -> None:
    server = deploy_server
    port = free_port()
    data_dir = tmp_path / "hub"
    config = _hub_toml(tmp_path / "hub.toml", server, data_dir, port)
    log = tmp_path / "hub.log"
    size = 3 * DEFAULT_MAX_PAYLOAD  # over the hub's limit, under the broker's
    payload = b'{"kind": "reading", "pad": "' + b"z" * (size - 30) + b'"}'
    digest = hashlib.sha256(payload).hexdigest()
    watcher = SyncClient(server.host, server.port, "hub-w3", accounts["hub-w3"])  # a hub account
    assert watcher.connect() == 0
    assert watcher.subscribe("thermopipe/_hub/deadletter") < 0x80
    try:
        with _hub_process(config, log, accounts["hub"]):
            wait_until(lambda: "mqtt.connected" in log.read_text(), 30, what="hub connected")
            dev = SyncClient(server.host, server.port, DEV_A, accounts[DEV_A])
            assert dev.connect() == 0
            assert dev.publish(f"thermopipe/{SITE_A}/{DEV_A}/event/tank", payload) == 0
            dev.close()
            published = watcher.receive_until("thermopipe/_hub/deadletter", timeout=30)[-1]
            # replay is a command to the running hub: it refuses a cut one
            replay = _dlq(tmp_path, accounts["hub"], "replay",
                          DeadLetter.model_validate_json(published.payload).dead_letter_id)
    finally:
        watcher.close()
    message = DeadLetter.model_validate_json(published.payload)
    with sqlite3.connect(data_dir / "hub.sqlite3") as conn:
        rows = conn.execute("SELECT dead_letter_id, length(payload), reason_code, reason "
                            "FROM dead_letters").fetchall()
        row_bytes = conn.execute(  # the row's variable-length columns
            "SELECT length(dead_letter_id) + length(topic) + length(reason_code) + "
            "length(reason) + length(payload) + length(outcome) FROM dead_letters").fetchone()[0]
    print(f"\n[dead letter] payload {len(payload)} bytes: stored row {row_bytes} bytes (payload "
          f"{rows[0][1]}), dead-letter message {len(published.payload)} bytes")
    assert row_bytes < DEAD_LETTER_KEEP + 1024
    assert len(rows) == 1
    dl_id, stored, code, reason = rows[0]
    assert (stored, code) == (DEAD_LETTER_KEEP, "too_large")
    assert message.dead_letter_id == dl_id and message.reason == reason
    assert (message.payload_size, message.payload_sha256) == (len(payload), digest)
    assert len(published.payload) < 2 * DEAD_LETTER_KEEP
    assert '"event": "ingest.dead_lettered"' in log.read_text()

    def dlq(*args: str) -> subprocess.CompletedProcess[str]:
        return _dlq(tmp_path, accounts["hub"], *args)

    listed = dlq("list")
    assert f"({len(payload)} B, truncated)" in listed.stdout, listed
    shown = dlq("show", dl_id)
    assert f"sha256:      {digest}" in shown.stdout, shown
    assert f"size:        {len(payload)} bytes (truncated" in shown.stdout
    assert replay.returncode == 1, replay
    assert replay.stdout.startswith(f"{dl_id}: still refused: not replayable: only the first "
                                    f"{DEAD_LETTER_KEEP} of its {len(payload)} bytes were kept")
    assert "an event cannot be accepted from part of its payload" in replay.stdout


def _dlq(tmp_path: Path, password: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli", "dlq", "-c",
                           str(tmp_path / "hub.toml"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=False,
                          env={**os.environ, "HUB_MQTT_PASSWORD": password})
