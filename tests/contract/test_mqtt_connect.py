"""The one builder of every MQTT connection (program_support/mqtt_connect.py), against private
Mosquitto brokers: plain and TLS, with and without an account, the will, the session options.

The settings are a plain frozen dataclass here, not the pydantic model: the builder reads them
through a Protocol, so a program without pydantic can use it."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness.mqtt_clients import stop_client
from hub.mqtt_client import BufferedClient
from program_support.mqtt_connect import Connection, Will, build_client
from program_support.mqtt_settings import MqttConnection, TlsSettings
from schemas.errors import ServerError
from tests.e2e.tls import TlsBroker, make_tls_broker
from tests.servers import Mosquitto

pytestmark = pytest.mark.servers  # the tests below "no broker" need one

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Tls:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 1
    protocol: str = "5"
    username: str | None = None
    password: str | None = None
    tls: Tls | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 600


@dataclass
class Outcome:
    """What the broker said to one connect: the CONNACK's reason and session-present flag."""

    reason: Any = None
    session_present: bool = False


def connect(connection: Connection[Any], timeout: float = 10.0) -> Outcome:
    """Connect, turn paho's loop until the CONNACK (or the end of the connection)."""
    outcome = Outcome()
    answered = threading.Event()

    def on_connect(_c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        outcome.reason, outcome.session_present = reason, bool(flags.session_present)
        answered.set()

    connection.client.on_connect = on_connect
    connection.connect()
    deadline = time.monotonic() + timeout
    while not answered.is_set() and time.monotonic() < deadline:
        if connection.client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
            break
    assert answered.is_set(), "no CONNACK"
    return outcome


def close(connection: Connection[Any]) -> None:
    connection.client.disconnect()
    for _ in range(5):
        if connection.client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
            break


# -- no broker ----------------------------------------------------------------------------------
def test_mqtt5_persistent_session_asks_the_broker_to_keep_it() -> None:
    built = build_client(mqtt.Client, Settings(session_expiry_s=1234), "c1",
                         receive_maximum=77)
    options = dict(built.connect_options)
    assert options["clean_start"] is False
    assert options["properties"].SessionExpiryInterval == 1234
    assert options["properties"].ReceiveMaximum == 77
    assert built.tls is None
    assert (built.host, built.port, built.keepalive_s) == ("127.0.0.1", 1, 30)


def test_a_connection_that_only_publishes_starts_clean_and_keeps_no_session() -> None:
    options = dict(build_client(mqtt.Client, Settings(), "c1", persistent=False).connect_options)
    assert options["clean_start"] is True
    assert not hasattr(options["properties"], "SessionExpiryInterval")


def test_mqtt311_takes_no_clean_start_nor_properties() -> None:
    # paho refuses clean_start for 3.1.1: the session is the constructor's clean_session
    assert build_client(mqtt.Client, Settings(protocol="3.1.1"), "c1").connect_options == ()


def test_the_class_to_build_is_the_callers() -> None:
    class Mine(mqtt.Client):
        pass

    assert type(build_client(Mine, Settings(), "c1").client) is Mine


def test_an_unusable_tls_file_is_a_server_error_that_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(ServerError, match="missing-ca.pem"):
        build_client(mqtt.Client, Settings(tls=Tls(ca_file=missing)), "c1")


def test_the_builder_imports_neither_pydantic_nor_ssl_without_tls() -> None:
    code = ("import sys; import program_support.mqtt_connect as m; import paho.mqtt.client as c\n"
            "m.build_client(c.Client, type('S', (), dict(host='h', port=1, protocol='5',\n"
            "    username=None, password=None, tls=None, keepalive_s=30,\n"
            "    session_expiry_s=0))(), 'x')\n"
            "print(sorted(n for n in ('pydantic', 'program_support.tls_context')\n"
            "             if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


# -- a plain broker -----------------------------------------------------------------------------
def test_plain_connection_keeps_its_session_across_a_reconnect(mosquitto: Mosquitto) -> None:
    settings = Settings(port=mosquitto.port)
    client_id = f"b-{uuid.uuid4().hex[:8]}"
    first = build_client(mqtt.Client, settings, client_id)
    assert connect(first).reason.is_failure is False
    close(first)
    again = build_client(mqtt.Client, settings, client_id)
    assert connect(again).session_present  # clean_start=False and a session expiry
    close(again)
    clean = build_client(mqtt.Client, settings, client_id, persistent=False)
    assert not connect(clean).session_present
    close(clean)


def _no_delay(sock: Any) -> int:
    inner = getattr(sock, "_sock", sock)  # the hub's BufferedSocket wraps the real one
    return int(inner.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@pytest.mark.parametrize("client_class", [mqtt.Client, BufferedClient])
def test_every_connection_sends_its_packets_at_once(mosquitto: Mosquitto,
                                                    client_class: type[mqtt.Client]) -> None:
    """TCP_NODELAY on each connection's socket (program_support/tcp_latency.py: without it a
    small packet waits up to 40 ms for the ACK of the previous one; paho never sets it)."""
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"n-{uuid.uuid4().hex[:8]}")
    plain.connect(mosquitto.host, mosquitto.port)
    assert _no_delay(plain.socket()) == 0  # what this test would see without the builder's hook
    plain.disconnect()
    built = build_client(client_class, Settings(port=mosquitto.port), f"n-{uuid.uuid4().hex[:8]}")
    assert not connect(built).reason.is_failure
    assert _no_delay(built.client.socket()) == 1
    close(built)


def test_mqtt311_persistent_session(mosquitto: Mosquitto) -> None:
    settings = Settings(port=mosquitto.port, protocol="3.1.1")
    client_id = f"b-{uuid.uuid4().hex[:8]}"
    close_after(build_client(mqtt.Client, settings, client_id), lambda o: not o.session_present)
    close_after(build_client(mqtt.Client, settings, client_id), lambda o: o.session_present)


def close_after(connection: Connection[Any], check: Callable[[Outcome], bool]) -> None:
    outcome = connect(connection)
    close(connection)
    assert not outcome.reason.is_failure and check(outcome)


def test_the_will_is_published_when_the_connection_dies(mosquitto: Mosquitto,
                                                        topic_root: str) -> None:
    topic = f"{topic_root}/will"
    got: list[tuple[bytes, bool]] = []
    arrived = threading.Event()
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        got.append((bytes(msg.payload), bool(msg.retain)))
        arrived.set()

    subscribed = threading.Event()
    watcher.on_message = on_message
    watcher.on_subscribe = lambda *_a: subscribed.set()
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe(topic, qos=1)
    watcher.loop_start()
    try:
        assert subscribed.wait(10)
        built = build_client(mqtt.Client, Settings(port=mosquitto.port),
                             f"w-{uuid.uuid4().hex[:8]}", persistent=False,
                             will=Will(topic, b"gone", retain=False))
        connect(built)
        sock = built.client.socket()
        assert sock is not None
        sock.close()  # no DISCONNECT: the broker publishes the will
        assert arrived.wait(10), "no will"
        assert got == [(b"gone", False)]
    finally:
        stop_client(watcher)


# -- a TLS broker with accounts -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.servers import start_server

    started: list[Mosquitto] = []

    def factory(**kwargs: Any) -> Mosquitto:
        server = start_server(Mosquitto, tmp_path_factory.mktemp("tls-mosquitto"), **kwargs)
        started.append(server)  # type: ignore[arg-type]
        return server  # type: ignore[return-value]

    yield make_tls_broker(factory, tmp_path_factory.mktemp("tls"), {"dev": "right-password"})
    for server in started:
        server.stop()


def test_tls_with_credentials_connects(tls_broker: TlsBroker) -> None:
    settings = Settings(port=tls_broker.tls_port, username="dev", password="right-password",
                        tls=Tls(ca_file=tls_broker.ca_file))
    built = build_client(mqtt.Client, settings, f"t-{uuid.uuid4().hex[:8]}")
    assert built.tls is not None
    assert not connect(built).reason.is_failure
    assert _no_delay(built.client.socket()) == 1
    close(built)


def test_the_pydantic_settings_fit_the_builder(tls_broker: TlsBroker,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THERMOPIPE_TEST_MQTT_PASSWORD", "right-password")
    settings = MqttConnection(host="127.0.0.1", port=tls_broker.tls_port, username="dev",
                              password="env:THERMOPIPE_TEST_MQTT_PASSWORD",
                              tls=TlsSettings(ca_file=tls_broker.ca_file))
    built = build_client(mqtt.Client, settings, f"t-{uuid.uuid4().hex[:8]}")
    assert not connect(built).reason.is_failure
    close(built)


def test_wrong_password_is_refused_in_the_connack(tls_broker: TlsBroker) -> None:
    settings = Settings(port=tls_broker.tls_port, username="dev", password="wrong",
                        tls=Tls(ca_file=tls_broker.ca_file))
    assert connect(build_client(mqtt.Client, settings, "t-wrong")).reason.is_failure


def test_a_ca_that_did_not_sign_the_broker_fails_the_handshake_and_closes_it(
        tls_broker: TlsBroker) -> None:
    settings = Settings(port=tls_broker.tls_port, username="dev", password="right-password",
                        tls=Tls(ca_file=tls_broker.wrong_ca_file))
    built = build_client(mqtt.Client, settings, "t-wrong-ca")
    with pytest.raises(OSError):
        built.connect()
    assert built.tls is not None and built.tls.last_socket is None  # closed, not leaked


def test_insecure_tls_accepts_a_broker_no_ca_vouches_for(tls_broker: TlsBroker) -> None:
    settings = Settings(port=tls_broker.tls_port, username="dev", password="right-password",
                        tls=Tls(ca_file=tls_broker.wrong_ca_file, insecure=True))
    built = build_client(mqtt.Client, settings, f"t-{uuid.uuid4().hex[:8]}")
    assert not connect(built).reason.is_failure
    close(built)
