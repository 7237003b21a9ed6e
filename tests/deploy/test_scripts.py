"""deploy/scripts for real, in a scratch copy of deploy/: setup-server.sh makes the secrets and
the hub's MQTT user once; add-device.sh refuses bad ids and a missing or malformed broker host,
writes an agent config that the edge agent's own loader accepts, with the password in a 0600 file
and never in the config, and prints the broker host and port it wrote."""

from __future__ import annotations

import stat
import subprocess
import tomllib

import pytest

from tests.deploy.conftest import DeployCopy


def test_setup_server_makes_secrets_once(deploy_copy: DeployCopy) -> None:
    env_file = deploy_copy.root / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    env = deploy_copy.env()
    secrets = {k: v for k, v in env.items() if "PASSWORD" in k or "TOKEN" in k}
    assert secrets and all(len(v) >= 24 and v != "change-me" for v in secrets.values())
    assert len(set(secrets.values())) == len(secrets)
    passwd = (deploy_copy.root / "mosquitto" / "passwd").read_text()
    assert passwd.startswith("hub:$7$")  # a PBKDF2-SHA512 hash, not the password
    assert env["HUB_MQTT_PASSWORD"] not in passwd
    again = deploy_copy.run("scripts/setup-server.sh")
    assert "keeping the existing" in again.stdout
    assert deploy_copy.env() == env  # never overwrites a secret
    assert (deploy_copy.root / "mosquitto" / "passwd").read_text() == passwd


def test_add_device_writes_a_config_the_agent_accepts(deploy_copy: DeployCopy) -> None:
    from edge_agent.config import load

    config_path, password = deploy_copy.add_device("lab", "pi.lab-1")
    secret = config_path.parent / "mqtt-password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    text = config_path.read_text()
    assert password not in text
    config = load(config_path)
    assert (config.site, config.device_id) == ("lab", "pi.lab-1")
    assert config.mqtt.username == "pi.lab-1" and config.mqtt.host == "127.0.0.1"
    assert config.mqtt.port == 1883 and config.mqtt.tls is None  # plain: [mqtt.tls] commented
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == password
    assert "# [mqtt.tls]" in text  # the example's comments and the rest are kept
    passwd = (deploy_copy.root / "mosquitto" / "passwd").read_text()
    assert any(line.startswith("pi.lab-1:$7$") for line in passwd.splitlines())


def test_add_device_defaults_to_the_systemd_credential_and_can_use_tls(
        deploy_copy: DeployCopy) -> None:
    deploy_copy.run("scripts/add-device.sh", "--tls", "--broker", "hub.example.lan", "barn",
                    "pi-barn")
    text = (deploy_copy.root / "devices" / "pi-barn" / "agent.toml").read_text()
    assert 'password = "file:/run/credentials/edge-agent.service/mqtt-password"' in text
    assert "\nport = 8883\n" in text and "\n[mqtt.tls]\n" in text
    assert 'host = "hub.example.lan"' in text


@pytest.mark.parametrize(("args", "reason"), [
    (["lab"], "usage"),
    (["lab", "pi/01"], "invalid device id"),
    (["lab", "+"], "invalid device id"),
    (["my site", "pi-01"], "invalid site"),
    (["lab", "_hub"], "invalid device id"),
    (["lab", "hub"], "service account"),
    (["lab", "hub-w2"], "service account"),     # a hub worker's account
    (["lab", "hub-w0-ha"], "service account"),  # a worker's Home Assistant connection
    (["--port", "x", "--broker", "hub.lan", "lab", "pi-01"], "invalid port"),
    (["--bogus", "lab", "pi-01"], "unknown option"),
])
def test_add_device_refuses_bad_input(deploy_copy: DeployCopy, args: list[str],
                                      reason: str) -> None:
    result = deploy_copy.run("scripts/add-device.sh", *args, check=False)
    assert result.returncode != 0
    assert reason in result.stderr
    passwd = (deploy_copy.root / "mosquitto" / "passwd").read_text()
    assert all(line.startswith("hub") for line in passwd.splitlines())  # setup-server's only


def test_add_device_help(deploy_copy: DeployCopy) -> None:
    out = subprocess.run(["bash", str(deploy_copy.root / "scripts" / "add-device.sh"), "--help"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert "add-device.sh --broker HOST [options] SITE DEVICE" in out and "--tls" in out
    assert "this host's name" not in out  # no default broker host any more


def _only_hub_accounts(deploy_copy: DeployCopy) -> bool:
    passwd = (deploy_copy.root / "mosquitto" / "passwd").read_text()
    return all(line.startswith("hub") for line in passwd.splitlines())


def test_add_device_requires_the_broker_host(deploy_copy: DeployCopy) -> None:
    # `hostname -f` was the default: it wrote host = "vm" on a machine no Pi knows by that name
    acl_before = (deploy_copy.root / "mosquitto" / "acl").read_text()
    for args in (["lab", "pi-01"], ["--broker", "", "lab", "pi-01"]):
        result = deploy_copy.run("scripts/add-device.sh", *args, check=False)
        assert result.returncode == 1, result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --broker HOST is required"), lines
        assert "as the Pi reaches it" in lines[0]
        assert (deploy_copy.root / "mosquitto" / "acl").read_text() == acl_before
        assert _only_hub_accounts(deploy_copy)
        assert not (deploy_copy.root / "devices" / "pi-01").exists()


@pytest.mark.parametrize(("broker", "says"), [
    ("mqtt://hub.lan:1883", "not a URL"),
    ("hub.lan:1883", "the port goes in --port"),
    ('hub"lan', "a host name or IP address"),
    ("hub lan", "a host name or IP address"),
    ("-hub.lan", "a host name or IP address"),
])
def test_add_device_refuses_a_broker_that_is_not_a_host(deploy_copy: DeployCopy, broker: str,
                                                        says: str) -> None:
    result = deploy_copy.run("scripts/add-device.sh", "--broker", broker, "lab", "pi-01",
                             check=False)
    assert result.returncode == 1
    assert f"invalid broker host '{broker}'" in result.stderr and says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _only_hub_accounts(deploy_copy)
    assert not (deploy_copy.root / "devices" / "pi-01").exists()


@pytest.mark.parametrize(("args", "host", "port", "transport"), [
    (["--broker", "mqtt.farm.lan"], "mqtt.farm.lan", 1883, "plain MQTT, no TLS"),
    (["--broker", "192.168.1.20", "--port", "1884"], "192.168.1.20", 1884, "plain MQTT"),
    (["--broker", "fd00::5", "--tls"], "fd00::5", 8883, "TLS"),
])
def test_add_device_prints_the_broker_host_and_port_it_wrote(
        deploy_copy: DeployCopy, args: list[str], host: str, port: int, transport: str) -> None:
    result = deploy_copy.run("scripts/add-device.sh", *args, "lab", "pi-01")
    written = tomllib.loads((deploy_copy.root / "devices" / "pi-01" / "agent.toml").read_text())
    assert (written["mqtt"]["host"], written["mqtt"]["port"]) == (host, port)
    assert f'  host = "{host}"\n' in result.stdout
    assert f"  port = {port}   ({transport}" in result.stdout
    assert f"getent hosts {host}" in result.stdout
    assert "--ca-file" in result.stdout if "--tls" in args else "--ca-file" not in result.stdout
    assert "is the Pi itself" not in result.stderr


def test_add_device_notes_a_loopback_broker(deploy_copy: DeployCopy) -> None:
    result = deploy_copy.run("scripts/add-device.sh", "--broker", "127.0.0.1", "lab", "pi-01")
    assert "note: '127.0.0.1' is the Pi itself" in result.stderr
    assert '  host = "127.0.0.1"\n' in result.stdout


def test_setup_server_adds_secrets_new_since_and_lets_the_broker_read_its_passwords(
        deploy_copy: DeployCopy) -> None:
    import os

    env_file = deploy_copy.root / ".env"
    kept = deploy_copy.env()
    # an .env made before GRAFANA_INFLUXDB_PASSWORD existed
    env_file.write_text("".join(f"{k}={v}\n" for k, v in kept.items()
                                if k != "GRAFANA_INFLUXDB_PASSWORD"))
    again = deploy_copy.run("scripts/setup-server.sh")
    assert "added GRAFANA_INFLUXDB_PASSWORD" in again.stdout
    env = deploy_copy.env()
    assert {k: v for k, v in env.items() if k != "GRAFANA_INFLUXDB_PASSWORD"} == {
        k: v for k, v in kept.items() if k != "GRAFANA_INFLUXDB_PASSWORD"}
    assert len(env["GRAFANA_INFLUXDB_PASSWORD"]) >= 24
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # the broker container reads the password file through a read-only mount as its mosquitto
    # user: mode 0640, group 1883 (as root; otherwise the script says what to run)
    passwd = deploy_copy.root / "mosquitto" / "passwd"
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o640
    if os.geteuid() == 0:
        assert passwd.stat().st_gid == 1883


def test_setup_server_makes_one_hub_account_per_connection(deploy_copy: DeployCopy) -> None:
    passwd = deploy_copy.root / "mosquitto" / "passwd"
    users = [line.split(":")[0] for line in passwd.read_text().splitlines()]
    assert users == ["hub", "hub-ha", *[f"hub-w{i}{s}" for i in range(4) for s in ("", "-ha")]]
    acl = (deploy_copy.root / "mosquitto" / "acl").read_text().splitlines()
    assert all(f"user {u}" in acl for u in users)  # every account has its ACL block
    refused = deploy_copy.run("scripts/setup-server.sh", "--hub-workers", "5", check=False)
    assert refused.returncode != 0
    assert "no 'user hub-w4' block" in refused.stderr
    assert [line.split(":")[0] for line in passwd.read_text().splitlines()] == users
