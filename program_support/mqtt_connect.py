"""One way to make the paho client of an MQTT connection, for each one of both programs: the
agent's link (``edge_agent/mqtt_link.py``), the hub's ingest (``hub/ingest.py``, which passes its
``BufferedClient`` as the class to build) and the Home Assistant consumer
(``hub/homeassistant/consumer.py``).

From the shared ``[mqtt]`` keys (``program_support/mqtt_settings.py``) it sets:

- the protocol: MQTT 5, or 3.1.1 for an older broker;
- the session: ``persistent`` (the default) asks the broker to keep it across disconnects
  (MQTT 5: ``clean_start=False`` and ``session_expiry_s`` on CONNECT; 3.1.1:
  ``clean_session=False``); otherwise a clean start, for a connection that only publishes;
- the account (``username``, the password read from its secret) and TLS (the context of
  ``program_support/tls_context.py``, made only when ``[mqtt.tls]`` is set: no ``ssl`` otherwise);
- the will, if one is given;
- ``TCP_NODELAY`` on the socket when it opens (``program_support/tcp_latency.py``: a small
  packet never waits up to 40 ms for the ACK of the one before);
- paho's in-flight limit off (each owner bounds what it has in flight), and paho's hook for a
  network loop on a thread of the owner's: a publish from another thread only queues its packet
  and wakes that thread, which writes it (otherwise the publishing thread writes to the socket
  holding paho's message lock, which the loop needs for every acknowledgement: bench/README.md).

paho never reconnects by itself here (``reconnect_on_failure=False``): each owner's loop waits
what ``program_support/reconnect_pacing.py`` says. The settings are read through
:class:`ConnectionSettings`, a Protocol: this module imports no pydantic, so a program whose
settings are plain objects can use it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from program_support.tcp_latency import send_at_once

if TYPE_CHECKING:
    from program_support.tls_context import ClosingContext


class Secret(Protocol):
    """A secret that is not shown when printed (pydantic's ``SecretStr`` is one)."""

    def get_secret_value(self) -> str: ...


class TlsFiles(Protocol):
    """``[mqtt.tls]``."""

    @property
    def ca_file(self) -> Path | None: ...
    @property
    def cert_file(self) -> Path | None: ...
    @property
    def key_file(self) -> Path | None: ...
    @property
    def insecure(self) -> bool: ...


class ConnectionSettings(Protocol):
    """The ``[mqtt]`` keys a connection is made from."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def protocol(self) -> str: ...  # "5" or "3.1.1"
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> Secret | str | None: ...
    @property
    def tls(self) -> TlsFiles | None: ...
    @property
    def keepalive_s(self) -> int: ...
    @property
    def session_expiry_s(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Will:
    """What the broker publishes for us when the connection ends without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


C = TypeVar("C", bound=mqtt.Client)


@dataclass(frozen=True)
class Connection(Generic[C]):
    """A configured paho client and how to connect it (the same CONNECT every time)."""

    client: C
    host: str
    port: int
    keepalive_s: int
    #: the TLS context handed to paho (None without TLS)
    tls: ClosingContext | None = None
    #: ``clean_start`` and the CONNECT properties (MQTT 5 only: 3.1.1 takes neither)
    connect_options: tuple[tuple[str, Any], ...] = ()

    def connect(self) -> None:
        """Open the connection and send CONNECT (blocking: TCP and the TLS handshake); the
        owner's loop reads the CONNACK. Raises ``OSError`` as paho does; the socket of a failed
        TLS handshake is closed (paho leaves it open)."""
        try:
            self.client.connect(self.host, self.port, self.keepalive_s,
                                **dict(self.connect_options))
        except OSError:
            if self.tls is not None:
                self.tls.close_failed()
            raise
        if self.tls is not None:
            self.tls.last_socket = None  # paho owns it now


def build_client(client_class: type[C], settings: ConnectionSettings, client_id: str, *,
                 persistent: bool = True, will: Will | None = None, manual_ack: bool = False,
                 receive_maximum: int | None = None,
                 connect_timeout_s: float | None = None) -> Connection[C]:
    """A ``client_class`` (``paho.mqtt.client.Client`` or a subclass) configured from
    ``settings``; ``receive_maximum`` (MQTT 5) bounds what the broker sends unacknowledged."""
    v5 = settings.protocol == "5"
    client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id,
                          protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                          clean_session=None if v5 else not persistent,
                          manual_ack=manual_ack, reconnect_on_failure=False)
    client.max_inflight_messages_set(0)  # unlimited in paho: each owner bounds its own
    client.on_socket_register_write = _written_by_the_loop_thread
    client.on_socket_open = _send_at_once
    client.loop(timeout=0.0)  # makes paho's wake-up socket pair now (returns "no connection")
    if connect_timeout_s is not None:
        client.connect_timeout = connect_timeout_s
    if settings.username is not None:
        password = settings.password
        client.username_pw_set(settings.username, password if password is None
                               or isinstance(password, str) else password.get_secret_value())
    tls: ClosingContext | None = None
    if settings.tls is not None:
        from program_support.tls_context import client_context  # no ssl without TLS

        t = settings.tls
        tls = client_context(t.ca_file, t.cert_file, t.key_file, t.insecure)
        client.tls_set_context(tls)
        client.tls_insecure_set(t.insecure)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    options: tuple[tuple[str, Any], ...] = ()
    if v5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            props.SessionExpiryInterval = settings.session_expiry_s
        if receive_maximum is not None:
            props.ReceiveMaximum = receive_maximum
        options = (("clean_start", not persistent), ("properties", props))
    return Connection(client, settings.host, settings.port, settings.keepalive_s, tls,
                          options)


def _send_at_once(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho's socket-open hook: ``TCP_NODELAY`` (program_support/tcp_latency.py)."""
    send_at_once(sock)


def _written_by_the_loop_thread(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Nothing to register: the owner's loop thread writes every queued packet."""
