"""`edge-agent check-config`: the shipped example is valid; a bad file lists every error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.config import AgentConfig, load
from edge_agent.status import status_line
from program_support.plain_config import parse
from schemas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "agent.example.toml"
CREDENTIAL = "/run/credentials/edge-agent.service/mqtt-password"


def _example(tmp_path: Path) -> Path:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    ca = tmp_path / "ca.pem"  # the machine has the files the config names (checked at load)
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    text = EXAMPLE.read_text()
    assert CREDENTIAL in text and "/etc/thermopipe/ca.pem" in text
    path = tmp_path / "agent.toml"
    path.write_text(text.replace(CREDENTIAL, str(secret))
                    .replace("/etc/thermopipe/ca.pem", str(ca)))
    return path


def test_no_secrets_checks_the_shipped_file_as_is_on_a_machine_without_its_secrets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the shipped file reads a systemd credential that exists only inside the unit
    assert main(["check-config", str(EXAMPLE)]) == 2
    assert CREDENTIAL in capsys.readouterr().err
    assert main(["check-config", "--no-secrets", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert f"secret   file:{CREDENTIAL} (not read: --no-secrets)" in out
    # the form is still checked: an inline password is refused with or without the flag
    inline = tmp_path / "inline.toml"
    inline.write_text(EXAMPLE.read_text().replace(f"file:{CREDENTIAL}", "hunter2"))
    assert main(["check-config", "--no-secrets", str(inline)]) == 2
    err = capsys.readouterr().err
    assert "mqtt.password" in err
    assert "inline" in err


def test_the_example_config_is_valid_and_uses_every_source_kind(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _example(tmp_path)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK {path}")
    assert "farm-north/pi-01" in out
    cfg = load(path)
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert [s.kind for s in cfg.sources] == ["serial", "onewire"]
    freezer = cfg.rules_for("28-0000056c3d4e")
    assert [t.name for t in freezer.thresholds] == ["warm", "thawing"]
    assert cfg.rules_for("28-unknown") == cfg.defaults
    # every key of the example is a real option: the sections refuse unknown keys
    with pytest.raises(ConfigError, match=r"mqtt: unknown key 'hots' \(did you mean 'host'\?\)"):
        parse({"site": "s", "device_id": "d", "mqtt": {"hots": "x"},
               "sources": [{"kind": "onewire"}]}, AgentConfig)


BAD = """
site = "farm/north"
device_id = "pi-01"
tick_s = -1

[mqtt]
host = "localhost"
port = 99999
password = "hunter2"

[[sources]]
kind = "serial"

[[sources]]
kind = "usb-magic"

[sensors.t1.rules]
thresholds = [{ name = "high", above = 30.0, below = 10.0 }]

[sensors.t3.rules]
min_c = 10
max_c = 0

[sensors.t2]
unit = "kelvin"
"""


def test_a_bad_config_prints_every_error_with_its_key_path_and_exits_2(
        tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    proc = subprocess.run([sys.executable, "-m", "edge_agent", "check-config", str(path)],
                          check=False, capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    for key in ("site", "tick_s", "mqtt.port", "mqtt.password", "sources[0].port",
                "sources[1].kind", "sensors.t1.rules.thresholds[0]", "sensors.t3.rules",
                "sensors.t2.unit"):
        assert f"  {key}:" in err, (key, err)
    assert "hunter2" not in err
    assert "inline" in err


def test_run_with_a_bad_config_exits_2_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    proc = subprocess.run([sys.executable, "-m", "edge_agent", "run", "-c", str(path)],
                          check=False, capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 2
    assert "mqtt.port" in proc.stderr


def test_missing_file_and_broken_toml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("site = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(broken)


def test_status_line_reads_like_a_sentence() -> None:
    line = status_line("pi-01", True, 4, {
        "readings": 1234, "events": 57, "outbox_depth": 0, "outbox_oldest_age_s": 0,
        "dropped_by_size": 2, "dropped_readings_queue": 1, "reconnects": 1})
    assert line == ("pi-01 | mqtt up | 4 sensors | 1,234 readings | 57 events | outbox 0 (0 s)"
                    " | drops 3 | reconnects 1")
    down = status_line("pi-01", False, 1, {"outbox_depth": 4321, "outbox_oldest_age_s": 754,
                                            "faults_active": 1, "bad_checksum": 3})
    assert "mqtt DOWN | 1 sensor |" in down
    assert "outbox 4,321 (12 min)" in down
    assert down.endswith("1 fault active | bad checksums 3")


def test_a_tls_file_that_is_not_there_is_a_config_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _example(tmp_path)
    (tmp_path / "ca.pem").unlink()
    assert main(["check-config", str(path)]) == 2
    assert f"  mqtt.tls.ca_file: '{tmp_path / 'ca.pem'}' does not exist" in capsys.readouterr().err
    assert main(["check-config", "--no-secrets", str(path)]) == 0  # checked on the device only


def test_the_old_tls_key_still_works_with_a_note(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = _example(tmp_path)
    path.write_text(path.read_text().replace("insecure = false", "insecure_skip_verify = true"))
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "deprecated mqtt.tls.insecure_skip_verify: renamed insecure (same meaning)" in err
    assert load(path).mqtt.tls is not None and load(path).mqtt.tls.insecure is True
