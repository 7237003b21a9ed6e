"""Chaos through the whole pipeline, with real processes: firmware-sim (pty) -> edge agent ->
private Mosquitto -> hub -> private InfluxDB 1.x, alerts to a real webhook receiver.

While a scripted scenario runs, in turn: the broker is restarted, the hub is SIGKILLed (with
alerts waiting in its outbox: the receiver answers 503 until then), the agent is SIGKILLed, InfluxDB
is stopped for a while, and the serial device is unplugged (scripted in the scenario). Then:

(a) no event id is stored twice in InfluxDB;
(b) per device, the stored seqs are exactly 0..N-1, where N is the agent's own count of events
    made (its outbox's ``next_seq``; no outbox drops and no invalid drafts, both asserted): the
    seq is dense, so this means nothing lost, nothing invented, nothing stored twice;
(c) the state changes and faults, in seq order, are exactly what the pure ``SensorDecider``
    makes from the scenario's script, allowing only for the SIGKILL window (see below);
(d) the webhook received every alert expected, each ``Idempotency-Key`` acknowledged exactly
    once, and the hub's alert store has nothing pending or given up. Expected: what the pure
    alert engine decides from the agent's sensor events, and for the device-offline condition
    (hub configured with ``offline_for_s`` = 8 s) nothing for the wills Mosquitto publishes when
    it stops (it delivers them as it shuts down; the agent's birth follows about 4.5 s later,
    within the grace: a flap, which the hub must log as suppressed), one firing and one
    resolution at the next birth for the SIGKILLed agent's will (it stays away 12 s)
    (``pipeline.expected_alerts``, from an independent subscriber's arrival times; a gap too
    close to the grace to call fails the test).

What (c) cannot require, and why. Readings the firmware sent while no agent process ran are gone
(the serial buffer dies with the process, and pyserial flushes the input when the port is opened,
as on real hardware), and so are the killed agent's decisions not yet committed to its outbox
(group commit, ``flush_interval_s``): they were never events. So for each sensor the expectation
is ``A(readings[:i]) + B(readings[j:])``, where A is the decider of the killed process, B a fresh
decider (it starts from ``unknown``, as the restarted agent does), ``i`` any reading in the
window from 3 s before the kill to 0.5 s after it, and ``j >= i`` any reading up to 1.5 s after
the restarted agent's first state change. The scenario holds every value well inside one band
around the kill, so in practice every choice gives the same decisions; everything outside the
window is required exactly. Each chaos step happens in such a calm stretch, so no two events of
one alert condition can reach the hub out of order, and the alert expectation is exact too.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge_agent.decide import Reading, SensorRules
from program_support.plain_config import parse
from schemas.models import DeviceStatus
from tests.agent_e2e.e2e_helpers import AgentProc, Sim, unique, wait_until
from tests.e2e.pipeline import (
    AlertKey,
    HubProc,
    Key,
    MetricsWatch,
    MqttAccess,
    TimedSubscriber,
    agent_toml,
    alert_key,
    alert_store_rows,
    alerting_config_of,
    decision_keys,
    decision_prefixes,
    expected_alerts,
    hub_toml,
    outbox_state,
    received_keys,
    script_readings,
    serial_source,
    stored_events,
    stored_rows,
)
from tests.hub_alerting.receivers import WebhookReceiver
from tests.servers import InfluxDB1, Mosquitto, free_port

pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.timeout(280)]

S1, S2 = "28-0000075a1b2c", "28-00000a3f9e21"
SPEED = 25.0  # scenario seconds per real second; one reading per sensor every 0.2 s
DEVICE = "pi-chaos"


def sc(real_s: float) -> str:
    """Scenario time of a real second after the start (the timeline below is in real s)."""
    return f"{int(real_s * SPEED)}s"


# Real-time timeline (seconds after firmware-sim starts). Band changes and sensor faults happen
# only between the chaos steps; each chaos step sits in a stretch where every value stays well
# inside one band (noise 0.1, hysteresis 0.5, at least 1.5 degC from any threshold).
BROKER_DOWN, BROKER_UP = 9.0, 13.0        # S1 steady in "high" from 7 to 20
RECEIVER_FAILS = 18.0                     # 503 until the hub is killed
HUB_KILL, HUB_RESTART = 27.0, 29.0        # S1 "critical", S2 normal, from 23 to 38
# The hub's offline grace (alerting.offline_for_s): the wills Mosquitto publishes when it stops
# are followed by the agent's birth within it (the 4 s outage plus the reconnect: suppressed),
# while the SIGKILLed agent stays away well past it (its will pages).
OFFLINE_FOR_S = 8.0
AGENT_KILL = 46.0                         # S1 "high", S2 "cold", from 41 to CALM_END
AGENT_RESTART = AGENT_KILL + OFFLINE_FOR_S + 4.0
CALM_END = AGENT_RESTART + 5.0            # room for the restarted agent's first decisions
INFLUX_DOWN, INFLUX_UP = CALM_END + 6, CALM_END + 14    # both normal from CALM_END + 3 ...
UNPLUG, REPLUG, END = CALM_END + 18, CALM_END + 20, CALM_END + 30  # ... to CALM_END + 22

SCENARIO = f"""
name = "chaos"
duration = "{sc(END)}"
interval = "5s"
seed = 7
device_id = "chaos-board"

[[sensors]]
id = "{S1}"
noise = 0.1
profile = {{ kind = "piecewise", points = [
  {{ at = 0, value = 20.0 }}, {{ at = "{sc(4)}", value = 20.0 }},
  {{ at = "{sc(7)}", value = 27.0 }}, {{ at = "{sc(20)}", value = 27.0 }},
  {{ at = "{sc(23)}", value = 29.5 }}, {{ at = "{sc(38)}", value = 29.5 }},
  {{ at = "{sc(41)}", value = 26.5 }}, {{ at = "{sc(CALM_END)}", value = 26.5 }},
  {{ at = "{sc(CALM_END + 3)}", value = 20.0 }}, {{ at = "{sc(CALM_END + 22)}", value = 20.0 }},
  {{ at = "{sc(CALM_END + 25)}", value = 26.5 }}] }}

[[sensors]]
id = "{S2}"
noise = 0.1
profile = {{ kind = "piecewise", points = [
  {{ at = 0, value = 5.0 }}, {{ at = "{sc(38)}", value = 5.0 }},
  {{ at = "{sc(41)}", value = 1.0 }}, {{ at = "{sc(CALM_END)}", value = 1.0 }},
  {{ at = "{sc(CALM_END + 3)}", value = 5.0 }}] }}

[[faults]]
kind = "stall"            # the agent opens the pty during it (pyserial flushes on open)
at = "0s"
duration = "{sc(3)}"

[[faults]]
kind = "crc_error"
sensor = "{S2}"
at = "{sc(21)}"
count = 2

[[faults]]
kind = "unplug"
at = "{sc(UNPLUG)}"
duration = "{sc(REPLUG - UNPLUG)}"

[[faults]]
kind = "stall"            # after the replug, until the agent has reopened the new pty
at = "{sc(REPLUG)}"
duration = "{sc(2)}"
"""

RULES = {
    "stale_after_s": 10**6, "summary_interval_s": 1.0, "deadband": 0.3,
    "thresholds": [
        {"name": "high", "above": 25.0, "hysteresis": 0.5, "dwell_s": 0},
        {"name": "critical", "above": 28.0, "hysteresis": 0.5, "dwell_s": 0,
         "severity": "critical"},
        {"name": "cold", "below": 2.0, "hysteresis": 0.5, "dwell_s": 0},
    ]}
RULES_TOML = """stale_after_s = 1000000
summary_interval_s = 1.0
deadband = 0.3
thresholds = [
  { name = "high", above = 25.0, hysteresis = 0.5, dwell_s = 0 },
  { name = "critical", above = 28.0, hysteresis = 0.5, dwell_s = 0, severity = "critical" },
  { name = "cold", below = 2.0, hysteresis = 0.5, dwell_s = 0 },
]
"""


class Chaos:
    """The processes of one run, the chaos clock, and the counts printed at the end."""

    def __init__(self, tmp: Path, broker: Mosquitto, influx: InfluxDB1, root: str) -> None:
        self.tmp = tmp
        self.broker = broker
        self.influx = influx
        self.influx.create_database("chaos")
        self.failing = threading.Event()
        self.receiver = WebhookReceiver(
            behaviour=lambda n, key: 503 if self.failing.is_set() else 200)
        self.link = tmp / "ttyTHERMO"
        self.outbox = tmp / "outbox.db"
        (tmp / "scenario.toml").write_text(SCENARIO)
        mqtt = MqttAccess(broker.host, broker.port)
        agent_cfg = tmp / "agent.toml"
        agent_cfg.write_text(agent_toml(device_id=DEVICE, mqtt=mqtt, topic_root=root,
                                        outbox=self.outbox, sources=serial_source(self.link),
                                        rules=RULES_TOML))
        self.agent = AgentProc(agent_cfg, tmp / "agent.log")
        self.hub_data = tmp / "hubdata"
        hub_cfg = tmp / "hub.toml"
        http_port = free_port()
        hub_cfg.write_text(hub_toml(data_dir=self.hub_data, mqtt=mqtt, topic_root=root,
                                    influx_url=influx.url, database="chaos",
                                    http_port=http_port, webhook_url=self.receiver.url,
                                    hub_id="chaos", offline_for_s=OFFLINE_FOR_S))
        self.hub = HubProc(hub_cfg, tmp / "hub.log", http_port)
        self.alerting = alerting_config_of(hub_cfg)
        self.sub = TimedSubscriber(broker.host, broker.port, root)
        self.watch = MetricsWatch([self.hub])
        self.sim: Sim | None = None
        self.t0 = 0.0       # monotonic time firmware-sim started
        self.t0_wall = 0.0  # the same instant on the wall clock (the agent stamps with it)
        self.done: dict[str, float] = {}  # chaos step -> real seconds after the start
        self.counts: dict[str, Any] = {}

    def start(self) -> None:
        self.hub.start()
        wait_until(lambda: "mqtt.connected" in self.hub.log_text(), 60, "the hub's connection")
        self.agent.start()
        wait_until(lambda: any(s.online for s in self.sub.statuses()), 60, "the agent's birth")
        self.sim = Sim(self.tmp / "scenario.toml", self.link, SPEED)
        self.t0, self.t0_wall = time.monotonic(), time.time()

    def at(self, real_s: float, step: str) -> None:
        """Pace the chaos to the scenario (not a correctness wait: every check below waits on
        conditions), and record when the step really happened."""
        delay = self.t0 + real_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.done[step] = round(time.monotonic() - self.t0, 2)

    def script_time(self, wall: float) -> float:
        return (wall - self.t0_wall) * SPEED

    def report(self) -> str:
        return "chaos counts: " + ", ".join(f"{k}={v}" for k, v in self.counts.items())

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
        for proc in (self.agent, self.hub):
            if proc.proc is not None and proc.proc.poll() is None:
                proc.stop()
        self.watch.close()
        self.sub.close()
        self.receiver.stop()


@pytest.fixture
def chaos(tmp_path: Path, mosquitto_factory: Any, influxdb_factory: Any,
          topic_root: str) -> Iterator[Chaos]:
    run = Chaos(tmp_path, mosquitto_factory(), influxdb_factory(), topic_root)
    yield run
    run.close()


def _expected_decisions(run: Chaos, stored: list[dict[str, Any]]) -> dict[str, set[tuple[Key,
                                                                                      ...]]]:
    """Per sensor, every decision list (c) accepts (see the module docstring)."""
    rules = parse(RULES, SensorRules)
    script = script_readings(SCENARIO)
    kill = run.done["agent killed"] * SPEED
    out: dict[str, set[tuple[Key, ...]]] = {}
    for sid in (S1, S2):
        items = [s for s in script if s.reading.sensor_id == sid]
        # firmware-sim exits at the end: the pty goes away -> device_lost
        end = items[-1].t + 1
        readings = [s.reading for s in items] + [Reading(sid, end, None, "device_lost")]
        times = [s.t for s in items] + [end]
        # the restarted agent's first decision is its decider's unknown -> band change
        firsts = [r for r in stored if r["sensor"] == sid and r.get("kind") == "state_change"
                  and r.get("previous_state") == "unknown"]
        assert len(firsts) == 2, f"{sid}: one unknown->band per agent process: {firsts}"
        resumed = run.script_time(firsts[1]["time"] / 1e9)
        cut_lo, cut_hi = kill - 3 * SPEED, kill + 0.5 * SPEED
        resume_hi = resumed + 1.5 * SPEED
        cuts = [i for i, t in enumerate(times) if cut_lo <= t <= cut_hi]
        resumes = [j for j, t in enumerate(times) if cut_lo <= t <= resume_hi]
        assert cuts and resumes, (sid, kill, resumed)
        prefixes = decision_prefixes(readings, rules)
        tails = {j: decision_keys(readings[j:], rules) for j in resumes}
        out[sid] = {tuple(prefixes[i] + tails[j])
                    for i, j in itertools.product(cuts, resumes) if j >= i}
        run.counts[f"lost_window_{sid[-4:]}"] = (
            f"{(resume_hi - cut_lo) / SPEED:.1f}s/{len(out[sid])} outcome(s)")
    return out


def test_chaos_every_event_stored_once_every_alert_delivered_once(chaos: Chaos) -> None:
    run = chaos
    run.start()
    assert run.sim is not None

    # 1. the broker goes away and comes back (persistence keeps sessions and queues)
    run.at(BROKER_DOWN, "broker stopped")
    run.broker.stop()
    run.at(BROKER_UP, "broker started")
    run.broker.start()

    # 2. alerts pile up in the hub's outbox (the receiver fails), then the hub is SIGKILLed
    run.at(RECEIVER_FAILS, "receiver failing")
    run.failing.set()
    run.at(HUB_KILL, "hub killed")

    def pending_hook() -> list[tuple[str, str]]:
        return [r for r in alert_store_rows(run.hub_data, "outbox") if r[1] == "hook"]

    wait_until(lambda: len(pending_hook()) >= 3, 30, "alerts waiting for the failing webhook")
    run.counts["alerts_pending_at_hub_kill"] = len(pending_hook())
    run.hub.kill()
    run.failing.clear()
    run.at(HUB_RESTART, "hub restarted")
    run.hub.start()

    # 3. the agent is SIGKILLed and started again on the same outbox
    run.at(AGENT_KILL, "agent killed")
    run.agent.kill()
    run.at(AGENT_RESTART, "agent restarted")
    run.agent.start()

    # 4. InfluxDB goes away for 8 s
    run.at(INFLUX_DOWN, "influxdb stopped")
    run.influx.stop()
    run.at(INFLUX_UP, "influxdb started")
    run.influx.start()

    # 5. the unplug is scripted (firmware-sim closes the pty and comes back at a new one)
    assert run.sim.wait(60) == 0
    run.counts["steps_at_s"] = run.done

    def lost_twice() -> bool:  # the unplug, and the end of the scenario
        lost = [e for e in unique(run.sub.events())
                if e.kind == "fault" and e.fault == "device_lost" and e.active]
        return all(sum(e.sensor_id == s for e in lost) == 2 for s in (S1, S2))

    wait_until(lost_twice, 60, "device_lost at the unplug and at the end")
    # the sources are done: every event leaves the outbox once the hub receipts it
    wait_until(lambda: outbox_state(run.outbox)["pending"] == 0, 120,
               "the hub's receipts to empty the agent's outbox")
    assert run.agent.stop() == 0
    state = outbox_state(run.outbox)
    made = state["next_seq"]
    run.counts.update(events_made=made, agent_sessions=state["session"])
    # what is left awaits a receipt (made in the last second before the stop): the check below
    # that every seq made is stored covers it
    run.counts.update(awaiting_receipt_at_stop=state["pending"])
    drops = {k: v for k, v in state.items() if k.startswith("dropped_") and v}
    assert not drops, f"the outbox dropped events: {drops}; {run.report()}"
    last = [s for s in run.sub.statuses() if s.reason == "shutdown"][-1]
    assert last.counters["invalid_drafts"] == 0, run.report()
    assert last.counters["dropped_readings_queue"] == 0, run.report()

    # (a) + (b): every event the agent made is in InfluxDB exactly once
    def stored_seqs() -> list[int]:
        return [int(r["seq"]) for r in stored_events(run.influx, "chaos", DEVICE)]

    try:
        wait_until(lambda: sorted(stored_seqs()) == list(range(made)), 90,
                   "every event stored")
    except AssertionError:
        seqs = stored_seqs()
        lost = sorted(set(range(made)) - set(seqs))
        twice = sorted(s for s in set(seqs) if seqs.count(s) > 1)
        raise AssertionError(f"stored {len(seqs)} of {made}: missing seqs {lost[:50]}, "
                             f"stored twice {twice[:50]}; {run.report()}") from None
    stored = stored_events(run.influx, "chaos", DEVICE)
    run.watch.scrape()
    run.counts.update(
        events_stored=len(stored),
        duplicates_dropped_by_hub=int(run.watch.total("thermopipe_hub_duplicates_dropped_total")),
        replayed_stored=sum(1 for r in stored if r["replayed"]),
        dead_lettered=int(run.watch.total("thermopipe_hub_dead_lettered_total")))
    ids = [r["event_id"] for r in stored]
    assert len(set(ids)) == len(ids) == made, run.report()
    assert run.counts["dead_lettered"] == 0, run.report()
    # what the broker delivered to an independent subscriber is exactly what was stored
    delivered = unique(run.sub.events())
    assert {e.event_id for e in delivered} == set(ids), run.report()

    # (c): the decisions, exactly, up to the SIGKILL window
    by_seq = sorted(delivered, key=lambda e: e.seq)
    accepted = _expected_decisions(run, stored)
    for sid in (S1, S2):
        decided = tuple(received_keys(e for e in by_seq if e.sensor_id == sid))
        assert decided in accepted[sid], (
            f"{sid}: decisions {decided}\nnone of the accepted outcomes, e.g. "
            f"{sorted(accepted[sid])[0]}; {run.report()}")
    flat = [k for sid in (S1, S2) for k in received_keys(
        e for e in by_seq if e.sensor_id == sid)]
    for key in [("state_change", "normal", "high"), ("state_change", "high", "critical"),
                ("state_change", "normal", "cold"), ("fault", "crc_error", True),
                ("fault", "device_lost", True), ("fault", "device_lost", False)]:
        assert key in flat, f"the scenario did not exercise {key}; {run.report()}"

    # (d): every alert expected was delivered, each Idempotency-Key acknowledged once
    statuses: dict[str, DeviceStatus] = {s.event_id: s for s in run.sub.statuses()}
    run.counts["statuses"] = [f"{s.session}:{s.reason}" for s in statuses.values()]
    assert run.alerting.offline_for_s == OFFLINE_FOR_S
    want = expected_alerts([*delivered, *statuses.values()], run.alerting, "hook",
                           arrived=run.sub.arrived)
    run.counts["will_to_birth_s"] = list(want.gaps.values())

    def got() -> dict[AlertKey, list[dict[str, Any]]]:
        out: dict[AlertKey, list[dict[str, Any]]] = {}
        for r in run.receiver.acked():
            out.setdefault(alert_key(r.body), []).append(r.body)
        return out

    sensor_keys = set(want.keys) - want.offline
    try:
        wait_until(lambda: sensor_keys <= set(got()), 60, "every sensor alert delivered")
        wait_until(lambda: not alert_store_rows(run.hub_data, "outbox"), 30,
                   "the alert outbox to drain")
        wait_until(lambda: set(want.keys) <= set(got()), 5, "every offline alert delivered")
    except AssertionError:
        pass  # the assertions below say what is missing
    assert run.hub.stop() == 0  # nothing more can arrive now
    received = got()
    keys = [r.key for r in run.receiver.acked()]
    twice_keys = sorted({k for k in keys if keys.count(k) > 1})
    run.counts.update(
        alerts_expected=len(want.keys), alerts_delivered=len(set(keys)),
        alert_keys_acked_twice=len(twice_keys),
        webhook_503s=sum(1 for r in run.receiver.requests if r.status == 503),
        restarts={"broker": 1, "hub_sigkill": 1, "agent_sigkill": 1, "influxdb": 1,
                  "unplug": 1})
    suppressed = run.hub.log_text().count('"alerting.offline_flap_suppressed"')
    run.counts["offline_flaps"] = f"{len(want.flaps)} expected, {suppressed} logged by the hub"
    print("\n" + run.report())
    assert not twice_keys, f"Idempotency-Keys acknowledged twice: {twice_keys}; {run.report()}"
    missing = {k: v for k, v in want.keys.items() if k not in received}
    unexpected = {k: [b["summary"] for b in v] for k, v in received.items()
                  if k not in want.keys}
    assert not set(missing) - want.offline, f"alerts not delivered: {missing}; {run.report()}"
    assert run.counts["alerts_pending_at_hub_kill"] >= 3
    assert run.counts["webhook_503s"] >= 3, "the hub was killed with alerts undelivered"
    assert not alert_store_rows(run.hub_data, "given_up"), run.report()
    sent = {a for a, n in alert_store_rows(run.hub_data, "sent") if n == "hook"}
    assert sent == set(keys), run.report()
    # the hub was really gone, and so was the agent: births and the will show it
    births = [r for r in stored_rows(run.influx, "chaos", "device_status", DEVICE)
              if r["online"] == 1]
    assert len({r["session"] for r in births}) >= 3, run.report()  # start, broker, SIGKILL
    assert any(s.reason == "will" for s in statuses.values()), "the SIGKILL left a will"
    assert not missing and not unexpected, (
        f"offline alerts: missing {missing}, unexpected {unexpected}; {run.report()}")
    offline_firings = [b for k in want.offline if k[1] == "firing" for b in received[k]]
    assert offline_firings and not any(b["late"] for b in offline_firings), offline_firings
    # ... sent once the grace had passed since the hub received the will (its event_time)
    waited = [(datetime.fromisoformat(b["time"]) - datetime.fromisoformat(b["event_time"]))
              .total_seconds() for b in offline_firings]
    assert all(OFFLINE_FOR_S <= w < OFFLINE_FOR_S + 10 for w in waited), waited
    # the broker restart's wills were flaps, and the hub says it suppressed each of them
    assert want.flaps and suppressed == len(want.flaps), run.report()

