"""Threshold crossing -> webhook latency, and storage lag, of a real hub on this machine.

    python bench/latency_bench.py [--crossings 300] [--load-rate 1000] [--repeat 1]
                                  [--cases known first-seen-sqlite [first-seen-influx]]

Starts a private Mosquitto and a private InfluxDB 1.x (``harness.servers``, never the broker on
1883) and an HTTP receiver in this process that stands for the webhook. Then, for each
contender, publishes threshold crossings (``StateChangeEvent``, alternately into ``high`` and
back to ``normal``, from ``schemas.models``, encoded with ``schemas.encode``) one at a time from
an independent paho client (QoS 1), and times each from just before ``publish`` to the moment
the receiver has read the POST that carries that event's id. The hub's own log times are not
used. Each contender is measured with no other traffic, then under ``--load-rate`` readings/s
of background load (a separate process publishing QoS-1 readings of 16 devices x 2 sensors).

1. **baseline**: a bare paho subscriber (stock paho 2.2, QoS 1, auto-ack) that POSTs every
   ``state_change`` it receives to the receiver with httpx: the least any MQTT -> webhook bridge
   does (no validation, no journal, no fsync, no alert state);
2. **hub**: ``hub run`` with every consumer on (alerting with one rule -> a webhook notifier to
   the receiver, storage to InfluxDB 1.x, the dashboard), the default configuration otherwise
   (journal ``synchronous = "full"``: every event is on disk before it is acknowledged, and
   every alert decision on disk before it is sent); every crossing from one device the hub
   knows (case ``known``);
3. **hub, first-seen devices** (case ``first-seen-sqlite``, issue 26): the same hub with the
   embedded SQLite store (``[storage] mode = "sqlite"``) instead of InfluxDB, and every crossing
   from a device the hub has never seen (its first event, a firing; every 50th also from a new
   site): identity admission, new per-device state in every consumer and a new open alert
   group, all on the alert's path. ``first-seen-influx`` is the same with InfluxDB (to tell the
   store from the devices).

Each hub contender's p50 and p99 are also printed as ratios to the baseline's of the same run.

Storage lag: in a second pass per phase, the bench polls InfluxDB (``SELECT max(seq)``, every
``--poll-ms``) while a crossing is not yet visible, and times publish -> visible. The poller runs
in its own pass so that its queries do not weigh on the webhook figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

import paho.mqtt.client as mqtt  # noqa: E402
from harness.mqtt_clients import stop_client  # noqa: E402
from harness.servers import InfluxDB1, Mosquitto, free_port  # noqa: E402
from hub_bench import drop_session, hub_toml, private_servers  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from schemas.codec import encode  # noqa: E402
from schemas.models import ReadingEvent, StateChangeEvent  # noqa: E402
from schemas.topics import Topics  # noqa: E402

ROOT_TOPIC = "lat"
SITE = "bench"
SENSORS = [f"t{i}" for i in range(4)]  # crossings rotate over these (one alert group each)


# ---- the webhook receiver ---------------------------------------------------------------------
class Receiver:
    """An HTTP/1.1 server (keep-alive) that notes when each POST carrying an event id arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.perf_counter()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                try:
                    event_id = json.loads(body)["event_id"]
                except (ValueError, KeyError):
                    return
                with receiver._cond:
                    receiver.arrived.setdefault(event_id, now)
                    receiver._cond.notify_all()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait(self, event_id: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while event_id not in self.arrived:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.arrived[event_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- the crossing publisher -------------------------------------------------------------------
class Crossings:
    """Makes threshold crossings and publishes them (QoS 1).

    Known devices (the default): one device, alternating into ``high`` and back to ``normal``
    over 4 sensors. ``first_seen``: every crossing comes from a device the hub has never seen
    (its first event, ``seq`` 1, into ``high``: a firing), and every 50th from a new site too:
    the hub admits the identity, the alert engine makes the condition and group, every
    consumer meets the device for the first time, all on the alert's path."""

    def __init__(self, broker: Mosquitto, device: str, *, first_seen: bool = False) -> None:
        self.topics = Topics(ROOT_TOPIC)
        self.device = device
        self.first_seen = first_seen
        self.seq = 0
        self.high = dict.fromkeys(SENSORS, False)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"lat-pub-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def next(self) -> tuple[str, str, bytes]:
        """(event id, topic, payload) of the next crossing."""
        self.seq += 1
        if self.first_seen:
            return self._first_seen()
        sensor = SENSORS[self.seq % len(SENSORS)]
        up = not self.high[sensor]
        self.high[sensor] = up
        event = StateChangeEvent(
            event_id=uuid.uuid4().hex, site=SITE, device_id=self.device, sensor_id=sensor,
            seq=self.seq, time=datetime.now(UTC), clock_synced=True,
            value=31.5 if up else 24.0, unit="degC",
            previous_state="normal" if up else "high", new_state="high" if up else "normal",
            threshold=30.0 if up else None, severity="warning" if up else "info", dwell_s=0.0)
        return event.event_id, self.topics.for_event(event), encode(event)

    def _first_seen(self) -> tuple[str, str, bytes]:
        event = StateChangeEvent(
            event_id=uuid.uuid4().hex, site=f"{SITE}{self.device}s{self.seq // 50}",
            device_id=f"{self.device}n{self.seq}", sensor_id=SENSORS[0], seq=1,
            time=datetime.now(UTC), clock_synced=True, value=31.5, unit="degC",
            previous_state="normal", new_state="high", threshold=30.0, severity="warning",
            dwell_s=0.0)
        return event.event_id, self.topics.for_event(event), encode(event)

    def publish(self, topic: str, payload: bytes) -> float:
        t0 = time.perf_counter()
        self.client.publish(topic, payload, qos=1)
        return t0

    def close(self) -> None:
        stop_client(self.client)


# ---- storage visibility -----------------------------------------------------------------------
class StoragePoller:
    """Polls InfluxDB for the highest ``seq`` of the crossing device while one is outstanding."""

    def __init__(self, influx: InfluxDB1, db: str, device: str, poll_s: float) -> None:
        self.influx, self.db, self.poll_s = influx, db, poll_s
        self.q = (f'SELECT max("seq") FROM "sensor_event" WHERE "device" = \'{device}\' '
                  "AND time > now() - 1h")
        self.visible = 0

    def wait(self, seq: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while self.visible < seq:
            if time.monotonic() > deadline:
                return None
            rows = self.influx.series_rows(self.q, self.db)
            now = time.perf_counter()
            if rows and rows[0].get("max") is not None:
                self.visible = int(rows[0]["max"])
                if self.visible >= seq:
                    return now
            time.sleep(self.poll_s)
        return time.perf_counter()


def run_pass(pub: Crossings, n: int, arrival: Callable[[str, int], float | None],
             warmup: int = 0, gap_s: tuple[float, float] = (0.02, 0.06),
             ) -> tuple[list[float], int]:
    """Publish ``warmup + n`` crossings one at a time, each ``gap_s`` (a random pause in that
    range) after the previous one arrived; latencies in ms of the last n, and the misses."""
    out: list[float] = []
    missed = 0
    for i in range(warmup + n):
        event_id, topic, payload = pub.next()
        t0 = pub.publish(topic, payload)
        t1 = arrival(event_id, pub.seq)
        if i >= warmup:
            if t1 is None:
                missed += 1
            else:
                out.append((t1 - t0) * 1000)
        time.sleep(random.uniform(*gap_s))  # random: not in step with any timer of the hub
    return out, missed


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


# ---- background load (a child process) --------------------------------------------------------
def load_child(host: str, port: int, rate: float) -> int:
    """Publish QoS-1 readings of 16 devices x 2 sensors at ``rate``/s until terminated."""
    topics = Topics(ROOT_TOPIC)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"lat-load-{os.getpid()}",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(0)
    sem = threading.BoundedSemaphore(1000)
    client.on_publish = lambda *a: sem.release()
    client.connect(host, port)
    client.loop_start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    n = 0
    next_at = time.monotonic()
    while not stop.is_set():
        owed += per_tick
        now = datetime.now(UTC)
        while owed >= 1:
            owed -= 1
            # seq counts per device from 1 with no gaps (a gap is a loss to the hub), and
            # every load process has its own devices
            event = ReadingEvent(event_id=uuid.uuid4().hex, site=SITE,
                                 device_id=f"d{n % 16}p{os.getpid()}",
                                 sensor_id=f"s{(n // 16) % 2}", seq=n // 16 + 1, time=now,
                                 clock_synced=True, value=20.0 + (n % 50) / 10, unit="degC")
            n += 1
            sem.acquire()
            client.publish(topics.for_event(event), encode(event), qos=1)
        next_at += tick
        stop.wait(max(0.0, next_at - time.monotonic()))
    stop_client(client)
    return 0


class Load:
    def __init__(self, broker: Mosquitto, rate: float) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--load-child", broker.host,
                                      str(broker.port), str(rate)], cwd=ROOT)
        time.sleep(2.0)  # up to speed, and the subscriber's queue in its steady state

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


# ---- the baseline: a bare paho subscriber that forwards crossings to the webhook ---------------
def forwarder_child(host: str, port: int, url: str) -> int:
    import httpx

    http = httpx.Client(timeout=5.0)
    ready = threading.Event()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if json.loads(msg.payload).get("kind") == "state_change":
            http.post(url, content=msg.payload, headers={"Content-Type": "application/json"})

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"lat-fwd-{os.getpid()}",
                         protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in
                                                   Topics(ROOT_TOPIC).hub_filters()])
    client.on_subscribe = lambda *a: ready.set()
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if ready.wait(10):
        print("subscribed", flush=True)
    stop.wait()
    stop_client(client)
    return 0


# ---- the hub ----------------------------------------------------------------------------------
def start_hub(broker: Mosquitto, influx: InfluxDB1, receiver: Receiver, workdir: Path,
              tag: str, *, store: str = "influx",
              ) -> tuple[subprocess.Popen[bytes], str, int, str]:
    """``hub run`` with every consumer on; ``store``: ``influx`` (InfluxDB 1.x) or ``sqlite``
    (the embedded store, hub/storage/sqlite_store.py, in the hub's data dir)."""
    db = f"lat_{uuid.uuid4().hex[:6]}"
    data_dir = workdir / f"hub{tag}"
    http_port = free_port()
    client_id = f"lat-hub{tag}"
    config = workdir / f"hub{tag}.toml"
    head = hub_toml("lat", data_dir, broker=broker, root=ROOT_TOPIC, client_id=client_id,
                    influx=influx, db=db)
    if store == "sqlite":
        head = head[:head.index("[storage]")] + '[storage]\nenabled = true\nmode = "sqlite"\n'
    else:
        influx.create_database(db)
    config.write_text(head + f"""[alerting]
enabled = true
state_dir = "{data_dir}/alerting"
[alerting.notifiers.hook]
type = "webhook"
url = "{receiver.url}"
[[alerting.rules]]
name = "crossings"
match = {{ kind = "state_change", severity_at_least = "warning" }}
notifiers = ["hook"]
[dashboard]
enabled = true
[http]
port = {http_port}
[log]
level = "warning"
""")
    log = (workdir / f"hub{tag}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "-c", str(config)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited with {proc.returncode}: see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics",
                                        timeout=1) as resp:
                if b"thermopipe_hub_mqtt_connected 1" in resp.read():
                    break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        raise RuntimeError("the hub did not connect in 30 s")
    time.sleep(0.5)  # the subscription follows the connection
    return proc, db, http_port, client_id


def summary(name: str, values: list[float], missed: int) -> str:
    return (f"{name:<52} p50 {pct(values, 50):7.1f} ms  p99 {pct(values, 99):7.1f} ms  "
            f"max {max(values) if values else float('nan'):7.1f} ms  (n={len(values)}"
            f"{f', {missed} missed' if missed else ''})")


def measure_round(broker: Mosquitto, influx: InfluxDB1, receiver: Receiver, workdir: Path, *,
                  args: argparse.Namespace, tag: str) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    n = args.crossings
    wait_hook = lambda event_id, _seq: receiver.wait(event_id, 5.0)  # noqa: E731

    if not args.skip_baseline:
        fwd = subprocess.Popen([sys.executable, __file__, "--forwarder-child", broker.host,
                                str(broker.port), receiver.url], cwd=ROOT,
                               stdout=subprocess.PIPE)
        try:
            assert fwd.stdout is not None
            if fwd.stdout.readline().strip() != b"subscribed":
                raise RuntimeError("the forwarder did not subscribe")
            pub = Crossings(broker, f"fwd{tag.replace('-', '')}")
            values, missed = run_pass(pub, n, wait_hook, warmup=5)
            results["baseline idle"] = values
            print(summary("baseline (paho -> httpx), no load", values, missed), flush=True)
            load = Load(broker, args.load_rate)
            try:
                values, missed = run_pass(pub, n, wait_hook)
            finally:
                load.stop()
            results["baseline load"] = values
            print(summary(f"baseline, {args.load_rate:g} readings/s", values, missed),
                  flush=True)
            pub.close()
        finally:
            fwd.send_signal(signal.SIGTERM)
            fwd.wait(10)

    if "known" in args.cases:
        results.update(known_devices(broker, influx, receiver, workdir, args=args, tag=tag))
    for case in args.cases:
        if case.startswith("first-seen"):
            store = case.removeprefix("first-seen-")
            results.update(first_seen(broker, influx, receiver, workdir, args=args,
                                      tag=f"{tag}-fs{store}", store=store))
    return results


def known_devices(broker: Mosquitto, influx: InfluxDB1, receiver: Receiver, workdir: Path, *,
                  args: argparse.Namespace, tag: str) -> dict[str, list[float]]:
    """The hub with InfluxDB; every crossing from one device it knows (after the warm-up)."""
    results: dict[str, list[float]] = {}
    n = args.crossings
    wait_hook = lambda event_id, _seq: receiver.wait(event_id, 5.0)  # noqa: E731
    proc, db, _port, client_id = start_hub(broker, influx, receiver, workdir, tag)
    try:
        device = f"hub{tag.replace('-', '')}"
        pub = Crossings(broker, device)
        poller = StoragePoller(influx, db, device, args.poll_ms / 1000)
        wait_store = lambda _event_id, seq: poller.wait(seq, 10.0)  # noqa: E731
        values, missed = run_pass(pub, n, wait_hook, warmup=5)
        results["hub idle"] = values
        print(summary("hub -> webhook, no load", values, missed), flush=True)
        # quiet: crossings further apart than storage's flush interval (0.2 s), so each one
        # finds storage idle (closer events are paced into one write per interval)
        values, missed = run_pass(pub, max(n // 3, 20), wait_store, gap_s=(0.25, 0.35))
        results["storage idle"] = values
        print(summary("hub -> InfluxDB visible, no load", values, missed), flush=True)
        load = Load(broker, args.load_rate)
        try:
            values, missed = run_pass(pub, n, wait_hook)
            results["hub load"] = values
            print(summary(f"hub -> webhook, {args.load_rate:g} readings/s", values, missed),
                  flush=True)
            values, missed = run_pass(pub, n, wait_store)
            results["storage load"] = values
            print(summary(f"hub -> InfluxDB visible, {args.load_rate:g} readings/s", values,
                          missed), flush=True)
        finally:
            load.stop()
        pub.close()
    finally:
        stop_hub(proc, broker, client_id)
    return results


def first_seen(broker: Mosquitto, influx: InfluxDB1, receiver: Receiver, workdir: Path, *,
               args: argparse.Namespace, tag: str, store: str) -> dict[str, list[float]]:
    """The hub with ``store``; every crossing from a device it has never seen (a firing)."""
    results: dict[str, list[float]] = {}
    n = args.crossings
    wait_hook = lambda event_id, _seq: receiver.wait(event_id, 5.0)  # noqa: E731
    proc, _db, _port, client_id = start_hub(broker, influx, receiver, workdir, tag, store=store)
    name = f"hub {store}, first-seen devices"
    try:
        pub = Crossings(broker, f"fs{tag.replace('-', '')}", first_seen=True)
        values, missed = run_pass(pub, n, wait_hook, warmup=5)
        results[f"first-seen {store} idle"] = values
        print(summary(f"{name} -> webhook, no load", values, missed), flush=True)
        load = Load(broker, args.load_rate)
        try:
            values, missed = run_pass(pub, n, wait_hook)
        finally:
            load.stop()
        results[f"first-seen {store} load"] = values
        print(summary(f"{name} -> webhook, {args.load_rate:g} readings/s", values, missed),
              flush=True)
        pub.close()
    finally:
        stop_hub(proc, broker, client_id)
    return results


def stop_hub(proc: subprocess.Popen[bytes], broker: Mosquitto, client_id: str) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    drop_session(broker, client_id)


def verdicts(r: dict[str, list[float]], args: argparse.Namespace) -> tuple[list[str], bool]:
    """One line per hub contender: its p99 against the targets, and the ratios of its p50 and
    p99 to the bare forwarder's of the same run."""
    lines, met = [], True
    contenders = [("hub", "hub idle", "hub load")] + [
        (f"first-seen {s}", f"first-seen {s} idle", f"first-seen {s} load")
        for s in ("sqlite", "influx") if f"first-seen {s} idle" in r]
    for name, idle_key, load_key in contenders:
        if idle_key not in r:
            continue
        idle, load = pct(r[idle_key], 99), pct(r[load_key], 99)
        ok = idle <= args.target_idle_ms and load <= args.target_load_ms
        met = met and ok
        line = (f"{name:<18} p99 {idle:.1f} ms <= {args.target_idle_ms:g} ms no load, "
                f"{load:.1f} ms <= {args.target_load_ms:g} ms under load: "
                f"{'met' if ok else 'NOT met'}")
        if "baseline idle" in r:
            b_idle, b_load = r["baseline idle"], r["baseline load"]
            line += (f"  (x baseline: p50 {pct(r[idle_key], 50) / pct(b_idle, 50):.1f} / "
                     f"{pct(r[load_key], 50) / pct(b_load, 50):.1f}, "
                     f"p99 {idle / pct(b_idle, 99):.1f} / {load / pct(b_load, 99):.1f}; "
                     f"baseline p99 {pct(b_idle, 99):.1f} / {pct(b_load, 99):.1f} ms)")
        lines.append(line)
    return lines, met


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--load-child":
        return load_child(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    if len(sys.argv) > 1 and sys.argv[1] == "--forwarder-child":
        return forwarder_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crossings", type=int, default=300, help="per pass")
    parser.add_argument("--load-rate", type=float, default=1000.0, help="readings/s")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--poll-ms", type=float, default=2.0,
                        help="InfluxDB poll interval while a crossing is not yet visible")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--cases", nargs="+", default=["known", "first-seen-sqlite"],
                        choices=["known", "first-seen-sqlite", "first-seen-influx"],
                        help="hub contenders: every crossing from one known device (InfluxDB), "
                             "or each from a device the hub has never seen, with the SQLite "
                             "store or InfluxDB")
    parser.add_argument("--target-idle-ms", type=float, default=20.0)
    parser.add_argument("--target-load-ms", type=float, default=50.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    met = True
    with private_servers("latency-bench-", "LATENCY_BENCH_KEEP") as (workdir, broker, influx):
        receiver = Receiver()
        try:
            for round_no in range(1, args.repeat + 1):
                if args.repeat > 1:
                    print(f"-- round {round_no} of {args.repeat}", flush=True)
                r = measure_round(broker, influx, receiver, workdir, args=args,
                                  tag=f"-r{round_no}")
                lines, ok = verdicts(r, args)
                met = met and ok
                print("targets:", *lines, sep="\n  ", flush=True)
        finally:
            receiver.close()
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
