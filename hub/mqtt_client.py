"""paho's client with a read buffer and batched acknowledgements: the hub's receive path.

Stock paho 2.x reads every packet with three or more ``recv`` calls (one byte of command, one per
byte of length, then the body), runs ``select`` once per packet, and writes every PUBACK with its
own wake-up of the network thread and its own ``send``. At the hub's message rates that is most
of the cost of receiving (measured in bench/README.md: a bare stock subscriber drains about half
as fast as the same subscriber with this read path). Here:

- the socket is wrapped in ``BufferedSocket``, which reads up to 64 KiB per ``recv`` and hands
  paho its small reads from that buffer; ``pending()`` tells paho's loop that buffered bytes are
  waiting (paho asks every socket-like object that, as it does for TLS), so nothing waits on a
  ``select`` for bytes already read;
- ``loop_read`` parses up to ``PACKETS_PER_READ`` packets per call instead of one, and takes
  the whole plain PUBLISH packets already in the buffer straight from it
  (``_read_buffered_publishes``: header, remaining length and body sliced out, no byte-by-byte
  ``recv`` and no ``_in_packet`` bookkeeping; 4.6 -> 2.0 us a message); anything else (another
  packet type, QoS 2, properties, a packet split across reads, a malformed one) goes through
  paho's own ``_packet_read``;
- a PUBLISH without MQTT 5 properties (what Mosquitto and EMQX forward from the agents) is
  decoded by ``_handle_publish`` here: stock paho builds and clears an MQTT 5 ``Properties``
  object, a ``threading.Condition`` for an ``MQTTMessageInfo`` and a topic-filter match for every
  message, which together cost more than everything else the hub does with it. Any other packet
  (properties present, QoS 2, callbacks added with ``message_callback_add``) takes paho's own path;
  a test decodes random packets both ways and compares them;
- after each ``recv`` from the socket, ``BufferedSocket`` asks the kernel to ACK at once
  (``TCP_QUICKACK``, program_support/tcp_latency.py): a broker with Nagle's algorithm on (stock
  Mosquitto) otherwise holds the next event up to 40 ms behind our delayed ACK;
- ``ack_many`` queues the PUBACKs of a whole batch as one write;
- ``on_plain_message``, when set, takes such a PUBLISH as ``(topic, payload, mid, qos)``
  without the ``MQTTMessage`` made for ``on_message`` (the hub's ingest: one object fewer per
  message); messages that take paho's path still go to ``on_message``. With manual acks,
  ``on_plain_batch`` takes the buffered read path's messages as a list of those tuples, up to
  ``HANDOFF_MAX`` per call (one call, one lock, one clock reading for them all); the others
  still go to ``on_plain_message``.

Only paho's hooks for a socket-like transport and packet handling are used; ``HOOKS`` lists them,
and tests/hub_core/test_mqtt_client_contract.py checks each private member's kind and signature,
the ``MQTTMessage`` slots and the buffered read path against every paho release the pin allows
(it needs 2.2: 2.1 has no ``paho.mqtt.exception``). MQTT semantics are unchanged: the same
packets, the same order, the same acknowledgements. What differs from stock paho on the fast path:
``message.properties`` is None when the PUBLISH carried no properties, ``message.info`` is None
(it is for outgoing messages), and paho logs no per-message debug line.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

from program_support.tcp_latency import ack_at_once
from schemas.errors import DeliveryError

READ_SIZE = 65536
PACKETS_PER_READ = 1000  # then paho's loop gets a turn (writes, keepalive) before reading on
HANDOFF_MAX = 100  # messages per on_plain_batch call
HOOKS = ("_create_socket", "_packet_read", "_loop_rc_handle", "_packet_queue", "_handle_publish",
         "_in_packet", "_in_callback_mutex", "_manual_ack", "_protocol", "_transport",
         "_msgtime_mutex", "_last_bytes_received")


class BufferedSocket:
    """A socket-like object for paho that reads in large chunks and serves small reads."""

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        buf: bytes = self._buf
        pos = self._pos
        if pos >= len(buf):
            # raises BlockingIOError / ssl.SSLWantReadError as the socket would: paho handles them
            buf = self._sock.recv(max(size, READ_SIZE))
            if not buf:
                return b""  # the connection was closed
            ack_at_once(self._sock)
            self._buf, pos = buf, 0
        end = pos + size
        self._pos = end
        return buf[pos:end]

    def setsockopt(self, level: int, option: int, value: int) -> None:
        """The socket's own (``program_support/mqtt_connect.py`` sets ``TCP_NODELAY``)."""
        self._sock.setsockopt(level, option, value)

    def pending(self) -> int:
        """Bytes readable without touching the socket (ours, else a TLS socket's own)."""
        left = len(self._buf) - self._pos
        if left > 0:
            return left
        inner = getattr(self._sock, "pending", None)
        return int(inner()) if inner is not None else 0

    def send(self, data: bytes | bytearray) -> int:
        return int(self._sock.send(data))

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)


class _DeliverFailed(Exception):
    """A PUBACK of the buffered read path could not be queued: paho's loop handles ``rc``."""

    def __init__(self, rc: MQTTErrorCode) -> None:
        super().__init__(rc)
        self.rc = rc


class BufferedClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with the buffered read path, lean PUBLISH decoding and
    ``ack_many``."""

    _filtered_callbacks = False  # message_callback_add used: paho matches topics itself
    #: ``(topic, payload, mid, qos)`` of a plain QoS 0/1 PUBLISH, instead of ``on_message``
    on_plain_message: Callable[[str, bytes, int, int], None] | None = None
    #: with manual acks, the plain PUBLISH packets the buffered read path takes, up to
    #: ``HANDOFF_MAX`` at a time, as a list of those tuples (one call, not one per message)
    on_plain_batch: Callable[[list[tuple[str, bytes, int, int]]], None] | None = None

    def message_callback_add(self, sub: str, callback: Any) -> None:
        self._filtered_callbacks = True
        super().message_callback_add(sub, callback)

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if qos == 2 or self._filtered_callbacks:
            return super()._handle_publish()
        fields = decode_plain_fields(header, self._in_packet["packet"],
                                     self._protocol == mqtt.MQTTv5)
        if fields is None:  # it has properties: paho decodes those
            return super()._handle_publish()
        return self._deliver(header, *fields)

    def _deliver(self, header: int, topic: bytes, mid: int, payload: bytes) -> MQTTErrorCode:
        """A plain QoS 0/1 PUBLISH to ``on_plain_message`` (else ``on_message``), as paho's
        ``_handle_publish`` hands a message over; the PUBACK unless acks are manual."""
        qos = (header & 0x06) >> 1
        plain = self.on_plain_message
        on_message = self.on_message
        if plain is not None or on_message is not None:
            with self._in_callback_mutex:
                try:
                    if plain is not None:
                        plain(topic.decode(), payload, mid, qos)
                    elif on_message is not None:
                        on_message(self, self._userdata, _message(header, topic, mid, payload))
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                    if not self.suppress_exceptions:
                        raise
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _read_buffered_publishes(self, sock: BufferedSocket, limit: int) -> int:
        """Hand over the whole plain QoS 0/1 PUBLISH packets already in ``sock``'s buffer (at
        most ``limit``), without paho's byte-by-byte reads; return how many. It stops, leaving
        the rest to paho's ``_packet_read``, at anything else: another packet type, QoS 2,
        properties, a packet not yet wholly buffered, a malformed one (paho then reports it).
        Called only between packets (paho holds no partial packet)."""
        if self._filtered_callbacks:
            return 0
        buf = sock._buf
        pos = sock._pos
        end = len(buf)
        mqtt5 = self._protocol == mqtt.MQTTv5
        batch = self.on_plain_batch if self._manual_ack else None
        if batch is not None:
            limit = min(limit, HANDOFF_MAX)
        taken: list[tuple[str, bytes, int, int]] = []
        done = 0
        while done < limit and pos + 2 <= end:
            header = buf[pos]
            if header & 0xF0 != mqtt.PUBLISH or header & 0x06 > 0x02:  # not PUBLISH QoS 0/1
                break
            length = 0
            shift = 0
            i = pos + 1
            while True:  # the remaining length: at most 4 bytes of 7 bits
                if i >= end or shift > 21:
                    length = -1  # not wholly buffered yet, or too long: paho reads it
                    break
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if length < 0 or i + length > end:
                break
            try:
                fields = decode_plain_fields(header, buf[i:i + length], mqtt5)
            except MalformedPacket:
                break  # paho reads it again and reports it
            if fields is None:  # properties: paho decodes those
                break
            pos = i + length
            sock._pos = pos  # consumed before the hand-over, as paho's read would have
            done += 1
            if batch is not None:
                taken.append((fields[0].decode(), fields[2], fields[1], (header & 0x06) >> 1))
                continue
            rc = self._deliver(header, *fields)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise _DeliverFailed(rc)
        if taken and batch is not None:
            with self._in_callback_mutex:
                try:
                    batch(taken)
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                    if not self.suppress_exceptions:
                        raise
        if done:
            with self._msgtime_mutex:  # the keepalive's view, as paho's read keeps it
                self._last_bytes_received = mqtt.time_func()
        return done

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if self._transport == "websockets":  # paho's own wrapper frames the stream itself
            return sock
        return BufferedSocket(sock)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        budget = PACKETS_PER_READ
        while budget > 0:
            sock = self._sock
            if sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            if type(sock) is BufferedSocket and self._in_packet["command"] == 0:
                try:
                    taken = self._read_buffered_publishes(sock, budget)
                except _DeliverFailed as failed:
                    return self._loop_rc_handle(failed.rc)
                if taken:
                    budget -= taken
                    continue
            budget -= 1
            rc = self._packet_read()
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break  # the socket is empty (and so is our buffer)
            if rc > 0:
                return self._loop_rc_handle(rc)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge QoS-1 messages (manual ack) with one queued write for all of them."""
        packet = puback_packets(mids)
        if packet:
            self._packet_queue(mqtt.PUBACK, packet, 0, 0)


def puback_packets(mids: Iterable[int]) -> bytes:
    """``PUBACK`` packets for ``mids``, one after the other: ``40 02 <mid, 2 bytes big-endian>``
    each (the same bytes in MQTT 3.1.1 and 5: reason 0 may be omitted). Laid out with array
    slices rather than one ``struct.pack`` per message (a batch is up to 1,000)."""
    ids = array("H", mids)  # OverflowError for a mid outside 0..65535, as struct would
    if sys.byteorder == "little":
        ids.byteswap()
    raw = ids.tobytes()
    out = bytearray(4 * len(ids))
    out[0::4] = bytes([mqtt.PUBACK]) * len(ids)
    out[1::4] = b"\x02" * len(ids)
    out[2::4] = raw[0::2]
    out[3::4] = raw[1::2]
    return bytes(out)


def decode_plain_publish(header: int, packet: bytes | bytearray,
                         mqtt5: bool) -> mqtt.MQTTMessage | None:
    """Decode a QoS 0/1 PUBLISH body without MQTT 5 properties (None if it has some).

    Raises paho's ``MalformedPacket`` where paho's own decoder would."""
    fields = decode_plain_fields(header, packet, mqtt5)
    return None if fields is None else _message(header, *fields)


def decode_plain_fields(header: int, packet: bytes | bytearray,
                        mqtt5: bool) -> tuple[bytes, int, bytes] | None:
    """``(topic, mid, payload)`` of a QoS 0/1 PUBLISH body without MQTT 5 properties (None if it
    has some); raises paho's ``MalformedPacket`` where paho's own decoder would."""
    try:
        topic_len = (packet[0] << 8) | packet[1]
        pos = 2 + topic_len
        if pos > len(packet):
            raise MalformedPacket("topic longer than the packet")
        topic = bytes(packet[2:pos])
        qos = (header & 0x06) >> 1
        mid = 0
        if qos:
            mid = (packet[pos] << 8) | packet[pos + 1]
            pos += 2
        if mqtt5:
            if packet[pos] != 0:  # a property length other than zero
                return None
            pos += 1
        elif not topic:
            raise MalformedPacket("topic can't be empty in MQTTv3")
    except IndexError as exc:
        raise MalformedPacket(str(exc)) from exc
    return topic, mid, bytes(packet[pos:])


def _message(header: int, topic: bytes, mid: int, payload: bytes) -> mqtt.MQTTMessage:
    message = mqtt.MQTTMessage.__new__(mqtt.MQTTMessage)
    message._topic = topic
    message.mid = mid
    message.qos = (header & 0x06) >> 1
    message.dup = bool(header & 0x08)
    message.retain = bool(header & 0x01)
    message.payload = payload
    message.properties = None
    message.info = None  # type: ignore[assignment]  # only outgoing messages have one
    message.state = mqtt.mqtt_ms_invalid
    message.timestamp = mqtt.time_func()
    return message


def wait_acked(info: mqtt.MQTTMessageInfo, topic: str, timeout_s: float) -> None:
    """Wait for a QoS 1 publish's acknowledgement; :class:`DeliveryError` if none came."""
    try:
        info.wait_for_publish(timeout_s)
    except (RuntimeError, ValueError) as exc:
        raise DeliveryError(f"publish on {topic} failed: {exc}") from None
    if not info.is_published():
        raise DeliveryError(f"no acknowledgement for {topic} within {timeout_s:.0f} s")
