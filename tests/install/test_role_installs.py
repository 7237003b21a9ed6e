"""Each role from the built wheel, in its own fresh venv, as a user installs and runs it.

- the agent's install pulls in none of the hub's packages;
- every console script answers ``--help`` and ``--version`` in every role's venv;
- a program started without its role's packages names the extra to install, in one line;
- the agent (a config made by deploy/scripts/add-device.sh from deploy/agent.example.toml, its
  serial and 1-Wire sources pointed at firmware-sim) and the hub (deploy/hub/hub.toml, alerting
  and dashboard on as shipped) run against a Mosquitto started with deploy/'s config, ACL and
  passwords, and a private InfluxDB: events flow end to end, ``/healthz`` is ok, and both stop
  cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness.roles import HUB_ONLY, NOT_IN_PRODUCTION, ROOT, RoleEnv
from tests.deploy.conftest import copy_deploy
from tests.install.conftest import REPORT
from tests.servers import InfluxDB1, Mosquitto, free_port

pytestmark = [pytest.mark.servers, pytest.mark.slow]

SCRIPTS = ("edge-agent", "hub", "firmware-sim", "thermopipe-demo")


def _run(env: RoleEnv, script: str, *args: str, timeout: float = 60,
         extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(env.bin(script)), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env=_env(extra_env))


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra or {})
    return env


def substitute(text: str, edits: list[tuple[str, str]]) -> str:
    """Apply regex edits, each of which must match exactly once (the shipped file's shape)."""
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"{pattern!r} matched {count} times in the shipped file"
    return text


# --- what each role installs --------------------------------------------------------------------

def test_the_agent_install_carries_none_of_the_hubs_packages(roles: dict[str, RoleEnv]) -> None:
    agent = roles["agent"].distributions()
    hub = roles["hub"].distributions()
    sizes = {role: round(env.size_mb(), 1) for role, env in roles.items()}
    REPORT.append(f"installed from the wheel, each role in a fresh venv; size of its packages "
                  f"(MB, without pip/setuptools): {sizes}")
    for role, dists in (("agent", agent), ("hub", hub)):
        REPORT.append(f"  {role}: " + ", ".join(f"{n} {v}" for n, v in sorted(dists.items())
                                                if n not in ("pip", "setuptools")))
    assert "thermopipe" in agent and "pyserial" in agent and "paho-mqtt" in agent
    assert sizes["agent"] < 15, sizes  # 9.2 MB when recorded in deploy/README.md
    assert not [name for name in HUB_ONLY if name in agent], agent
    for name in ("starlette", "uvicorn", "prometheus-client", "influxdb-client", "httpx",
                 "fastavro"):
        assert name in hub, (name, hub)
    assert "pyserial" not in hub and "amqtt" not in hub
    # nothing of the test tools reached either, nor what would change what a role loads
    # (structlog imports rich and greenlet when they are there): the list bench/ refuses too
    for dev in NOT_IN_PRODUCTION:
        assert dev not in agent and dev not in hub, dev


@pytest.mark.parametrize("role", ["agent", "hub"])
def test_every_console_script_answers_help_and_version(roles: dict[str, RoleEnv],
                                                       role: str) -> None:
    env = roles[role]
    version = env.distributions()["thermopipe"]
    for script in SCRIPTS:
        helped = _run(env, script, "--help")
        assert helped.returncode == 0, helped
        assert "usage:" in helped.stdout and "``" not in helped.stdout, helped.stdout
        versioned = _run(env, script, "--version")
        assert versioned.returncode == 0, versioned
        assert versioned.stdout.strip() == f"{script} (thermopipe) {version}"
    REPORT.append(f"{role} install: --help and --version of {', '.join(SCRIPTS)}: ok")
    for sub in (["edge-agent", "run", "--help"], ["hub", "run", "--help"],
                ["thermopipe-demo", "--help"], ["firmware-sim", "serve", "--help"]):
        result = _run(env, *sub)
        assert result.returncode == 0 and "usage:" in result.stdout, result
    run_help = _run(env, "hub", "run", "--help").stdout
    assert re.search(r"-c CONFIG, --config CONFIG\s+the hub's TOML file", run_help), run_help


def test_a_program_without_its_roles_packages_names_the_extra(roles: dict[str, RoleEnv],
                                                              tmp_path: Path) -> None:
    # the demo runs everything: neither role's install has all it needs
    for env in roles.values():
        result = _run(env, "thermopipe-demo", "--duration", "1", "--state-dir", str(tmp_path / "d"))
        assert result.returncode == 1, result
        assert re.search(r"-m pip install '[^']*\[demo\]'$", result.stderr.strip()), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "d").exists()

    # the hub from the agent's install
    hub_toml = tmp_path / "hub.toml"
    hub_toml.write_text(f'data_dir = "{tmp_path}/hub"\n[storage]\nenabled = false\n')
    result = _run(roles["agent"], "hub", "run", "-c", str(hub_toml))
    assert result.returncode == 1, result
    assert result.stderr.startswith("hub: hub run needs ") and "Traceback" not in result.stderr
    assert re.search(r"-m pip install '[^']*\[hub\]'$", result.stderr.strip()), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    checked = _run(roles["agent"], "hub", "check-config", str(hub_toml))
    assert checked.returncode == 2 and re.search(r"pip install '[^']*\[hub\]'", checked.stderr)

    # an agent asking for Avro, or a serial source, where the packages are not installed
    agent_toml = tmp_path / "agent.toml"
    agent_toml.write_text(f"""site = "s"\ndevice_id = "d"\n
[mqtt]\nhost = "127.0.0.1"\nencoding = "avro"\n
[outbox]\npath = "{tmp_path}/outbox.db"\n
[[sources]]\nkind = "serial"\nport = "/dev/ttyUSB0"\n""")
    for role, wanted in (("agent", [("mqtt.encoding", "[avro]")]),
                         ("hub", [("sources[0].kind", "[agent]")])):
        for command in ("check-config", "run"):
            args = [command, str(agent_toml)] if command == "check-config" else \
                ["run", "-c", str(agent_toml)]
            result = _run(roles[role], "edge-agent", *args, timeout=30)
            assert result.returncode == 2, (role, command, result)
            assert "Traceback" not in result.stderr
            for key, extra in wanted:
                assert re.search(rf"^  {re.escape(key)}: .*pip install '[^']*{re.escape(extra)}'$",
                                 result.stderr, re.MULTILINE), (role, command, result.stderr)


def test_an_agent_sending_json_never_imports_fastavro(roles: dict[str, RoleEnv],
                                                      tmp_path: Path) -> None:
    # the agent's venv has no fastavro (nor pydantic) at all; in the hub's venv (which has them)
    # the agent's whole start-up path, and its messages (schemas.plain_messages), must still not
    # load them
    code = ("import sys\nfrom edge_agent import agent, cli, delivery\n"
            "from schemas import plain_messages\n"
            "assert 'fastavro' not in sys.modules, 'fastavro imported'\n"
            "assert 'serial' not in sys.modules, 'pyserial imported'\n"
            "assert 'pydantic' not in sys.modules, 'pydantic imported'\n"
            "print('ok')")
    for env in roles.values():
        result = subprocess.run([str(env.python), "-c", code], capture_output=True, text=True,
                                timeout=60, check=False, env=_env(), cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.strip() == "ok", result
    # reading a real board needs the protocol (schemas/), not the simulator package
    code = ("import sys\nfrom edge_agent.sources import serial_source\n"
            "assert not [m for m in sys.modules if m.startswith('firmware_sim')], 'simulator'\n"
            "print('ok')")
    result = subprocess.run([str(roles["agent"].python), "-c", code], capture_output=True,
                            text=True, timeout=60, check=False, env=_env(), cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result


# --- the shipped configs, end to end --------------------------------------------------------

class Proc:
    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 45) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"{self.name} ignored SIGTERM for {timeout} s:\n"
                                     f"{self.text()[-3000:]}") from None
        self._out.close()
        return int(self.proc.returncode)


def _wait(what: str, check: Callable[[], Any], timeout: float, procs: list[Proc]) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for p in procs:
            if p.proc.poll() is not None:
                raise AssertionError(f"{p.name} exited with {p.proc.returncode} while waiting "
                                     f"for {what}:\n{p.text()[-3000:]}")
        try:
            last = check()
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    logs = "\n".join(f"--- {p.name}\n{p.text()[-2500:]}" for p in procs)
    raise AssertionError(f"no {what} within {timeout} s (last: {last!r})\n{logs}")


def _http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture
def running(tmp_path: Path, roles: dict[str, RoleEnv],
            mosquitto_factory: Callable[..., Mosquitto], influxdb: InfluxDB1,
            influx_db_name: str) -> Iterator[dict[str, Any]]:
    deploy = copy_deploy(tmp_path)
    deploy.run("scripts/setup-server.sh")
    site, device = "farm-north", "pi-01"
    agent_toml, _password = deploy.add_device(site, device)
    broker = mosquitto_factory(extra_config=deploy.broker_config())
    procs: list[Proc] = []
    agent_env, hub_env = roles["agent"], roles["hub"]
    env = _env()

    def start(name: str, argv: list[str], extra: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, tmp_path / f"{name}.log", {**env, **(extra or {})})
        procs.append(proc)
        return proc

    # firmware-sim (the agent's install has it): a board on a pty behind a by-id-like link, and
    # a 1-Wire sysfs tree
    link = tmp_path / "serial-by-id" / "usb-Raspberry_Pi_Pico_E66038B713456F2A-if00"
    link.parent.mkdir()
    w1 = tmp_path / "w1" / "devices"
    start("firmware-sim-serial", [str(agent_env.bin("firmware-sim")), "serve", "--scenario",
                                  "freezer_failing", "--pty", "--link", str(link), "--speed",
                                  "60", "--loop"])
    start("firmware-sim-w1", [str(agent_env.bin("firmware-sim")), "serve", "--scenario",
                              "greenhouse_day", "--w1-dir", str(w1), "--speed", "60", "--loop"])
    _wait("the simulated devices", lambda: link.exists() and any(w1.glob("28-*/w1_slave")),
          20, procs)

    # the agent: add-device.sh's config, pointed at this broker, firmware-sim and a temp outbox
    agent_cfg = substitute(agent_toml.read_text(), [
        (r"^port = 1883$", f"port = {broker.port}"),
        (r'^path = "/var/lib/thermopipe/outbox.db"', f'path = "{tmp_path}/agent/outbox.db"'),
        (r'^port = "/dev/serial/by-id/[^"]+"', f'port = "{link}"'),
        (r'^w1_dir = "/sys/bus/w1/devices"', f'w1_dir = "{w1}"'),
        (r"^interval_s = 10.0", "interval_s = 1.0"),
        (r"^status_interval_s = 30.0", "status_interval_s = 2.0"),
    ])
    (tmp_path / "agent.toml").write_text(agent_cfg)

    # the hub: deploy/hub/hub.toml, pointed at this broker and at InfluxDB 1.x (no InfluxDB 2 here)
    http_port = free_port()
    hub_cfg = substitute((ROOT / "deploy" / "hub" / "hub.toml").read_text(), [
        (r'^host = "mosquitto"\nport = 1883$', f'host = "127.0.0.1"\nport = {broker.port}'),
        (r'^data_dir = "/var/lib/thermopipe-hub"$', f'data_dir = "{tmp_path}/hub"'),
        (r'^mode = "v2".*\nurl = .*\ntoken = .*\norg = .*\nbucket = .*$',
         f'mode = "v1"\nurl = "{influxdb.url}"\ndatabase = "{influx_db_name}"'),
        (r'^host = "0.0.0.0"\nport = 8780$', f'host = "127.0.0.1"\nport = {http_port}'),
    ])
    (tmp_path / "hub.toml").write_text(hub_cfg)
    secrets = {"HUB_MQTT_PASSWORD": deploy.env()["HUB_MQTT_PASSWORD"]}

    checked = _run(hub_env, "hub", "check-config", str(tmp_path / "hub.toml"), extra_env=secrets)
    assert checked.returncode == 0, checked
    assert "alerting  log, mqtt" in checked.stdout, checked.stdout
    checked = _run(agent_env, "edge-agent", "check-config", str(tmp_path / "agent.toml"))
    assert checked.returncode == 0, checked

    hub = start("hub", [str(hub_env.bin("hub")), "run", "-c", str(tmp_path / "hub.toml")],
                secrets)
    base = f"http://127.0.0.1:{http_port}"
    _wait("hub /healthz ok", lambda: _http_json(f"{base}/healthz")["ok"], 30, procs)
    agent = start("edge-agent", [str(agent_env.bin("edge-agent")), "run", "-c",
                                 str(tmp_path / "agent.toml")])
    try:
        yield {"procs": procs, "hub": hub, "agent": agent, "base": base, "site": site,
               "device": device, "influxdb": influxdb, "db": influx_db_name}
    finally:
        for proc in reversed(procs):
            if proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait(10)


def test_agent_and_hub_from_their_installs_run_the_shipped_configs_end_to_end(
        running: dict[str, Any]) -> None:
    influx: InfluxDB1 = running["influxdb"]
    procs: list[Proc] = running["procs"]

    def stored() -> dict[str, int]:
        rows = influx.series_rows(
            'SELECT count("seq") FROM "sensor_event" GROUP BY "sensor", "device"', running["db"])
        return {r["sensor"]: int(r["count"]) for r in rows if r["device"] == running["device"]}

    # both sources' sensors reach InfluxDB: serial (freezer board) and 1-Wire (greenhouse)
    wanted = {"28-0000056c3d4e", "28-0000075a1b2c"}
    found = _wait("events of both sources in InfluxDB", lambda: wanted <= set(stored()) and
                  stored(), 90, procs)
    REPORT.append(f"agent [agent] + hub [hub] with the shipped configs against Mosquitto "
                  f"(deploy's config, ACL, passwords) and InfluxDB: stored per sensor {found}")
    health = _http_json(f"{running['base']}/healthz")
    assert health["ok"] and health["mqtt_connected"], health
    assert set(health["consumers"]) == {"storage", "alerting", "dashboard"}, health
    state = _http_json(f"{running['base']}/api/state")
    assert running["device"] in json.dumps(state)
    metrics = urllib.request.urlopen(f"{running['base']}/metrics", timeout=5).read().decode()
    assert "thermopipe_hub_events_accepted_total" in metrics

    agent_code = running["agent"].terminate()
    hub_code = running["hub"].terminate()
    for proc in procs:
        proc.terminate()
    for proc, code in ((running["agent"], agent_code), (running["hub"], hub_code)):
        assert code == 0, f"{proc.name} exited {code}:\n{proc.text()[-3000:]}"
        assert "Traceback" not in proc.text(), proc.text()[-3000:]
    assert '"event": "hub.stopped"' in running["hub"].text()
