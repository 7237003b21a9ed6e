"""Edge agent benchmark: each figure beside a baseline measured in the same run.

    python3 bench/agent_bench.py [--readings 20000] [--messages 20000] [--pi-seconds 120]
                                 [--outage-seconds 60] [--pi-only] [--pi-tls both|off|only]

1. processing cost per reading: protocol decode + frame mapping + SensorDecider + stamping,
   against a bare loop that only decodes the same protocol lines (FrameDecoder);
2. outbox append+commit rate and replay (read) rate, against a bare SQLite insert / select loop
   on the same kind of rows (WAL, synchronous=FULL, one transaction per 500 rows);
3. QoS-1 publish rate to a private Mosquitto (started from bench/harness/servers.py) of the agent's
   Delivery, live (submit -> group commit -> publish -> PUBACK -> deleted from the outbox) and
   replaying a backlog from the outbox, against a bare paho-mqtt client publishing the same
   payloads to the same topic with the same in-flight cap and waiting for every PUBACK;
4. the agent as it runs on a Pi: installed from the built wheel with '.[agent]' into a fresh venv
   (bench/harness/roles.py), 16 DS18B20s x 1 reading/s (two 1-Wire sysfs trees that firmware-sim
   writes in RAM), the shipped rules,
   a private Mosquitto: resident memory, CPU and the start-up time to the first published event
   against a bare paho publisher from the same venv (16 QoS-1 messages/s to the same broker;
   start-up to its first message), bytes written to disk per hour (/proc/PID/io write_bytes,
   the outbox on this machine's disk), and the same during a broker outage; without TLS and
   over TLS with a password, each ratio printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
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

import paho.mqtt.client as mqtt  # noqa: E402
from harness.mqtt_clients import stop_client  # noqa: E402
from harness.servers import Mosquitto, start_server  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge_agent.decide import Reading, SensorDecider, SensorRules  # noqa: E402
from edge_agent.delivery import Delivery  # noqa: E402
from edge_agent.mqtt_link import MqttSettings  # noqa: E402
from edge_agent.outbox import Outbox, OutboxSettings  # noqa: E402
from edge_agent.sources.frames import FrameHandler  # noqa: E402
from edge_agent.stamping import EventStamper  # noqa: E402
from program_support.log_setup import configure as configure_logs  # noqa: E402
from schemas.plain_messages import ReadingEvent  # noqa: E402  (the agent's own messages)
from schemas.serial_protocol import (  # noqa: E402
    FrameDecoder,
    ReadingFrame,
    encode,
)
from schemas.topics import Topics  # noqa: E402

SENSORS = [f"28-0000000000{i:02x}" for i in range(16)]


def disk_dir() -> Path:
    """Where the bench's outboxes go: the checkout's .cache on a real disk (/tmp may be a
    tmpfs, whose writes say nothing about an SD card), made on first use."""
    path = ROOT / ".cache"
    path.mkdir(exist_ok=True)
    return path


def lines(n: int) -> bytes:
    return b"".join(encode(ReadingFrame(SENSORS[i % 16], 20 + (i % 100) / 10, i, i * 10))
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


#: what a resident page belongs to, by the name of its mapping in /proc/PID/smaps (first match)
RSS_GROUPS = (
    ("Python objects, malloc", ("[anon]", "[heap]")),
    ("OpenSSL (libcrypto, libssl, _ssl, _hashlib)", ("libcrypto", "libssl", "_ssl.", "_hashlib.")),
    ("pydantic-core (Rust)", ("_pydantic_core",)),
    ("SQLite (libsqlite3, _sqlite3)", ("libsqlite3", "_sqlite3.")),
    ("libpython", ("libpython",)),
    ("other libraries and extension modules", ("",)),
)


def rss_groups(pid: int) -> dict[str, float]:
    """Resident MiB of a process per :data:`RSS_GROUPS` (its /proc/PID/smaps)."""
    found = dict.fromkeys((name for name, _ in RSS_GROUPS), 0.0)
    mapping = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            mapping = head[5] if len(head) > 5 else "[anon]"
        elif head and head[0] == "Rss:":
            group = next(name for name, keys in RSS_GROUPS if any(k in mapping for k in keys))
            found[group] += int(head[1]) / 1024
    return found


PI_BOARD = """duration = "2d"
interval = "1s"
{sensors}"""
PI_SENSOR = """[[sensors]]
id = "28-0000000000{i:02x}"
profile = {{ kind = "sine", mean = 20.0, amplitude = 5.0, period = "1h", peak_at = "{peak}m" }}
noise = 0.1

"""
BARE_PAHO = """
import sys, time, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare-baseline", protocol=mqtt.MQTTv5)
if len(sys.argv) > 2:  # TLS and a password, as the agent connects with --pi-tls
    c.tls_set(ca_certs=sys.argv[2]); c.username_pw_set(sys.argv[3], sys.argv[4])
c.connect("127.0.0.1", int(sys.argv[1])); c.loop_start()
payload = b'{"kind":"reading","value":20.125,"unit":"degC","seq":0,"event_id":"' + b"0" * 32 + b'"}'
next_at = time.monotonic()
while True:  # 16 QoS-1 messages a second, as 16 sensors at 1 Hz would be if each were published
    for i in range(16):
        c.publish(f"bench/baseline/{i}", payload, qos=1)
    next_at += 1.0
    time.sleep(max(0.0, next_at - time.monotonic()))
"""


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def agent_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def production_agent() -> Path:
    """The agent role as users install it (bench/harness/roles.py: the built wheel, '.[agent]',
    a fresh venv reused while the tree is unchanged)."""
    from harness.roles import production_role

    return production_role("agent").venv


class FirstMessages:
    """A subscriber to ``bench/#`` on the broker's loopback listener: when the first message of
    each publisher arrived (the agent's first event, the bare publisher's first message)."""

    def __init__(self, port: int, auth: tuple[str, str] | None = None) -> None:
        self.first: dict[str, float] = {}
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-watcher",
                                  protocol=mqtt.MQTTv5)
        if auth is not None:
            self.client.username_pw_set(*auth)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe("bench/#", qos=0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("the first-message watcher did not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        who = ("bare" if msg.topic.startswith("bench/baseline/") else
               "agent" if "/event/" in msg.topic else None)
        with self._lock:
            if who is not None and who not in self.first:
                self.first[who] = now

    def wait(self, who: str, proc: subprocess.Popen[bytes], since: float,
             timeout: float = 60) -> float:
        """Seconds from ``since`` (``proc`` started) to its first message."""

        def arrived() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the {who} exited with {proc.returncode} before publishing")
            return who in self.first

        wait_for(arrived, timeout, f"the first message of the {who}")
        return self.first[who] - since

    def close(self) -> None:
        stop_client(self.client)


def pi_config(work: Path, port: int, state_dir: Path, w1_dirs: list[Path],
              tls: tuple[Path, str, Path] | None = None) -> Path:
    """16 DS18B20s on two 1-Wire buses (8 each), each read once a second, with the shipped
    example's rules (deadband 0.5, report every 300 s, summaries every 60 s), outbox defaults."""
    sources = "".join(f'[[sources]]\nkind = "onewire"\nname = "bus{i}"\nw1_dir = "{d}"\n'
                      f'interval_s = 1.0\n\n' for i, d in enumerate(w1_dirs))
    cfg = work / "agent.toml"
    secured = ""
    if tls is not None:  # (CA file, username, password file)
        secured = (f'username = "{tls[1]}"\npassword = "file:{tls[2]}"\n'
                   f'[mqtt.tls]\nca_file = "{tls[0]}"\n')
    cfg.write_text(
        f'site = "bench"\ndevice_id = "pi-bench"\nstate_file = "{state_dir}/agent-state.json"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntopic_root = "bench"\n'
        # no hub in this bench: events leave the outbox at the broker's PUBACK (with "auto" they
        # would wait up to receipt_detect_s for a receipt, and the drain would never end)
        f'receipts = "off"\n{secured}'
        f'[outbox]\npath = "{work}/outbox.db"\n'
        f'[defaults]\ndeadband = 0.5\nreport_every_s = 300.0\nsummary_interval_s = 60.0\n\n'
        f'{sources}')
    return cfg


def w1_scenario(work: Path, bus: int) -> Path:
    """8 sensors drifting on a one-hour sine (a lively day, compressed) with 0.1 degC noise."""
    body = "".join(PI_SENSOR.format(i=bus * 8 + i, peak=(bus * 8 + i) * 3) for i in range(8))
    scen = work / f"bus{bus}.toml"
    scen.write_text(PI_BOARD.format(sensors=body))
    return scen


def bench_pi(venv: Path, seconds: float, outage_s: float, tls: bool = False) -> dict[str, float]:
    """The agent from a production install, 16 sensors x 1 Hz, against a private Mosquitto:
    resident memory and CPU against a bare paho publisher (same venv, same broker, 16 QoS-1
    messages/s), bytes written to disk per hour (/proc/PID/io write_bytes), then the same during
    a broker outage of ``outage_s`` seconds (extrapolated to 10 minutes: the writes of an outage
    grow with the events it buffers, linearly) and the drain after it. With ``tls`` both connect
    over TLS with a password (the broker's certificate from a test CA), as deploy/ recommends.
    Start-up: from starting the process to its first message at the broker (the agent's first
    event, the bare publisher's first message; each started alone, the bare publisher first)."""
    # the outbox on a real disk (this machine's /), the state file in RAM as under the unit
    work = Path(tempfile.mkdtemp(prefix="agent-pi-", dir=disk_dir()))
    state_dir = Path(tempfile.mkdtemp(prefix="agent-pi-state-", dir="/dev/shm"))
    secured: tuple[Path, str, Path] | None = None
    base_args: list[str] = []
    if tls:
        from harness.tls import make_tls_broker

        password = uuid.uuid4().hex
        tls_broker = make_tls_broker(
            lambda **kw: start_server(Mosquitto, work / "mosquitto", **kw), work / "tls",
            {"pi-bench": password, "bare-baseline": password, "bench-watcher": password})
        broker, port = tls_broker.broker, tls_broker.tls_port
        watcher = FirstMessages(broker.port, ("bench-watcher", password))
        pw_file = work / "mqtt-password"
        pw_file.write_text(password)
        secured = (tls_broker.ca_file, "pi-bench", pw_file)
        base_args = [str(tls_broker.ca_file), "bare-baseline", password]
    else:
        started = start_server(Mosquitto, work / "mosquitto")
        assert isinstance(started, Mosquitto)
        broker, port = started, started.port
        watcher = FirstMessages(port)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONDONTWRITEBYTECODE="1", MALLOC_ARENA_MAX="2")  # as the unit runs it
    # the kernel's 1-Wire sysfs tree, simulated in RAM by firmware-sim (a process of its own,
    # run by this bench's Python: the simulator is not what is measured, and its packages need
    # not be in the agent's install)
    w1_dirs = [state_dir / f"w1-{bus}" for bus in range(2)]
    sim = [sys.executable, "-m", "firmware_sim.cli"]
    sims = [subprocess.Popen([*sim, "serve", "--scenario",
                              str(w1_scenario(work, bus)), "--w1-dir", str(d)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            for bus, d in enumerate(w1_dirs)]
    wait_for(lambda: sum(len(list(d.glob("28-*/w1_slave"))) for d in w1_dirs) == 16, 30,
             "the 1-Wire trees")
    cfg = pi_config(work, port, state_dir, w1_dirs, secured)
    log = (work / "agent.log").open("wb")
    started_b = time.monotonic()
    base = subprocess.Popen([str(venv / "bin" / "python"), "-c", BARE_PAHO, str(port), *base_args],
                            env=env)
    agent: subprocess.Popen[bytes] | None = None
    state_file = state_dir / "agent-state.json"
    try:
        start_b = watcher.wait("bare", base, started_b)
        started_a = time.monotonic()
        agent = subprocess.Popen([str(venv / "bin" / "edge-agent"), "run", "-c", str(cfg)],
                                 stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            start_a = watcher.wait("agent", agent, started_a)
        except RuntimeError as exc:
            log.flush()
            tail = (work / "agent.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}; its log ends:\n{tail}") from None
        wait_for(lambda: agent_state(state_file).get("broker", {}).get("connected", False), 60,
                 "the agent to connect")
        time.sleep(10)  # settle: every sensor seen, the first reports out
        t0 = time.monotonic()
        cpu_a, cpu_b = proc_cpu_s(agent.pid), proc_cpu_s(base.pid)
        wb0, log0 = proc_write_bytes(agent.pid), log.tell()
        s0 = agent_state(state_file)
        rss_a: list[int] = []
        rss_b: list[int] = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1)
            rss_a.append(rss_kib(agent.pid))
            rss_b.append(rss_kib(base.pid))
        elapsed = time.monotonic() - t0
        groups_a, groups_b = rss_groups(agent.pid), rss_groups(base.pid)
        cpu_a = (proc_cpu_s(agent.pid) - cpu_a) / elapsed * 100
        cpu_b = (proc_cpu_s(base.pid) - cpu_b) / elapsed * 100
        written = proc_write_bytes(agent.pid) - wb0
        s1 = agent_state(state_file)
        log.flush()
        logged = os.path.getsize(work / "agent.log") - log0
        events = s1["events"] - s0["events"]
        readings = s1["readings"] - s0["readings"]
        commits = s1["outbox"]["commits"] - s0["outbox"]["commits"]
        hour = 3600 / elapsed
        a, b = max(rss_a) / 1024, max(rss_b) / 1024
        how = "over TLS with a password" if tls else "no TLS"
        print(f"--- the agent from its production install, {how}")
        print(f"resident memory        : agent (16 sensors x 1 Hz, {elapsed:.0f} s, max) "
              f"{a:6.1f} MiB | bare paho publisher {b:6.1f} MiB | ratio {a / b:5.2f}x")
        for group, mib in groups_a.items():
            bare = groups_b[group]
            print(f"  resident, by mapping : {group:45} agent {mib:5.1f} | bare {bare:5.1f} | "
                  f"{mib - bare:+5.1f} MiB")
        print(f"start to first publish : agent (first event) {start_a:6.2f} s | bare paho "
              f"publisher (first message) {start_b:6.2f} s | ratio {start_a / start_b:5.2f}x")
        print(f"CPU, one core          : agent {cpu_a:6.2f} % | bare paho publisher (16 msg/s) "
              f"{cpu_b:6.2f} % | ratio {cpu_a / max(cpu_b, 0.01):5.2f}x  "
              f"({readings * hour / 3600:.1f} readings/s, {events * hour:,.0f} events/h)")
        print(f"disk writes, broker up : {written * hour / 1e6:8.2f} MB/h "
              f"({commits * hour:,.0f} commits/h, {written / max(commits, 1) / 1024:.1f} KiB "
              f"per commit) | log lines to the journal {logged * hour / 1e6:.3f} MB/h")
        # --- an outage ---------------------------------------------------------------------
        broker.stop()
        wait_for(lambda: not agent_state(state_file).get("broker", {}).get("connected", True),
                 30, "the agent to see the broker gone")
        t1 = time.monotonic()
        wb1 = proc_write_bytes(agent.pid)
        time.sleep(outage_s)
        out_elapsed = time.monotonic() - t1
        out_written = proc_write_bytes(agent.pid) - wb1
        depth = agent_state(state_file)["outbox"]["depth"]
        broker.start()
        wb2 = proc_write_bytes(agent.pid)
        t2 = time.monotonic()
        wait_for(lambda: agent_state(state_file).get("outbox", {}).get("depth", 1) == 0 and
                 agent_state(state_file)["broker"]["connected"], 120, "the backlog to drain")
        drain_written = proc_write_bytes(agent.pid) - wb2
        print(f"disk writes, outage    : {out_written / out_elapsed * 3600 / 1e6:8.2f} MB/h while "
              f"the broker is away ({out_elapsed:.0f} s, {depth} events buffered; 10 min: "
              f"{out_written / out_elapsed * 600 / 1e6:.2f} MB) | drain after it "
              f"{drain_written / 1e6:.2f} MB in {time.monotonic() - t2:.1f} s")
        return {"rss_agent": a, "rss_bare": b, "start_agent": start_a, "start_bare": start_b}
    finally:
        for p in (agent, base, *sims):
            if p is not None:
                p.terminate()
                p.wait(30)
        watcher.close()
        log.close()
        broker.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def self_write_bytes() -> int:
    return proc_write_bytes(os.getpid())


def bench_commit_bytes(n: int = 300) -> None:
    """Bytes one group commit writes to disk (write_bytes, so whole 4 KiB blocks as the card gets
    them), an event stored and then its ack deleted, one event per commit as at 16 sensors x 1 Hz:
    the outbox's 1 KiB pages against SQLite's default 4 KiB (an outbox made before the change)."""
    topic = "thermopipe/bench/pi-bench/event/x"
    results = {}
    for page_size in (4096, 1024):
        work = Path(tempfile.mkdtemp(prefix="commit-bytes-", dir=disk_dir()))
        path = work / "o.db"
        if page_size != 1024:  # an outbox file from before: SQLite's default page size
            raw = sqlite3.connect(path)
            raw.execute(f"PRAGMA page_size = {page_size}")
            raw.execute("VACUUM")
            raw.close()
        outbox = Outbox(OutboxSettings(path=path, min_free_bytes=0))
        events = reading_events(n + 50)
        try:
            for i, event in enumerate(events):
                if i == 50:  # after a warm-up: the tables and indexes exist
                    os.sync()
                    before = self_write_bytes()
                outbox.append([(event.replace(seq=outbox.reserve_seq()), topic)])
                stored = outbox.commit()
                outbox.ack([r.seq for r in stored])
            outbox.commit()
            os.sync()
            results[page_size] = (self_write_bytes() - before) / n
            assert outbox._db.execute("PRAGMA page_size").fetchone()[0] == page_size
        finally:
            outbox.close()
            shutil.rmtree(work, ignore_errors=True)
    print(f"bytes per event        : 1 KiB pages {results[1024] / 1024:6.1f} KiB | 4 KiB pages "
          f"(SQLite's default) {results[4096] / 1024:6.1f} KiB | ratio "
          f"{results[4096] / results[1024]:5.2f}x fewer  (store + ack, one commit each)")


def reading_events(n: int, device: str = "pi-bench") -> list[ReadingEvent]:
    return [ReadingEvent(event_id=f"{i:032x}", site="bench", device_id=device,
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
        payloads = [(e.seq, e.event_id, topic, e.to_json()) for e in events]
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
        stop_client(client)
    return rate


class ReceiptResponder:
    """A minimal hub for the receipts: subscribes to every device event and summary, and
    publishes real :class:`schemas.models.Receipt` messages to each device's receipt topic
    through the hub's own :class:`hub.receipts.ReceiptBook` (at most one receipt per device per
    ``interval_s``, the hub's default 1 s). Unlike the hub it journals nothing: it answers as
    soon as a message arrives, so it measures what receipts cost the agent, not the hub."""

    def __init__(self, host: str, port: int, root: str = "bench", interval_s: float = 1.0) -> None:
        from hub.receipts import ReceiptBook

        self.topics = Topics(root)
        self.book = ReceiptBook("bench-responder", lambda: uuid.uuid4().hex, interval_s)
        self._seen: dict[tuple[str, str], list[int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.receipts = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"responder-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(
            [(f"{root}/+/+/event/+", 1), (f"{root}/+/+/summary/+", 1)])
        self.client.connect(host, port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("the receipt responder did not subscribe")
        self._thread = threading.Thread(target=self._run, name="responder", daemon=True)
        self._thread.start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        event = json.loads(msg.payload)
        with self._lock:
            self._seen.setdefault((event["site"], event["device_id"]), []).append(event["seq"])

    def _run(self) -> None:
        from schemas import encode as encode_message
        from schemas.seq_ranges import seq_ranges

        while not self._stop.wait(0.02):
            with self._lock:
                seen, self._seen = self._seen, {}
            if seen:
                self.book.note({key: seq_ranges(seqs) for key, seqs in seen.items()})
            for receipt in self.book.due(time.monotonic()):
                self.client.publish(self.topics.receipt(receipt.site, receipt.device_id),
                                    encode_message(receipt), qos=1)
                self.receipts += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        stop_client(self.client)


def delivery_publish(host: str, port: int, n: int, tmp: Path, *, backlog: bool,
                     receipts: str = "off") -> dict[str, float]:
    """Delivery from the outbox: events/s until the last PUBACK, and until the outbox is empty
    (with receipts on: every event receipted and deleted), and the bytes written to disk per
    event (/proc/self/io write_bytes: the outbox file and its WAL; ``tmp`` on a real disk).

    live: Delivery is connected first, then the events are submitted in batches of 500 and go
    through the group commit, publish and ack. backlog: the events are committed to the outbox
    before Delivery starts (as after an outage), then replayed at an unlimited rate.
    ``receipts="off"`` deletes at the PUBACK (no hub needed); ``"on"`` keeps every event until
    a receipt covers it (a :class:`ReceiptResponder` must be running). Each call is a device of
    its own (its seqs start at 0: a late receipt for another run's device must not match)."""
    device = f"pi-bench-{uuid.uuid4().hex[:6]}"
    events = reading_events(n, device)
    outbox = Outbox(OutboxSettings(path=tmp / f"o-{uuid.uuid4().hex[:6]}.db", min_free_bytes=0,
                                   backlog_rate_per_s=0))
    settings = MqttSettings(host=host, port=port, topic_root="bench", receipts=receipts,
                            client_id=f"agent-{uuid.uuid4().hex[:8]}", status_interval_s=3600)
    delivery = Delivery(outbox, settings, "bench", device, None, 0)
    topics = delivery.link.topics
    try:
        if backlog:
            for i in range(0, n, 500):
                outbox.append((e, topics.for_event(e)) for e in events[i:i + 500])
                outbox.commit()
            os.sync()
            written = self_write_bytes()
            t = time.perf_counter()
            delivery.start()
        else:
            delivery.start()
            delivery.link.wait_connected(10)
            os.sync()
            written = self_write_bytes()
            t = time.perf_counter()
            for i in range(0, n, 500):
                delivery.submit(events[i:i + 500])
        wait_for(lambda: delivery.count("acked") >= n, 120, "every PUBACK")
        acked = n / (time.perf_counter() - t)
        wait_for(lambda: outbox.depth == 0 and not outbox.staged, 120,
                 "every event to leave the outbox")
        emptied = n / (time.perf_counter() - t)
        counters = delivery.counters()
        delivery.flush()
        os.sync()
        written = self_write_bytes() - written
        # with receipts on, an event whose receipt is late may go out again (the window, or
        # the receipt timeout): counted in resent_*, sent with the same id and seq, replayed
        resent = sum(v for k, v in counters.items() if k.startswith("resent_"))
        published, replayed = counters["published"], counters["replayed"]
        if not (n <= published <= n + resent and replayed == published - (0 if backlog else n)
                and counters["rejected"] == counters["undecodable"] == 0):
            raise RuntimeError(f"Delivery did not publish each event once: {counters}")
        resent = published - n
    finally:
        delivery.stop()
        outbox.close()
    return {"acked": acked, "emptied": emptied, "bytes": written / n, "resent": resent}


def bench_publish(n: int, rounds: int) -> None:
    """The QoS-1 publish rates (issue 12 item 6, issue 16 item 3): live and backlog replay with
    receipts off (deleted at the PUBACK), then live and backlog replay with receipts on against
    a receipt responder, each beside a bare paho publisher of the same round (with the responder
    running too for the receipts-on figures: it receives every message either way). ``rounds``
    rounds of each, interleaved; the medians are printed, and each round's replay ratio."""
    events = reading_events(n)
    topics = Topics("bench")
    items = [(topics.for_event(e), e.to_json()) for e in events]
    max_inflight = MqttSettings().max_inflight
    work = Path(tempfile.mkdtemp(prefix="publish-", dir=disk_dir()))  # a real disk
    broker = start_server(Mosquitto, work / "mosquitto")
    assert isinstance(broker, Mosquitto)
    runs: dict[str, list[dict[str, float]]] = {}
    bare: dict[str, list[float]] = {"off": [], "on": []}

    def one_round(mode: str) -> None:
        bare[mode].append(bare_paho_publish(broker.host, broker.port, items, max_inflight))
        for backlog in (False, True):
            runs.setdefault(f"{'backlog' if backlog else 'live'}, receipts {mode}", []).append(
                delivery_publish(broker.host, broker.port, n, work, backlog=backlog,
                                 receipts=mode))

    try:
        for _ in range(rounds):
            one_round("off")
        responder = ReceiptResponder(broker.host, broker.port)
        try:
            for _ in range(rounds):
                one_round("on")
        finally:
            responder.close()
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    print(f"bare paho publish      : {med(bare['off']):9,.0f} msg/s ({n} messages, in-flight cap "
          f"{max_inflight}, median of {rounds}); with the receipt responder subscribed "
          f"{med(bare['on']):9,.0f} msg/s")
    for name, results in runs.items():
        base = bare[name.rsplit(" ", 1)[1]]
        ratios = [r["acked"] / b for r, b in zip(results, base, strict=True)]
        print(f"QoS-1 {name:<21}: {med(r['acked'] for r in results):9,.0f} ev/s to the last "
              f"PUBACK, ratio {med(ratios):5.2f}x the bare publisher (rounds: "
              f"{', '.join(f'{x:.2f}' for x in ratios)}) | outbox empty "
              f"{med(r['emptied'] for r in results):9,.0f} ev/s | "
              f"{med(r['bytes'] for r in results):6.0f} bytes written per event"
              + (f" | resent {sum(r['resent'] for r in results):.0f}"
                 if any(r["resent"] for r in results) else ""))
    for kind in ("live", "backlog"):
        on, off = runs[f"{kind}, receipts on"], runs[f"{kind}, receipts off"]
        rate = med(r["acked"] for r in on) / med(r["acked"] for r in off)
        extra = med(r["bytes"] for r in on) - med(r["bytes"] for r in off)
        print(f"receipts on vs off     : {kind:<7} rate {rate:5.2f}x, bytes written per event "
              f"{extra:+6.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the publish figures (interleaved with the bare "
                             "publisher's; medians printed)")
    parser.add_argument("--publish-only", action="store_true",
                        help="only the QoS-1 publish figures (live and backlog replay, "
                             "receipts off and on)")
    parser.add_argument("--pi-seconds", type=float, default=120.0,
                        help="how long the production-install agent is measured (broker up)")
    parser.add_argument("--outage-seconds", type=float, default=60.0,
                        help="the broker outage measured (extrapolated to 10 minutes)")
    parser.add_argument("--pi-only", action="store_true",
                        help="only the production-install run (memory, CPU, disk writes)")
    parser.add_argument("--pi-tls", choices=("both", "off", "only"), default="both",
                        help="the production-install run without TLS and over TLS with a "
                             "password (both the agent and the bare publisher): both (default), "
                             "off (no TLS only) or only (TLS only)")
    args = parser.parse_args()
    configure_logs("warning")  # the figures on stdout; only problems on stderr
    print(f"edge agent benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    if args.publish_only:
        bench_publish(args.messages, args.rounds)
        return
    if not args.pi_only:
        bench_processing(args.readings)
        bench_outbox(args.readings)
        bench_publish(args.messages, args.rounds)
    bench_commit_bytes()
    venv = production_agent()
    runs = {tls: bench_pi(venv, args.pi_seconds, args.outage_seconds, tls=tls)
            for tls in {"both": (False, True), "off": (False,), "only": (True,)}[args.pi_tls]}
    print("--- the agent against the bare paho publisher of the same run (16 sensors x 1 Hz)")
    for tls, f in runs.items():
        print(f"{'TLS + password' if tls else 'no TLS':22} : memory {f['rss_agent']:5.1f} / "
              f"{f['rss_bare']:5.1f} MiB = {f['rss_agent'] / f['rss_bare']:4.2f}x | start to "
              f"first publish {f['start_agent']:5.2f} / {f['start_bare']:5.2f} s = "
              f"{f['start_agent'] / f['start_bare']:4.2f}x")


if __name__ == "__main__":
    main()
