"""A real hub under hostile input: the processes, a control device, a hostile publisher, and the
invariants (tests/e2e/test_hostile_inputs.py, tests/e2e/test_hostile_cases.py).

``HostileRig`` runs a private Mosquitto, a private InfluxDB 1.x and ``hub run`` as a subprocess
(``pipeline.hub_toml``), and offers the operations the tests interleave with hostile messages:
restart the hub (SIGTERM or SIGKILL), stop and start InfluxDB. ``ControlDevice`` is a plain paho
publisher of valid contract events made with the project's own encoder (``schemas.codec.encode``,
JSON and Avro in turn), with distinct event ids and increasing seqs, on its own topics.

The invariants (``HostileRig.check``):

- every control event the broker acknowledged is stored in InfluxDB exactly once (by event id),
  including events made after the hostile messages: a pipeline that stopped cannot pass;
- /healthz is truthful: when control events stay unstored while the hub runs, /healthz must not
  answer ``ok: true`` (the failure message says which of the two it was);
- the hub's resident memory stays under ``rss_limit_mb``.

A hub process that exits on its own (a supervision model that exits non-zero for systemd to
restart it) is started again here, as ``Restart=on-failure`` would, and counted
(``figures.supervisor_restarts``); a hub that exits at every start fails the check.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.harness.mqtt_clients import stop_client
from schemas.codec import AVRO_MAGIC, Encoding, encode
from schemas.models import ReadingEvent
from schemas.registry import DEFAULT_REGISTRY
from schemas.topics import Topics
from tests.e2e.pipeline import HubProc, MqttAccess, hub_toml
from tests.servers import InfluxDB1, Mosquitto, free_port

SITE, DEVICE, SENSOR = "ctl", "ctl-dev", "ctl-t1"  # the control device's identity


# -- the control device ---------------------------------------------------------------------------

class ControlDevice:
    """Valid events on its own topics, QoS 1; ``acked`` holds the event ids the broker
    acknowledged (those the hub must store). ``start()`` sends one every ``interval_s`` in a
    thread; ``send(n)`` sends ``n`` at once (the regression tests)."""

    def __init__(self, broker: Mosquitto, root: str, interval_s: float = 0.25,
                 device: str = DEVICE) -> None:
        self.topics = Topics(root)
        self.device = device
        self.interval_s = interval_s
        self.next_seq = 0
        self.made: list[str] = []
        self.acked: list[str] = []
        self.unacked: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"ctl-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        self._client.reconnect_delay_set(1, 2)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def event(self, seq: int) -> ReadingEvent:
        return ReadingEvent(event_id=uuid.uuid4().hex, site=SITE, device_id=self.device,
                            sensor_id=SENSOR, seq=seq, time=datetime.now(UTC),
                            clock_synced=True, value=20.0 + (seq % 50) / 10, unit="degC")

    def send_one(self) -> str:
        """Make the next event and publish it (waiting for the broker's PUBACK); its id."""
        with self._lock:
            seq = self.next_seq
            self.next_seq += 1
            event = self.event(seq)
            self.made.append(event.event_id)
        payload = encode(event, Encoding.AVRO if seq % 2 else Encoding.JSON)
        info = self._client.publish(self.topics.for_event(event), payload, qos=1)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(20)
        with self._lock:
            (self.acked if info.is_published() else self.unacked).append(event.event_id)
        return event.event_id

    def send(self, n: int) -> list[str]:
        return [self.send_one() for _ in range(n)]

    def skip(self, n: int) -> None:
        """Leave ``n`` seqs out (a gap the hub's loss detector will report)."""
        with self._lock:
            self.next_seq += n

    def acked_ids(self) -> set[str]:
        with self._lock:
            return set(self.acked)

    @property
    def background(self) -> bool:
        return self._thread is not None

    def wait_made(self, more: int) -> None:
        """Background mode: wait until ``more`` further events were made and acknowledged."""
        target = len(self.made) + more
        deadline = time.monotonic() + 60
        while len(self.acked) + len(self.unacked) < target and time.monotonic() < deadline:
            time.sleep(0.05)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="control-device", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.send_one()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        stop_client(self._client)


# -- the hostile publisher ------------------------------------------------------------------------

class HostilePublisher:
    """Publishes anything on any topic (an anonymous account on the test broker: what a device's
    password would allow, and more)."""

    def __init__(self, broker: Mosquitto) -> None:
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"hostile-{uuid.uuid4().hex[:8]}",
                                   protocol=mqtt.MQTTv5)
        self._client.reconnect_delay_set(1, 2)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self.sent = 0
        self.unsendable = 0  # topics paho refuses to send (wildcards, over 65,535 bytes)

    def publish(self, topic: str, payload: bytes) -> bool:
        try:
            info = self._client.publish(topic, payload, qos=1)
        except ValueError:
            self.unsendable += 1
            return False
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(20)
        self.sent += 1
        return info.is_published()

    def close(self) -> None:
        stop_client(self._client)


# -- hand-made Avro (values no encoder would write) ------------------------------------------------

def avro_long(n: int) -> bytes:
    """Zigzag varint of any Python int (beyond 64 bits too: a malformed long on the wire)."""
    z = n * 2 if n >= 0 else -n * 2 - 1
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def avro_string(s: str | bytes) -> bytes:
    data = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s
    return avro_long(len(data)) + data


def avro_reading(*, event_id: str | bytes, site: str | bytes, device: str | bytes,
                 sensor: str | bytes, seq: int, time_us: int, value: float,
                 unit: str | bytes = "degC") -> bytes:
    """A ``reading`` in the current schema's single-object encoding, any values allowed."""
    schema = DEFAULT_REGISTRY.current("reading")
    body = (avro_string(event_id) + avro_string(site) + avro_string(device)
            + avro_string(sensor) + avro_long(seq) + avro_long(time_us) + b"\x01\x00"
            + avro_string("reading") + struct.pack("<d", value) + avro_string(unit))
    return AVRO_MAGIC + schema.fingerprint + body


def json_bytes(doc: Any) -> bytes:
    """JSON as Python writes it: NaN, Infinity and -Infinity included."""
    return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")


# -- the rig --------------------------------------------------------------------------------------

@dataclass
class Figures:
    examples: int = 0
    hostile_messages: int = 0
    hub_restarts_term: int = 0
    hub_restarts_kill: int = 0
    supervisor_restarts: int = 0  # the hub exited on its own and was started again
    influx_stops: int = 0
    max_rss_mb: float = 0.0
    exits: list[str] = field(default_factory=list)

    @property
    def hub_restarts(self) -> int:
        return self.hub_restarts_term + self.hub_restarts_kill


class HostileRig:
    """The processes of one test: a private broker and InfluxDB, the hub, the control device."""

    def __init__(self, tmp: Path, broker: Mosquitto, influx: InfluxDB1, *,
                 gap_timeout_s: float = 3.0, rss_limit_mb: float = 400.0,
                 hub_extra: str = "") -> None:
        self.tmp = tmp
        self.broker = broker
        self.influx = influx
        self.root = f"h{uuid.uuid4().hex[:8]}"
        self.db = f"db_{uuid.uuid4().hex[:10]}"
        influx.create_database(self.db)
        self.topics = Topics(self.root)
        self.rss_limit_mb = rss_limit_mb
        self.figures = Figures()
        http_port = free_port()
        config = tmp / "hub.toml"
        config.write_text(hub_toml(
            data_dir=tmp / "hubdata", mqtt=MqttAccess(broker.host, broker.port),
            topic_root=self.root, influx_url=influx.url, database=self.db,
            http_port=http_port, hub_id="hostile")
            + f"\n[receipts]\ngap_timeout_s = {gap_timeout_s}\n" + hub_extra)
        self.hub = HubProc(config, tmp / "hub.log", http_port)
        self.control = ControlDevice(broker, self.root)
        self.hostile = HostilePublisher(broker)

    # -- the hub ----------------------------------------------------------------------------------
    def connections(self) -> int:
        return self.hub.log_text().count('"mqtt.connected"')

    def start_hub(self, timeout: float = 90) -> None:
        """Start the hub; return once it is connected to the broker and answers /healthz."""
        before = self.connections()
        self.hub.start()
        deadline = time.monotonic() + timeout
        while self.connections() <= before or self.hub.health() is None:
            if not self.hub.running:
                rc = self.hub.proc.returncode if self.hub.proc else None
                raise AssertionError(f"the hub exited with {rc} at its start:\n"
                                     f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the hub did not connect within {timeout:.0f} s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.1)

    def restart_hub(self, kill: bool = False) -> None:
        if self.hub.running:
            if kill:
                self.hub.kill()
                self.figures.hub_restarts_kill += 1
            else:
                rc = self.hub.stop()
                self.figures.hub_restarts_term += 1
                if rc != 0:
                    self.figures.exits.append(f"SIGTERM: exit {rc}")
        self.start_hub()

    def supervise(self) -> None:
        """Start the hub again if it exited on its own (what systemd's Restart= does)."""
        if self.hub.proc is not None and not self.hub.running:
            self.figures.supervisor_restarts += 1
            self.figures.exits.append(f"exited on its own: {self.hub.proc.returncode}")
            if self.figures.supervisor_restarts > 20:
                raise AssertionError("the hub keeps exiting on its own (20 restarts):\n"
                                     + self.log_tail())
            self.start_hub()

    def rss_mb(self) -> float | None:
        if not self.hub.running or self.hub.proc is None:
            return None
        try:
            status = Path(f"/proc/{self.hub.proc.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) / 1024 if match else None

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.hub.log_text().splitlines()[-lines:])

    def tracebacks(self) -> list[str]:
        """The last line of every traceback in the hub's log (uncaught thread exceptions and
        ones a supervisor logged), e.g. ``pydantic_core...ValidationError: 1 validation error``."""
        out = []
        lines = self.hub.log_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Traceback") or line.startswith("Exception in thread"):
                for later in lines[i + 1:i + 200]:
                    if later and not later.startswith((" ", "Traceback", "\t")):
                        out.append(later[:300])
                        break
            elif '"exception"' in line and "Traceback" in line:
                with contextlib.suppress(ValueError):
                    exc = json.loads(line).get("exception", "")
                    out.append(exc.strip().splitlines()[-1][:300])
        return out

    # -- InfluxDB ---------------------------------------------------------------------------------
    def influx_stop(self) -> None:
        if self.influx.running:
            self.influx.stop()
            self.figures.influx_stops += 1

    def influx_start(self) -> None:
        self.influx.start()

    # -- what was stored --------------------------------------------------------------------------
    def stored_control(self) -> dict[str, int]:
        """Event id -> number of points stored, for the control device's events."""
        rows = self.influx.series_rows(
            f"SELECT event_id, seq FROM sensor_event WHERE \"device\" = '{self.control.device}' "
            f"AND \"sensor\" = '{SENSOR}'", self.db)
        counts: dict[str, int] = {}
        for row in rows:
            if row.get("event_id") is not None:
                counts[row["event_id"]] = counts.get(row["event_id"], 0) + 1
        return counts

    def count_points(self, measurement: str) -> int:
        rows = self.influx.series_rows(f'SELECT count("event_id") FROM "{measurement}"', self.db)
        return int(sum(r.get("count", 0) or 0 for r in rows))

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` (InfluxDB errors count as not yet), restarting a hub that exited."""
        deadline = time.monotonic() + timeout
        while True:
            self.supervise()
            with contextlib.suppress(OSError, RuntimeError):
                if predicate():
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)

    # -- the invariants ---------------------------------------------------------------------------
    def check(self, timeout: float = 45.0, after: int = 2) -> None:
        """The invariants (module docstring). ``after``: control events to make from now on and
        require too (events sent after whatever happened before the check)."""
        if not self.influx.running:
            self.influx_start()
        self.supervise()
        if after:
            if self.control.background:
                self.control.wait_made(after)
            else:
                self.control.send(after)
        want = self.control.acked_ids()
        stored: dict[str, int] = {}

        def all_stored() -> bool:
            nonlocal stored
            stored = self.stored_control()
            return want <= stored.keys()

        if not self.wait_for(all_stored, timeout):
            missing = len(want - stored.keys())
            health = self.hub.health()
            ok = bool(health and health.get("ok"))
            lie = (" and /healthz says ok: true, so a dead component is hidden"
                   if self.hub.running and ok else "")
            raise AssertionError(
                f"{missing} of {len(want)} control events acknowledged by the broker are not "
                f"stored after {timeout:.0f} s{lie}.\n/healthz: {json.dumps(health)[:1500]}\n"
                f"exceptions in the hub's log: {self.tracebacks()[-5:]}\n"
                f"hub log tail:\n{self.log_tail(15)}")
        twice = {eid: n for eid, n in stored.items() if n > 1}
        assert not twice, f"control events stored more than once: {twice}"
        rss = self.rss_mb()
        if rss is not None:
            self.figures.max_rss_mb = max(self.figures.max_rss_mb, rss)
            assert rss < self.rss_limit_mb, (
                f"the hub's resident memory is {rss:.0f} MiB, over {self.rss_limit_mb:.0f} MiB")

    def summary(self) -> str:
        f = self.figures
        stored = -1  # InfluxDB down: unknown
        with contextlib.suppress(OSError, RuntimeError):
            made = set(self.control.made)
            stored = len(made & self.stored_control().keys())
        return (f"examples run {f.examples}, hostile messages {f.hostile_messages} "
                f"({self.hostile.unsendable} topics paho refused), hub restarts {f.hub_restarts} "
                f"(SIGTERM {f.hub_restarts_term}, SIGKILL {f.hub_restarts_kill}, after exiting on "
                f"its own {f.supervisor_restarts}), InfluxDB stops {f.influx_stops}, control "
                f"events made {len(self.control.made)} (acknowledged by the broker "
                f"{len(self.control.acked)}), stored {stored}, hub max RSS "
                f"{f.max_rss_mb:.0f} MiB")

    def close(self) -> None:
        self.control.close()
        self.hostile.close()
        if self.hub.running:
            with contextlib.suppress(Exception):
                self.hub.stop(30)
