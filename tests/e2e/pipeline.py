"""The whole pipeline as real processes, for the end-to-end tests and bench/soak.py:
firmware-sim (pty) -> edge agent -> private Mosquitto -> hub -> private InfluxDB 1.x, with a
webhook receiver for the hub's alerts.

Reused, not copied: the programs as processes and their config files (with credentials and TLS),
the hub's metrics and the outbox's counters, from bench's harness (bench/harness/processes.py,
which bench/soak.py runs too); the agent's e2e helpers (``Sim``, ``wait_until``, the fault
mapping and the decision keys, tests/agent_e2e/e2e_helpers.py) and the alerting tests' webhook
receiver. What is here is what they do not have: reading the stored events back from InfluxDB,
and the expectations (decisions, alerts) computed with the pure deciders and the pure alert
engine.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness.processes import (
    ROOT,
    HubProc,
    MqttAccess,
    agent_toml,
    hub_toml,
    outbox_state,
    secret_file,
    serial_source,
    simulator_source,
)
from edge_agent.decide import Reading, SensorDecider, SensorRules
from firmware_sim import device as fw
from firmware_sim import scenario as scenarios
from firmware_sim.device import Kind
from hub.alerting.engine import AlertEngine
from hub.config.alerting import AlertingConfig
from hub.consumers.base import Envelope
from schemas.models import DeviceStatus, FaultEvent, RateAlarmEvent, StateChangeEvent
from schemas.serial_protocol import ReadingFrame, SensorError
from tests.agent_e2e.e2e_helpers import FAULTS, Subscriber, key_of_draft, key_of_event
from tests.servers import InfluxDB1

# The names from bench's harness that the tests import from here (beside what is defined below);
# listed so the linter keeps these imports.
__all__ = ["ROOT", "HubProc", "MqttAccess", "agent_toml", "hub_toml", "outbox_state",
           "secret_file", "serial_source", "simulator_source"]


def alerting_config_of(hub_config_file: Path) -> AlertingConfig:
    """The ``[alerting]`` section exactly as the hub under test reads it."""
    from hub.config import load_hub_config

    section = load_hub_config(hub_config_file).alerting
    assert isinstance(section, AlertingConfig), "hub.config.alerting is not installed"
    return section


class MetricsWatch:
    """Scrapes a hub's metrics every ``interval`` seconds and keeps the last values of every
    process it saw (by pid), so counters survive a SIGKILL in the totals. A killed process's
    last ``interval`` seconds are not seen: totals are lower bounds."""

    def __init__(self, hubs: Sequence[HubProc], interval: float = 0.5) -> None:
        self.hubs = list(hubs)
        self.interval = interval
        self.last: dict[int, dict[str, float]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="metrics-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.scrape()

    def scrape(self) -> None:
        for hub in self.hubs:
            proc = hub.proc
            if proc is None or proc.poll() is not None:
                continue
            sample = hub.metrics()
            if sample is not None:
                with self._lock:
                    self.last[proc.pid] = sample

    def total(self, name: str) -> float:
        """Sum over processes (and labels) of the samples of metric ``name``."""
        with self._lock:
            return sum(v for sample in self.last.values() for k, v in sample.items()
                       if k == name or k.startswith(name + "{"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class TimedSubscriber(Subscriber):
    """The e2e subscriber (persistent session), also noting when each event id first arrived
    (wall clock): a second, independent witness of when the broker delivered each will and
    birth, for the offline grace's expectations."""

    def __init__(self, host: str, port: int, root: str) -> None:
        self.arrived: dict[str, float] = {}
        super().__init__(host, port, root)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        super()._on_message(client, userdata, msg)
        with self._lock:
            self.arrived.setdefault(self.messages[-1][1].event_id, now)


# -- what was stored ------------------------------------------------------------------------------

def stored_rows(influx: InfluxDB1, db: str, measurement: str,
                device: str | None = None) -> list[dict[str, Any]]:
    where = f" WHERE \"device\" = '{device}'" if device else ""
    return influx.series_rows(f'SELECT * FROM "{measurement}"{where}', db)


def stored_events(influx: InfluxDB1, db: str, device: str | None = None) -> list[dict[str, Any]]:
    """Every sensor event and summary stored (the agent's seq-numbered events), by seq."""
    rows = (stored_rows(influx, db, "sensor_event", device)
            + stored_rows(influx, db, "sensor_summary", device))
    # InfluxDB stores each field apart: a query that races a write can see a point without its
    # seq yet. Such a row is left out here; if it stayed so, its seq would be missing for good
    # and the callers' "every seq stored" checks fail.
    return sorted((r for r in rows if r.get("seq") is not None),
                  key=lambda r: (r["device"], r["seq"]))


def alert_store_rows(hub_data_dir: Path, table: str) -> list[tuple[str, str]]:
    """``(alert_id, notifier)`` rows of the hub's alert store (``outbox``, ``sent``,
    ``given_up``); empty while the store does not exist yet."""
    path = hub_data_dir / "alerting" / "alerting.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [(str(a), str(n)) for a, n in db.execute(
            f"SELECT alert_id, notifier FROM {table}")]  # our own table names
    finally:
        db.close()


# -- what was expected ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ScriptReading:
    """A reading as a reader that missed no byte gets it, at its scenario time (seconds)."""

    t: float
    reading: Reading


def script_readings(text: str) -> list[ScriptReading]:
    """The scenario's deterministic script as readings, with a ``device_lost`` for every sensor
    heard so far where the script unplugs the device (what the serial source reports then)."""
    out: list[ScriptReading] = []
    heard: list[str] = []
    for e in fw.script(scenarios.loads(text, "e2e.toml")):
        if e.kind is Kind.UNPLUG:
            out += [ScriptReading(e.t, Reading(s, e.t, None, "device_lost", "unplugged"))
                    for s in heard]
            continue
        f = e.received
        if isinstance(f, ReadingFrame):
            out.append(ScriptReading(e.t, Reading(f.sensor_id, e.t, f.value)))
        elif isinstance(f, SensorError):
            out.append(ScriptReading(e.t, Reading(f.sensor_id, e.t, None,
                                                  FAULTS[f.code.value],  # type: ignore[arg-type]
                                                  f"device reported {f.code.value}")))
        else:
            continue
        if out[-1].reading.sensor_id not in heard:
            heard.append(out[-1].reading.sensor_id)
    return out


Key = tuple[Any, ...]
ALERT_KINDS = ("state_change", "fault")


def decision_keys(readings: Iterable[Reading], rules: SensorRules) -> list[Key]:
    """The state changes and faults a fresh pure decider makes from one sensor's readings."""
    dec: SensorDecider | None = None
    out: list[Key] = []
    for r in readings:
        dec = dec or SensorDecider(r.sensor_id, "degC", rules)
        out += [key_of_draft(d.kind, d.fields) for d in dec.on_reading(r)
                if d.kind in ALERT_KINDS]
    return out


def decision_prefixes(readings: Sequence[Reading], rules: SensorRules) -> list[list[Key]]:
    """``prefixes[i]``: the keys a decider made from ``readings[:i]``."""
    dec: SensorDecider | None = None
    keys: list[Key] = []
    prefixes: list[list[Key]] = [[]]
    for r in readings:
        dec = dec or SensorDecider(r.sensor_id, "degC", rules)
        keys = keys + [key_of_draft(d.kind, d.fields) for d in dec.on_reading(r)
                       if d.kind in ALERT_KINDS]
        prefixes.append(keys)
    return prefixes


def received_keys(events: Iterable[Any]) -> list[Key]:
    """The decision keys of contract events (deduplicated by the caller), in the given order."""
    return [key_of_event(e) for e in events if e.kind in ALERT_KINDS]


AlertKey = tuple[str, str, str]  # (rule, status, causing event id): what one alert is about


def alert_key(body: dict[str, Any]) -> AlertKey:
    """The key of an alert as a notifier received it (the contract's ``Alert`` as JSON)."""
    return (str(body["rule"]), str(body["status"]), str(body["event_id"]))


@dataclass
class AlertExpectation:
    keys: dict[AlertKey, str] = field(default_factory=dict)  # key -> "status: summary"
    offline: set[AlertKey] = field(default_factory=set)      # the device-offline ones
    #: wills followed by the next birth within ``offline_for_s``: no alert (event id -> gap s)
    flaps: dict[str, float] = field(default_factory=dict)
    #: every will with the seconds until the next birth arrived (None: none came)
    gaps: dict[str, float | None] = field(default_factory=dict)


def expected_alerts(messages: Iterable[Any], config: AlertingConfig, notifier: str,
                    arrived: dict[str, float] | None = None,
                    margin_s: float = 1.5) -> AlertExpectation:
    """The alerts ``notifier`` must receive for the agent's events and statuses.

    Sensor conditions: the pure alert engine, fed each condition's events in the device's seq
    order (as the hub sees them when nothing reaches it out of order).

    Device offline: what the messages mean, not the engine's order key. A will is published by
    the broker when the connection of its session dies, so it comes after everything else of
    that session (its ``time`` is when that session connected: the agent sets the will before
    connecting); it fires, and the next birth (a later session) resolves it. With a grace
    (``config.offline_for_s``), a will whose next birth arrived within the grace is a flap: no
    firing, no resolution. When they arrived is taken from ``arrived`` (event id -> wall-clock
    seconds, e.g. ``TimedSubscriber.arrived``), an independent witness of the hub's received
    times; so a gap within ``margin_s`` of the grace is too close to call and fails the
    expectation (the scenario must keep clear of it).
    """
    out = AlertExpectation()
    sensor_msgs = sorted((m for m in messages
                          if isinstance(m, StateChangeEvent | FaultEvent | RateAlarmEvent)),
                         key=lambda m: m.seq)
    engine = AlertEngine(config)
    for i, event in enumerate(sensor_msgs):
        env = Envelope(offset=i, message=event, topic="", received_at=event.time, late=False,
                       out_of_order=False)
        for n in engine.process(env, datetime.now(UTC)).notifications:
            if notifier in n.notifiers:
                out.keys[(n.alert.rule, n.alert.status, n.alert.event_id)] = (
                    f"{n.alert.status}: {n.alert.summary}")
    statuses = sorted((m for m in messages if isinstance(m, DeviceStatus)),
                      key=lambda m: (m.session, not m.online and m.reason == "will", m.time))
    grace = config.offline_for_s
    births = [st for st in statuses if st.online]
    offline = False
    for st in statuses:
        is_will = not st.online and st.reason == "will"
        if is_will == offline or not (is_will or st.online):
            continue  # still offline / still online / a clean shutdown
        if is_will and grace > 0:
            back = next((b for b in births if b.session > st.session), None)
            if arrived is None:
                raise ValueError("offline_for_s > 0: the arrival times are needed")
            gap = None if back is None else arrived[back.event_id] - arrived[st.event_id]
            out.gaps[st.event_id] = None if gap is None else round(gap, 2)
            if gap is not None and abs(gap - grace) < margin_s:
                raise AssertionError(
                    f"the will of session {st.session} was followed by a birth {gap:.2f} s "
                    f"later: too close to offline_for_s = {grace:g} to say what the hub saw")
            if gap is not None and gap < grace:
                out.flaps[st.event_id] = round(gap, 2)
                continue  # cancelled in its grace: nothing fires, nothing resolves
        offline = is_will
        status = "firing" if is_will else "resolved"
        for rule in config.rules:
            if notifier in rule.notifiers and rule.match.matches(
                    site=st.site, device=st.device_id, sensor=None, kind="status",
                    severity=config.offline_severity):
                key = (rule.name, status, st.event_id)
                out.keys[key] = (f"{status}: device {st.device_id} " + (
                    f"went offline (will of session {st.session})" if is_will
                    else f"back online (session {st.session})"))
                out.offline.add(key)
    return out
