"""Helpers for the hub tests: events, a fast QoS-1 publisher, configs, waiting on conditions."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness.mqtt_clients import stop_client
from hub.config import HubConfig
from hub.consumers.base import ConsumerDefaults, Envelope
from schemas.codec import encode
from schemas.models import ReadingEvent, StateChangeEvent
from schemas.topics import Topics

BASE_TIME = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


class Recorder(ConsumerDefaults):
    """A consumer that keeps what it was given."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[Envelope] = []
        self.lock = threading.Lock()

    def handle(self, batch: Sequence[Envelope]) -> None:
        with self.lock:
            self.seen.extend(batch)

    def seqs(self, device: str) -> set[int]:
        """The seqs of the readings of ``device`` handed over."""
        with self.lock:
            return {e.message.seq for e in self.seen  # type: ignore[union-attr]
                    if e.message.device_id == device and e.message.kind == "reading"}

    def close(self) -> None:
        pass


def reading(seq: int, *, site: str = "s1", device: str = "d1", sensor: str = "t1",
            value: float = 20.0, when: datetime | None = None, replayed: bool = False,
            event_id: str | None = None) -> ReadingEvent:
    return ReadingEvent(event_id=event_id or uuid.uuid4().hex, site=site, device_id=device,
                        sensor_id=sensor, seq=seq,
                        time=when or BASE_TIME + timedelta(seconds=seq), clock_synced=True,
                        replayed=replayed, value=value, unit="degC")


def state_change(seq: int, new: str, previous: str, *, device: str = "d1",
                 sensor: str = "t1") -> StateChangeEvent:
    return StateChangeEvent(event_id=uuid.uuid4().hex, site="s1", device_id=device,
                            sensor_id=sensor, seq=seq, time=BASE_TIME + timedelta(seconds=seq),
                            clock_synced=True, value=30.0, unit="degC", previous_state=previous,
                            new_state=new, threshold=25.0, severity="warning")


def readings(n: int, devices: int = 4, sensors: int = 2, start_seq: int = 1,
             ) -> list[ReadingEvent]:
    """``n`` readings spread over devices and sensors, each device's seq increasing."""
    out = []
    for i in range(n):
        d = i % devices
        out.append(reading(start_seq + i, device=f"d{d}", sensor=f"t{(i // devices) % sensors}",
                           value=float(i % 50)))
    return out


def messages_for(topics: Topics, events: Iterable[ReadingEvent | StateChangeEvent],
                 encoding: str = "json") -> list[tuple[str, bytes]]:
    return [(topics.for_event(e), encode(e, encoding)) for e in events]


class Publisher:
    """A paho QoS-1 publisher with its own cap on messages in flight (see bench/README.md)."""

    def __init__(self, host: str, port: int, client_id: str | None = None,
                 max_in_flight: int = 1000) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self._sem = threading.BoundedSemaphore(max_in_flight)
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.on_publish = lambda *a: self._sem.release()
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("publisher could not connect")
        self._max = max_in_flight

    def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                timeout: float = 120) -> None:
        """One QoS-1 publish, not waiting for its PUBACK. Every publish must take a permit: the
        PUBACK gives one back, and a permit given back that was never taken raises in paho's
        thread and ends it (a test then waited in vain for the next message)."""
        if not self._sem.acquire(timeout=timeout):
            raise TimeoutError("publisher stalled")
        self.client.publish(topic, payload, qos=1, retain=retain)

    def publish_all(self, messages: Iterable[tuple[str, bytes]], timeout: float = 120) -> int:
        count = 0
        for topic, payload in messages:
            self.publish(topic, payload, timeout=timeout)
            count += 1
        self.flush(timeout)
        return count

    def flush(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(self._max):  # all permits back: every publish acknowledged
            if not self._sem.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError("publishes not acknowledged in time")
        for _ in range(self._max):
            self._sem.release()

    def close(self) -> None:
        stop_client(self.client)


def wait_until(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.1,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def hub_config(tmp_path: Path, broker: Any, topic_root: str, **overrides: Any) -> HubConfig:
    data: dict[str, Any] = {
        "hub_id": "testhub", "data_dir": str(tmp_path / "hubdata"),
        "mqtt": {"host": broker.host, "port": broker.port, "topic_root": topic_root,
                 "client_id": f"hub-{topic_root}"},
        "storage": {"enabled": False},
        "http": {"enabled": True, "port": 0},
        "log": {"level": "warning", "format": "console"},
        "dispatch": {"retry_initial_s": 0.2, "retry_max_s": 2.0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return HubConfig.model_validate(data)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """A flat-enough TOML writer for hub configs (tables of scalars, one level deep)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines.extend(f"{kk} = {toml_value(vv)}" for kk, vv in v.items()
                         if not isinstance(vv, dict))
    path.write_text("\n".join(lines) + "\n")
    return path


def influx_count(influxdb: Any, db: str, measurement: str = "sensor_event") -> int:
    rows = influxdb.series_rows(f'SELECT COUNT("seq") FROM "{measurement}"', db)
    return int(rows[0]["count"]) if rows else 0
