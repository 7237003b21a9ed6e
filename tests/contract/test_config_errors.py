"""Config errors in the user's words, in one layout for edge-agent and hub: an unknown key with a
suggestion, a TOML syntax error with its line, no pydantic prefixes, no key path said twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROGRAMS = {"edge-agent": "edge_agent.cli", "hub": "hub.cli"}


def check(program: str, path: Path, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TP_TEST_")}
    return subprocess.run([sys.executable, "-m", PROGRAMS[program], "check-config", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
                          env={**environ, **(env or {})})


def agent_text(tmp: Path, extra: str = "", source: str = "") -> str:
    return (f'site = "s"\ndevice_id = "d"\n{extra}\n[mqtt]\nhost = "127.0.0.1"\n'
            'password = "env:TP_TEST_MISSING"\n'
            f'[outbox]\npath = "{tmp}/outbox.db"\n'
            '[[sources]]\nkind = "onewire"\n'
            f'w1_dir = "{tmp}"\n{source}')


def hub_text(tmp: Path, extra: str = "") -> str:
    return (f'data_dir = "{tmp}/hub"\n{extra}\n[mqtt]\nhost = "127.0.0.1"\n'
            'password = "env:TP_TEST_MISSING"\n[storage]\nmode = "sqlite"\n')


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_unknown_keys_suggest_the_known_one_and_reasons_read_plainly(program: str,
                                                                     tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    if program == "edge-agent":
        path.write_text(agent_text(tmp_path, "tick_seconds = 1", "intervall_s = 5\n"))
        unknown = [("(file)", "unknown key 'tick_seconds' (did you mean 'tick_s'?)"),
                   ("sources[0]", "unknown key 'intervall_s' (did you mean 'interval_s'?)")]
    else:
        path.write_text(hub_text(tmp_path, "late_after = 5\n[http]\nprot = 1"))
        unknown = [("(file)", "unknown key 'late_after' (did you mean 'late_after_s'?)"),
                   ("http", "unknown key 'prot' (did you mean 'port'?)")]
    result = check(program, path)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert lines[0] == f"invalid configuration {path} ({len(unknown) + 1} problems):", lines
    for key, reason in unknown:
        assert f"  {key}: {reason}" in lines, result.stderr
    # the secret's reason, once, with its key path once
    assert "  mqtt.password: environment variable TP_TEST_MISSING is not set" in lines, lines
    assert "Value error" not in result.stderr and "Extra inputs" not in result.stderr
    assert result.stderr.count("mqtt.password") == 1


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_toml_syntax_error_shows_the_offending_line(program: str, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    text = agent_text(tmp_path) if program == "edge-agent" else hub_text(tmp_path)
    path.write_text(text.replace('host = "127.0.0.1"', 'host = 127.0.0.1 broker'))
    result = check(program, path)
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert lines[0] == f"invalid configuration {path} (1 problem):"
    number = text.splitlines().index('host = "127.0.0.1"') + 1
    assert lines[1].startswith(f"  line {number}: not valid TOML: "), lines
    assert lines[2].strip() == "host = 127.0.0.1 broker"
    assert lines[3].strip() == "^"


def test_an_empty_hub_config_is_not_ok(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(f'data_dir = "{tmp_path}/hub"\n')
    result = check("hub", path)
    assert result.returncode == 2, result
    assert "  storage: missing: say where events are stored" in result.stderr
    path.write_text(f'data_dir = "{tmp_path}/hub"\n[storage]\nenabled = false\n')
    result = check("hub", path)
    assert result.returncode == 0, result
    assert "storage off" in result.stdout


def test_dlq_list_on_a_data_dir_that_does_not_exist_says_so(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(hub_text(tmp_path))  # its secret is not needed to read dead letters
    result = subprocess.run([sys.executable, "-m", "hub.cli", "dlq", "-c", str(path), "list"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 1, result
    assert "0 dead letter(s)" not in result.stdout
    assert result.stderr.startswith(f"hub: no hub data in {tmp_path}/hub"), result.stderr
