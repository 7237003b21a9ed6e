"""Node-RED as a baseline for bench/hub_bench.py: the tool users pick instead of the hub.

    python bench/nodered_baseline.py [--install]   # where it is, or install it

Node-RED and node-red-contrib-influxdb, at the exact versions below, are installed with this
machine's ``node`` and ``npm`` (nothing else: no global install, no apt) into a cache outside
the checkout, ``~/.cache/thermopipe/node-red/node-red-<v>_contrib-influxdb-<v>/`` (or under
``$XDG_CACHE_HOME``). Installing needs the npm registry; using an installed copy needs no
network. Each run gets its own user directory in a temp dir (flows, settings, context), with
``node_modules`` linked to the cache, and listens on a free loopback port.

The flow is the batch flow users build: ``mqtt in`` (MQTT 5, QoS 1, a persistent session) ->
``json`` -> a ``function`` that makes one InfluxDB point per reading (tags device, sensor, site,
unit; fields value, seq, event_id; the reading's own time, microsecond precision) -> ``join``
in manual mode (an array of up to ``BATCH`` payloads, or what arrived within ``FLUSH_S`` of the
first: the hub storage's defaults) -> ``influxdb batch`` (node-red-contrib-influxdb, InfluxDB
1.x). Node-RED's core ``batch`` node emits a sequence of messages, not the array the influxdb
batch node takes; the join node with a count and a timeout is the node that batches for it.

An HTTP endpoint in the same flow (``GET /thermopipe-bench/stats``) answers how many readings
the function has handled and when the first came (``Date.now()``), and, from a ``complete``
node on the influxdb batch node, how many points InfluxDB has acknowledged and when the last of
the backlog was: the bench times the drain from the first reading to that acknowledgement, as
it times the hub (whose storage counts an event once InfluxDB answered its write), then counts
the points in InfluxDB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

#: pinned exactly: the figures in bench/README.md are of these versions
NODE_RED_VERSION = "4.1.15"
CONTRIB_INFLUXDB_VERSION = "0.7.0"
#: the hub storage's defaults (``[storage] batch_size`` and ``flush_interval_s``)
BATCH = 2000
FLUSH_S = 0.2
STATS_PATH = "/thermopipe-bench/stats"
MIN_NODE_MAJOR = 18  # Node-RED 4 needs Node.js 18 or later

INSTALL_HINT = ("install it with `python3 bench/hub_bench.py --install-node-red` (or "
                "`python3 bench/nodered_baseline.py --install`; needs node >= 18, npm and the "
                "npm registry, about 1 minute, 125 MB in the cache)")


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (base / "thermopipe" / "node-red" /
            f"node-red-{NODE_RED_VERSION}_contrib-influxdb-{CONTRIB_INFLUXDB_VERSION}")


def _version_of(root: Path, package: str) -> str | None:
    try:
        return str(json.loads((root / "node_modules" / package / "package.json")
                              .read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def installed() -> Path | None:
    """The cache directory when both packages are there at the pinned versions and ``node``
    runs; None otherwise (nothing is fetched)."""
    root = cache_dir()
    if shutil.which("node") is None:
        return None
    if (_version_of(root, "node-red") == NODE_RED_VERSION and
            _version_of(root, "node-red-contrib-influxdb") == CONTRIB_INFLUXDB_VERSION):
        return root
    return None


def _node_major() -> int:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().lstrip("v").split(".")[0])


def install() -> Path:
    """Install both packages, pinned, into the cache (a no-op when they are there)."""
    done = installed()
    if done is not None:
        return done
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"cannot install Node-RED: no `{tool}` on PATH (Node.js "
                             f">= {MIN_NODE_MAJOR} with npm is needed)")
    if _node_major() < MIN_NODE_MAJOR:
        raise SystemExit(f"cannot install Node-RED {NODE_RED_VERSION}: node "
                         f"{_node_major()} found, >= {MIN_NODE_MAJOR} needed")
    target = cache_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    # installed beside the target and renamed into place: an interrupted install leaves no
    # half-filled cache that would pass for an installed one
    work = Path(tempfile.mkdtemp(prefix=".installing-", dir=target.parent))
    try:
        (work / "package.json").write_text(json.dumps(
            {"name": "thermopipe-bench-node-red", "private": True,
             "description": "Node-RED for bench/hub_bench.py (installed by the bench)"}))
        cmd = ["npm", "install", "--no-audit", "--no-fund", "--omit=dev", "--save-exact",
               "--loglevel=error", f"node-red@{NODE_RED_VERSION}",
               f"node-red-contrib-influxdb@{CONTRIB_INFLUXDB_VERSION}"]
        print(f"installing Node-RED {NODE_RED_VERSION} and node-red-contrib-influxdb "
              f"{CONTRIB_INFLUXDB_VERSION} into {target} ...", flush=True)
        result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900,
                                check=False)
        if result.returncode != 0:
            raise SystemExit(f"npm install failed ({result.returncode}): "
                             f"{(result.stderr or result.stdout)[-2000:]}")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    found = installed()
    if found is None:
        raise SystemExit(f"npm installed something else than the pinned versions in {target}")
    return found


# ---- the flow ---------------------------------------------------------------------------------
#: one point per reading. The counters are globals of the node's own sandbox, made in its "On
#: Start" code (``initialize``): the stats endpoint reads them from flow context, updated on the
#: first reading and every 256th, so the instrument costs the flow next to nothing per message.
POINT_FUNCTION = """\
const d = msg.payload;
if (count === 0) { first = Date.now(); }
count += 1;
if (count === 1 || (count & 255) === 0) { flow.set("stats", {count: count, first: first}); }
const frac = /\\.(\\d{1,6})/.exec(d.time);
const us = Math.floor(Date.parse(d.time) / 1000) * 1000000 +
    (frac ? parseInt(frac[1].padEnd(6, "0"), 10) : 0);
msg.payload = {
    measurement: "sensor_event",
    tags: {device: d.device_id, sensor: d.sensor_id, site: d.site, unit: d.unit},
    fields: {value: d.value, seq: d.seq, event_id: d.event_id},
    timestamp: us,
};
return msg;
"""
POINT_INIT = "count = 0; first = 0;"
#: fed by a ``complete`` node on the influxdb batch node: a batch is counted once InfluxDB
#: answered its write (as the hub's storage counts), and the time the N-th point was answered
WRITTEN_FUNCTION = """\
written += msg.payload.length;
if (written >= expected && !last) { last = Date.now(); }
flow.set("written", {written: written, last: last});
return null;
"""


def flows(*, broker_port: int, client_id: str, topic: str, influx_port: int,
          db: str, expected: int) -> list[dict[str, Any]]:
    """The flow file: the batch flow, and the stats endpoint (``expected``: the backlog's size,
    to note when the last of it was written)."""
    tab = "tpb-tab"
    return [
        {"id": tab, "type": "tab", "label": "thermopipe bench", "disabled": False},
        {"id": "tpb-broker", "type": "mqtt-broker", "name": "private mosquitto",
         "broker": "127.0.0.1", "port": str(broker_port), "clientid": client_id,
         "autoConnect": True, "usetls": False, "protocolVersion": "5", "keepalive": "60",
         "cleansession": False, "autoUnsubscribe": True, "sessionExpiry": "3600"},
        {"id": "tpb-influx", "type": "influxdb", "hostname": "127.0.0.1", "port": str(influx_port),
         "protocol": "http", "database": db, "name": "private influxdb", "usetls": False,
         "influxdbVersion": "1.x"},
        {"id": "tpb-in", "type": "mqtt in", "z": tab, "name": "readings", "topic": topic,
         "qos": "1", "datatype": "utf8", "broker": "tpb-broker", "nl": False, "rap": True,
         "rh": 0, "inputs": 0, "wires": [["tpb-json"]]},
        {"id": "tpb-json", "type": "json", "z": tab, "name": "", "property": "payload",
         "action": "obj", "pretty": False, "wires": [["tpb-point"]]},
        {"id": "tpb-point", "type": "function", "z": tab, "name": "reading -> point",
         "func": POINT_FUNCTION, "outputs": 1, "timeout": 0, "noerr": 0,
         "initialize": POINT_INIT, "finalize": "", "libs": [], "wires": [["tpb-batch"]]},
        {"id": "tpb-batch", "type": "join", "z": tab, "name": f"batch {BATCH} / {FLUSH_S} s",
         "mode": "custom", "build": "array", "property": "payload", "propertyType": "msg",
         "key": "topic", "joiner": "\\n", "joinerType": "str", "useparts": False,
         "accumulate": False, "timeout": str(FLUSH_S), "count": str(BATCH),
         "reduceRight": False, "reduceExp": "", "reduceInit": "", "reduceInitType": "",
         "reduceFixup": "", "wires": [["tpb-write"]]},
        {"id": "tpb-write", "type": "influxdb batch", "z": tab, "influxdb": "tpb-influx",
         "precision": "u", "retentionPolicy": "", "name": "influxdb batch", "database": "",
         "precisionV18FluxV20": "ms", "retentionPolicyV18Flux": "", "org": "", "bucket": "",
         "wires": []},
        {"id": "tpb-complete", "type": "complete", "z": tab, "name": "written",
         "scope": ["tpb-write"], "uncaught": False, "wires": [["tpb-written"]]},
        {"id": "tpb-written", "type": "function", "z": tab, "name": "count written",
         "func": WRITTEN_FUNCTION, "outputs": 1, "timeout": 0, "noerr": 0,
         "initialize": f"written = 0; last = 0; expected = {int(expected)};", "finalize": "",
         "libs": [], "wires": [[]]},
        {"id": "tpb-stats-in", "type": "http in", "z": tab, "name": "", "url": STATS_PATH,
         "method": "get", "upload": False, "swaggerDoc": "", "wires": [["tpb-stats"]]},
        {"id": "tpb-stats", "type": "function", "z": tab, "name": "stats",
         "func": ('msg.payload = Object.assign({count: 0, first: 0, written: 0, last: 0}, '
                  'flow.get("stats"), flow.get("written"));\nreturn msg;'),
         "outputs": 1, "timeout": 0, "noerr": 0, "initialize": "", "finalize": "",
         "libs": [], "wires": [["tpb-stats-out"]]},
        {"id": "tpb-stats-out", "type": "http response", "z": tab, "name": "", "statusCode": "",
         "headers": {}, "wires": []},
    ]


def settings_js(*, port: int, user_dir: Path) -> str:
    """A settings file: loopback only, no telemetry, update check, diagnostics or installs
    (nothing reaches the network), console log at warn."""
    return f"""module.exports = {{
    uiPort: {port},
    uiHost: "127.0.0.1",
    userDir: {json.dumps(str(user_dir))},
    flowFile: "flows.json",
    credentialSecret: false,
    flowFilePretty: false,
    mqttReconnectTime: 1000,
    diagnostics: {{ enabled: false, ui: false }},
    runtimeState: {{ enabled: false, ui: false }},
    telemetry: {{ enabled: false, updateNotification: false }},
    externalModules: {{ autoInstall: false, palette: {{ allowInstall: false }},
                        modules: {{ allowInstall: false }} }},
    functionExternalModules: false,
    logging: {{ console: {{ level: "warn", metrics: false, audit: false }} }},
    editorTheme: {{ projects: {{ enabled: false }} }},
}};
"""


class NodeRed:
    """One Node-RED process running :func:`flows` from a user directory of its own."""

    def __init__(self, root: Path, user_dir: Path, http_port: int,
                 flow: list[dict[str, Any]]) -> None:
        self.root, self.user_dir, self.http_port = root, user_dir, http_port
        user_dir.mkdir(parents=True, exist_ok=True)
        link = user_dir / "node_modules"
        if not link.exists():
            link.symlink_to(root / "node_modules", target_is_directory=True)
        (user_dir / "flows.json").write_text(json.dumps(flow))
        (user_dir / "settings.js").write_text(settings_js(port=http_port, user_dir=user_dir))
        self.log_path = user_dir / "node-red.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            ["node", str(self.root / "node_modules" / "node-red" / "red.js"),
             "--settings", str(self.user_dir / "settings.js"),
             "--userDir", str(self.user_dir)],
            cwd=self.user_dir, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stats(self) -> dict[str, float] | None:
        """Readings handled by the flow's function (``count``, updated every 256) and the epoch
        time (s) of the first (``first``); points InfluxDB acknowledged (``written``) and when
        the last expected one was (``last``, 0 until then). None while the flows are not
        started."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.http_port}{STATS_PATH}", timeout=2) as resp:
                data = json.loads(resp.read())
        except (OSError, ValueError):
            return None
        return {"count": float(data.get("count", 0)), "first": float(data.get("first", 0)) / 1e3,
                "written": float(data.get("written", 0)), "last": float(data.get("last", 0)) / 1e3}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true",
                        help="install the pinned versions into the cache if they are not there")
    args = parser.parse_args()
    root = install() if args.install else installed()
    if root is None:
        print(f"Node-RED {NODE_RED_VERSION} is not installed in {cache_dir()}: {INSTALL_HINT}")
        return 1
    print(f"Node-RED {NODE_RED_VERSION} and node-red-contrib-influxdb "
          f"{CONTRIB_INFLUXDB_VERSION} in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
