"""Sustained hub throughput against a bare paho subscriber writing to InfluxDB, on this machine.

    python bench/hub_bench.py [--events 50000] [--workers 2] [--repeat 3] [--storage-only]
                              [--install-node-red | --no-node-red] [--check]

Starts a private Mosquitto and a private InfluxDB 1.x, then for each contender preloads the same
N events (JSON readings of 16 devices x 2 sensors) into its persistent MQTT session while it is
offline, and measures how fast it drains them into InfluxDB:

1. bare -> InfluxDB (the baseline of the targets): a stock paho subscriber (QoS 1, auto-ack)
   that does what a user's own bridge does: ``json.loads`` each payload, format a line of line
   protocol, and a writer thread posts batches (up to ``INFLUX_BATCH`` lines, at least every
   ``INFLUX_FLUSH_S``: the hub storage's defaults) to InfluxDB 1.x ``/write``; timed from its
   first message to the write that stored the N-th event;
2. for reference, subscribers that only count: stock paho, and the hub's receive path
   (``hub.mqtt_client.BufferedClient``);
3. Node-RED (``bench/nodered_baseline.py``), the tool users pick instead: Node-RED 4.1.x with
   node-red-contrib-influxdb, pinned, in its batch flow (mqtt in -> json -> function -> join of
   2,000 / 0.2 s -> influxdb batch) into the same InfluxDB, when it is installed in
   ``~/.cache/thermopipe/node-red`` (``--install-node-red`` installs it with npm; without it and
   not installed, Node-RED is skipped and said so: no network is needed);
4. hub: one ``hub run`` process, every consumer on (storage to InfluxDB 1.x, alerting, the
   dashboard), receipts on (the default) and, in the same round, receipts off;
5. hub --workers W: W processes on one MQTT 5 shared subscription.

``--check`` runs the baseline and the one-process hub and fails below the floor against the
baseline recorded in bench/README.md; when Node-RED is installed it also runs Node-RED and
``--workers 2`` and fails below the floors against Node-RED recorded there (``--no-node-red``
leaves it out).

The hub's time runs from the moment every hub process has received its first event (with
``--workers`` one process is up a few hundred ms before the other and drains alone meanwhile:
that start is not throughput; the events received before that moment are not counted, though
part of their handling falls after it, so the rate is on the low side; the workers' line also
gives the rate from the first worker's first event) to the moment EVERY consumer (storage,
alerting, dashboard) has handled N (scraped from /metrics; storage counts an event once
InfluxDB answered its write); nothing lost or duplicated is checked by counting the points and
the distinct event ids in InfluxDB. Resident memory is the largest VmRSS seen per hub process.
Node-RED is timed the same way: from its first reading to all N points visible in InfluxDB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

import paho.mqtt.client as mqtt  # noqa: E402
from harness.mqtt_clients import stop_client  # noqa: E402
from harness.roles import RoleEnv, production_role  # noqa: E402
from harness.servers import InfluxDB1, Mosquitto, free_port, start_server  # noqa: E402
from nodered_baseline import INSTALL_HINT, NODE_RED_VERSION, NodeRed  # noqa: E402
from nodered_baseline import flows as nodered_flows  # noqa: E402
from nodered_baseline import install as install_nodered  # noqa: E402
from nodered_baseline import installed as nodered_installed  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from hub.mqtt_client import BufferedClient  # noqa: E402
from schemas.codec import encode  # noqa: E402
from schemas.ids import new_event_id  # noqa: E402
from schemas.models import ReadingEvent  # noqa: E402
from schemas.topics import Topics  # noqa: E402

ROOT_TOPIC = "bench"
#: the bare -> InfluxDB baseline batches like the hub's storage does by default
INFLUX_BATCH = 2000
INFLUX_FLUSH_S = 0.2
README = ROOT / "bench" / "README.md"
#: the line of bench/README.md that records the floor of ``--check``
FLOOR_LINE = re.compile(r"^`--check` floor: \*\*([0-9.]+)x\*\*", re.M)
#: the line that records the floors against Node-RED: one process, then ``--workers 2``
NODERED_FLOOR_LINE = re.compile(
    r"^`--check` Node-RED floors: \*\*([0-9.]+)x\*\* one process, \*\*([0-9.]+)x\*\*", re.M)


@contextlib.contextmanager
def private_servers(prefix: str, keep_env: str,
                    ) -> Iterator[tuple[Path, Mosquitto, InfluxDB1]]:
    """A work directory with a private Mosquitto and InfluxDB 1.x in it, all removed after
    (the directory is kept when the environment variable ``keep_env`` is set)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    broker = start_server(Mosquitto, workdir / "mosquitto")
    try:
        influx = start_server(InfluxDB1, workdir / "influxdb")
    except BaseException:
        broker.stop()
        raise
    assert isinstance(broker, Mosquitto)
    assert isinstance(influx, InfluxDB1)
    try:
        yield workdir, broker, influx
    finally:
        broker.stop()
        influx.stop()
        if not os.environ.get(keep_env):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")


def check_floor() -> float:
    """The floor of ``--check`` as recorded in bench/README.md."""
    m = FLOOR_LINE.search(README.read_text())
    if m is None:
        raise SystemExit(f"no line '`--check` floor: **N.NNx**' in {README}")
    return float(m.group(1))


def nodered_floors() -> tuple[float, float]:
    """The floors of ``--check`` against Node-RED (one process, two workers), from the README."""
    m = NODERED_FLOOR_LINE.search(README.read_text())
    if m is None:
        raise SystemExit(f"no line '`--check` Node-RED floors: **N.NNx** one process, "
                         f"**N.NNx** ...' in {README}")
    return float(m.group(1)), float(m.group(2))


def add_random_ids_option(parser: argparse.ArgumentParser) -> None:
    """``--random-ids``: the backlog's ids made as agents before issue 26 made them."""
    parser.add_argument("--random-ids", action="store_true",
                        help="random event ids (uuid4: agents before issue 26, other "
                             "publishers) instead of the agent's time-ordered ones")


def make_messages(n: int, *, random_ids: bool = False) -> list[tuple[str, bytes]]:
    """The backlog: readings of 16 devices x 2 sensors, with event ids made as the agent makes
    them (``schemas.ids.new_event_id``: time-ordered), or random (``uuid4``, as agents before
    issue 26 and other publishers make them) with ``random_ids``."""
    topics = Topics(ROOT_TOPIC)
    base = datetime.now(UTC) - timedelta(hours=1)
    make_id = (lambda: uuid.uuid4().hex) if random_ids else new_event_id
    out = []
    for i in range(n):
        event = ReadingEvent(event_id=make_id(), site="bench", device_id=f"d{i % 16}",
                             sensor_id=f"t{(i // 16) % 2}", seq=i // 16 + 1,  # per device
                             time=base + timedelta(microseconds=i * 50), clock_synced=True,
                             value=20.0 + (i % 100) / 10, unit="degC")
        out.append((topics.for_event(event), encode(event)))
    return out


def _connect(client_id: str, host: str, port: int, cls: type[mqtt.Client] = mqtt.Client,
             **callbacks) -> mqtt.Client:
    client = cls(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    for name, fn in callbacks.items():
        setattr(client, name, fn)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect(host, port, clean_start=False, properties=props)
    return client


def create_session(broker: Mosquitto, client_id: str, filters: list[str]) -> None:
    """Make a persistent session with its subscriptions, then leave it offline."""
    done = threading.Event()
    client = _connect(client_id, broker.host, broker.port,
                      on_connect=lambda c, *a: c.subscribe([(f, 1) for f in filters]),
                      on_subscribe=lambda *a: done.set())
    client.loop_start()
    if not done.wait(10):
        raise RuntimeError(f"could not subscribe {client_id}")
    stop_client(client)


def drop_session(broker: Mosquitto, client_id: str) -> None:
    """End a drained contender's session: left subscribed, it would queue every later round's
    messages in the broker (which then saves them to disk every second and slows all rounds)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(broker.host, broker.port, clean_start=True, properties=props)
    client.loop_start()
    time.sleep(0.2)
    stop_client(client)


def publish(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    sem = threading.BoundedSemaphore(2000)
    client.on_publish = lambda *a: sem.release()
    client.connect(broker.host, broker.port)
    client.loop_start()
    for topic, payload in messages:
        sem.acquire()
        client.publish(topic, payload, qos=1)
    for _ in range(2000):
        sem.acquire()
    stop_client(client)


def bare_drain(broker: Mosquitto, messages: list[tuple[str, bytes]], tag: str = "",
               cls: type[mqtt.Client] = mqtt.Client) -> float:
    client_id = f"bench-bare{tag}-{cls.__name__}"
    create_session(broker, client_id, Topics(ROOT_TOPIC).hub_filters())
    publish(broker, messages)
    n = len(messages)
    count = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(_c, _u, _m) -> None:
        nonlocal count, first, last
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count == n:
            last = time.perf_counter()
            done.set()

    client = _connect(client_id, broker.host, broker.port, cls, on_message=on_message)
    client.loop_start()
    if not done.wait(300):
        raise RuntimeError(f"bare subscriber got {count} of {n}")
    stop_client(client)
    drop_session(broker, client_id)
    return n / (last - first)


def _post_lines(influx: InfluxDB1, db: str, lines: list[str]) -> None:
    request = urllib.request.Request(
        f"{influx.url}/write?db={db}&precision=ns", data="\n".join(lines).encode(),
        method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        resp.read()


def bare_influx_drain(broker: Mosquitto, influx: InfluxDB1, messages: list[tuple[str, bytes]],
                      tag: str = "") -> dict[str, Any]:
    """The baseline of the targets: a bare stock paho subscriber storing every reading in
    InfluxDB the way a user's own bridge would (no validation, no journal, no dedup): the
    callback parses the JSON and formats a line; a writer thread posts what has accumulated,
    up to ``INFLUX_BATCH`` lines, whenever that many wait or ``INFLUX_FLUSH_S`` has passed,
    one request at a time. Timed from the first message to the write that stored the N-th."""
    n = len(messages)
    db = f"bench_bare_{uuid.uuid4().hex[:6]}"
    influx.create_database(db)
    client_id = f"bench-bare-influx{tag}"
    create_session(broker, client_id, Topics(ROOT_TOPIC).hub_filters())
    publish(broker, messages)
    lines: list[str] = []
    cond = threading.Condition()
    first = 0.0

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal first
        if not first:
            first = time.perf_counter()
        d = json.loads(msg.payload)
        ns = int(datetime.fromisoformat(d["time"]).timestamp() * 1e6) * 1000 + d["seq"] % 1000
        line = (f'sensor_event,device={d["device_id"]},sensor={d["sensor_id"]},'
                f'site={d["site"]},unit={d["unit"]} value={float(d["value"])},seq={d["seq"]}i,'
                f'event_id="{d["event_id"]}" {ns}')
        with cond:
            lines.append(line)
            if len(lines) == INFLUX_BATCH:
                cond.notify()

    written = 0
    last = 0.0
    error: list[BaseException] = []

    def writer() -> None:
        nonlocal written, last
        try:
            while written < n:
                with cond:
                    cond.wait_for(lambda: len(lines) >= INFLUX_BATCH, INFLUX_FLUSH_S)
                    chunk = lines[:INFLUX_BATCH]
                    del lines[:INFLUX_BATCH]
                if chunk:
                    _post_lines(influx, db, chunk)
                    written += len(chunk)
            last = time.perf_counter()
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    servers = [p.pid for p in (broker.proc, influx.proc) if p is not None]
    cpu0 = [time.process_time(), *map(_cpu_s, servers)]
    client = _connect(client_id, broker.host, broker.port, on_message=on_message)
    client.loop_start()
    thread.join(300)
    cpu1 = [time.process_time(), *map(_cpu_s, servers)]
    stop_client(client)
    drop_session(broker, client_id)
    if error or thread.is_alive():
        raise RuntimeError(f"bare -> InfluxDB wrote {written} of {n}: {error}")
    count = influx.series_rows('SELECT COUNT("seq") FROM "sensor_event"', db)[0]["count"]
    return {"rate": n / (last - first), "stored": count,
            "cpu_us": [(b - a) / n * 1e6 for a, b in zip(cpu0, cpu1, strict=True)]}


def nodered_drain(broker: Mosquitto, influx: InfluxDB1, messages: list[tuple[str, bytes]],
                  workdir: Path, root: Path, *, tag: str = "", progress: bool = False,
                  ) -> dict[str, Any]:
    """The tool users pick instead: Node-RED's batch flow (``bench/nodered_baseline.py``) drains
    the same backlog from its persistent session into InfluxDB. Timed like the hub: from its
    first reading to InfluxDB's answer to the write that held the N-th point (both noted by
    the flow itself, so a late answer to the bench's polls does not count); then the points
    and distinct event ids are counted in InfluxDB. RSS is the largest VmRSS of the node
    process during the drain."""
    n = len(messages)
    db = f"bench_nodered_{uuid.uuid4().hex[:6]}"
    influx.create_database(db)
    client_id = f"bench-nodered{tag}"
    topic = Topics(ROOT_TOPIC).hub_filters()[0]  # readings: all the backlog is
    create_session(broker, client_id, [topic])
    publish(broker, messages)
    influx_port = int(influx.url.rsplit(":", 1)[1])
    node = NodeRed(root, workdir / f"node-red{tag}", free_port(),
                   nodered_flows(broker_port=broker.port, client_id=client_id, topic=topic,
                                 influx_port=influx_port, db=db, expected=n))
    count_q = 'SELECT COUNT("seq") FROM "sensor_event"'
    servers = [p.pid for p in (broker.proc, influx.proc) if p is not None]
    # (wall time, CPU s of node, mosquitto, influxd) each turn: while Node-RED drains, its one
    # thread may answer the stats request late, so the CPU at its first reading is the last
    # sample taken before it
    samples: list[tuple[float, list[float]]] = []
    cpu1: list[float] = []
    rss = 0
    first = last = 0.0
    node.start()
    try:
        started = time.monotonic()
        deadline = started + 600
        while time.monotonic() < deadline:
            if node.exited() is not None:
                raise RuntimeError(f"Node-RED exited with {node.exited()}: {node.log_tail()}")
            samples.append((time.time(), [_cpu_s(node.pid), *map(_cpu_s, servers)]))
            rss = max(rss, _rss_kb(node.pid))
            stats = node.stats()
            if stats is None and time.monotonic() - started > 60 and not first:
                raise RuntimeError(f"Node-RED's flows did not start in 60 s: {node.log_tail()}")
            seen = stats["count"] if stats else 0
            if stats and stats["first"]:
                first = stats["first"]
            if progress:
                print(f"  node-red t={time.time() - first if first else 0:5.1f}s in={seen:7.0f} "
                      f"written={stats['written'] if stats else 0:7.0f} "
                      f"rss={_rss_kb(node.pid) / 1024:.0f}MB", flush=True)
            if stats and stats["last"]:  # InfluxDB acknowledged the N-th point
                last = stats["last"]
                cpu1 = [_cpu_s(node.pid), *map(_cpu_s, servers)]
                break
            time.sleep(0.02 if not seen else 0.2)
        else:
            raise RuntimeError(f"Node-RED did not store every event in 600 s: "
                               f"{node.log_tail()}")
    finally:
        node.stop()
        drop_session(broker, client_id)
    cpu0 = next((cpu for t, cpu in reversed(samples) if t <= first), samples[0][1])
    count = influx.series_rows(count_q, db)[0]["count"]
    distinct = influx.series_rows('SELECT COUNT(DISTINCT("event_id")) FROM "sensor_event"',
                                  db)[0]["count"]
    return {"rate": n / (last - first), "stored": count, "distinct": distinct,
            "cpu_us": [(b - a) / n * 1e6 for a, b in zip(cpu0, cpu1, strict=True)],
            "rss_mb": rss / 1024}


def _scrape(port: int) -> dict[str, float]:
    """Events in, and events handled per consumer (``consumer:NAME``), from /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    m = re.search(r"^thermopipe_hub_events_in_total ([0-9.e+]+)", text, re.M)
    if m:
        out["in"] = float(m.group(1))
    for name, value in re.findall(
            r'^thermopipe_hub_consumer_processed_total\{consumer="([^"]+)"\} ([0-9.e+]+)',
            text, re.M):
        out[f"consumer:{name}"] = float(value)
    return out


def _rss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) if m else 0


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def hub_toml(hub_id: str, data_dir: Path, *, broker: Mosquitto, root: str, client_id: str,
             influx: InfluxDB1, db: str, mqtt_extra: str = "") -> str:
    """The start of a bench hub's config: its broker and storage to InfluxDB 1.x."""
    return f"""hub_id = "{hub_id}"
data_dir = "{data_dir}"
[mqtt]
host = "{broker.host}"
port = {broker.port}
topic_root = "{root}"
client_id = "{client_id}"
{mqtt_extra}
[storage]
enabled = true
mode = "v1"
url = "{influx.url}"
database = "{db}"
"""


def hub_drain(broker: Mosquitto, influx: InfluxDB1, messages: list[tuple[str, bytes]],
              workers: int, workdir: Path, *, hub: RoleEnv, profile: str | None = None,
              storage_only: bool = False, switch_interval: float = 0.0,
              tag: str = "", progress: bool = False, receipts: bool = True,
              profile_s: float = 10.0) -> dict[str, Any]:
    n = len(messages)
    if not receipts:
        tag += "-noreceipts"
    db = f"bench_w{workers}_{uuid.uuid4().hex[:6]}"
    influx.create_database(db)
    group = f"g{workers}{tag}" if workers > 1 else ""  # per round: no offline member left
    # a fresh journal and session per round: the same event ids would otherwise be duplicates
    data_dir = workdir / f"hub-w{workers}{tag}"
    http_port = free_port()
    client_id = f"bench-hub-w{workers}{tag}"
    config = workdir / f"hub-w{workers}{tag}.toml"
    config.write_text(hub_toml(f"bench{workers}", data_dir, broker=broker, root=ROOT_TOPIC,
                               client_id=client_id, influx=influx, db=db,
                               mqtt_extra=f'shared_group = "{group}"' if group else "") + f"""
[alerting]
enabled = {"false" if storage_only else "true"}
state_dir = "{data_dir}/alerting"
[dashboard]
enabled = {"false" if storage_only else "true"}
[http]
port = {http_port}
[log]
level = "warning"
""" + ("" if receipts else "[receipts]\nenabled = false\ndetect_gaps = false\n"))
    topics = Topics(ROOT_TOPIC)
    ports = [http_port + i for i in range(workers)]
    if workers == 1:
        create_session(broker, client_id, topics.hub_filters())
    else:
        for i in range(workers):
            create_session(broker, f"{client_id}-w{i}", topics.hub_filters(group))
    publish(broker, messages)
    # the hub as users install it (its own venv, from the wheel): the dev venv's extras would
    # change what it loads (structlog takes rich and greenlet when they are there)
    cmd = [str(hub.bin("hub")), "run", "-c", str(config)]
    if switch_interval:  # experiment: the GIL hand-over interval of the hub process(es)
        cmd[:1] = [str(hub.python), "-c",
                   f"import runpy, sys; sys.argv[0] = 'hub'; sys.setswitchinterval("
                   f"{switch_interval}); runpy.run_module('hub.cli', run_name='__main__')"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    log = (workdir / f"hub-w{workers}{tag}.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    spy: subprocess.Popen[bytes] | None = None
    first = last = started = 0.0
    in_at_start = 0.0
    servers = [p.pid for p in (broker.proc, influx.proc) if p is not None]
    cpu0: list[float] = []
    cpu1: list[float] = []
    expected = 1 if storage_only else 3  # storage, alerting, dashboard
    rss: dict[int, int] = {}
    per_worker: list[float] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the hub exited with {proc.returncode}: see {log.name}")
            samples = [_scrape(p) for p in ports]
            now = time.perf_counter()
            got_in = sum(s.get("in", 0) for s in samples)
            # every consumer (storage, alerting, dashboard) must have handled all N events
            handled: dict[str, float] = {}
            for s in samples:
                for key, value in s.items():
                    if key.startswith("consumer:"):
                        handled[key] = handled.get(key, 0) + value
            if not started and all(x.get("in", 0) > 0 for x in samples):
                # every process is draining: the window of the rate opens (events received
                # before it are left out, though their handling may fall inside: conservative)
                started, in_at_start = now, got_in
            if got_in > 0 and not first:
                first = now
                cpu0 = [sum(map(_cpu_s, [proc.pid, *_children(proc.pid)])),
                        *map(_cpu_s, servers)]
                if profile:  # py-spy's collapsed stacks of the hub process while it drains
                    # --gil: only the thread holding the GIL (the process is GIL-bound)
                    spy = subprocess.Popen(
                        ["py-spy", "record", "--format", "raw", "-r", "200", "-d",
                         str(max(1, round(profile_s))), "--gil", "--pid", str(proc.pid), "-o",
                         profile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for pid in [proc.pid, *_children(proc.pid)]:
                rss[pid] = max(rss.get(pid, 0), _rss_kb(pid))
            if progress:
                print(f"  t={now - first if first else 0:5.1f}s in={got_in:7.0f} "
                      f"done={min(handled.values()) if handled else 0:7.0f} "
                      f"rss={_rss_kb(proc.pid) / 1024:.0f}MB", flush=True)
            if handled.get("consumer:storage", 0) >= n and len(handled) >= expected and \
                    min(handled.values()) >= n:
                last = now
                cpu1 = [sum(map(_cpu_s, [proc.pid, *_children(proc.pid)])),
                        *map(_cpu_s, servers)]
                per_worker = [s.get("in", 0) for s in samples]
                break
            # every 20 ms around the start and the end (they set the time), else every 200 ms
            # (a scrape costs the hub a little CPU)
            done = min(handled.values()) if len(handled) >= expected else 0
            time.sleep(0.02 if not started or done >= 0.85 * n else 0.2)
        else:
            raise RuntimeError("the hub did not store every event in 600 s")
    finally:
        if spy is not None:
            spy.wait(60)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
        for session in ([client_id] if workers == 1 else
                        [f"{client_id}-w{i}" for i in range(workers)]):
            drop_session(broker, session)
    count = influx.series_rows('SELECT COUNT("seq") FROM "sensor_event"', db)[0]["count"]
    distinct = influx.series_rows('SELECT COUNT(DISTINCT("event_id")) FROM "sensor_event"',
                                  db)[0]["count"]
    hub_pids = [p for p in rss if workers == 1 or p != proc.pid]
    rate_whole = n / (last - first)
    # a small backlog can be all in before the window opens: then the whole drain's rate
    windowed = n - in_at_start
    rate = windowed / (last - started) if windowed >= 0.1 * n and last > started else rate_whole
    return {"rate": rate, "rate_whole": rate_whole,
            "skew_s": started - first, "stored": count, "distinct": distinct,
            "cpu_us": [(b - a) / n * 1e6 for a, b in zip(cpu0, cpu1, strict=True)],
            "rss_mb": max(rss[p] for p in hub_pids) / 1024, "split": per_worker}


def _cpu_text(cpu_us: list[float], who: str) -> str:
    """CPU time per event of the contender, Mosquitto and InfluxDB during a drain."""
    names = [who, "mosquitto", "influxd"]
    return ", ".join(f"{name} {us:.1f} us" for name, us in zip(names, cpu_us, strict=False)) + \
        f" (total {sum(cpu_us):.1f} us)"


def _nodered_root(args: argparse.Namespace) -> Path | None:
    """Node-RED's install to run, or None (said why, and how to install it)."""
    if args.no_node_red:
        return None
    root = install_nodered() if args.install_node_red else nodered_installed()
    if root is None:
        print(f"Node-RED {NODE_RED_VERSION}: not installed, skipped; {INSTALL_HINT}",
              flush=True)
    return root


def _range(values: list[float]) -> str:
    return (f"{min(values):.2f}-{max(values):.2f}x (median {statistics.median(values):.2f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    add_random_ids_option(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", help="record the one-process hub with py-spy to this file")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--switch-interval", type=float, default=0.0,
                        help="run the one-process hub with sys.setswitchinterval(S) (experiment)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds (each with its own bare baseline); prints the ranges")
    parser.add_argument("--progress", action="store_true",
                        help="print events in / handled and RSS every 200 ms while a hub drains")
    parser.add_argument("--storage-only", action="store_true",
                        help="alerting and dashboard off (to see what they cost)")
    parser.add_argument("--no-receipts-off", action="store_true",
                        help="skip the one-process hub with receipts off")
    parser.add_argument("--profile-seconds", type=float, default=10.0,
                        help="with --profile: seconds of py-spy from the first event")
    parser.add_argument("--check", action="store_true",
                        help="one process, receipts on, only: print the hub's rate against the "
                             "bare stock paho -> InfluxDB drain of the same run (median of "
                             "--repeat rounds) and exit 1 below the floor in bench/README.md; "
                             "with Node-RED installed, also against Node-RED (one process and "
                             "--workers 2) and its floors")
    parser.add_argument("--floor", type=float,
                        help="with --check: this floor instead of bench/README.md's")
    parser.add_argument("--node-red-floors", type=float, nargs=2, metavar=("ONE", "WORKERS"),
                        help="with --check: these floors against Node-RED (one process, "
                             "--workers 2) instead of bench/README.md's")
    parser.add_argument("--install-node-red", action="store_true",
                        help=f"install Node-RED {NODE_RED_VERSION} and node-red-contrib-influxdb "
                             "(pinned, npm, into ~/.cache/thermopipe/node-red) if missing, and "
                             "run it as a contender")
    parser.add_argument("--no-node-red", action="store_true",
                        help="leave Node-RED out even when it is installed")
    args = parser.parse_args()
    nodered = _nodered_root(args)
    if args.check:
        # against Node-RED the check covers the workers too (its second floor)
        args.skip_workers = args.skip_workers or nodered is None
        args.no_receipts_off = True
    floor = (args.floor or check_floor()) if args.check else 0.0
    nr_floors = ((tuple(args.node_red_floors) if args.node_red_floors else nodered_floors())
                 if args.check and nodered is not None else (0.0, 0.0))
    # SIGTERM (e.g. from `timeout`) unwinds through the finally blocks: no server left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    hub = production_role("hub")
    with private_servers("hub-bench-", "HUB_BENCH_KEEP") as (workdir, broker, influx):
        print(f"preparing {args.events} events...", flush=True)
        messages = make_messages(args.events, random_ids=args.random_ids)
        # every ratio is against the bare stock paho -> InfluxDB drain of the same round, and
        # (nr...) against Node-RED's batch flow of the same round
        ratios: dict[str, list[float]] = {"1": [], "off": [], "on/off": [], "w": [],
                                          "nr": [], "nr1": [], "nrw": []}
        rss: dict[str, list[float]] = {"1": [], "off": [], "w": [], "nr": []}
        nr_rates: list[float] = []
        # the contender's own CPU per event: Node-RED's over the hub's (one process, receipts
        # on) of the same round; steadier than events/s on a machine shared with other work
        cpu_ratio: list[float] = []
        ok = True
        hub_args = {"hub": hub, "storage_only": args.storage_only,
                    "switch_interval": args.switch_interval, "progress": args.progress}
        for round_no in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f"-- round {round_no} of {args.repeat}", flush=True)
            tag = f"-r{round_no}"
            base = bare_influx_drain(broker, influx, messages, tag)
            bare = base["rate"]
            print(f"bare paho -> InfluxDB:    {bare:9.0f} events/s  ({1e6 / bare:.1f} us/event; "
                  f"stock paho, json.loads, line protocol, /write; stored {base['stored']})  "
                  "the baseline", flush=True)
            print(f"  CPU per event: {_cpu_text(base['cpu_us'], 'subscriber')}", flush=True)
            ok = ok and base["stored"] == args.events
            if not args.check:
                count = bare_drain(broker, messages, tag)
                fast = bare_drain(broker, messages, tag, BufferedClient)
                print(f"bare paho, counting only: {count:9.0f} events/s  ({count / bare:.2f}x "
                      "the baseline; nothing stored)", flush=True)
                print(f"hub client, counting only:{fast:9.0f} events/s  ({fast / bare:.2f}x: "
                      "hub.mqtt_client.BufferedClient, nothing stored)", flush=True)
            runs: list[dict[str, Any]] = []
            nr_rate = 0.0
            red: dict[str, Any] = {}
            if nodered is not None:
                red = nodered_drain(broker, influx, messages, workdir, nodered, tag=tag,
                                    progress=args.progress)
                nr_rate = red["rate"]
                print(f"Node-RED {NODE_RED_VERSION} batch flow: {nr_rate:9.0f} events/s  "
                      f"({1e6 / nr_rate:.1f} us/event)  {nr_rate / bare:.2f}x the baseline  "
                      f"stored {red['stored']} (distinct {red['distinct']})  "
                      f"RSS {red['rss_mb']:.1f} MB", flush=True)
                print(f"  CPU per event: {_cpu_text(red['cpu_us'], 'node-red')}", flush=True)
                ratios["nr"].append(nr_rate / bare)
                rss["nr"].append(red["rss_mb"])
                nr_rates.append(nr_rate)
                runs.append(red)

            def vs_nr(rate: float, nr: float = nr_rate) -> str:
                return f"  {rate / nr:.2f}x Node-RED" if nr else ""
            # receipts on and off in turn, the order swapped every round (drift on the machine)
            order = [True, False] if round_no % 2 else [False, True]
            if args.no_receipts_off:
                order = [True]
            by_receipts: dict[bool, dict[str, Any]] = {}
            for receipts in order:
                one = hub_drain(broker, influx, messages, 1, workdir,
                                profile=args.profile if receipts else None,
                                profile_s=args.profile_seconds, tag=tag, receipts=receipts,
                                **hub_args)
                label = "receipts on " if receipts else "receipts off"
                print(f"hub (1 process, {label}): {one['rate']:9.0f} events/s  "
                      f"({1e6 / one['rate']:.1f} us/event)  ratio {one['rate'] / bare:.2f}x"
                      f"{vs_nr(one['rate'])}  stored {one['stored']} (distinct "
                      f"{one['distinct']})  RSS {one['rss_mb']:.1f} MB", flush=True)
                print(f"  CPU per event: {_cpu_text(one['cpu_us'], 'hub')}", flush=True)
                key = "1" if receipts else "off"
                ratios[key].append(one["rate"] / bare)
                rss[key].append(one["rss_mb"])
                if receipts and nr_rate:
                    ratios["nr1"].append(one["rate"] / nr_rate)
                    cpu_ratio.append(red["cpu_us"][0] / one["cpu_us"][0])
                by_receipts[receipts] = one
                runs.append(one)
            if len(by_receipts) == 2:
                on_off = by_receipts[True]["rate"] / by_receipts[False]["rate"]
                ratios["on/off"].append(on_off)
                print(f"receipts on / off:        {on_off:.2f}x", flush=True)
            if not args.skip_workers:
                many = hub_drain(broker, influx, messages, args.workers, workdir, tag=tag,
                                 **hub_args)
                print(f"hub --workers {args.workers}:          {many['rate']:9.0f} events/s  "
                      f"ratio {many['rate'] / bare:.2f}x{vs_nr(many['rate'])}  stored "
                      f"{many['stored']} (distinct {many['distinct']})  RSS "
                      f"{many['rss_mb']:.1f} MB/worker  split "
                      f"{[int(x) for x in many['split']]}", flush=True)
                print(f"  from the first worker's first event: {many['rate_whole']:.0f} events/s "
                      f"(ratio {many['rate_whole'] / bare:.2f}x{vs_nr(many['rate_whole'])}; "
                      f"the last worker started draining {many['skew_s'] * 1000:.0f} ms later)",
                      flush=True)
                print(f"  CPU per event: {_cpu_text(many['cpu_us'], 'hub (every process)')}",
                      flush=True)
                ratios["w"].append(many["rate"] / bare)
                rss["w"].append(many["rss_mb"])
                if nr_rate:
                    ratios["nrw"].append(many["rate"] / nr_rate)
                runs.append(many)
            ok = ok and all(r["stored"] == args.events == r["distinct"] for r in runs)
        for key, label in (("1", "1 process"), ("off", "1 process, receipts off"),
                           ("w", f"--workers {args.workers}"), ("nr", "Node-RED")):
            if ratios[key]:
                print(f"{label}: ratio {_range(ratios[key])} the bare paho -> "
                      f"InfluxDB drain;  RSS {min(rss[key]):.1f}-{max(rss[key]):.1f} MB")
        if nr_rates:
            print(f"Node-RED {NODE_RED_VERSION}: {min(nr_rates):.0f}-{max(nr_rates):.0f} "
                  "events/s")
        for key, label in (("nr1", "1 process"), ("nrw", f"--workers {args.workers}")):
            if ratios[key]:
                print(f"hub {label} / Node-RED: {_range(ratios[key])}")
        if cpu_ratio:
            print(f"CPU per event, Node-RED's process over the hub's (1 process): "
                  f"{_range(cpu_ratio)}")
        if ratios["on/off"]:
            print(f"receipts on / off: {_range(ratios['on/off'])}")
        print(f"nothing lost or duplicated: {ok}")
        if args.check:
            ratio = statistics.median(ratios["1"])
            passed = ratio >= floor
            print(f"check: the hub drains into InfluxDB at {ratio:.2f}x the bare stock paho -> "
                  f"InfluxDB drain (median of {len(ratios['1'])}); floor {floor:.2f}x "
                  f"(bench/README.md): {'ok' if passed else 'BELOW THE FLOOR'}")
            ok = ok and passed
            if nodered is None:
                why = "--no-node-red" if args.no_node_red else "not installed"
                print(f"check: Node-RED not compared ({why}; {INSTALL_HINT})")
            else:
                checks = [("1 process", ratios["nr1"], nr_floors[0])]
                if args.workers == 2 and ratios["nrw"]:
                    checks.append(("--workers 2", ratios["nrw"], nr_floors[1]))
                elif ratios["nrw"]:
                    print(f"check: --workers {args.workers} / Node-RED "
                          f"{statistics.median(ratios['nrw']):.2f}x (no floor: the issue's "
                          "floor is for 2 workers)")
                for label, values, nr_floor in checks:
                    value = statistics.median(values)
                    good = value >= nr_floor
                    print(f"check: hub {label} at {value:.2f}x Node-RED {NODE_RED_VERSION}'s "
                          f"batch flow (median of {len(values)}); floor {nr_floor:.2f}x "
                          f"(bench/README.md): {'ok' if good else 'BELOW THE FLOOR'}")
                    ok = ok and good
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
