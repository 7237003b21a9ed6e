"""Shared by the delivery tests: drafts of every kind, and a real MQTT subscriber that records."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.harness.mqtt_clients import stop_client
from edge_agent.decide.types import Draft
from schemas import decode

T0 = 1_790_000_000.0


def draft(kind: str = "reading", sensor: str = "s1", t: float = T0, value: float = 21.5) -> Draft:
    fields: dict[str, Any]
    if kind == "reading":
        fields = {"value": value, "unit": "degC"}
    elif kind == "summary":
        fields = {"unit": "degC", "window_start": datetime.fromtimestamp(t - 60, UTC),
                  "count": 3, "min": value, "max": value, "mean": value, "last": value}
    elif kind == "state_change":
        fields = {"value": value, "unit": "degC", "previous_state": "normal",
                  "new_state": "high", "threshold": 30.0, "severity": "warning"}
    elif kind == "fault":
        fields = {"fault": "crc_error", "active": True, "unit": "degC"}
    elif kind == "rate_alarm":
        fields = {"value": value, "unit": "degC", "rate_per_min": 5.0, "limit_per_min": 2.0,
                  "active": True}
    else:
        raise ValueError(kind)
    return Draft(kind, sensor, t, fields)  # type: ignore[arg-type]


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    message: Any = None


@dataclass
class Recorder:
    """A real paho subscriber with a persistent session (it survives a broker restart)."""

    host: str
    port: int
    filters: list[str]
    messages: list[Received] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    client: mqtt.Client | None = None

    def start(self, timeout: float = 10.0) -> Recorder:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"rec-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5)
        client.reconnect_delay_set(1, 2)
        up = threading.Event()

        def on_connect(c: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
            for f in self.filters:
                c.subscribe(f, qos=1)
            up.set()

        def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            parsed: Any
            try:
                parsed = decode(bytes(msg.payload)) if msg.payload else None
            except Exception as exc:
                parsed = exc
            with self._cond:
                self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain),
                                              parsed))
                self._cond.notify_all()

        client.on_connect = on_connect
        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        client.connect(self.host, self.port, 10, clean_start=False, properties=props)
        client.loop_start()
        self.client = client
        assert up.wait(timeout), "recorder did not connect"
        time.sleep(0.2)  # let the SUBACKs arrive before the test publishes
        return self

    def wait_for(self, pred: Callable[[list[Received]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def events(self) -> list[Any]:
        with self._cond:
            return [m.message for m in self.messages
                    if getattr(m.message, "kind", "status") != "status"]

    def statuses(self) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if getattr(m.message, "kind", "") == "status"]

    def stop(self) -> None:
        if self.client is not None:
            stop_client(self.client)
            self.client = None


def retained_status(host: str, port: int, topic: str, timeout: float = 5.0) -> Any:
    """The retained message on ``topic`` as a fresh subscriber sees it (None if there is none)."""
    rec = Recorder(host, port, [topic]).start()
    try:
        rec.wait_for(lambda m: any(x.retain for x in m), timeout)
        for m in rec.messages:
            if m.retain:
                return m.message
        return None
    finally:
        rec.stop()
