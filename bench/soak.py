"""Soak: many simulated devices through the whole pipeline for minutes; memory growth and lag.

    python3 bench/soak.py [--duration 180] [--agents 12] [--sensors 4] [--max-growth-mib 8]

N agent processes (each with the in-process firmware simulator, ``--sensors`` sensors looping a
noisy scenario that crosses thresholds and has sensor faults) -> a private Mosquitto -> one
``hub run`` process (storage to a private InfluxDB 1.x, alerting to a webhook receiver) for
``--duration`` seconds. Every ``--sample-s`` seconds it reads VmRSS of every agent and the hub
(/proc/PID/status) and the hub's storage lag histogram (event time -> stored, live events).

Memory growth per process = median RSS over the last ``W/2`` seconds minus the median over the
first minute's plateau ``[W/2, W]`` (``W = min(60, duration/3)``: start-up allocations are not
growth). At the end the agents stop cleanly and the run waits until InfluxDB holds every event
the agents made (their outboxes' ``next_seq``): lost must be 0.

Exit status 1 if any process grew more than ``--max-growth-mib`` or any event was lost.
Not part of CI (bench/, minutes long).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from harness.processes import (  # noqa: E402
    AgentProc,
    HubProc,
    MqttAccess,
    agent_toml,
    hub_toml,
    outbox_state,
    simulator_source,
)
from harness.receivers import WebhookReceiver  # noqa: E402
from harness.servers import InfluxDB1, Mosquitto, free_port, start_server  # noqa: E402

TOPIC_ROOT = "soak"
RULES = """summary_interval_s = 10.0
deadband = 0.2
stale_after_s = 600
thresholds = [
  { name = "warm", above = 24.0, hysteresis = 0.5, dwell_s = 0 },
  { name = "cold", below = 16.0, hysteresis = 0.5, dwell_s = 0 },
]
"""
LAG = "thermopipe_hub_end_to_end_lag_seconds"
STORAGE = '{consumer="storage"'


def scenario_text(sensors: int) -> str:
    """Sines around 20 degC that cross 'warm' and 'cold' every few minutes, noise, spikes and a
    few sensor faults; looped by the agents, so it runs for as long as the soak does."""
    parts = ['name = "soak"', 'duration = "2h"', 'interval = "5s"', "seed = 11",
             'device_id = "soak-board"']
    for i in range(sensors):
        parts.append(f"""
[[sensors]]
id = "28-{i + 1:012x}"
noise = 0.1
spikes = {{ probability = 0.002, magnitude = 3.0 }}
profile = {{ kind = "sine", mean = 20.0, amplitude = 5.0, period = "{20 + 7 * i}m" }}
""")
    parts.append("""
[[faults]]
kind = "crc_error"
sensor = "28-000000000001"
at = "10m"
count = 2

[[faults]]
kind = "read_failed"
sensor = "28-000000000001"
at = "40m"
""")
    return "\n".join(parts)


def rss_mib(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


@dataclass
class Series:
    name: str
    samples: list[tuple[float, float]] = field(default_factory=list)  # (t, MiB)

    def window(self, lo: float, hi: float) -> list[float]:
        return [v for t, v in self.samples if lo <= t <= hi]


def lag_quantile(metrics: dict[str, float], q: float) -> float | None:
    """The upper bound of the histogram bucket holding quantile ``q`` (Prometheus style)."""
    buckets = sorted((float(k.split('le="')[1].split('"')[0]), v) for k, v in metrics.items()
                     if k.startswith(LAG + "_bucket" + STORAGE))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= q * total:
            return le
    return float("inf")


def storage_lag(metrics: dict[str, float]) -> tuple[float, float]:
    """(sum of seconds, count) of the storage consumer's lag observations so far."""
    s = next((v for k, v in metrics.items() if k.startswith(LAG + "_sum" + STORAGE)), 0.0)
    c = next((v for k, v in metrics.items() if k.startswith(LAG + "_count" + STORAGE)), 0.0)
    return s, c


def stored_count(influx: InfluxDB1, db: str) -> int:
    total = 0
    for measurement in ("sensor_event", "sensor_summary"):
        rows = influx.series_rows(f'SELECT COUNT("seq") FROM "{measurement}"', db)
        total += int(rows[0]["count"]) if rows else 0
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    parser.add_argument("--agents", type=int, default=12, help="agent processes (devices)")
    parser.add_argument("--sensors", type=int, default=4, help="simulated sensors per agent")
    parser.add_argument("--speed", type=float, default=5.0,
                        help="scenario speed (readings per sensor per second = speed / 5)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--max-growth-mib", type=float, default=8.0,
                        help="fail if any process's RSS grows more than this")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="thermopipe-soak-"))
    broker: Mosquitto = start_server(Mosquitto, work / "mosquitto")  # type: ignore[assignment]
    influx: InfluxDB1 = start_server(InfluxDB1, work / "influxdb")  # type: ignore[assignment]
    influx.create_database("soak")
    receiver = WebhookReceiver()
    scenario = work / "scenario.toml"
    scenario.write_text(scenario_text(args.sensors))
    mqtt = MqttAccess(broker.host, broker.port)
    http_port = free_port()
    hub_cfg = work / "hub.toml"
    hub_cfg.write_text(hub_toml(data_dir=work / "hub", mqtt=mqtt, topic_root=TOPIC_ROOT,
                                influx_url=influx.url, database="soak", http_port=http_port,
                                webhook_url=receiver.url, hub_id="soak", log_level="info"))
    hub = HubProc(hub_cfg, work / "hub.log", http_port)
    agents: list[AgentProc] = []
    outboxes: list[Path] = []
    status = 0
    try:
        hub.start()
        # the hub's subscription must exist before the first event, or the broker drops it
        deadline = time.monotonic() + 60
        while "mqtt.connected" not in hub.log_text():
            if time.monotonic() > deadline or not hub.running:
                raise RuntimeError(f"the hub did not connect; see {work / 'hub.log'}")
            time.sleep(0.1)
        time.sleep(1)  # its SUBACK follows the CONNACK at once; the agents take longer to start
        for i in range(args.agents):
            device = f"pi-{i:02d}"
            cfg = work / f"{device}.toml"
            outboxes.append(work / f"{device}-outbox.db")
            cfg.write_text(agent_toml(
                device_id=device, mqtt=mqtt, topic_root=TOPIC_ROOT, outbox=outboxes[-1],
                sources=simulator_source(scenario, speed=args.speed, seed=i + 1),
                rules=RULES, site="soak", tick_s=1.0, status_interval_s=30.0,
                log_level="warning"))
            agent = AgentProc(cfg, work / f"{device}.log")
            agent.start()
            agents.append(agent)
        print(f"soak: {args.agents} agents x {args.sensors} sensors at "
              f"{args.speed / 5:g} readings/s each -> Mosquitto -> hub -> InfluxDB, "
              f"{args.duration:g} s; work dir {work}", flush=True)

        series = {"hub": Series("hub")}
        series.update({a.config.stem: Series(a.config.stem) for a in agents})
        lag_points: list[tuple[float, float | None]] = []
        started = time.monotonic()
        last_lag = (0.0, 0.0)
        while (now := time.monotonic() - started) < args.duration:
            procs = [("hub", hub.proc)] + [(a.config.stem, a.proc) for a in agents]
            for name, proc in procs:
                if proc is None or proc.poll() is not None:
                    raise RuntimeError(f"{name} exited early; see {work}")
                mib = rss_mib(proc.pid)
                if mib is not None:
                    series[name].samples.append((now, mib))
            metrics = hub.metrics() or {}
            s, c = storage_lag(metrics)
            mean = (s - last_lag[0]) / (c - last_lag[1]) if c > last_lag[1] else None
            last_lag = (s, c)
            lag_points.append((now, mean))
            time.sleep(args.sample_s)  # sampling period, not a correctness wait
        final_metrics = hub.metrics() or {}

        # stop the agents cleanly, then every event they made must be stored
        for agent in agents:
            assert agent.proc is not None
            agent.proc.terminate()
        for agent in agents:
            agent.stop(60)
        made = sum(outbox_state(p)["next_seq"] for p in outboxes)
        pending = sum(outbox_state(p)["pending"] for p in outboxes)
        deadline = time.monotonic() + 120
        while (stored := stored_count(influx, "soak")) < made and time.monotonic() < deadline:
            time.sleep(1)
        end_metrics = hub.metrics() or {}
        dups = sum(v for k, v in end_metrics.items()
                   if k == "thermopipe_hub_duplicates_dropped_total")

        w = min(60.0, args.duration / 3)
        print(f"\nmemory (VmRSS MiB): plateau = median over [{w / 2:.0f}, {w:.0f}] s, "
              f"end = median over the last {w / 2:.0f} s")
        print(f"{'process':<10} {'plateau':>8} {'end':>8} {'growth':>8} {'max':>8}")
        worst = 0.0
        for name, ser in series.items():
            plateau = ser.window(w / 2, w)
            end = ser.window(now - w / 2, now)
            if not plateau or not end:
                print(f"{name:<10} (not enough samples)")
                continue
            p, e = statistics.median(plateau), statistics.median(end)
            peak = max(v for _, v in ser.samples)
            worst = max(worst, e - p)
            flag = "  <-- GROWS" if e - p > args.max_growth_mib else ""
            print(f"{name:<10} {p:8.1f} {e:8.1f} {e - p:+8.1f} {peak:8.1f}{flag}")
        # the shape over time: a filling cache levels off, a leak keeps climbing
        step = 60.0 if args.duration >= 240 else 30.0
        edges = [t * step for t in range(int(now // step) + 1)]
        print(f"\nVmRSS MiB, median per {step:.0f} s ({', '.join(f'{e:.0f}' for e in edges)} s):")
        for name in ["hub", *sorted(n for n in series if n != "hub")][:3]:
            ser = series.get(name)
            if ser is None:
                continue
            meds = [statistics.median(v) if (v := ser.window(lo, lo + step)) else float("nan")
                    for lo in edges]
            print(f"{name:<10} " + " ".join(f"{m:5.1f}" for m in meds))
        s, c = storage_lag(final_metrics)
        print(f"\nlag event time -> stored in InfluxDB (hub storage consumer, live events, "
              f"{int(c)} observed): mean {1000 * s / c if c else float('nan'):.0f} ms, "
              f"p50 <= {lag_quantile(final_metrics, 0.5)} s, "
              f"p95 <= {lag_quantile(final_metrics, 0.95)} s, "
              f"p99 <= {lag_quantile(final_metrics, 0.99)} s")
        means = [m for _, m in lag_points if m is not None]
        if means:
            print(f"per-sample mean lag: first {1000 * means[0]:.0f} ms, "
                  f"last {1000 * means[-1]:.0f} ms, max {1000 * max(means):.0f} ms")
        print(f"\nevents made {made}, stored {stored}, lost {made - stored}, left in outboxes "
              f"{pending}, duplicates dropped by the hub {int(dups)}, alerts delivered "
              f"{len({r.key for r in receiver.acked()})}")
        print(f"worst growth {worst:+.1f} MiB (limit {args.max_growth_mib:g})")
        if worst > args.max_growth_mib or made != stored:
            status = 1
    finally:
        for agent in agents:
            if agent.proc is not None and agent.proc.poll() is None:
                agent.proc.kill()
                agent.proc.wait()
        if hub.running:
            hub.stop()
        receiver.stop()
        broker.stop()
        influx.stop()
        if not args.keep and status == 0:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
