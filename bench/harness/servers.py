"""Real servers for benchmarks and tests: a private Mosquitto, InfluxDB 1.x and VictoriaMetrics.

Each starts on a free loopback port with its own config and data directory, and is stopped after
use. Nothing here ever talks to a server that happens to be running (a Mosquitto may listen on
1883 on these machines). A missing binary raises :class:`MissingServer` with what to install;
tests/servers.py turns that into a skip on a laptop and a failure under CI (``CI=true``).

Servers can be stopped and started again on the same port and data directory (``stop()`` /
``start()``), which is how the outage tests take a broker or database away for a while.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: where free_port looks: below Linux's ephemeral range (32768-60999), so no outgoing connection
#: of any process takes a server's port while the server is down for an outage test and wants it
#: back (seen in CI: "Address already in use" on the restart of a broker after 30 s)
PORT_RANGE = (20000, 32767)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port nothing listens on, outside the kernel's ephemeral range."""
    low, high = PORT_RANGE
    eph_low, eph_high = _ephemeral_range()
    for _ in range(200):
        port = random.randint(low, high)
        if eph_low <= port <= eph_high:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded range: any port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MissingServer(RuntimeError):
    """A server binary is not installed; the message says which and how to install it."""


def find_binary(name: str, *candidates: str) -> str:
    """Path of a server binary; :class:`MissingServer` when none of the names is there."""
    for cand in (name, *candidates):
        path = shutil.which(cand) or (cand if os.path.isabs(cand) and os.access(cand, os.X_OK)
                                      else None)
        if path:
            return path
    raise MissingServer(f"{name} is not installed (Debian: apt-get install {name}); "
                        "scripts/test installs it when run as root")


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None,
                  log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            detail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before listening:\n{detail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_for_http(url: str, status: int, name: str, timeout: float = 20.0) -> None:
    """Wait until ``url`` answers ``status`` (a server can listen before it serves)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == status:
                    return
        time.sleep(0.1)
    raise TimeoutError(f"{name} did not answer {url} within {timeout:.0f} s")


@dataclass
class ServerProcess:
    """A server binary with a fixed port and data dir, restartable in place."""

    name: str
    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def command(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def ready(self) -> None:
        wait_for_port(self.port, proc=self.proc, log=self.log_path)

    def start(self) -> None:
        if self.running:
            return
        deadline = time.monotonic() + 20.0
        while True:
            log = self.log_path.open("ab")
            try:
                self.proc = subprocess.Popen(self.command(), stdout=log,
                                             stderr=subprocess.STDOUT, cwd=self.workdir,
                                             start_new_session=True)
            finally:
                log.close()
            try:
                self.ready()
                return
            except RuntimeError as exc:
                # a restart on the same port may find it still held for a moment (a connection
                # of the old process in TIME_WAIT is not it: servers set SO_REUSEADDR)
                if "already in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- Mosquitto --------------------------------------------------------------------------------

@dataclass
class Mosquitto(ServerProcess):
    """A private Mosquitto 2.x with persistence (unless ``persistence=False``), on its own port.

    ``extra_config`` lines are appended (password_file, acl_file, TLS listener...). ``tls_port``
    adds a second listener when set by the caller through ``extra_config``.
    """

    extra_config: list[str] = field(default_factory=list)
    binary: str = "mosquitto"
    #: Mosquitto's own default is false (a restart loses every session and queue)
    persistence: bool = True
    #: seconds between saves of the in-memory store (deploy/'s broker: 60; SIGUSR1 saves now)
    autosave_interval: int = 1

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        lines = [
            # root in a test sandbox: stay root so the temp dirs stay writable
            "user root",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true" if not any(
                x.startswith("password_file") for x in self.extra_config) else "",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {data}/",
            f"autosave_interval {self.autosave_interval}",
            "max_queued_messages 0",        # unlimited: the tests count every message
            "max_inflight_messages 0",
            "persistent_client_expiration 1d",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            # a file, not stdout: Mosquitto flushes its log file after each line, but its stdout
            # into a file only when the libc buffer fills (a test read a connection's line
            # minutes late). A caller's own log file instead, if it names one (Mosquitto takes
            # one "log_dest file")
            "" if any(x.startswith("log_dest file") for x in self.extra_config)
            else f"log_dest file {self.log_path}",
            *self.extra_config,
        ]
        return "\n".join(line for line in lines if line) + "\n"

    def command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        return [self.binary, "-c", str(conf)]


# --- InfluxDB 1.x -----------------------------------------------------------------------------

@dataclass
class InfluxDB1(ServerProcess):
    """A private influxd 1.x (1.6.7 on Debian 12): ``/write`` line protocol, ``/query`` InfluxQL."""

    binary: str = "influxd"
    rpc_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        conf = self.workdir / "influxdb.conf"
        conf.write_text(f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{self.workdir}/meta"
[data]
  dir = "{self.workdir}/data"
  wal-dir = "{self.workdir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
""")
        return [self.binary, "-config", str(conf)]

    def ready(self) -> None:
        super().ready()
        wait_for_http(f"{self.url}/ping", 204, "influxd")

    def query(self, q: str, db: str | None = None, epoch: str | None = "ns") -> dict[str, Any]:
        params = {"q": q}
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=30) as resp:
            import json

            result: dict[str, Any] = json.loads(resp.read())
        return result

    def create_database(self, db: str) -> None:
        self.query(f'CREATE DATABASE "{db}"', epoch=None)

    def write(self, db: str, lines: str, precision: str = "ns") -> None:
        req = urllib.request.Request(
            f"{self.url}/write?db={urllib.parse.quote(db)}&precision={precision}",
            data=lines.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 204, resp.status

    def series_rows(self, q: str, db: str) -> list[dict[str, Any]]:
        """Rows of an InfluxQL query as dicts (tags merged in), across all returned series."""
        out: list[dict[str, Any]] = []
        for result in self.query(q, db).get("results", []):
            if "error" in result:
                raise RuntimeError(f"InfluxQL error for {q!r}: {result['error']}")
            for series in result.get("series", []):
                cols = series["columns"]
                for values in series.get("values", []):  # absent: an empty series
                    row = dict(zip(cols, values, strict=True))
                    row.update(series.get("tags", {}))
                    row["_measurement"] = series.get("name")
                    out.append(row)
        return out


# --- VictoriaMetrics --------------------------------------------------------------------------

@dataclass
class VictoriaMetrics(ServerProcess):
    """Accepts the InfluxDB v2 write API (what influxdb-client sends); read back by export."""

    binary: str = "victoria-metrics"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [self.binary, f"-storageDataPath={self.workdir}/vmdata",
                f"-httpListenAddr=127.0.0.1:{self.port}", "-loggerLevel=WARN",
                "-search.latencyOffset=0s", "-search.disableCache"]

    def ready(self) -> None:
        super().ready()
        wait_for_http(f"{self.url}/health", 200, "victoria-metrics")

    def flush(self) -> None:
        """Make just-written samples searchable (VictoriaMetrics buffers for about a second)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10):
            pass

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every series matching ``match`` as dicts with metric labels, values and timestamps."""
        import json

        self.flush()
        q = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{q}", timeout=30) as resp:
            return [json.loads(line) for line in resp.read().splitlines() if line.strip()]


#: each server's binary: its name, then other places to look
BINARIES: dict[type[ServerProcess], tuple[str, ...]] = {
    Mosquitto: ("mosquitto", "/usr/sbin/mosquitto"),
    InfluxDB1: ("influxd", "/usr/bin/influxd"),
    VictoriaMetrics: ("victoria-metrics", "/usr/bin/victoria-metrics")}


def start_server(cls: type[ServerProcess], tmp: Path, **kwargs: Any) -> ServerProcess:
    name, *alts = BINARIES[cls]
    binary = find_binary(name, *alts)
    tmp.mkdir(parents=True, exist_ok=True)
    server = cls(name=name, workdir=tmp, port=free_port(), binary=binary, **kwargs)  # type: ignore[call-arg]
    server.start()
    return server
