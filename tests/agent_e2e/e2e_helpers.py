"""Real processes for the agent's end-to-end tests: firmware-sim on a pty, the agent
(``AgentProc``, from bench/harness/processes.py), a plain MQTT subscriber, and the expected
decisions computed from the scenario's deterministic script."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.harness.mqtt_clients import stop_client
from bench.harness.processes import AgentProc
from edge_agent.decide import Reading, SensorDecider, SensorRules
from firmware_sim import device as fw
from firmware_sim import scenario as scenarios
from firmware_sim.device import expected
from schemas import decode
from schemas.models import DeviceStatus, Receipt
from schemas.serial_protocol import ReadingFrame, SensorError

__all__ = ["AgentProc"]  # bench's harness: the tests import it from here with the rest below

ROOT = Path(__file__).resolve().parents[2]
FAULTS = {"MISSING": "disconnected", "READ_FAILED": "read_failed", "CRC": "crc_error"}


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Subscriber:
    """A plain paho subscriber with a persistent session (it misses nothing across a broker
    restart: Mosquitto's persistence keeps its session and queued messages)."""

    def __init__(self, host: str, port: int, root: str) -> None:
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"e2e-sub-{uuid.uuid4().hex[:8]}",
                                   protocol=mqtt.MQTTv5)
        self._root = root
        self._subscribed = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(0.1, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self._client.connect(host, port, clean_start=False, properties=props)
        self._client.loop_start()
        assert self._subscribed.wait(10), "subscriber never subscribed"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        client.subscribe(f"{self._root}/#", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        message = decode(msg.payload)
        with self._lock:
            self.messages.append((msg.topic, message))

    def events(self) -> list[Any]:
        with self._lock:
            return [m for _, m in self.messages if not isinstance(m, DeviceStatus | Receipt)]

    def statuses(self) -> list[DeviceStatus]:
        with self._lock:
            return [m for _, m in self.messages if isinstance(m, DeviceStatus)]

    def close(self) -> None:
        stop_client(self._client)


def unique(events: list[Any]) -> list[Any]:
    """Dedup by event id (QoS 1 may deliver twice), first copy kept, then in seq order."""
    seen: dict[str, Any] = {}
    for e in events:
        if e.event_id in seen:
            assert seen[e.event_id].seq == e.seq, "one event id with two seqs"
            continue
        seen[e.event_id] = e
    return sorted(seen.values(), key=lambda e: e.seq)


class Sim:
    """``firmware-sim serve --pty --link LINK`` as a subprocess."""

    def __init__(self, scenario: Path, link: Path, speed: float) -> None:
        self.link = link
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_sim.cli", "serve", "--scenario", str(scenario),
             "--pty", "--link", str(link), "--speed", str(speed)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        while not any(line.startswith("link ") for line in self.lines):
            line = self.proc.stdout.readline()
            assert line, f"firmware-sim died: {self.proc.stderr.read() if self.proc.stderr else ''}"
            self.lines.append(line.strip())

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def write_config(path: Path, *, host: str, port: int, root: str, link: Path,
                 rules: str, outbox: Path, tick_s: float = 0.2) -> None:
    path.write_text(f"""
site = "e2e"
device_id = "pi-e2e"
tick_s = {tick_s}

[log]
level = "info"
format = "json"

[mqtt]
host = "{host}"
port = {port}
topic_root = "{root}"
receipts = "off"  # a recorder, not a hub: deleted at the broker's PUBACK
reconnect_min_s = 0.2
reconnect_max_s = 1.0
status_interval_s = 5.0

[outbox]
path = "{outbox}"
flush_interval_s = 0.2
backlog_rate_per_s = 0

[[sources]]
kind = "serial"
port = "{link}"
reopen_max_s = 0.1

[defaults]
{rules}
""")


def scenario_readings(text: str, speed: float, t0: float = 1_800_000_000.0) -> list[Reading]:
    """What a reader that never missed a byte turns the scenario's script into."""
    out: list[Reading] = []
    emissions = fw.script(scenarios.loads(text, "e2e.toml"))
    frames = expected(emissions).frames
    # times follow the script (scaled like the real run); frames come in emission order
    times = [e.t_ms for e in emissions if e.received is not None]
    for t_ms, f in zip(times, frames, strict=True):
        t = t0 + t_ms / 1000 / speed
        if isinstance(f, ReadingFrame):
            out.append(Reading(f.sensor_id, t, f.value))
        elif isinstance(f, SensorError):
            out.append(Reading(f.sensor_id, t, None, FAULTS[f.code.value],  # type: ignore[arg-type]
                               f"device reported {f.code.value}"))
    return out


def decisions(readings: list[Reading], rules: SensorRules) -> dict[str, list[tuple[Any, ...]]]:
    """Per sensor, the state changes and faults the pure decider makes from these readings."""
    deciders: dict[str, SensorDecider] = {}
    out: dict[str, list[tuple[Any, ...]]] = {}
    for r in readings:
        dec = deciders.setdefault(r.sensor_id, SensorDecider(r.sensor_id, "degC", rules))
        for d in dec.on_reading(r):
            if d.kind in ("state_change", "fault"):
                out.setdefault(r.sensor_id, []).append(key_of_draft(d.kind, d.fields))
    return out


def key_of_draft(kind: str, fields: dict[str, Any]) -> tuple[Any, ...]:
    if kind == "state_change":
        return ("state_change", fields["previous_state"], fields["new_state"])
    return ("fault", fields["fault"], fields["active"])


def key_of_event(e: Any) -> tuple[Any, ...]:
    return key_of_draft(e.kind, e.model_dump())


def good_reading_count(readings: list[Reading], rules: SensorRules) -> dict[str, int]:
    """How many readings the decider accepts (what the summaries must add up to)."""
    big = dataclasses.replace(rules, summary_interval_s=10**9)
    counts: dict[str, int] = {}
    for sid in {r.sensor_id for r in readings}:
        dec = SensorDecider(sid, "degC", big)
        for r in readings:
            if r.sensor_id == sid:
                dec.on_reading(r)
        drafts = dec.on_tick(readings[-1].time + 2 * 10**9)
        counts[sid] = sum(d.fields["count"] for d in drafts if d.kind == "summary")
    return counts
