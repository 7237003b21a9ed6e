"""The hub's paho client (hub/mqtt_client.py): the lean PUBLISH decoder against paho's own, the
read buffer, and the whole client against a private Mosquitto (MQTT 5 and 3.1.1, messages with
and without properties, one larger than the read buffer, batched acks in a persistent session)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.harness.mqtt_clients import stop_client
from hub.mqtt_client import (
    HOOKS,
    READ_SIZE,
    BufferedClient,
    BufferedSocket,
    decode_plain_publish,
    puback_packets,
)
from tests.servers import Mosquitto


def test_the_installed_paho_still_has_the_hooks_the_client_uses() -> None:
    client = BufferedClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    missing = [name for name in HOOKS if not hasattr(client, name)]
    assert not missing, f"paho {mqtt.__name__} changed: {missing}"


def _publish_body(topic: bytes, qos: int, mid: int, payload: bytes, mqtt5: bool,
                  props: bytes) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    if mqtt5:
        body += bytes([len(props)]) + props  # property lengths < 128 here: one byte
    return body + payload


_user_property = st.builds(
    lambda k, v: b"\x26" + struct.pack("!H", len(k)) + k + struct.pack("!H", len(v)) + v,
    st.binary(min_size=1, max_size=8).map(lambda b: b.hex().encode()[:8]),
    # no NUL: MQTT forbids it in a UTF-8 string, and paho's decoder rightly refuses it
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8).map(str.encode))


# codec="utf-8": a bare st.text() may draw surrogates, which no MQTT client can send
@given(topic=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).map(str.encode),
       qos=st.sampled_from([0, 1]), mid=st.integers(1, 65535), payload=st.binary(max_size=300),
       mqtt5=st.booleans(),
       props=st.one_of(st.just(b""), _user_property), dup=st.booleans(), retain=st.booleans())
def test_the_lean_decoder_agrees_with_paho_on_every_publish(
        topic: bytes, qos: int, mid: int, payload: bytes, mqtt5: bool, props: bytes, dup: bool,
        retain: bool) -> None:
    header = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = bytearray(_publish_body(topic, qos, mid, payload, mqtt5, props))
    protocol = MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311
    expected = _packet.decode_publish(header, body, protocol)
    ours = decode_plain_publish(header, body, mqtt5)
    if mqtt5 and props:
        assert ours is None  # properties: paho's own path decodes them
        return
    assert ours is not None
    assert (ours.topic, ours.qos, ours.mid, ours.dup, ours.retain, ours.payload) == (
        expected.topic.decode(), expected.qos, expected.mid, expected.dup, expected.retain,
        expected.payload)
    assert isinstance(ours.payload, bytes)


@given(topic=st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).map(str.encode),
       qos=st.sampled_from([0, 1]),
       payload=st.binary(max_size=20), mqtt5=st.booleans(), cut=st.integers(0, 60))
def test_a_truncated_publish_is_malformed_or_read_as_paho_reads_it(
        topic: bytes, qos: int, payload: bytes, mqtt5: bool, cut: int) -> None:
    header = 0x30 | (qos << 1)
    body = bytearray(_publish_body(topic, qos, 7, payload, mqtt5, b""))[:cut]
    protocol = MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311
    try:
        expected = _packet.decode_publish(header, body, protocol)
    except MalformedPacket:
        expected = None
    try:
        ours = decode_plain_publish(header, body, mqtt5)
    except MalformedPacket:
        ours = None
    if expected is None or ours is None:
        # a packet only one decoder accepts must be one paho reads as properties (its own path)
        assert ours is None
        return
    assert (ours.topic.encode(), ours.mid, ours.payload) == (
        expected.topic, expected.mid, expected.payload)


def test_the_buffered_socket_serves_small_reads_across_chunks() -> None:
    left, right = socket.socketpair()
    try:
        data = bytes(range(256)) * 600  # 153,600 bytes: more than two read chunks
        sender = threading.Thread(target=left.sendall, args=(data,))
        sender.start()
        wrapped = BufferedSocket(right)
        got = bytearray()
        sizes = [1, 1, 3, 1000, 70_000, 2]
        i = 0
        while len(got) < len(data):
            part = wrapped.recv(sizes[i % len(sizes)])
            assert 0 < len(part) <= max(sizes[i % len(sizes)], 1)
            got += part
            i += 1
        sender.join()
        assert bytes(got) == data
        assert wrapped.pending() == 0
        left.sendall(b"abc")
        assert wrapped.recv(1) == b"a"
        assert wrapped.pending() == 2  # paho's loop reads these without waiting on select
        left.close()
        assert wrapped.recv(5) == b"bc"
        assert wrapped.recv(5) == b""  # closed
    finally:
        right.close()


class _RecordingSocket:
    """A socket that serves ``chunks`` and notes every ``setsockopt``."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.options: list[tuple[int, int, int]] = []
        self.reads = 0

    def recv(self, _size: int) -> bytes:
        self.reads += 1
        return self.chunks.pop(0)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux only")
def test_the_buffered_socket_acks_each_read_at_once() -> None:
    """After each read from the socket, not after each small read from the buffer, and not
    after the end of the connection: the kernel is asked for a quick ACK (a broker with
    Nagle's algorithm on otherwise holds its next packet to us for our delayed ACK;
    bench/latency_bench.py measures what it saves)."""
    quick = (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    sock = _RecordingSocket([b"abcdef", b"gh", b""])
    wrapped = BufferedSocket(sock)
    assert wrapped.recv(2) == b"ab"
    assert sock.options == [quick]
    assert wrapped.recv(4) == b"cdef"   # from the buffer: no read, nothing asked
    assert sock.options == [quick]
    assert wrapped.recv(5) == b"gh"
    assert sock.options == [quick, quick]
    assert wrapped.recv(5) == b""       # closed: nothing to ACK
    assert sock.options == [quick, quick] and sock.reads == 3


@given(mids=st.lists(st.integers(0, 65535), max_size=1200))
def test_batched_pubacks_are_the_packets_one_by_one(mids: list[int]) -> None:
    assert puback_packets(mids) == b"".join(struct.pack("!BBH", 0x40, 2, m) for m in mids)


class _Wire:
    """The broker's end of the socket, handing the stream over in the given chunk sizes."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.pos, self.turn = data, sizes, 0, 0

    def recv(self, size: int) -> bytes:
        if self.pos >= len(self.data):
            raise BlockingIOError
        chunk = min(size, self.sizes[self.turn % len(self.sizes)])
        self.turn += 1
        out = self.data[self.pos:self.pos + chunk]
        self.pos += len(out)
        return out

    def pending(self) -> int:
        return 0

    def setsockopt(self, *_option: int) -> None:
        """The quick ACK asked for after each read: nothing to do on a wire in memory."""

    def close(self) -> None:
        pass


def _framed(header: int, body: bytes) -> bytes:
    size, length = len(body), bytearray()
    while True:
        size, digit = divmod(size, 128)
        length.append(digit | (0x80 if size else 0))
        if not size:
            return bytes([header]) + bytes(length) + body


_stream_item = st.tuples(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30),
    st.sampled_from([0, 1]), st.integers(1, 65535), st.binary(max_size=400),
    st.sampled_from([b"", b"", b"", b"\x26\x00\x01k\x00\x01v"]),  # now and then a property
    st.sampled_from(["publish", "publish", "publish", "publish", "pingresp"]))


@given(items=st.lists(_stream_item, min_size=1, max_size=40),
       sizes=st.lists(st.integers(1, 2000), min_size=1, max_size=5),
       batched=st.booleans(), mqtt5=st.booleans())
def test_the_buffered_read_path_hands_over_every_message_in_order(
        items: list[tuple[str, int, int, bytes, bytes, str]], sizes: list[int], batched: bool,
        mqtt5: bool) -> None:
    """Whole packets taken straight from the read buffer, packets split across reads, packets
    with properties and other packet types (paho's own path) in one stream: every message comes
    out once, in order, through on_plain_batch (manual acks) or on_plain_message."""
    stream = bytearray()
    expected: list[tuple[str, bytes, int, int]] = []
    for topic, qos, mid, payload, props, what in items:
        if what == "pingresp":
            stream += b"\xd0\x00"
            continue
        stream += _framed(0x30 | (qos << 1), _publish_body(
            topic.encode(), qos, mid, payload, mqtt5, props if mqtt5 else b""))
        expected.append((topic, payload, mid if qos else 0, qos))
    client = BufferedClient(CallbackAPIVersion.VERSION2,
                            protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311,
                            manual_ack=batched)
    got: list[tuple[str, bytes, int, int]] = []
    client.on_plain_message = lambda *message: got.append(message)
    if batched:
        client.on_plain_batch = got.extend
    client.on_message = lambda _c, _u, m: got.append(
        (m.topic, m.payload, m.mid if m.qos else 0, m.qos))
    wire = _Wire(bytes(stream), sizes)
    client._sock = BufferedSocket(wire)
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    client._ping_t = 1.0  # the PINGRESPs answer a ping
    try:
        for _ in range(10_000):
            if client.loop_read() != 0:
                break
            if wire.pos >= len(wire.data) and not client._sock.pending() \
                    and client._in_packet["command"] == 0:
                break
        assert [(t, bytes(p), m, q) for t, p, m, q in got] == expected
    finally:
        client._sock = None


def _connect(broker: Mosquitto, client_id: str, protocol: int, **kwargs: Any) -> BufferedClient:
    if protocol == mqtt.MQTTv5:
        client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                                protocol=mqtt.MQTTv5, **kwargs)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        client.connect(broker.host, broker.port, clean_start=False, properties=props)
    else:
        client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=client_id,
                                protocol=mqtt.MQTTv311, clean_session=False, **kwargs)
        client.connect(broker.host, broker.port)
    return client


def _publish_all(broker: Mosquitto, messages: list[tuple[str, bytes, Properties | None]]) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        infos = [pub.publish(topic, payload, qos=1, properties=props)
                 for topic, payload, props in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        stop_client(pub)


@pytest.mark.servers
@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt311"])
def test_every_message_arrives_intact_and_batched_acks_end_the_redelivery(
        mosquitto: Mosquitto, topic_root: str, protocol: int) -> None:
    client_id = f"bufclient-{topic_root}"
    received: list[mqtt.MQTTMessage] = []
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received.append(msg)
        if len(received) == len(messages):
            done.set()

    # a persistent session that exists (subscribed) before anything is published
    sub = _connect(mosquitto, client_id, protocol, manual_ack=True)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.subscribe(f"{topic_root}/#", qos=1)
    sub.loop_start()
    assert subscribed.wait(10)
    stop_client(sub)

    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = ("origin", "test")
    messages: list[tuple[str, bytes, Properties | None]] = []
    for i in range(3000):
        payload = (b"x" * (READ_SIZE * 3 + 17)) if i == 1500 else f"m{i}".encode() * (i % 7 + 1)
        messages.append((f"{topic_root}/d{i % 5}", payload, props if i % 100 == 0 else None))
    _publish_all(mosquitto, messages)  # queued in the offline session

    sub = _connect(mosquitto, client_id, protocol, manual_ack=True)
    sub.on_message = on_message
    sub.loop_start()
    try:
        assert done.wait(60), f"got {len(received)} of {len(messages)}"
        assert [(m.topic, m.payload) for m in received] == [(t, p) for t, p, _ in messages]
        for i in range(0, 3000, 100):  # the messages with properties kept them (paho's path)
            if protocol == mqtt.MQTTv5:
                assert received[i].properties is not None
                assert ("origin", "test") in received[i].properties.UserProperty
        sub.ack_many(m.mid for m in received[:2000])  # the last 1000 stay unacknowledged
        time.sleep(1.0)
    finally:
        stop_client(sub)

    again: list[mqtt.MQTTMessage] = []
    sub = _connect(mosquitto, client_id, protocol)  # auto-ack this time
    sub.on_message = lambda _c, _u, m: again.append(m)
    sub.loop_start()
    try:
        deadline = time.monotonic() + 20
        while len(again) < 1000 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # anything beyond the 1000 unacknowledged would show up by now
    finally:
        stop_client(sub)
    assert [m.payload for m in again] == [p for _, p, _ in messages[2000:]]
