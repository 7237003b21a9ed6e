"""The counterparts users connect to thermopipe, running for real: Home Assistant 2024.3.3 here.

One Home Assistant and one Mosquitto per session, the broker with deploy/'s own config, ACL and
accounts (made by deploy/scripts: setup-server.sh for the hub's accounts, add-device.sh for every
device the tests use, lib.sh's mqtt_passwd for Home Assistant's account). Each test starts its own
hub (``hub run``, a process) and agents (``edge-agent run``, processes) with devices of its own,
so tests do not see each other's entities.

Home Assistant's venv is made once and cached (``ha_venv.py``); with ``CI=true`` a failed install
fails the tests, elsewhere it skips them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.counterparts.ha import HomeAssistant
from tests.counterparts.ha_venv import InstallError, ensure_venv
from tests.deploy.conftest import DeployCopy, copy_deploy
from tests.servers import Mosquitto, in_ci, require_binary, start_server

ROOT = Path(__file__).resolve().parents[2]
SITE = "lab"
#: every device a test here uses (add-device.sh makes their accounts before the broker starts)
DEVICES = ("pi-doc", "pi-glitch", "pi-avail", "pi-removed", "pi-hubrestart", "pi-late",
           "pi-restarts")
HA_USER, HA_PASSWORD = "homeassistant", "ha-test-secret"
OBSERVER, OBSERVER_PASSWORD = "tests-observer", "observer-secret"


@dataclass
class Broker:
    deploy: DeployCopy
    mosquitto: Mosquitto
    passwords: dict[str, str]  # account -> password

    def password_file(self, account: str) -> Path:
        path = self.deploy.root / "secrets" / account
        path.parent.mkdir(exist_ok=True)
        path.write_text(self.passwords[account])
        path.chmod(0o600)
        return path


@pytest.fixture(scope="session")
def ha_python() -> Path:
    try:
        python, spent = ensure_venv(sys.executable)
    except InstallError as exc:
        if in_ci():
            pytest.fail(f"CI=true and Home Assistant's venv could not be made: {exc}",
                        pytrace=False)
        pytest.skip(f"Home Assistant's venv could not be made: {exc}")
    if spent:
        print(f"\n[counterparts] Home Assistant's venv installed in {spent:.0f} s", flush=True)
    return python


@pytest.fixture(scope="session")
def ha_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    require_binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    copy = copy_deploy(tmp_path_factory.mktemp("ha-deploy"))
    copy.run("scripts/setup-server.sh", "--hub-workers", "0")
    passwords = {"hub": copy.env()["HUB_MQTT_PASSWORD"]}
    passwords["hub-ha"] = passwords["hub"]
    for device in DEVICES:
        _config, passwords[device] = copy.add_device(SITE, device)
    subprocess.run(["bash", "-c", '. "$1"; mqtt_passwd "$2" "$3" "$4"', "-",
                    str(copy.root / "scripts" / "lib.sh"),
                    str(copy.root / "mosquitto" / "passwd"), HA_USER, HA_PASSWORD],
                   check=True, capture_output=True, timeout=30)
    passwords[HA_USER] = HA_PASSWORD
    # the tests' own observer: the broker makes the username the client id, so it cannot share
    # Home Assistant's account without throwing Home Assistant off (a block of the test copy's
    # ACL only; deploy/ has no such account)
    subprocess.run(["bash", "-c", '. "$1"; mqtt_passwd "$2" "$3" "$4"', "-",
                    str(copy.root / "scripts" / "lib.sh"),
                    str(copy.root / "mosquitto" / "passwd"), OBSERVER, OBSERVER_PASSWORD],
                   check=True, capture_output=True, timeout=30)
    with (copy.root / "mosquitto" / "acl").open("a") as acl:
        acl.write(f"\n# tests/counterparts only\nuser {OBSERVER}\ntopic read #\n")
    passwords[OBSERVER] = OBSERVER_PASSWORD
    server = start_server(Mosquitto, tmp_path_factory.mktemp("ha-mosquitto"),
                          extra_config=copy.broker_config())
    assert isinstance(server, Mosquitto)
    yield Broker(copy, server, passwords)
    server.stop()


@pytest.fixture(scope="session")
def home_assistant(ha_python: Path, ha_broker: Broker,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistant]:
    ha = HomeAssistant(ha_python, tmp_path_factory.mktemp("home-assistant"),
                       ha_broker.mosquitto.port, HA_USER, HA_PASSWORD)
    ha.write_config()
    took = ha.start()
    print(f"\n[counterparts] Home Assistant running with MQTT in {took:.1f} s", flush=True)
    yield ha
    ha.stop()


# -- the hub and the agents as processes -------------------------------------------------------

@dataclass
class Proc:
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int) -> float:
        """Send ``sig``; the wall-clock time it was sent."""
        assert self.proc is not None
        sent = time.time()
        self.proc.send_signal(sig)
        return sent

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
        sent = time.time()
        if self.running:
            sent = self.send(sig)
            try:
                self.proc.wait(timeout)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                self.proc.kill()  # type: ignore[union-attr]
                self.proc.wait(10)  # type: ignore[union-attr]
                raise
        return sent

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def hub_toml(broker: Broker, data_dir: Path, *, homeassistant: bool = True,
             support_url: str | None = "https://example.org/thermopipe") -> str:
    url = f'support_url = "{support_url}"\n' if support_url else ""
    return f"""
hub_id = "ha-tests"
data_dir = "{data_dir}"

[mqtt]
host = "127.0.0.1"
port = {broker.mosquitto.port}
topic_root = "thermopipe"
username = "hub"
password = "file:{broker.password_file('hub')}"
account_per_connection = true

[storage]
mode = "sqlite"

[http]
enabled = false

[dashboard]
enabled = false

[alerting]
enabled = false

[log]
format = "json"

[dispatch]
retry_initial_s = 0.2
retry_max_s = 1.0

[homeassistant]
enabled = {"true" if homeassistant else "false"}
{url}"""


def agent_toml(broker: Broker, device: str, workdir: Path, w1_dir: Path, *,
               name: str = "", sensors: list[str] | None = None,
               sensor_names: dict[str, str] | None = None, status_interval_s: float = 30.0,
               thresholds: bool = False) -> str:
    only = "" if sensors is None else f"sensors = {sensors!r}\n".replace("'", '"')
    named = "".join(f'\n[sensors."{sid}"]\nname = "{n}"\n'
                    for sid, n in (sensor_names or {}).items())
    band = ('\n[[defaults.thresholds]]\nname = "too_warm"\nabove = -15.0\nhysteresis = 1.0\n'
            if thresholds else "")
    device_name = f'name = "{name}"\n' if name else ""
    return f"""
site = "{SITE}"
device_id = "{device}"
{device_name}tick_s = 0.2
state_file = "{workdir / 'state.json'}"

[log]
format = "json"

[mqtt]
host = "127.0.0.1"
port = {broker.mosquitto.port}
username = "{device}"
password = "file:{broker.password_file(device)}"
topic_root = "thermopipe"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
status_interval_s = {status_interval_s}

[outbox]
path = "{workdir / 'outbox.db'}"
flush_interval_s = 0.1
min_free_bytes = 0

[[sources]]
kind = "onewire"
w1_dir = "{w1_dir}"
interval_s = 0.5
{only}
[defaults]
deadband = 0.05
report_every_s = 2.0
stale_after_s = 600.0
summary_interval_s = 3600.0
{band}{named}"""


@dataclass
class Stack:
    """What one test runs: a hub and agents (processes), each with its files under ``tmp``."""

    broker: Broker
    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def hub(self, *, homeassistant: bool = True, name: str = "hub") -> Proc:
        data = self.tmp / name
        data.mkdir(exist_ok=True)
        config = data / "hub.toml"
        config.write_text(hub_toml(self.broker, data / "data", homeassistant=homeassistant))
        (data / "data").mkdir(exist_ok=True)
        proc = Proc([sys.executable, "-m", "hub.cli", "run", "-c", str(config)],
                    data / "hub.log")
        self.procs.append(proc)
        self.start_hub(proc, homeassistant=homeassistant)
        return proc

    @staticmethod
    def start_hub(proc: Proc, *, homeassistant: bool = True) -> None:
        """Start it and wait until it is connected (it subscribes as it logs that), so that
        agents started next find it: without a session on the broker yet, a first hub misses
        what was published before its subscription (agents then resend on a receipt gap)."""
        wanted = ['"hub.started"', '"mqtt.connected"'] + (
            ['"homeassistant.connected"'] if homeassistant else [])
        before = {w: proc.log_text().count(w) for w in wanted}
        proc.start()
        wait_for(lambda: all(proc.log_text().count(w) > n for w, n in before.items()), 60,
                 f"the hub connected ({proc.log})", interval=0.2)

    def reconfigure_hub(self, hub: Proc, *, homeassistant: bool) -> None:
        config = Path(hub.argv[-1])
        config.write_text(hub_toml(self.broker, config.parent / "data",
                                   homeassistant=homeassistant))

    def agent(self, device: str, w1_dir: Path, **kw: Any) -> Proc:
        work = self.tmp / device
        work.mkdir(exist_ok=True)
        config = work / "agent.toml"
        config.write_text(agent_toml(self.broker, device, work, w1_dir, **kw))
        proc = Proc([sys.executable, "-m", "edge_agent", "run", "-c", str(config)],
                    work / "agent.log")
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.running:
                proc.stop()


@pytest.fixture
def stack(ha_broker: Broker, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(ha_broker, tmp_path)
    yield s
    s.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.1) -> Any:
    """``predicate()``'s first truthy value; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
