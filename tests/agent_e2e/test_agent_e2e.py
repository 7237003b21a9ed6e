"""End to end with real processes: firmware-sim on a real pty -> edge agent -> private Mosquitto
-> a plain paho subscriber.

The expected decisions are computed in the test: the scenario's deterministic script
(``firmware_sim.device.script()``) is decoded exactly as a reader that missed no byte would, and run
through the same ``SensorRules`` with a pure ``SensorDecider``. The rules used here make every
decision depend on the values only, never on wall-clock timing (dwell 0, no stale timer, no rate
alarm), so the state changes, faults and reading reports must match *exactly*, in seq order per
sensor. Summary windows depend on wall-clock time, so for them the test asserts what is exact:
their counts add up to the number of good readings, and the windows are contiguous.

Every scenario starts with a scripted firmware stall (no output) of a few real seconds: the
agent opens the pty during it, so no frame is sent before the agent listens (pyserial flushes
the input buffer when it opens a port, as with real hardware).
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.decide import Reading, SensorDecider, SensorRules
from program_support.plain_config import parse
from tests.agent_e2e.e2e_helpers import (
    AgentProc,
    Sim,
    Subscriber,
    good_reading_count,
    key_of_draft,
    key_of_event,
    scenario_readings,
    unique,
    wait_until,
    write_config,
)
from tests.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.timeout(180)]

S1, S2 = "28-0000075a1b2c", "28-00000a3f9e21"
SPEED = 60.0

RULES_TOML = """
stale_after_s = {stale}
summary_interval_s = 1.0
deadband = {deadband}
thresholds = [
  {{ name = "high", above = 25.0, hysteresis = 0.5, dwell_s = 0 }},
  {{ name = "critical", above = 28.0, hysteresis = 0.5, dwell_s = 0, severity = "critical" }},
  {{ name = "cold", below = 2.0, hysteresis = 0.5, dwell_s = 0 }},
]
"""


def rules_toml(deadband: float | None = None) -> str:
    # TOML has no null: leave the key out for None (stale_after_s=None is set below)
    text = RULES_TOML.format(stale=10**6, deadband=deadband if deadband else 0)
    if deadband is None:
        text = text.replace("deadband = 0\n", "")
    return text


def rules_model(deadband: float | None = None) -> SensorRules:
    return parse({
        "stale_after_s": 10**6, "summary_interval_s": 1.0, "deadband": deadband,
        "thresholds": [
            {"name": "high", "above": 25.0, "hysteresis": 0.5, "dwell_s": 0},
            {"name": "critical", "above": 28.0, "hysteresis": 0.5, "dwell_s": 0,
             "severity": "critical"},
            {"name": "cold", "below": 2.0, "hysteresis": 0.5, "dwell_s": 0},
        ]}, SensorRules)


def scenario(duration_m: int, extra: str = "", lead_in: str = "3m") -> str:
    # sensor 1 warms through "high" and "critical" and back; sensor 2 cools through "cold"
    return f"""
name = "e2e"
duration = "{duration_m}m"
interval = "5s"
seed = 21
device_id = "e2e-board"

[[sensors]]
id = "{S1}"
profile = {{ kind = "piecewise", points = [
  {{ at = 0, value = 20.0 }}, {{ at = "{lead_in}", value = 20.0 }},
  {{ at = "{duration_m * 30 + 90}s", value = 30.0 }},
  {{ at = "{duration_m * 60 - 30}s", value = 20.0 }}] }}
noise = 0.1

[[sensors]]
id = "{S2}"
profile = {{ kind = "piecewise", points = [
  {{ at = 0, value = 5.0 }}, {{ at = "{lead_in}", value = 5.0 }},
  {{ at = "{duration_m * 30 + 90}s", value = 0.0 }},
  {{ at = "{duration_m * 60 - 30}s", value = 5.0 }}] }}
noise = 0.05

[[faults]]
kind = "stall"
at = "0s"
duration = "{lead_in}"
{extra}
"""


LINE_AND_SENSOR_FAULTS = f"""
[[faults]]
kind = "power_on"
sensor = "{S2}"
at = "4m"

[[faults]]
kind = "crc_error"
sensor = "{S2}"
at = "5m"
count = 2

[[faults]]
kind = "missing"
sensor = "{S2}"
at = "6m"
duration = "20s"

[[faults]]
kind = "disconnected"
sensor = "{S1}"
at = "8m"

[[faults]]
kind = "read_failed"
sensor = "{S1}"
at = "9m"

[[faults]]
kind = "garbage"
at = "7m"
count = 2
bytes = 40

[[faults]]
kind = "cut_line"
at = "7m30s"

[[faults]]
kind = "bad_checksum"
at = "10m"
count = 2
"""


def expected_keys(text: str, rules: SensorRules, *, readings: bool = False,
                  unplugged_at_end: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    """Per sensor, in order: what the agent must decide (state changes, faults[, readings])."""
    rs = scenario_readings(text, SPEED)
    if unplugged_at_end:  # firmware-sim exits at the end: the pty goes away -> device_lost
        t = rs[-1].time + 1
        rs += [Reading(S1, t, None, "device_lost"), Reading(S2, t, None, "device_lost")]
    kinds = {"state_change", "fault"} | ({"reading"} if readings else set())
    out: dict[str, list[tuple[Any, ...]]] = {S1: [], S2: []}
    deciders = {s: SensorDecider(s, "degC", rules) for s in (S1, S2)}
    for r in rs:
        for d in deciders[r.sensor_id].on_reading(r):
            if d.kind in kinds:
                out[r.sensor_id].append(("reading", d.fields["value"]) if d.kind == "reading"
                                        else key_of_draft(d.kind, d.fields))
    return out


def received_keys(events: list[Any], *, readings: bool = False) -> dict[str, list[Any]]:
    kinds = {"state_change", "fault"} | ({"reading"} if readings else set())
    out: dict[str, list[Any]] = {S1: [], S2: []}
    for e in unique(events):
        if e.kind in kinds:
            out[e.sensor_id].append(("reading", e.value) if e.kind == "reading"
                                    else key_of_event(e))
    return out


class Rig:
    """One test's processes: the agent, firmware-sim, the subscriber; all stopped after."""

    def __init__(self, tmp: Path, broker: Mosquitto, root: str, text: str,
                 rules: str) -> None:
        self.tmp = tmp
        self.text = text
        self.scenario = tmp / "scenario.toml"
        self.scenario.write_text(text)
        self.link = tmp / "ttyTHERMO"
        self.outbox = tmp / "outbox.db"
        config = tmp / "agent.toml"
        write_config(config, host=broker.host, port=broker.port, root=root, link=self.link,
                     rules=rules, outbox=self.outbox)
        self.sub = Subscriber(broker.host, broker.port, root)
        self.agent = AgentProc(config, tmp / "agent.log")
        self.sim: Sim | None = None

    def start(self) -> None:
        self.agent.start()
        # the birth (retained status, online) says the agent is up and connected
        wait_until(lambda: any(s.online for s in self.sub.statuses()), 30, "the agent's birth")
        self.sim = Sim(self.scenario, self.link, SPEED)

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
        if self.agent.proc is not None and self.agent.proc.poll() is None:
            self.agent.stop()
        self.sub.close()


@pytest.fixture
def rig_factory(tmp_path: Path, topic_root: str) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(broker: Mosquitto, text: str, rules: str) -> Rig:
        rig = Rig(tmp_path, broker, topic_root, text, rules)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def _summaries_complete(sub: Subscriber, want: dict[str, int]) -> bool:
    got = {S1: 0, S2: 0}
    for e in unique(sub.events()):
        if e.kind == "summary":
            got[e.sensor_id] += e.count
    _last_got.clear()
    _last_got.update(got)
    # Exact: the last round of readings before firmware-sim closes its pty used to be lost
    # (pyserial's read(4096) threw away the bytes it held when the port failed); see
    # tests/agent_sources/test_serial_last_bytes.py.
    return got == want


_last_got: dict[str, int] = {}


def _check_summaries(events: list[Any], want: dict[str, int]) -> None:
    for sid in (S1, S2):
        windows = [e for e in unique(events) if e.kind == "summary" and e.sensor_id == sid]
        assert sum(w.count for w in windows) == want[sid], sid
        for before, after in itertools.pairwise(windows):
            assert after.window_start == before.time, "summary windows must be contiguous"


def test_scripted_scenario_gives_exactly_the_expected_events(
        mosquitto: Mosquitto, rig_factory: Any) -> None:
    text = scenario(12, LINE_AND_SENSOR_FAULTS)
    rig = rig_factory(mosquitto, text, rules_toml())
    rig.start()
    assert rig.sim is not None
    assert rig.sim.wait(60) == 0
    want_counts = good_reading_count(scenario_readings(text, SPEED), rules_model())
    try:
        wait_until(lambda: _summaries_complete(rig.sub, want_counts), 30, "every summary")
    except AssertionError:
        status = rig.sub.statuses()
        counters = status[-1].counters if status else {}
        raise AssertionError(f"summaries: want {want_counts}, got {_last_got}; the agent's "
                             f"last status counters {counters}; received "
                             f"{[(e.kind, e.sensor_id[-4:]) for e in rig.sub.events()]}"
                             ) from None
    expected = expected_keys(text, rules_model())
    wait_until(lambda: received_keys(rig.sub.events()) == expected, 15, "device_lost at the end")
    assert rig.agent.stop() == 0
    events = rig.sub.events()
    assert received_keys(events) == expected
    # the scenario really exercised what it claims to
    flat = [k for keys in expected.values() for k in keys]
    for key in [("state_change", "normal", "high"), ("state_change", "high", "critical"),
                ("state_change", "normal", "cold"), ("fault", "power_on_value", True),
                ("fault", "crc_error", True), ("fault", "disconnected", True),
                ("fault", "read_failed", True), ("fault", "device_lost", True)]:
        assert key in flat, key
    _check_summaries(events, want_counts)
    assert all(not e.replayed for e in events)
    # the shutdown status carries the counters: line faults counted, nothing dropped
    last = rig.sub.statuses()[-1]
    assert (last.online, last.reason) == (False, "shutdown")
    assert last.counters["bad_checksum"] == 2
    assert last.counters["cut_lines"] == 1
    assert last.counters["dropped_readings_queue"] == 0
    # every frame of the script was read off the line: none lost at the start or the end
    script = scenario_readings(text, SPEED)
    assert last.counters["source_readings"] == sum(1 for r in script if r.fault is None)
    assert last.counters["sensor_errors"] == sum(1 for r in script if r.fault is not None)
    assert {s.sensor_id for s in last.sensors} == {S1, S2}
    assert "sim-1.0.0 (e2e-board)" in last.firmware


def test_broker_down_for_30s_every_event_arrives_once_in_order(
        mosquitto_factory: Any, rig_factory: Any) -> None:
    """The broker is stopped for 30 s while the scenario runs, then started again.

    Live events go first while the backlog drains, so a live event may overtake backlog events
    of the same sensor. What must hold, and is asserted: after dedup by event id, the seqs are
    exactly 0..N (nothing lost, nothing invented); each seq has one event id; per sensor, the
    replayed stream (replayed=True) and the live stream each arrive in seq order; and the
    decisions in seq order are exactly the pure decider's on the scenario script.
    """
    broker = mosquitto_factory()
    text = scenario(40, LINE_AND_SENSOR_FAULTS)
    rig = rig_factory(broker, text, rules_toml(deadband=0.3))
    rig.start()
    time.sleep(3)  # a few seconds of live traffic first (not a correctness wait)
    broker.stop()
    down_at = time.monotonic()
    time.sleep(30)
    broker.start()
    assert rig.sim is not None
    assert rig.sim.wait(90) == 0
    expected = expected_keys(text, rules_model(0.3), readings=True)
    wait_until(lambda: received_keys(rig.sub.events(), readings=True) == expected, 60,
               "the backlog to drain")
    assert time.monotonic() - down_at > 30
    assert rig.agent.stop() == 0
    events = rig.sub.events()
    uniq = unique(events)
    assert [e.seq for e in uniq] == list(range(len(uniq)))
    assert received_keys(events, readings=True) == expected
    replayed = [e for e in events if e.replayed]
    assert len(replayed) > 20, "the outage produced a backlog"
    for sid in (S1, S2):
        for stream in (True, False):
            seqs = []
            seen: set[str] = set()
            for e in events:
                if e.sensor_id == sid and e.replayed is stream and e.event_id not in seen:
                    seen.add(e.event_id)
                    seqs.append(e.seq)
            assert seqs == sorted(seqs), (sid, stream)
    with sqlite3.connect(rig.outbox) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    db.close()


def test_sigkill_mid_stream_and_restart_loses_no_event(
        mosquitto: Mosquitto, rig_factory: Any) -> None:
    """SIGKILL while events flow, then a restart on the same outbox. Everything the first
    process committed is published (replayed if it was not acknowledged), seqs stay dense and
    strictly increasing across the restart, and no event id is delivered with two seqs.
    (Readings the sensor sent while no agent ran are gone with the serial buffer: that is the
    sensor's data, not an event; the decisions resume from the next reading.)"""
    text = scenario(20)
    rig = rig_factory(mosquitto, text, rules_toml(deadband=0.1))
    rig.start()
    wait_until(lambda: len(rig.sub.events()) >= 30, 30, "events flowing")
    rig.agent.kill()
    before = unique(rig.sub.events())
    rig.agent.start()
    assert rig.sim is not None
    assert rig.sim.wait(60) == 0
    wait_until(lambda: any(e.kind == "fault" and e.fault == "device_lost"
                           for e in rig.sub.events()), 20, "the end of the scenario")
    assert rig.agent.stop() == 0
    after = unique(rig.sub.events())
    assert [e.seq for e in after] == list(range(len(after)))
    assert {e.event_id for e in before} <= {e.event_id for e in after}
    assert len(after) > len(before) + 20, "the restarted agent went on"
    births = [s for s in rig.sub.statuses() if s.reason == "birth"]
    assert len(births) == 2 and births[1].session > births[0].session
    with sqlite3.connect(rig.outbox) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    db.close()


def test_serial_unplug_is_a_device_lost_fault_and_recovers_without_restart(
        mosquitto: Mosquitto, rig_factory: Any) -> None:
    text = scenario(8, """
[[faults]]
kind = "unplug"
at = "5m"
duration = "1m"
""")
    rig = rig_factory(mosquitto, text, rules_toml())
    rig.start()
    pid = rig.agent.proc.pid
    assert rig.sim is not None
    assert rig.sim.wait(60) == 0
    assert len([line for line in rig.sim.lines if line.startswith("pty ")]) >= 1

    def lost_then_back(sid: str) -> bool:
        keys = [key_of_event(e) for e in unique(rig.sub.events())
                if e.sensor_id == sid and e.kind == "fault"]
        return keys[:2] == [("fault", "device_lost", True), ("fault", "device_lost", False)]

    wait_until(lambda: lost_then_back(S1) and lost_then_back(S2), 20, "loss and recovery")
    assert rig.agent.proc.poll() is None and rig.agent.proc.pid == pid  # never restarted
    # readings came again after the recovery, before the final unplug at the end
    for sid in (S1, S2):
        evs = [e for e in unique(rig.sub.events()) if e.sensor_id == sid]
        back = next(i for i, e in enumerate(evs) if e.kind == "fault" and not e.active)
        assert any(e.kind == "summary" and e.count > 0 for e in evs[back:])
    assert rig.agent.stop() == 0
    last = rig.sub.statuses()[-1]
    assert last.counters["device_reconnects"] >= 1
    assert last.counters["device_lost"] >= 2  # the unplug, and the end of the scenario
    assert "serial.device_lost" in rig.agent.log_text()
