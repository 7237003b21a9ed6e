"""Edge agent benchmark: each figure beside a baseline measured in the same run.

    python3 bench/agent_bench.py [--readings 20000]

1. processing cost per reading: protocol decode + frame mapping + SensorDecider + stamping,
   against a bare loop that only decodes the same protocol lines (FrameDecoder);
2. resident memory of a running agent with 16 sensors (two simulated boards of 8; the broker is
   unreachable on purpose, so it buffers), against a bare Python that imports the same modules;
3. outbox append+commit rate and replay (read) rate, against a bare SQLite insert / select loop
   on the same kind of rows (WAL, synchronous=FULL, one transaction per 500 rows).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.decide import Reading, SensorDecider, SensorRules  # noqa: E402
from edge_agent.outbox import Outbox, OutboxSettings  # noqa: E402
from edge_agent.sources.frames import FrameHandler  # noqa: E402
from edge_agent.stamping import EventStamper  # noqa: E402
from firmware_sim.protocol import FrameDecoder, encode  # noqa: E402
from firmware_sim.protocol import Reading as FrameReading  # noqa: E402

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
        {"name": "high", "above": 25.0, "hysteresis": 0.5}])  # type: ignore[list-item]
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


def bench_outbox(n: int) -> None:
    from datetime import UTC, datetime

    from schemas.models import ReadingEvent
    events = [ReadingEvent(event_id=f"{i:032x}", site="bench", device_id="pi-bench",
                           sensor_id=SENSORS[i % 16], seq=i, time=datetime.now(UTC),
                           clock_synced=True, value=20.0, unit="degC") for i in range(n)]
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
            rows = db.execute("SELECT seq, p FROM t WHERE seq > ? ORDER BY seq LIMIT 500",
                              (after,)).fetchall()
            if not rows:
                break
            rows_read += len(rows)
            after = rows[-1][0]
        bare_replay = rows_read / (time.perf_counter() - t)
        db.close()
    print(f"outbox append+commit   : {append:9,.0f} ev/s | bare SQLite insert "
          f"{bare_append:9,.0f} rows/s | ratio {bare_append / append:5.1f}x slower")
    print(f"outbox replay (read)   : {replay:9,.0f} ev/s | bare SQLite select "
          f"{bare_replay:9,.0f} rows/s | ratio {bare_replay / replay:5.1f}x slower")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--memory-seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(f"edge agent benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    bench_processing(args.readings)
    bench_outbox(args.readings)
    bench_memory(args.memory_seconds)


if __name__ == "__main__":
    main()
