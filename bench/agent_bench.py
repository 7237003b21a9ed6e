"""Edge agent benchmark: each figure beside a baseline measured in the same run.

    python3 bench/agent_bench.py [--readings 20000] [--messages 20000] [--memory-seconds 8]

1. processing cost per reading: protocol decode + frame mapping + SensorDecider + stamping,
   against a bare loop that only decodes the same protocol lines (FrameDecoder);
2. resident memory of a running agent with 16 sensors (two simulated boards of 8; the broker is
   unreachable on purpose, so it buffers), against a bare Python that imports the same modules;
3. outbox append+commit rate and replay (read) rate, against a bare SQLite insert / select loop
   on the same kind of rows (WAL, synchronous=FULL, one transaction per 500 rows);
4. QoS-1 publish rate to a private Mosquitto (started from tests.servers) of the agent's
   Delivery, live (submit -> group commit -> publish -> PUBACK -> deleted from the outbox) and
   replaying a backlog from the outbox, against a bare paho-mqtt client publishing the same
   payloads to the same topic with the same in-flight cap and waiting for every PUBACK.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge_agent.decide import Reading, SensorDecider, SensorRules  # noqa: E402
from edge_agent.delivery import Delivery  # noqa: E402
from edge_agent.log_setup import configure as configure_logs  # noqa: E402
from edge_agent.mqtt_link import MqttSettings  # noqa: E402
from edge_agent.outbox import Outbox, OutboxSettings  # noqa: E402
from edge_agent.sources.frames import FrameHandler  # noqa: E402
from edge_agent.stamping import EventStamper  # noqa: E402
from schemas.models import ReadingEvent  # noqa: E402
from schemas.serial_protocol import FrameDecoder, encode  # noqa: E402
from schemas.serial_protocol import Reading as FrameReading  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from tests.servers import Mosquitto, start_server  # noqa: E402

SENSORS = [f"28-0000000000{i:02x}" for i in range(16)]


def lines(n: int) -> bytes:
    return b"".join(encode(FrameReading(SENSORS[i % 16], 20 + (i % 100) / 10, i, i * 10))
                    for i in range(n))


def bench_processing(n: int) -> None:
    data = lines(n)
    t = time.perf_counter()
    frames = FrameDecoder().feed(data)
    base = (time.perf_counter() - t) / n
    assert len(frames) == n
    rules = SensorRules(deadband=0.5, thresholds=[
        {"name": "high", "above": 25.0, "hysteresis": 0.5}])
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(OutboxSettings(path=Path(tmp) / "o.db"))
        stamper = EventStamper("bench", "pi-bench", outbox)
        deciders = {s: SensorDecider(s, "degC", rules) for s in SENSORS}
        handler = FrameHandler("bench")
        t = time.perf_counter()
        events = 0
        t0 = 1_800_000_000.0
        for i, item in enumerate(FrameDecoder().feed(data)):
            reading = handler.handle(item, t0 + i * 0.1)
            if reading is None:
                continue
            for draft in deciders[reading.sensor_id].on_reading(
                    Reading(reading.sensor_id, reading.time, reading.value)):
                stamper.stamp(draft, True)
                events += 1
        agent = (time.perf_counter() - t) / n
        outbox.close(flush=False)
    print(f"processing per reading : agent {agent * 1e6:8.1f} us | bare decode "
          f"{base * 1e6:6.1f} us | ratio {agent / base:5.1f}x  ({events} events from {n})")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_memory(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scen = Path(tmp) / "eight.toml"
        sensors = "".join(
            f'[[sensors]]\nid = "28-0000000000{i:02x}"\n'
            f'profile = {{ kind = "constant", value = 20.0 }}\nnoise = 0.2\n\n'
            for i in range(8))
        scen.write_text(f'duration = "1d"\ninterval = "1s"\n\n{sensors}')
        cfg = Path(tmp) / "agent.toml"
        sources = "".join(f'[[sources]]\nkind = "simulator"\nname = "b{i}"\n'
                          f'scenario = "{scen}"\nspeed = 10\nseed = {i}\n\n' for i in range(2))
        cfg.write_text(f'site = "bench"\ndevice_id = "pi-bench"\n[log]\nlevel = "warning"\n'
                       f'[mqtt]\nhost = "127.0.0.1"\nport = 9\n[outbox]\n'
                       f'path = "{tmp}/o.db"\n[defaults]\ndeadband = 0.1\n\n{sources}')
        agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "-c", str(cfg)],
                                 cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        base = subprocess.Popen([sys.executable, "-c", "import edge_agent.agent, time; "
                                 "time.sleep(60)"], cwd=ROOT)
        time.sleep(seconds)
        a, b = rss_kib(agent.pid), rss_kib(base.pid)
        for p in (agent, base):
            p.terminate()
            p.wait(30)
    print(f"resident memory        : agent (16 sensors, {seconds:.0f} s) {a / 1024:6.1f} MiB | "
          f"bare import {b / 1024:6.1f} MiB | ratio {a / b:5.2f}x")


def reading_events(n: int) -> list[ReadingEvent]:
    return [ReadingEvent(event_id=f"{i:032x}", site="bench", device_id="pi-bench",
                         sensor_id=SENSORS[i % 16], seq=i, time=datetime.now(UTC),
                         clock_synced=True, value=20.0, unit="degC") for i in range(n)]


def bench_outbox(n: int) -> None:
    events = reading_events(n)
    topic = "thermopipe/bench/pi-bench/event/x"
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(OutboxSettings(path=Path(tmp) / "o.db", min_free_bytes=0))
        t = time.perf_counter()
        for i in range(0, n, 500):
            outbox.append((e, topic) for e in events[i:i + 500])
            outbox.commit()
        append = n / (time.perf_counter() - t)
        t = time.perf_counter()
        got, after = 0, -1
        while True:
            rows = outbox.read(after, 500)
            if not rows:
                break
            got += len(rows)
            after = rows[-1].seq
        replay = got / (time.perf_counter() - t)
        outbox.close()
        payloads = [(e.seq, e.event_id, topic, e.model_dump_json().encode()) for e in events]
        db = sqlite3.connect(Path(tmp) / "bare.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, id TEXT, topic TEXT, p BLOB)")
        t = time.perf_counter()
        for i in range(0, n, 500):
            db.execute("BEGIN")
            db.executemany("INSERT INTO t VALUES (?,?,?,?)", payloads[i:i + 500])
            db.execute("COMMIT")
        bare_append = n / (time.perf_counter() - t)
        t = time.perf_counter()
        rows_read, after = 0, -1
        while True:
            bare_rows: list[tuple[int, bytes]] = db.execute(
                "SELECT seq, p FROM t WHERE seq > ? ORDER BY seq LIMIT 500", (after,)).fetchall()
            if not bare_rows:
                break
            rows_read += len(bare_rows)
            after = bare_rows[-1][0]
        bare_replay = rows_read / (time.perf_counter() - t)
        db.close()
    print(f"outbox append+commit   : {append:9,.0f} ev/s | bare SQLite insert "
          f"{bare_append:9,.0f} rows/s | ratio {bare_append / append:5.1f}x slower")
    print(f"outbox replay (read)   : {replay:9,.0f} ev/s | bare SQLite select "
          f"{bare_replay:9,.0f} rows/s | ratio {bare_replay / replay:5.1f}x slower")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)


def bare_paho_publish(host: str, port: int, items: list[tuple[str, bytes]],
                      max_inflight: int) -> float:
    """QoS-1 publishes with a bare paho client and the same in-flight cap; messages/s until the
    last PUBACK (connect included, as for Delivery)."""
    slots = threading.Semaphore(max_inflight)
    acked = 0
    done = threading.Event()
    connected = threading.Event()

    def on_publish(client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        nonlocal acked
        acked += 1
        slots.release()
        if acked == len(items):
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    # unlimited in paho (a paho cap rescans the in-flight list on every ack: see
    # ENVIRONMENT.md); the semaphore caps it as Delivery's max_inflight does
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.on_connect = lambda *a: connected.set()
    t = time.perf_counter()
    client.connect(host, port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise TimeoutError("bare paho client did not connect")
        for topic, payload in items:
            slots.acquire()
            client.publish(topic, payload, qos=1)
        if not done.wait(120):
            raise TimeoutError(f"bare paho: {acked} of {len(items)} acknowledged")
        rate = len(items) / (time.perf_counter() - t)
    finally:
        client.disconnect()
        client.loop_stop()
    return rate


def delivery_publish(host: str, port: int, events: list[ReadingEvent], tmp: Path,
                     backlog: bool) -> float:
    """Delivery from the outbox: messages/s until the last event is acknowledged.

    live: Delivery is connected first, then the events are submitted in batches of 500 and go
    through the group commit, publish and ack. backlog: the events are committed to the outbox
    before Delivery starts (as after an outage), then replayed at an unlimited rate."""
    outbox = Outbox(OutboxSettings(path=tmp / f"o-{uuid.uuid4().hex[:6]}.db", min_free_bytes=0,
                                   backlog_rate_per_s=0))
    settings = MqttSettings(host=host, port=port, topic_root="bench",
                            client_id=f"agent-{uuid.uuid4().hex[:8]}", status_interval_s=3600)
    delivery = Delivery(outbox, settings, "bench", "pi-bench", None, 0)
    topics = delivery.link.topics
    n = len(events)
    try:
        if backlog:
            for i in range(0, n, 500):
                outbox.append((e, topics.for_event(e)) for e in events[i:i + 500])
                outbox.commit()
            t = time.perf_counter()
            delivery.start()
        else:
            delivery.start()
            delivery.link.wait_connected(10)
            t = time.perf_counter()
            for i in range(0, n, 500):
                delivery.submit(events[i:i + 500])
        wait_for(lambda: delivery.counters()["acked"] >= n, 120, "every PUBACK")
        rate = n / (time.perf_counter() - t)
        counters = delivery.counters()
        if (counters["published"], counters["rejected"], counters["replayed"]) != (
                n, 0, n if backlog else 0):
            raise RuntimeError(f"Delivery did not publish each event once: {counters}")
    finally:
        delivery.stop()
        outbox.close()
    return rate


def bench_publish(n: int) -> None:
    events = reading_events(n)
    topics = Topics("bench")
    items = [(topics.for_event(e), e.model_dump_json().encode()) for e in events]
    max_inflight = MqttSettings().max_inflight
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_server(Mosquitto, Path(tmp) / "mosquitto")
        assert isinstance(broker, Mosquitto)
        try:
            bare = bare_paho_publish(broker.host, broker.port, items, max_inflight)
            live = delivery_publish(broker.host, broker.port, events, Path(tmp), backlog=False)
            replay = delivery_publish(broker.host, broker.port, events, Path(tmp), backlog=True)
        finally:
            broker.stop()
    print(f"QoS-1 publish, live    : {live:9,.0f} ev/s | bare paho publish "
          f"{bare:9,.0f} msg/s | ratio {bare / live:5.1f}x slower  ({n} messages, "
          f"in-flight cap {max_inflight})")
    print(f"QoS-1 publish, backlog : {replay:9,.0f} ev/s | bare paho publish "
          f"{bare:9,.0f} msg/s | ratio {bare / replay:5.1f}x slower")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--memory-seconds", type=float, default=8.0)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    configure_logs("warning")  # the figures on stdout; only problems on stderr
    print(f"edge agent benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    bench_processing(args.readings)
    bench_outbox(args.readings)
    bench_publish(args.messages)
    bench_memory(args.memory_seconds)


if __name__ == "__main__":
    main()
