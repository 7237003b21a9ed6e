"""Installing on every Pi: which packages have wheels per arch (asked of PyPI, as deploy/README.md
states it), and what deploy/pi/install.sh does about it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent_pi.helpers import ROOT

PI = ROOT / "deploy" / "pi"


def readme_table() -> str:
    text = (ROOT / "deploy" / "README.md").read_text()
    match = re.search(r"<!-- wheels:begin -->\n(.*?)\n<!-- wheels:end -->", text, re.DOTALL)
    assert match, "deploy/README.md lost its wheels table markers"
    return match.group(1).strip()


@pytest.mark.slow
def test_wheels_per_arch_as_pypi_has_them_and_as_the_readme_says() -> None:
    """Asks PyPI (pip download --only-binary=:all: --platform ...). Fails when the agent role loses
    its wheels on a 64-bit or armv7l Pi, or when deploy/README.md no longer says what PyPI has."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, str(PI / "wheels.py"), "--markdown"],
                            capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout.strip()
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    # the agent's required packages: pure Python on every Pi, armv6l too (issue 25: no
    # pydantic-core, the agent builds its messages with schemas/plain_messages.py)
    agent = {name for name, line in rows.items() if line.split(" | ")[1].strip() == "agent"}
    assert {"paho-mqtt", "structlog", "pyserial"} <= agent
    assert not agent & {"pydantic", "pydantic-core"}
    for name in agent:
        cells = [c.strip() for c in rows[name].strip("|").split("|")]
        assert cells[2:5] == ["pure", "pure", "pure"], rows[name]
    assert table == readme_table(), (
        "deploy/README.md's wheels table differs from what PyPI has today; paste this:\n"
        + table)


def dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(PI / "install.sh"), "--dry-run", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_install_prefers_wheels_checks_itself_and_compiles_only_when_needed(
        tmp_path: Path) -> None:
    result = dry_run()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # the agent's role is pure Python: nothing to ask for as a wheel, nothing to compile
    assert "only-binary" not in out and "fastavro" not in out and "pydantic" not in out
    # no hidden pip -q, no build packages unless a compile is needed
    assert not re.search(r"pip install[^\n]* (-q|--quiet)\b", out)
    assert "build-essential" not in out and "apt-get install" not in out
    assert "--groups dialout" in out and "gpio" not in out.replace("w1-gpio", "")
    # the self-check runs before the service is (re)started
    check = out.index("edge-agent check-config --skip-secrets /etc/thermopipe/agent.toml")
    probe = out.index("runuser -u thermopipe -- /opt/thermopipe/venv/bin/edge-agent probe")
    assert check < probe < out.index("systemctl restart edge-agent.service")
    avro = tmp_path / "agent.toml"
    avro.write_text('[mqtt]\nencoding = "avro"\n')
    out = dry_run("--config", str(avro)).stdout
    # (printf %q in the dry run escapes the commas and brackets)
    assert "--only-binary=fastavro" in out and "\\[agent\\,avro\\]" in out
