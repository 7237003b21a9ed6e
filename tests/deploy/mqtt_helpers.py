"""A small synchronous paho-mqtt 2.x client for the broker tests: waits on acknowledgements and
returns their reason codes, and collects received messages."""

from __future__ import annotations

import queue
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bench.harness.mqtt_clients import stop_client

NOT_AUTHORIZED = 0x87


@dataclass
class SyncClient:
    host: str
    port: int
    username: str | None
    password: str | None
    protocol: MQTTProtocolVersion = mqtt.MQTTv5
    client: mqtt.Client = field(init=False)
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    connack: ReasonCode | int | None = None
    _acks: dict[int, Any] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=self.protocol)
        if self.username is not None:
            self.client.username_pw_set(self.username, self.password)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_connect_fail = lambda _c, _u: self._set_connack(-1)

    # callbacks (paho's network thread) --------------------------------------------------
    def _set_connack(self, value: Any) -> None:
        with self._cond:
            self.connack = value
            self._cond.notify_all()

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: ReasonCode, _p: Any) -> None:
        self._set_connack(reason)

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._cond:
            self._acks[mid] = reason
            self._cond.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any,
                      ) -> None:
        with self._cond:
            self._acks[mid] = reasons
            self._cond.notify_all()

    def _wait(self, predicate: Any, timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"no {what} within {timeout}s")

    # API -----------------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> int:
        """Connect and return the CONNACK reason code value (0: accepted)."""
        props = None
        if self.protocol == mqtt.MQTTv5:
            props = Properties(1)  # type: ignore[no-untyped-call]  # PacketTypes.CONNECT
        self.client.connect(self.host, self.port, keepalive=30, properties=props)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None, timeout, "CONNACK")
        value = self.connack
        return value if isinstance(value, int) else int(value.value)  # type: ignore[union-attr]

    def publish(self, topic: str, payload: bytes, timeout: float = 10.0, retain: bool = False,
                ) -> int:
        """QoS 1 publish; the PUBACK reason code value (MQTT 3.1.1 always says 0)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        mid = info.mid
        assert mid is not None
        self._wait(lambda: mid in self._acks, timeout, f"PUBACK for {topic}")
        reason = self._acks.pop(mid)
        return int(reason.value) if isinstance(reason, ReasonCode) else int(reason or 0)

    def subscribe(self, topic: str, timeout: float = 10.0) -> int:
        """QoS 1 subscription; the SUBACK reason code value (0x80+ is a refusal)."""
        _rc, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        self._wait(lambda: mid in self._acks, timeout, f"SUBACK for {topic}")
        return int(self._acks.pop(mid)[0].value)

    def receive_until(self, topic: str, timeout: float = 10.0) -> list[mqtt.MQTTMessage]:
        """Every message received until (and including) one on ``topic``."""
        got: list[mqtt.MQTTMessage] = []
        while True:
            msg = self.messages.get(timeout=timeout)
            got.append(msg)
            if msg.topic == topic:
                return got

    def close(self) -> None:
        stop_client(self.client)
