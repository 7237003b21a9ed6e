"""The whole pipeline on one machine, from one command, with nothing to install.

    simulated firmware on a real pseudo-terminal ──> edge-agent ─┐
    in-process simulated sensors ────────────────> edge-agent ─┼─> MQTT broker ─> hub ─> store
                                                                 │   (embedded)       ├─> alerts
                                                                 │                    └─> dashboard
The broker is embedded (amqtt, MQTT 3.1.1) unless ``--broker mosquitto`` (a private Mosquitto
from the PATH, MQTT 5) or ``--broker mqtt://HOST:PORT`` (yours) is given; the store is an SQLite
file unless ``--influx-url`` names an InfluxDB. Every program runs as its own process with the
same configs a real installation uses (written to the state directory, where their logs go too);
this process supervises them, prints alerts as the hub's live page lists them, and keeps one
status line that counts what the page counts (it reads the hub's /api/state and /healthz).

A broker given as ``mqtt://HOST:PORT`` is asked for an MQTT connection before anything starts:
one that does not answer within a few seconds stops the demo with one line (the broker, the
reason, what to do) and exit 1. A broker the hub loses later is said on the terminal (once per
reason) while everything keeps retrying; a hub that never reached its broker within
``BROKER_WAIT_S`` stops the demo the same way.

Run ``scripts/demo`` (or ``thermopipe-demo --help``). Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from program_support.cli_args import port_number, positive_float
from program_support.version import version_line

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PORT_TAKEN = 0, 1, 2, 3
#: how long an mqtt://HOST:PORT broker gets to answer before anything starts, seconds
BROKER_PROBE_S = 5.0
#: how long the hub gets to reach its broker once started, seconds (then the demo stops)
BROKER_WAIT_S = 30.0
#: how long the hub must have been without its broker before the terminal says so, seconds
LOST_AFTER_S = 3.0
DEVICES = 2  # the greenhouse board and the freezer


class DemoError(Exception):
    """A problem the person running the demo can fix; printed without a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# --- options -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="thermopipe-demo", description="Run simulated sensors -> edge agents -> MQTT -> "
        "hub -> store, alerts and the live dashboard on this machine.")
    p.add_argument("--version", action="version", version=version_line("thermopipe-demo"))
    p.add_argument("--broker", default="embedded",
                   help="'embedded' (amqtt in this process, default), 'mosquitto' (a private "
                        "Mosquitto from the PATH) or mqtt://HOST:PORT (an existing broker)")
    p.add_argument("--mqtt-port", type=port_number, default=18830,
                   help="port of the embedded or private broker (default 18830)")
    p.add_argument("--http-port", type=port_number, default=8080,
                   help="port of the hub's dashboard (default 8080)")
    p.add_argument("--host", default="127.0.0.1", help="address the dashboard listens on")
    p.add_argument("--influx-url", default=None,
                   help="store in this InfluxDB instead of the embedded SQLite store")
    p.add_argument("--influx-mode", choices=["v1", "v2"], default="v1",
                   help="v1: InfluxDB 1.x /write; v2: the v2 write API (token from $INFLUX_TOKEN)")
    p.add_argument("--influx-db", default="thermopipe", help="database (v1) or bucket (v2)")
    p.add_argument("--speed", type=positive_float, default=240.0,
                   help="how much faster than real time the simulated sensors run (default 240: "
                        "the freezer's compressor fails after about 30 s and its warm alert "
                        "comes about 30 s later; a greenhouse day takes 6 minutes)")
    p.add_argument("--state-dir", type=Path, default=Path(".thermopipe-demo"),
                   help="configs, logs, outboxes and the store (default ./.thermopipe-demo)")
    p.add_argument("--keep", action="store_true",
                   help="keep the previous run's state (outboxes, journal, store) instead of "
                        "starting fresh")
    p.add_argument("--duration", type=positive_float, default=None,
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--no-status", action="store_true", help="no live status line")
    return p


# --- small helpers -----------------------------------------------------------------------------

def check_port_free(host: str, port: int, what: str, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as the servers themselves set it: the previous run's connections in
        # TIME_WAIT do not make the port "taken" for the next run; a listener still does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise DemoError(f"port {port} on {host} for the {what} is taken ({exc.strerror}); "
                            f"stop what uses it or choose another with {flag}",
                            EXIT_PORT_TAKEN) from None


def parse_mqtt_url(url: str) -> tuple[str, int]:
    if not url.startswith("mqtt://"):
        raise DemoError(f"--broker {url!r}: expected embedded, mosquitto or mqtt://HOST:PORT",
                        EXIT_USAGE)
    hostport = url[len("mqtt://"):].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise DemoError(f"--broker {url!r}: expected mqtt://HOST:PORT", EXIT_USAGE)
    return host, int(port)


def probe_broker(host: str, port: int, timeout: float = BROKER_PROBE_S) -> str | None:
    """``None`` when the broker at ``host:port`` accepts an MQTT 5 connection within ``timeout``
    seconds (tried again every half second), else the last reason it did not, in one phrase."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from program_support.connect_errors import connect_error

    deadline = time.monotonic() + timeout
    reason = "no answer"
    answer: list[Any] = []  # the CONNACK's reason code
    while time.monotonic() < deadline:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                             client_id=f"thermopipe-demo-probe-{os.getpid()}")
        client.on_connect = lambda _c, _u, _f, code, _p: answer.append(code)
        client.connect_timeout = max(0.5, min(3.0, deadline - time.monotonic()))
        try:
            client.connect(host, port, keepalive=10)
        except OSError as exc:
            reason = str(connect_error(exc, host, port)).removeprefix(
                f"broker {host}:{port} unreachable: ")
            time.sleep(0.5)
            continue
        try:
            while not answer and time.monotonic() < deadline:
                client.loop(0.1)
        finally:
            with contextlib.suppress(OSError):  # only closing a probe
                client.disconnect()
                client.loop(0.1)
        if not answer:
            return "it accepted the TCP connection but sent no MQTT answer (is it an MQTT port?)"
        if answer[0].is_failure:
            return f"it refused the MQTT connection: {answer[0]}"
        return None
    return reason


def page_temperatures(text: str) -> str:
    """Temperatures in an alert's text as the live page shows them (``tidy`` in
    hub/dashboard/static/index.html): one decimal and the unit's sign, ``-5.1 °C``."""
    from hub.dashboard.state import temperature

    return re.sub(r"(-?\d+(?:\.\d+)?) (degC|degF)\b",
                  lambda m: temperature(float(m[1]), m[2]), text)


def status_line(state: dict[str, Any] | None, health: dict[str, Any] | None,
                devices: int = DEVICES) -> str:
    """The terminal's one line, from the hub's ``/api/state`` and ``/healthz`` (pure).

    It counts what the live page's totals count, in their words: devices online (of the demo's
    ``devices``) and offline, sensors, open alerts (firing, not yet resolved); then the events
    the hub has taken from the devices (readings included, counted as they arrive), the agents'
    outboxes (from their last status) and the hub consumers' backlog."""
    backlog = "?" if health is None else str(sum(
        int(c.get("backlog", 0)) for c in health.get("consumers", {}).values()))
    if state is None:
        return f"waiting for the hub's dashboard | hub backlog {backlog}"
    listed = state.get("devices", [])
    online = sum(1 for d in listed if d.get("online") is True)
    offline = sum(1 for d in listed if d.get("online") is False)
    events = sum(int(d.get("events", 0)) for d in listed)
    outbox = sum(int(d.get("counters", {}).get("outbox_depth", 0)) for d in listed)
    return (f"devices online {online}/{devices} | devices offline {offline} | "
            f"sensors {len(state.get('sensors', []))} | "
            f"open alerts {len(state.get('open_alerts', []))} | events received {events:,} | "
            f"agent outbox {outbox:,} | hub backlog {backlog}")


def alert_line(alert: dict[str, Any], names: dict[str, str]) -> str:
    """One alert as the page lists it: resolved or its severity, where (the sensor's name, as
    ``names`` maps ``site/device/sensor`` keys), late, then its text with the page's numbers."""
    site, device, sensor = alert.get("site"), alert.get("device_id"), alert.get("sensor_id")
    if sensor:
        sensor = names.get(f"{site}/{device}/{sensor}", sensor)
    where = " / ".join(str(part) for part in (site, device, sensor) if part)
    label = "RESOLVED" if alert.get("status") == "resolved" else f"ALERT {alert.get('severity')}"
    late = " (late)" if alert.get("late") else ""
    # the summary may open with the sensor's path, which `where` has just said
    text = str(alert.get("summary", "")).removeprefix(
        f"{site}/{device}/{alert.get('sensor_id')} " if alert.get("sensor_id") else
        f"{site}/{device} ")
    return f"{label}{late}  {where}: {page_temperatures(text)}"


def toml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value).lower() \
        if isinstance(value, bool) else str(value)


def http_json(url: str, timeout: float = 1.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own hub
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise
        with exc:  # /healthz answers 503 with its JSON while something is wrong
            return json.loads(exc.read())


# --- the programs ------------------------------------------------------------------------------

@dataclass
class Program:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 15, max_lines: int = 80) -> str:
        """The end of its log: from the last traceback's first line when there is one (so the
        reason is shown whole, never cut mid-way), else the last ``lines`` lines."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        all_lines = text.splitlines()
        starts = [i for i, line in enumerate(all_lines)
                  if line.startswith("Traceback (most recent call last)")]
        first = starts[-1] if starts else max(0, len(all_lines) - lines)
        shown = all_lines[first:]
        if len(shown) > max_lines:  # a very deep traceback: its head and the reason at its end
            shown = [*shown[:10], f"... ({len(shown) - max_lines + 10} lines left out; the whole "
                     f"log is {self.log_path})", *shown[-(max_lines - 10):]]
        return "\n".join(shown)


class Demo:
    SITE = "demo"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir: Path = args.state_dir.resolve()
        self.programs: list[Program] = []
        self.broker: Any = None
        self.mqtt_host = "127.0.0.1"
        self.mqtt_port = args.mqtt_port
        self.protocol = "5"
        self.broker_url = ""
        self._shown_alerts: set[str] = set()
        self._broker_seen = False  # the hub has been connected to its broker at least once
        self._broker_said = ""  # the broker problem said on the terminal in this outage
        self._down_since: float | None = None  # when the hub was first seen disconnected

    # -- set-up ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        a = self.args
        check_port_free(a.host, a.http_port, "dashboard", "--http-port")
        if a.broker in ("embedded", "mosquitto"):
            check_port_free("127.0.0.1", a.mqtt_port, "MQTT broker", "--mqtt-port")
            self.broker_url = f"mqtt://127.0.0.1:{a.mqtt_port}"
        else:
            self.mqtt_host, self.mqtt_port = parse_mqtt_url(a.broker)
            self.broker_url = a.broker
            why = probe_broker(self.mqtt_host, self.mqtt_port)
            if why is not None:  # before anything starts or is written
                raise DemoError(self.broker_problem(why, never=True))
        if self.dir.exists() and not a.keep:
            shutil.rmtree(self.dir)
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)

    def start_broker(self) -> None:
        kind = self.args.broker
        if kind == "embedded":
            from demo.embedded_broker import EmbeddedBroker

            self.broker = EmbeddedBroker("127.0.0.1", self.mqtt_port)
            self.broker.start()
            self.protocol = "3.1.1"  # amqtt speaks 3.1.1
            self.say(f"MQTT broker: embedded (amqtt) on mqtt://127.0.0.1:{self.mqtt_port}")
        elif kind == "mosquitto":
            binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                                   if os.path.exists("/usr/sbin/mosquitto")
                                                   else None)
            if binary is None:
                raise DemoError("--broker mosquitto: no mosquitto on the PATH "
                                "(apt-get install mosquitto)", EXIT_USAGE)
            data = self.dir / "mosquitto"
            data.mkdir(exist_ok=True)
            conf = data / "mosquitto.conf"
            user = "user root\n" if os.geteuid() == 0 else ""
            conf.write_text(f"{user}listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\n"
                            f"persistence true\npersistence_location {data}/\n"
                            "log_dest stdout\n")
            prog = Program("mosquitto", [binary, "-c", str(conf)],
                           self.dir / "logs" / "mosquitto.log")
            self.launch(prog)
            self.wait_port(self.mqtt_port, prog)
            self.say(f"MQTT broker: private Mosquitto on mqtt://127.0.0.1:{self.mqtt_port}")
        else:
            self.say(f"MQTT broker: {kind}")

    def write_configs(self) -> dict[str, Path]:
        a = self.args
        outdir = self.dir
        store = ""
        if a.influx_url:
            token = "\ntoken = \"env:INFLUX_TOKEN\"" if a.influx_mode == "v2" else ""
            target = (f'database = {toml_value(a.influx_db)}' if a.influx_mode == "v1"
                      else f'bucket = {toml_value(a.influx_db)}')
            store = (f'[storage]\nmode = "{a.influx_mode}"\nurl = {toml_value(a.influx_url)}\n'
                     f"{target}{token}\n")
        else:
            db = toml_value(str(outdir / "store.sqlite3"))
            store = f'[storage]\nmode = "sqlite"\npath = {db}\n'
        hub = f"""hub_id = "demo-hub"
data_dir = {toml_value(str(outdir / "hub"))}
late_after_s = 600

[mqtt]
host = {toml_value(self.mqtt_host)}
port = {self.mqtt_port}
protocol = "{self.protocol}"

{store}
[http]
host = {toml_value(a.host)}
port = {a.http_port}

[log]
level = "info"
format = "json"

[alerting]
[[alerting.rules]]
name = "temperature"
match = {{ severity_at_least = "warning" }}
notifiers = ["console", "mqtt"]

[alerting.notifiers.console]
type = "log"

[alerting.notifiers.mqtt]
type = "mqtt"
"""
        paths = {"hub": outdir / "hub.toml"}
        paths["hub"].write_text(hub)
        link = outdir / "ttyDEMO-greenhouse"
        # Rules in real seconds: the sensors run `speed` times faster than real time, so dwell
        # times and summary windows are short enough to see things happen within a minute.
        greenhouse = self.agent_toml("pi-greenhouse", f"""kind = "serial"
name = "greenhouse-board"
port = {toml_value(str(link))}""", {"28-0000075a1b2c": ("greenhouse air", """
  { name = "cold", below = 15.0, hysteresis = 0.5, dwell_s = 10 },
  { name = "hot", above = 26.0, hysteresis = 0.5, dwell_s = 10 },
  { name = "too_hot", above = 27.5, hysteresis = 0.5, dwell_s = 5, severity = "critical" },"""),
           "28-00000a3f9e21": ("greenhouse soil", "")})
        freezer = self.agent_toml("pi-freezer", f"""kind = "simulator"
name = "freezer-sim"
scenario = "freezer_failing"
speed = {a.speed}
loop = true""", {"28-0000056c3d4e": ("freezer compartment", """
  { name = "warm", above = -15.0, hysteresis = 1.0, dwell_s = 10 },
  { name = "thawing", above = -5.0, hysteresis = 1.0, dwell_s = 5, severity = "critical" },"""),
           "28-0000056c9f10": ("kitchen", "")})
        paths["agent-greenhouse"] = outdir / "agent-greenhouse.toml"
        paths["agent-greenhouse"].write_text(greenhouse)
        paths["agent-freezer"] = outdir / "agent-freezer.toml"
        paths["agent-freezer"].write_text(freezer)
        paths["link"] = link
        return paths

    def agent_toml(self, device_id: str, source: str,
                   sensors: dict[str, tuple[str, str]]) -> str:
        """One agent's TOML: its source, and per sensor a name and its thresholds."""
        rules = "deadband = 0.5\nsummary_interval_s = 30.0\nstale_after_s = 60.0\n"
        text = f"""site = "{self.SITE}"
device_id = "{device_id}"
tick_s = 0.5

[mqtt]
host = {toml_value(self.mqtt_host)}
port = {self.mqtt_port}
protocol = "{self.protocol}"
status_interval_s = 5.0

[outbox]
path = {toml_value(str(self.dir / device_id / "outbox.db"))}
flush_interval_s = 0.2

[log]
format = "json"

[[sources]]
{source}

[defaults]
{rules}"""
        for sensor_id, (name, thresholds) in sensors.items():
            text += (f'\n[sensors."{sensor_id}"]\nname = {toml_value(name)}\n'
                     f'[sensors."{sensor_id}".rules]\n{rules}thresholds = [{thresholds}\n]\n')
        return text

    def check_configs(self, paths: dict[str, Path]) -> None:
        from schemas.errors import ConfigError

        try:
            from edge_agent.config import load as load_agent
            from hub.config import load_hub_config

            load_hub_config(paths["hub"])
            load_agent(paths["agent-greenhouse"])
            load_agent(paths["agent-freezer"])
        except ConfigError as exc:
            raise DemoError(f"a generated config is invalid:\n{exc}") from None

    def start_programs(self, paths: dict[str, Path]) -> None:
        py = sys.executable
        logs = self.dir / "logs"
        hub = Program("hub", [py, "-m", "hub.cli", "run", "-c", str(paths["hub"])],
                      logs / "hub.log")
        self.launch(hub)
        self.wait_port(self.args.http_port, hub, host=self.args.host, timeout=30)
        firmware = Program("firmware-sim", [
            py, "-m", "firmware_sim.cli", "serve", "--scenario", "greenhouse_day", "--pty",
            "--link", str(paths["link"]), "--speed", str(self.args.speed), "--loop"],
            logs / "firmware-sim.log")
        self.launch(firmware)
        deadline = time.monotonic() + 15
        while not paths["link"].exists():
            if firmware.exited() is not None or time.monotonic() > deadline:
                raise DemoError(f"firmware-sim did not create its serial port:\n{firmware.tail()}")
            time.sleep(0.05)
        self.say(f"simulated serial device: {paths['link']} -> {os.path.realpath(paths['link'])}")
        for name in ("agent-greenhouse", "agent-freezer"):
            self.launch(Program(name, [py, "-m", "edge_agent", "run", "-c", str(paths[name])],
                                logs / f"{name}.log"))

    def launch(self, program: Program) -> None:
        program.start()
        self.programs.append(program)

    def wait_port(self, port: int, program: Program, host: str = "127.0.0.1",
                  timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if program.exited() is not None:
                raise DemoError(f"{program.name} exited with {program.exited()}:\n{program.tail()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    (host if host != "0.0.0.0" else "127.0.0.1", port), 0.2):
                return
            time.sleep(0.05)
        raise DemoError(f"{program.name} did not listen on port {port} within {timeout:.0f} s:\n"
                        f"{program.tail()}")

    # -- watching -------------------------------------------------------------------------------
    def broker_problem(self, reason: str, never: bool) -> str:
        """One line: the broker, the reason, what to do."""
        if self.args.broker in ("embedded", "mosquitto"):
            todo = f"its log and the hub's are in {self.dir / 'logs'}"
        else:
            todo = ("start it or check the address, or leave out --broker to use the embedded "
                    "broker")
        what = "never answered" if never else "lost"
        return f"the MQTT broker {self.broker_url} {what}: {reason}; {todo}"

    def poll_hub(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The hub's /api/state (what the page shows) and /healthz; None for one not answering."""
        base = f"http://127.0.0.1:{self.args.http_port}"
        state = health = None
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            state = http_json(f"{base}/api/state")
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            health = http_json(f"{base}/healthz")
        return state, health

    def new_alerts(self, state: dict[str, Any] | None) -> list[str]:
        """The alerts the page lists that the terminal has not shown yet, oldest first."""
        if state is None:
            return []
        names = {s["key"]: s.get("name") or s["sensor_id"] for s in state.get("sensors", [])}
        alerts = state.get("alerts", [])  # newest first, as the page lists them
        lines = [alert_line(a, names) for a in reversed(alerts)
                 if a.get("key") not in self._shown_alerts]
        self._shown_alerts = {a.get("key") for a in alerts}  # bounded: the page's list
        return lines

    def broker_news(self, health: dict[str, Any] | None, now: float) -> str | None:
        """A line when the hub's broker connection changed in a way worth saying: lost (once per
        outage, after ``LOST_AFTER_S``, when the hub's reason has settled from "disconnected" to
        why it cannot connect again), then back. The reason is the hub's (``mqtt_last_error``)."""
        if health is None or "mqtt_connected" not in health:
            return None
        if health["mqtt_connected"]:
            self._broker_seen = True
            self._down_since = None
            if self._broker_said:
                self._broker_said = ""
                return f"the MQTT broker {self.broker_url} answers again"
            return None
        if not self._broker_seen or self._broker_said:
            return None
        if self._down_since is None:
            self._down_since = now
        if now - self._down_since < LOST_AFTER_S:
            return None
        self._broker_said = self.broker_reason(health)
        return (f"{self.broker_problem(self._broker_said, never=False)} (the agents keep their "
                "events in their outboxes; everything retries)")

    def broker_reason(self, health: dict[str, Any] | None) -> str:
        reason = str((health or {}).get("mqtt_last_error") or "").removeprefix("cannot connect: ")
        return reason or "the hub has not connected to it"

    # -- running --------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(text, flush=True)

    def run(self) -> int:
        stop = threading.Event()

        def on_signal(_sig: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        self.prepare()
        try:
            self.start_broker()
            paths = self.write_configs()
            self.check_configs(paths)
            self.start_programs(paths)
            url = f"http://{self.args.host if self.args.host != '0.0.0.0' else '127.0.0.1'}:" \
                  f"{self.args.http_port}/"
            self.say(f"\ndashboard: {url}\nlogs and configs: {self.dir}\n"
                     "press Ctrl-C to stop\n")
            return self.supervise(stop)
        finally:
            self.shutdown()

    def supervise(self, stop: threading.Event) -> int:
        started = time.monotonic()
        tty = sys.stdout.isatty() and not self.args.no_status
        last_plain = 0.0
        line = ""
        while not stop.wait(1.0):
            for program in self.programs:
                code = program.exited()
                if code is not None:
                    self.clear_line(tty)
                    self.say(f"\n{program.name} exited with {code}; its last lines:\n"
                             f"{program.tail()}")
                    return EXIT_FAILED
            state, health = self.poll_hub()
            notes = self.new_alerts(state)
            news = self.broker_news(health, time.monotonic())
            line = status_line(state, health)
            if notes or news:
                self.clear_line(tty)
            for note in notes:
                self.say(note)
            if news:
                self.say(news)
            if not self._broker_seen and time.monotonic() - started >= BROKER_WAIT_S:
                return self.never_answered(health, tty)
            if tty:
                width = shutil.get_terminal_size().columns - 1
                sys.stdout.write("\r\033[K" + line[:width])  # one line: never wrapped
                sys.stdout.flush()
            elif not self.args.no_status and time.monotonic() - last_plain >= 5:
                self.say(line)
                last_plain = time.monotonic()
            if self.args.duration and time.monotonic() - started >= self.args.duration:
                break
        self.clear_line(tty)
        if not self._broker_seen:
            _, health = self.poll_hub()
            if self.broker_news(health, time.monotonic()) is None and not self._broker_seen:
                return self.never_answered(health, tty)
        self.say(f"final: {line or status_line(*self.poll_hub())}")
        return EXIT_OK

    def never_answered(self, health: dict[str, Any] | None, tty: bool) -> int:
        self.clear_line(tty)
        print(f"thermopipe-demo: {self.broker_problem(self.broker_reason(health), never=True)}",
              file=sys.stderr, flush=True)
        return EXIT_FAILED

    @staticmethod
    def clear_line(tty: bool) -> None:
        if tty:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()

    def shutdown(self) -> None:
        # agents first (they publish their offline status), then the firmware, then the hub
        order = sorted(self.programs, key=lambda p: (not p.name.startswith("agent"),
                                                     p.name == "hub", p.name == "mosquitto"))
        for program in order:
            program.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.programs:
            self.say("stopped.")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from program_support.extras import EXTRAS, require
    from schemas.errors import ThermopipeError

    try:
        require("demo", "thermopipe-demo", [*EXTRAS["agent"], *EXTRAS["hub"], *EXTRAS["demo"]])
        return Demo(args).run()
    except DemoError as exc:
        print(f"thermopipe-demo: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except ThermopipeError as exc:
        print(f"thermopipe-demo: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
