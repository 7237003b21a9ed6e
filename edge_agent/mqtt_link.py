"""The agent's MQTT connection: paho-mqtt 2.x, its own reconnect loop, events to the owner.

What it does:

- MQTT 5 by default (``clean_start=False`` plus a session expiry, so the broker keeps the session
  across a reconnect), MQTT 3.1.1 as an option (``clean_session=False``).
- TLS from a CA file (hostname checked) with an optional client certificate; username/password,
  the password being a secret reference (``env:NAME`` / ``file:/path``) that is never logged.
- A stable client id per device (``thermopipe-<site>-<device>``): two agents with one id would kick
  each other off in a loop, so a "session taken over" disconnect is logged as an error, and so
  are connections that keep dropping right after they are accepted (Mosquitto 2.0 gives no
  reason); those do not restart the backoff, so the pair does not become a reconnect storm.
- A retained *will* on the status topic (``online=false, reason="will"``) set before every
  connect, carrying the session counter (Sparkplug's bdSeq) that increments on every connect.
- Reconnects with exponential backoff and full jitter (``program_support.reconnect_pacing``);
  every failed attempt is logged with its reason, translated into :class:`ServerError` (bad
  credentials vs TLS failure vs unreachable), and kept in :attr:`MqttLink.last_error`.

Threads: the link runs paho's network loop on one thread of its own. paho callbacks run there and
never block: they only hand :data:`LinkEvent` values to ``notify`` (the delivery thread's queue).
``publish`` may be called from any thread (paho queues the packet and wakes its loop). paho's
own in-flight limit is switched off (``max_inflight_messages_set(0)``: a non-zero limit makes
every acknowledgement rescan the queue, see bench/README.md); the delivery loop caps in-flight
messages itself at ``max_inflight``. That thread is the ``mqtt-link`` component of the agent's
supervisor (``program_support.supervision``): if it crashes, the link is marked down (the delivery
loop stops publishing) and the loop starts again after a backoff with a new connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config.mqtt import MqttSettings
from program_support.connect_errors import connect_error
from program_support.mqtt_connect import build_client
from program_support.reconnect_pacing import ReconnectPacing
from program_support.supervision import Supervisor
from schemas import Topics, check_identifier
from schemas.errors import ContractError, DeliveryError, ServerError, ThermopipeError, TopicError
from schemas.plain_messages import KINDS, Receipt
from schemas.plain_runtime import decode

log = structlog.get_logger(__name__)


# -- what the link tells its owner ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Connected:
    """The broker accepted the connection (``session``: its number since start)."""

    session: int
    session_present: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class Acked:
    """The broker's acknowledgements read in one turn of the network loop, in order, as
    ``(mid, ok, reason)`` (``reason`` is ``""`` when ``ok``): one event per turn, not per
    message, so a backlog's thousands of PUBACKs a second wake the delivery thread once a turn."""

    acks: tuple[tuple[int, bool, str], ...]


@dataclass(frozen=True, slots=True)
class Command:
    """A command for this device arrived on its ``cmd/NAME`` topic."""

    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class ReceiptArrived:
    """A hub says it holds the seqs in ``ranges`` of this device and refused (dead-lettered)
    payloads carrying the seqs in ``refused`` (each sorted, disjoint, both ends included, as the
    contract checked them; what they may delete is the delivery policy's decision). ``hub_id``
    is cut to :data:`HUB_ID_LOGGED` characters: it is only logged."""

    hub_id: str
    ranges: tuple[tuple[int, int], ...]
    refused: tuple[tuple[int, int], ...] = ()


#: the longest ``hub_id`` of a receipt the agent keeps (for its logs)
HUB_ID_LOGGED = 64
#: the longest reason logged for a receipt that does not decode (it may quote the payload)
REASON_LOGGED = 300


LinkEvent = Connected | Disconnected | Acked | Command | ReceiptArrived

_CREDENTIAL_CODES = {134, 135, 4, 5}  # v5 bad user name or password / not authorized; v3.1.1 4, 5


def connack_error(reason: ReasonCode | int | str, host: str, port: int) -> ServerError:
    """Translate a refused CONNACK into a :class:`ServerError` that says what to fix."""
    value = reason.value if isinstance(reason, ReasonCode) else reason
    if value in _CREDENTIAL_CODES:
        return ServerError(f"broker {host}:{port} refused the connection: bad credentials "
                           f"({reason}); check mqtt.username and mqtt.password and the ACL")
    return ServerError(f"broker {host}:{port} refused the connection: {reason}")


class MqttLink:
    """One device's connection to the broker. ``notify`` receives every :data:`LinkEvent`."""

    def __init__(self, settings: MqttSettings, site: str, device_id: str, *,
                 notify: Callable[[LinkEvent], None],
                 next_session: Callable[[], int],
                 will_payload: Callable[[int], bytes],
                 supervisor: Supervisor | None = None) -> None:
        self.settings = settings
        self.site = check_identifier(site, "site")
        self.device_id = check_identifier(device_id, "device id")
        self.topics = Topics(settings.topic_root)
        self.status_topic = self.topics.status(site, device_id)
        self.command_filter = self.topics.command_filter(site, device_id)
        self.receipt_topic = self.topics.receipt(site, device_id)
        self.client_id = settings.client_id or f"thermopipe-{site}-{device_id}"
        self._notify = notify
        self._next_session = next_session
        self._will_payload = will_payload
        self._stop = threading.Event()
        self._up = threading.Event()
        self._thread: threading.Thread | None = None
        self.supervisor = supervisor or Supervisor()
        self._connack_error: ServerError | None = None
        self.last_error: ServerError | None = None
        self.session = 0
        self.connects = 0
        self._pacing = ReconnectPacing(settings.reconnect_min_s, settings.reconnect_max_s)
        self.reconnects = 0
        self.connect_failures = 0
        self._acks: list[tuple[int, bool, str]] = []  # this loop turn's PUBACKs (link thread)
        self._connection = build_client(mqtt.Client, settings, self.client_id,
                                        connect_timeout_s=settings.connect_timeout_s)
        self._client = self._connection.client
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._log = log.bind(device=device_id, site=site, client_id=self.client_id,
                             broker=f"{settings.host}:{settings.port}")

    # -- public ---------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def start(self) -> None:
        if self._thread is not None:
            return
        component = self.supervisor.spawn("mqtt-link", self._run, reset=self._reset)
        self._thread = component.thread

    def _reset(self) -> None:
        """Before the loop restarts after a crash: the connection counts as down (the next
        ``connect`` replaces paho's socket)."""
        self._mark_down("the link's loop crashed")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """Queue a QoS-1 publish; returns its message id (acked later through ``notify``).

        While the connection is down paho keeps the message and sends it after the reconnect;
        the delivery loop only publishes while connected, so that queue stays small.
        """
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise DeliveryError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        return int(info.mid)

    def wait_connected(self, timeout: float) -> None:
        """Block until connected; raise the last :class:`ServerError` (or a timeout) if not."""
        if self._up.wait(timeout):
            return
        if self.last_error is not None:
            raise self.last_error
        raise ServerError(f"not connected to {self.settings.host}:{self.settings.port} "
                          f"after {timeout:.0f}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (the broker then does not send the will) and end the thread."""
        self.supervisor.retire("mqtt-link")
        self._stop.set()
        if self._up.is_set():
            self._client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._log.warning("mqtt.stop_timeout", timeout_s=timeout)
            self._thread = None
        self._up.clear()

    # -- the connection loop (own thread) --------------------------------------------------------
    def _run(self) -> None:
        self._reconnect_loop()  # a crash is the supervisor's to log, count and restart

    def _reconnect_loop(self) -> None:
        pacing = self._pacing
        while not self._stop.is_set():
            error = self._connect_once()
            if self._stop.is_set():
                break
            if error is None:
                # The connection was up. One dropped right after it was accepted does not
                # restart the backoff (program_support/reconnect_pacing.py): two agents with one
                # client id throw each other off (Mosquitto 2.0 without "Session taken over").
                flaps = pacing.ended(time.monotonic())
                error = self._connack_error or ServerError("connection lost")
                if pacing.clash and self._connack_error is None:
                    error = ServerError(f"connection dropped {flaps} times in a row right "
                                        f"after it was accepted: another client with client "
                                        f"id {self.client_id!r}?")
                    self._log.error("mqtt.client_id_clash", flaps=flaps, reason=str(error))
            self.last_error = error
            delay = pacing.next_delay(time.monotonic())
            self.connect_failures += 1
            self._log.warning("mqtt.reconnect_wait", attempt=pacing.attempt, reason=str(error),
                              retry_in_s=round(delay, 2))
            self._stop.wait(delay)
        self._close_socket()

    def _connect_once(self) -> ServerError | None:
        """One connect and the connection's lifetime; returns why it failed to connect, or None
        if it was up and then went down."""
        s = self.settings
        try:
            self.session = self._next_session()
        except ThermopipeError as exc:  # the outbox could not store it: still count in memory
            self._log.error("mqtt.session_not_stored", error=str(exc))
            self.session += 1
        self._connack_error = None
        try:
            will = self._will_payload(self.session)
        except (ThermopipeError, ValueError) as exc:
            self._log.error("mqtt.will_failed", error=str(exc))
            will = b""
        self._client.will_set(self.status_topic, will, qos=1, retain=True)
        try:
            self._connection.connect()
        except OSError as exc:
            return connect_error(exc, s.host, s.port, tls=s.tls is not None)
        sent_at = time.monotonic()
        was_up = False
        while True:
            try:
                rc = self._client.loop(timeout=0.5)
            except OSError as exc:  # an ssl or socket error paho let through
                self._log.warning("mqtt.loop_error", error=str(exc))
                rc = MQTTErrorCode.MQTT_ERR_CONN_LOST
            self._hand_over_acks()
            was_up = was_up or self._up.is_set()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if self._stop.is_set() and not self._client.is_connected():
                break
            if not was_up and self._connack_error is None \
                    and time.monotonic() - sent_at > s.connect_timeout_s:
                self._connack_error = ServerError(
                    f"broker {s.host}:{s.port} sent no CONNACK within {s.connect_timeout_s}s")
                break
        self._mark_down(f"loop ended: {mqtt.error_string(rc)}")
        if was_up:
            return None
        return self._connack_error or ServerError(
            f"broker {s.host}:{s.port}: connection closed before CONNACK "
            f"({mqtt.error_string(rc)})")

    def _close_socket(self) -> None:
        sock = self._client.socket()
        if sock is not None:
            try:
                self._client.disconnect()
                self._client.loop(timeout=0.1)
            except OSError as exc:
                self._log.debug("mqtt.close_error", error=str(exc))
            self._hand_over_acks()
            sock = self._client.socket()
            if sock is not None:
                sock.close()

    def _hand_over_acks(self) -> None:
        if self._acks:
            acks, self._acks = self._acks, []
            self._notify(Acked(tuple(acks)))

    def _mark_down(self, reason: str) -> None:
        self._hand_over_acks()  # what was acknowledged before the connection went down first
        if self._up.is_set():
            self._up.clear()
            self._notify(Disconnected(reason))

    # -- paho callbacks: run on the link thread, never block ------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            self._connack_error = connack_error(reason_code, self.settings.host,
                                                self.settings.port)
            return
        self.connects += 1
        self._pacing.accepted(time.monotonic())
        if self.connects > 1:
            self.reconnects += 1
        self.last_error = None
        client.subscribe([(self.command_filter, 1), (self.receipt_topic, 1)])
        self._up.set()
        self._log.info("mqtt.connected", session=self.session,
                       session_present=bool(flags.session_present),
                       protocol=self.settings.protocol)
        self._notify(Connected(self.session, bool(flags.session_present)))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any,
                       flags: mqtt.DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        reason = str(reason_code)
        if reason_code.value == 142:  # session taken over
            self._log.error("mqtt.client_id_clash",
                            reason="another client connected with this client id")
        elif self._up.is_set() and not self._stop.is_set():
            self._log.warning("mqtt.disconnected", reason=reason)
        self._mark_down(reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        failed = reason_code.is_failure
        self._acks.append((mid, not failed, str(reason_code) if failed else ""))

    def _on_message(self, client: mqtt.Client, userdata: Any,
                    message: mqtt.MQTTMessage) -> None:
        try:
            topic = self.topics.parse(message.topic)
        except TopicError as exc:
            self._log.warning("mqtt.bad_command_topic", topic=message.topic, reason=str(exc))
            return
        if topic.kind == "cmd" and topic.command is not None:
            self._notify(Command(topic.command, bytes(message.payload)))
        elif topic.kind == "receipt":
            self._on_receipt(bytes(message.payload))

    def _on_receipt(self, payload: bytes) -> None:
        try:
            receipt = decode(payload, KINDS)
            if not isinstance(receipt, Receipt):
                raise ContractError(f"a {receipt.kind!r} message on the receipt topic")
            if (receipt.site, receipt.device_id) != (self.site, self.device_id):
                raise ContractError(f"a receipt for {receipt.site}/{receipt.device_id}")
        except ContractError as exc:
            # a bad receipt is ignored: what it would have covered is sent again after the
            # receipt timeout
            self._log.warning("mqtt.bad_receipt", topic=self.receipt_topic,
                              reason=str(exc)[:REASON_LOGGED])
            return
        self._notify(ReceiptArrived(receipt.hub_id[:HUB_ID_LOGGED],
                                    tuple((r.first, r.last) for r in receipt.ranges),
                                    tuple((r.first, r.last) for r in receipt.refused)))
