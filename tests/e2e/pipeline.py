"""The whole pipeline as real processes, for the end-to-end tests and bench/soak.py:
firmware-sim (pty) -> edge agent -> private Mosquitto -> hub -> private InfluxDB 1.x, with a
webhook receiver for the hub's alerts.

Reused, not copied: the agent's e2e helpers (``Sim``, ``AgentProc``, ``wait_until``, the fault
mapping and the decision keys, tests/agent_e2e/e2e_helpers.py) and the alerting tests' webhook
receiver (tests/hub_alerting/receivers.py). What is here is what they do not have: config files
with credentials and TLS, the hub as a process with its metrics, reading the stored events back
from InfluxDB, and the expectations (decisions, alerts) computed with the pure deciders and the
pure alert engine.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

ROOT = Path(__file__).resolve().parents[2]


# -- secrets and config files --------------------------------------------------------------------

def secret_file(path: Path, value: str) -> Path:
    """A password file as systemd credentials are: readable by the owner only."""
    path.write_text(value)
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class MqttAccess:
    """How one client reaches the broker: the port, and optionally a user, password and CA."""

    host: str
    port: int
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None

    def agent_toml(self) -> str:
        lines = [f'host = "{self.host}"', f"port = {self.port}"]
        if self.username is not None:
            lines.append(f'username = "{self.username}"')
        if self.password_file is not None:
            lines.append(f'password = "file:{self.password_file}"')
        return "\n".join(lines)

    def tls_toml(self, table: str) -> str:
        return f'\n[{table}]\nca_file = "{self.ca_file}"\n' if self.ca_file else ""


def serial_source(link: Path) -> str:
    return f'[[sources]]\nkind = "serial"\nport = "{link}"\nreopen_max_s = 0.1\n'


def simulator_source(scenario: Path, speed: float, seed: int = 1, loop: bool = True) -> str:
    return (f'[[sources]]\nkind = "simulator"\nscenario = "{scenario}"\nspeed = {speed}\n'
            f"seed = {seed}\nloop = {'true' if loop else 'false'}\n")


def agent_toml(*, device_id: str, mqtt: MqttAccess, topic_root: str, outbox: Path,
               sources: str, rules: str, site: str = "e2e", tick_s: float = 0.2,
               status_interval_s: float = 5.0, log_level: str = "info",
               backlog_rate_per_s: float = 0, mqtt_extra: str = "",
               outbox_extra: str = "") -> str:
    """An agent config (edge_agent/config.py) with fast reconnects and group commits;
    ``mqtt_extra`` / ``outbox_extra``: more lines for ``[mqtt]`` / ``[outbox]``."""
    return f"""
site = "{site}"
device_id = "{device_id}"
tick_s = {tick_s}

[log]
level = "{log_level}"
format = "json"

[mqtt]
{mqtt.agent_toml()}
topic_root = "{topic_root}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
connect_timeout_s = 5.0
status_interval_s = {status_interval_s}
{mqtt_extra}
{mqtt.tls_toml("mqtt.tls")}
[outbox]
path = "{outbox}"
flush_interval_s = 0.2
backlog_rate_per_s = {backlog_rate_per_s}
{outbox_extra}

{sources}
[defaults]
{rules}
"""


def hub_toml(*, data_dir: Path, mqtt: MqttAccess, topic_root: str, influx_url: str,
             database: str, http_port: int, webhook_url: str | None = None,
             hub_id: str = "e2e", log_level: str = "info",
             offline_for_s: float | None = None, mqtt_extra: str = "") -> str:
    """A hub config (hub/config/): v1 storage, HTTP metrics on ``http_port``, and (with a
    ``webhook_url``) alerting to that webhook only, one group per condition, late alerts too,
    with the device-offline grace ``offline_for_s`` (None: the hub's default). ``mqtt_extra``:
    more lines for ``[mqtt]``; more tables may be appended to the text."""
    password = f'password = "file:{mqtt.password_file}"\n' if mqtt.password_file else ""
    username = f'username = "{mqtt.username}"\n' if mqtt.username else ""
    text = f"""
hub_id = "{hub_id}"
data_dir = "{data_dir}"

[mqtt]
host = "{mqtt.host}"
port = {mqtt.port}
topic_root = "{topic_root}"
client_id = "hub-{topic_root}-{hub_id}"
{mqtt_extra}
{username}{password}{mqtt.tls_toml("mqtt.tls")}
[storage]
enabled = true
mode = "v1"
url = "{influx_url}"
database = "{database}"
batch_size = 500
flush_interval_s = 0.2
timeout_s = 3.0

[http]
enabled = true
host = "127.0.0.1"
port = {http_port}

[log]
level = "{log_level}"
format = "json"

[dispatch]
retry_initial_s = 0.2
retry_max_s = 1.0
"""
    if webhook_url is None:
        return text + "\n[alerting]\nenabled = false\n"
    grace = "" if offline_for_s is None else f"offline_for_s = {offline_for_s}\n"
    return text + f"""
[alerting]
{grace}repeat_interval_s = 86400
tick_interval_s = 1.0
retry_max_backoff_s = 1.0

[alerting.notifiers.hook]
type = "webhook"
url = "{webhook_url}"
timeout_s = 3.0
max_retries = 0
retry_backoff_s = 0.1
deliver_late = true

[[alerting.rules]]
name = "all"
match = {{ severity_at_least = "warning" }}
notifiers = ["hook"]
group_by = ["site", "device", "sensor", "condition"]
"""


def alerting_config_of(hub_config_file: Path) -> AlertingConfig:
    """The ``[alerting]`` section exactly as the hub under test reads it."""
    from hub.config import load_hub_config

    section = load_hub_config(hub_config_file).alerting
    assert isinstance(section, AlertingConfig), "hub.config.alerting is not installed"
    return section


# -- the hub as a process --------------------------------------------------------------------------

@dataclass
class HubProc:
    """``python -m hub.cli run -c CONFIG``; stdout and stderr go to ``log``."""

    config: Path
    log: Path
    http_port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    args: tuple[str, ...] = ()  # more arguments of ``hub run`` (``--workers 3``)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "run", "-c", str(self.config), *self.args],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}",
                                        timeout=2) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as exc:  # /healthz answers 503 with its report
            with exc:
                body: bytes = exc.read()
            return body
        except (OSError, urllib.error.URLError):
            return None

    def metrics(self) -> dict[str, float] | None:
        """The Prometheus samples (``name{labels}`` -> value), or None if it does not answer."""
        body = self._get("/metrics")
        if body is None:
            return None
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def health(self) -> dict[str, Any] | None:
        import json

        body = self._get("/healthz")
        return None if body is None else dict(json.loads(body))


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


def outbox_state(path: Path) -> dict[str, int]:
    """The agent outbox's durable counters (``next_seq``, ``session``, ``dropped_*``) and
    ``pending`` (events not yet acknowledged by the broker)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        meta = {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}
        meta["pending"] = int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        db.close()
    return meta


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
