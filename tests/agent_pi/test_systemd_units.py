"""The systemd units as systemd itself reads them: ``systemd-analyze verify`` (no warning at all)
and ``systemd-analyze security`` (the agent's exposure no worse than the hub's, and the figure that
deploy/README.md records)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.test_deploy_files import unit as unit_settings
from tests.servers import require_binary

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
VENV_BIN = "/opt/thermopipe/venv/bin/"


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    exe = require_binary("systemd-analyze", "/usr/bin/systemd-analyze")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def installed_copy(unit: Path, tmp: Path, name: str | None = None) -> Path:
    """The unit with its /opt/thermopipe/venv/bin/ programs pointed at stand-ins that exist, as
    they would on the Pi (verify checks that every ExecStart command is executable)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    text = unit.read_text()
    for program in set(re.findall(re.escape(VENV_BIN) + r"([\w-]+)", text)):
        stand_in = bin_dir / program
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
    copy = tmp / (name or unit.name)
    copy.write_text(text.replace(VENV_BIN, f"{bin_dir}/"))
    return copy


@pytest.mark.parametrize(("unit", "name"), [("edge-agent.service", None),
                                            ("hub.service", None),
                                            ("hub@.service", "hub@1.service")])
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path, unit: str, name: str | None) -> None:
    copy = installed_copy(UNITS / unit, tmp_path, name)
    result = analyze("verify", str(copy))
    # verify exits 0 on an unknown key or a bad value, but prints it: any output is a failure
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr)


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key in a copy of the agent's unit is reported."""
    copy = installed_copy(UNITS / "edge-agent.service", tmp_path)
    copy.write_text(copy.read_text().replace("ProtectClock=yes", "ProtectClok=yes"))
    result = analyze("verify", str(copy))
    assert "Unknown key 'ProtectClok'" in result.stdout + result.stderr


def exposure(unit: Path) -> float:
    result = analyze("security", "--offline=true", "--no-pager", str(unit))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    return float(match.group(1))


def test_the_agent_unit_is_hardened_at_least_as_the_hub(tmp_path: Path) -> None:
    agent = exposure(UNITS / "edge-agent.service")
    hub = exposure(UNITS / "hub.service")
    print(f"\nsystemd-analyze security: edge-agent.service {agent}, hub.service {hub}")
    assert agent <= hub, (agent, hub)
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert f"exposure level {agent}" in readme, (
        f"deploy/README.md does not record the agent unit's score {agent}")


def test_the_agent_unit_starts_anywhere_notifies_and_reaches_only_serial_devices() -> None:
    u = unit_settings(UNITS / "edge-agent.service")
    # no group that a non-Pi host lacks (216/GROUP): dialout exists on every Debian
    assert u["Service.SupplementaryGroups"] == ["dialout"]
    assert u["Service.Type"] == ["notify"] and u["Service.NotifyAccess"] == ["main"]
    assert int(u["Service.WatchdogSec"][0]) >= 10
    assert u["Service.RuntimeDirectory"] == ["thermopipe"]
    assert u["Service.UMask"] == ["0022"]  # the state file 0644, for `edge-agent status`
    assert u["Service.RestartPreventExitStatus"] == ["2"] and "Service.ExecStartPre" not in u
    assert u["Service.DevicePolicy"] == ["closed"]
    assert {d.split()[0] for d in u["Service.DeviceAllow"]} >= {"char-ttyUSB", "char-ttyACM"}
    hub = unit_settings(UNITS / "hub.service")
    for key in ("SystemCallFilter", "ProtectClock", "ProtectKernelLogs", "RestrictSUIDSGID",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
                "RestrictNamespaces", "RestrictRealtime", "LockPersonality",
                "MemoryDenyWriteExecute", "NoNewPrivileges", "ProtectHostname"):
        assert u[f"Service.{key}"][0] == hub[f"Service.{key}"][0], key
    assert u["Service.CapabilityBoundingSet"] == [""]
