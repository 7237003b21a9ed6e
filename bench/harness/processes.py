"""The product's programs as processes, and their config files: the edge agent and the hub
(``python -m ...`` from this checkout's interpreter, so the installed package), the TOML they read
(broker access with credentials and TLS, sources, storage, alerting to a webhook), and the agent
outbox's counters read back from its SQLite file. Used by bench/soak.py and the end-to-end tests
(tests/e2e/pipeline.py, tests/agent_e2e/e2e_helpers.py)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# -- the programs as processes -------------------------------------------------------------------

@dataclass
class AgentProc:
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "-c", str(self.config)],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text()


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
