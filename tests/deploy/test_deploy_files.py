"""Static checks of deploy/: the compose stack, Grafana's provisioning and dashboards, the
Mosquitto config, the hub's container config and the systemd units. Docker and Grafana cannot run
here, so their files are proven by parsing them and checking every reference they make."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.grafana_files import (
    DASHBOARDS,
    DEPLOY,
    PROVISIONING,
    all_queries,
    iter_panels,
    load_dashboards,
    load_yaml,
)

COMPOSE = DEPLOY / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def env_example() -> dict[str, str]:
    out = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def datasources() -> list[dict[str, Any]]:
    data = load_yaml(PROVISIONING / "datasources" / "influxdb.yaml")
    assert data["apiVersion"] == 1
    result: list[dict[str, Any]] = data["datasources"]
    return result


# --- compose ------------------------------------------------------------------------------------

def test_compose_runs_the_whole_stack_on_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"mosquitto", "influxdb", "grafana", "hub"}
    for name, svc in services.items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), (name, image)
    assert services["hub"]["build"]["dockerfile"] == "deploy/hub/Dockerfile"
    dockerfile = (DEPLOY / "hub" / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M)
    assert base and re.search(r":\d+\.\d+\.\d+", base.group(1)), "pin the hub's base image"
    assert (DEPLOY / "scripts" / "lib.sh").read_text().count(
        f'MOSQUITTO_IMAGE="{services["mosquitto"]["image"]}"') == 1


def test_every_file_compose_mounts_exists(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


def test_compose_takes_every_secret_from_env_and_env_example_lists_them(
        compose: dict[str, Any]) -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    example = env_example()
    assert used == set(example), "compose variables and .env.example differ"
    secret_words = ("PASSWORD", "TOKEN")
    for key, value in example.items():
        if any(w in key for w in secret_words):
            assert value == "change-me", f"{key} must not carry a real secret in .env.example"
    # nothing secret written into compose itself
    for svc in compose["services"].values():
        for key, value in (svc.get("environment") or {}).items():
            if any(w in key for w in secret_words):
                assert str(value).startswith("${"), key


def test_no_secret_or_generated_file_is_committed() -> None:
    tracked = subprocess.run(["git", "ls-files", "deploy"], capture_output=True, text=True,
                             cwd=DEPLOY.parent, check=True).stdout.split()
    for bad in ("deploy/.env", "deploy/mosquitto/passwd"):
        assert bad not in tracked
    assert not [t for t in tracked if t.startswith("deploy/devices/")]
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert {".env", "mosquitto/passwd", "devices/"} <= set(ignored)


def test_influxdb_first_start_makes_org_bucket_token_and_the_dbrp_mapping(
        compose: dict[str, Any]) -> None:
    env = compose["services"]["influxdb"]["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN"):
        assert env[f"DOCKER_INFLUXDB_INIT_{key}"], key
    mounts = dict(v.split(":")[:2] for v in compose["services"]["influxdb"]["volumes"]
                  if v.startswith("."))
    init_dir = next(src for src, dst in mounts.items() if dst == "/docker-entrypoint-initdb.d")
    scripts = list((DEPLOY / init_dir).glob("*.sh"))
    assert scripts and all(os.access(s, os.X_OK) for s in scripts)
    text = "\n".join(s.read_text() for s in scripts)
    assert "influx v1 dbrp create" in text and "--default" in text
    assert "DOCKER_INFLUXDB_INIT_BUCKET_ID" in text and "THERMOPIPE_DB" in text
    # one database name everywhere: the DBRP mapping, Grafana's datasource
    db = env["THERMOPIPE_DB"]
    assert [d["jsonData"]["dbName"] for d in datasources()] == [db]
    # the hub writes to the bucket that set-up made
    hub = tomllib.loads((DEPLOY / "hub" / "hub.toml").read_text())
    assert (hub["storage"]["org"], hub["storage"]["bucket"]) == (
        env["DOCKER_INFLUXDB_INIT_ORG"], env["DOCKER_INFLUXDB_INIT_BUCKET"])
    assert hub["storage"]["mode"] == "v2" and hub["storage"]["url"] == "http://influxdb:8086"


def test_the_hub_config_of_the_stack_is_valid(compose: dict[str, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.config import load_hub_config

    env = compose["services"]["hub"]["environment"]
    for key in env:
        monkeypatch.setenv(key, "test-value")
    config = load_hub_config(DEPLOY / "hub" / "hub.toml")
    assert config.mqtt.host == "mosquitto" and config.mqtt.username == "hub"
    assert config.storage.token is not None
    acl = (DEPLOY / "mosquitto" / "acl").read_text()
    assert f"user {config.mqtt.username}\n" in acl
    assert f"topic read {config.mqtt.topic_root}/#" in acl
    port = config.http.port
    # inside the container on its own 0.0.0.0, published on the host's loopback only
    assert config.http.host == "0.0.0.0"
    assert compose["services"]["hub"]["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_the_hub_service_installs_its_config_with_the_web_on_loopback(tmp_path: Path) -> None:
    """hub.service's install recipe (its header) rewrites the stack's [http] host, and nothing
    else, to 127.0.0.1: the web of a hub without containers is not on every interface."""

    unit = (DEPLOY / "systemd" / "hub.service").read_text()
    script = next(line for line in unit.splitlines() if line.startswith("#   sed "))
    expression = script.split("'")[1]
    done = subprocess.run(["sed", expression, str(DEPLOY / "hub" / "hub.toml")],
                          capture_output=True, text=True, check=True)
    written = tomllib.loads(done.stdout)
    stack = tomllib.loads((DEPLOY / "hub" / "hub.toml").read_text())
    assert written["http"]["host"] == "127.0.0.1"
    assert {**written, "http": stack["http"]} == stack


def test_mosquitto_config_keeps_messages_and_requires_passwords(compose: dict[str, Any]) -> None:
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    settings = dict(line.split(None, 1) for line in conf.splitlines()
                    if line.strip() and not line.startswith("#"))
    assert settings["persistence"] == "true"
    assert settings["allow_anonymous"] == "false"
    assert settings["password_file"] == "/mosquitto/config/passwd"
    assert settings["acl_file"] == "/mosquitto/config/acl"
    assert settings["set_tcp_nodelay"] == "true"  # no 40 ms Nagle stalls (issue 26)
    assert int(settings["max_queued_messages"]) >= 100_000  # not the silent 1000 default
    # read-only: the image's entrypoint (as root) chowns /mosquitto; through a read-only mount
    # it cannot hand the checkout's files to uid 1883 (a later git pull would fail on them)
    mount = next(v for v in compose["services"]["mosquitto"]["volumes"]
                 if ":/mosquitto/config" in v)
    assert mount.endswith(":/mosquitto/config:ro"), mount
    assert (DEPLOY / mount.split(":")[0] / "acl").is_file()
    for svc in compose["services"].values():  # no other bind mount of the checkout is writable
        for volume in svc.get("volumes", []):
            if volume.startswith("."):
                assert volume.endswith(":ro"), volume
    tls = (DEPLOY / "mosquitto" / "conf.d" / "tls.conf.example").read_text()
    assert "listener 8883" in tls and "certfile" in tls and "keyfile" in tls
    assert settings["include_dir"] == "/mosquitto/config/conf.d"


# --- Grafana ------------------------------------------------------------------------------------

def test_grafana_reads_influxdb_as_a_read_only_user_never_with_the_operator_token(
        compose: dict[str, Any]) -> None:
    (ds,) = datasources()
    assert ds["type"] == "influxdb" and ds["jsonData"]["version"] == "InfluxQL"
    assert ds["user"] == "grafana"
    assert ds["secureJsonData"] == {"password": "${GRAFANA_INFLUXDB_PASSWORD}"}
    assert not [k for k in ds["jsonData"] if k.startswith("httpHeader")]
    grafana_env = compose["services"]["grafana"]["environment"]
    assert "INFLUXDB_TOKEN" not in grafana_env and "GRAFANA_INFLUXDB_PASSWORD" in grafana_env
    assert ds["url"] == "http://influxdb:8086"
    # InfluxDB 2's first start makes that user, with read access to the two buckets only
    influx = compose["services"]["influxdb"]
    assert influx["environment"]["GRAFANA_INFLUXDB_PASSWORD"] == grafana_env[
        "GRAFANA_INFLUXDB_PASSWORD"]
    reader = (DEPLOY / "influxdb" / "init" / "30-grafana-reader.sh").read_text()
    create = reader[reader.index("influx v1 auth create"):]
    assert "--username grafana" in create and "GRAFANA_INFLUXDB_PASSWORD" in create
    assert create.count("--read-bucket") == 2 and "--write-bucket" not in reader


def test_retention_and_the_long_term_series_are_provisioned_for_influxdb_2(
        compose: dict[str, Any]) -> None:
    env = compose["services"]["influxdb"]["environment"]
    assert env["DOCKER_INFLUXDB_INIT_RETENTION"] == "90d"
    assert env["THERMOPIPE_LONG_TERM_RETENTION"] == "1825d"
    script = (DEPLOY / "influxdb" / "init" / "20-long-term.sh").read_text()
    assert 'long="${raw}_long_term"' in script and "THERMOPIPE_LONG_TERM_RETENTION" in script
    assert "--rp long_term" in script  # InfluxQL reads it as "long_term"."temperature_15m"
    assert 'value: "temperature_15m"' in script and "every: 15m" in script
    for field, fn in (("min", "min"), ("mean", "mean"), ("max", "max"), ("count", "sum")):
        assert f'agg(field: "{field}", fn: {fn})' in script
    # the same series name and fields as the InfluxDB 1.x continuous query
    iql = (DEPLOY / "influxdb" / "v1" / "setup.iql").read_text()
    assert ('min("min") AS "min", mean("mean") AS "mean", max("max") AS "max", '
            'sum("count") AS "count" INTO "thermopipe"."long_term"."temperature_15m"') in iql


def test_the_hub_service_has_a_healthcheck_on_healthz(compose: dict[str, Any]) -> None:
    check = compose["services"]["hub"]["healthcheck"]
    assert check["test"][:2] == ["CMD", "python"]
    assert "http://127.0.0.1:8780/healthz" in check["test"][-1]


def test_dashboard_provider_points_at_the_mounted_dashboards(compose: dict[str, Any]) -> None:
    data = load_yaml(PROVISIONING / "dashboards" / "dashboards.yaml")
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"]
                  if v.startswith("."))
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    env = compose["services"]["grafana"]["environment"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (DASHBOARDS / Path(home).name).is_file()


def test_dashboards_are_well_formed_and_use_the_provisioned_datasource() -> None:
    boards = load_dashboards()
    assert len(boards) == len(list(DASHBOARDS.glob("*.json"))) == 3
    uids = {d["uid"] for d in datasources()}
    for uid, board in boards.items():
        assert 36 <= board["schemaVersion"] <= 41, uid
        variables = {v["name"] for v in board["templating"]["list"]}
        ids = [p["id"] for p in iter_panels(board)]
        assert len(ids) == len(set(ids)), f"{uid}: duplicate panel ids"
        for panel in iter_panels(board):
            assert panel["datasource"]["uid"] in uids, (uid, panel["title"])
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
            for target in panel["targets"]:
                assert target["rawQuery"] is True and target["datasource"]["uid"] in uids
        for query in (q for q in all_queries() if q.dashboard == uid):
            assert query.datasource_uid in uids, query.key
            used = set(re.findall(r"\$(\w+)", query.text)) - {"timeFilter", "__interval",
                                                             "__interval_ms"}
            assert used <= variables, f"{query.key} uses undefined variables {used - variables}"
            if "GROUP BY time(" in query.text:
                assert "GROUP BY time($__interval)" in query.text, query.key


CURRENT_STATE = {  # the latest known state whatever the time range, within $lookback
    "thermopipe-temperatures:panel:Current band per sensor:A",
    "thermopipe-devices:panel:Devices online:A",
    "thermopipe-devices:panel:Last seen:A",
    "thermopipe-devices:panel:Device counters:A",
}


def test_every_query_is_bounded_in_time() -> None:
    """Nothing scans all history (which grows for years): time series by the dashboard's range,
    current-state tables by the look-back drop-down."""
    for query in all_queries():
        if query.kind == "variable":
            assert query.text.startswith("SHOW TAG VALUES"), query.key
        elif query.key in CURRENT_STATE:
            assert "$timeFilter" not in query.text
            assert "AND time > now() - $lookback GROUP BY" in query.text, query.key
        else:
            assert "$timeFilter" in query.text, query.key


def test_temperatures_are_shown_in_each_sensors_unit() -> None:
    """No hard-coded Celsius: every temperature query is split by the stored unit tag, and each
    refId gets the matching Grafana unit."""
    for board in load_dashboards().values():
        for panel in iter_panels(board):
            texts = {t["refId"]: t["query"] for t in panel["targets"]}
            summaries = r'"(sensor_summary|temperature_15m)"'
            temperature = {ref for ref, q in texts.items() if panel["type"] == "timeseries"
                           and ((re.search(summaries, q) and "count(" not in q)
                                or ('"sensor_event"' in q
                                    and re.search(r'"(value|threshold)"', q)))}
            if not temperature:
                continue
            assert "unit" not in panel["fieldConfig"]["defaults"], panel["title"]
            units = {o["matcher"]["options"]: o["properties"][0]["value"]
                     for o in panel["fieldConfig"]["overrides"]
                     if o["matcher"]["id"] == "byFrameRefID"}
            for ref in temperature:
                if "\"unit\" = 'degF'" in texts[ref]:
                    assert units[ref] == "fahrenheit", (panel["title"], ref)
                else:
                    assert "(\"unit\" = 'degC' OR \"unit\" = '')" in texts[ref], ref
                    assert units[ref] == "celsius", (panel["title"], ref)
    hub = load_dashboards()["thermopipe-hub"]
    (rates,) = [p for p in iter_panels(hub) if "per second" in p["title"]]
    assert rates["fieldConfig"]["defaults"]["unit"] == "suffix: events/s"


# --- scripts and units --------------------------------------------------------------------------

SCRIPTS = sorted(DEPLOY.rglob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(s.relative_to(DEPLOY)) for s in SCRIPTS])
def test_shell_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    if script.name != "lib.sh":
        assert os.access(script, os.X_OK), f"{script} is not executable"
        assert "set -euo pipefail" in script.read_text()
    shellcheck = subprocess.run(["which", "shellcheck"], capture_output=True, check=False)
    if shellcheck.returncode != 0:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", "-x", str(script)], capture_output=True, text=True,
                            cwd=script.parent, check=False, timeout=60)
    assert result.returncode == 0, result.stdout


def unit(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(f"{section}.{key}", []).append(value)
    return out


@pytest.mark.parametrize("name", ["hub.service", "hub@.service"])
def test_hub_units_run_unprivileged_hardened_and_restart(name: str) -> None:
    u = unit(DEPLOY / "systemd" / name)
    assert u["Service.User"] == ["thermopipe-hub"]
    assert u["Service.Restart"] == ["on-failure"]
    assert u["Service.RestartPreventExitStatus"] == ["2"]  # hub's config-error exit code
    assert "hub run -c /etc/thermopipe/hub" in u["Service.ExecStart"][0]
    # the program checks its config and exits 2; a check in ExecStartPre= would be restarted
    # forever (RestartPreventExitStatus= sees the main process only: tests/counterparts)
    assert "Service.ExecStartPre" not in u
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"):
        assert u[f"Service.{key}"][0] in ("yes", "strict"), key
    assert u["Service.CapabilityBoundingSet"] == [""]
    assert u["Install.WantedBy"] == ["multi-user.target"]
    assert {c.split(":")[0] for c in u["Service.LoadCredential"]} == {"mqtt-password",
                                                                      "influxdb-token"}


def test_pi_install_dry_run_shows_every_step() -> None:
    """On this Debian 12 machine the platform checks pass; --dry-run shows what it would do."""
    result = subprocess.run(["bash", str(DEPLOY / "pi" / "install.sh"), "--dry-run"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ("useradd --system", "--groups dialout", "-m venv /opt/thermopipe/venv",
                     "/opt/thermopipe/venv/bin/pip install --upgrade",
                     f"{DEPLOY.parent}\\[agent\\]",
                     "deploy/agent.example.toml /etc/thermopipe/agent.toml",
                     "deploy/systemd/edge-agent.service /etc/systemd/system/edge-agent.service",
                     "systemctl enable edge-agent.service", "dtoverlay=w1-gpio",
                     "/boot/firmware/config.txt", "ls /sys/bus/w1/devices/28-*"):
        assert expected in out, expected
    bad = subprocess.run(["bash", str(DEPLOY / "pi" / "install.sh"), "--config", "/nonexistent"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode != 0 and "/nonexistent does not exist" in bad.stderr
