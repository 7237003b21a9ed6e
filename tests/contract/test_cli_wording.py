"""How edge-agent and hub take their arguments and say what went wrong, through the real programs:
``-c FILE`` after every subcommand, a command left out said in words, a missing config file said
as missing with the example to start from, ``--skip-secrets`` skipping only secrets, a misspelt
source kind in the project's words, and a missing package with the pip command for this install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = {"edge-agent": "edge_agent", "hub": "hub.cli"}


def cli(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TP_TEST_")}
    env.pop("HUB_CONFIG", None)
    return subprocess.run([sys.executable, "-m", PROGRAMS[program], *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=False, env=env)


def agent_toml(tmp: Path, tls: str = "", source: str = 'kind = "onewire"') -> Path:
    path = tmp / "agent.toml"
    path.write_text(f'site = "s"\ndevice_id = "d"\n[mqtt]\nhost = "127.0.0.1"\n'
                    f'password = "env:TP_TEST_MISSING"\n{tls}\n'
                    f'[outbox]\npath = "{tmp}/outbox.db"\n'
                    f'[[sources]]\n{source}\nw1_dir = "{tmp}"\n')
    return path


def hub_toml(tmp: Path, tls: str = "") -> Path:
    path = tmp / "hub.toml"
    path.write_text(f'data_dir = "{tmp}/hub"\n[mqtt]\nhost = "127.0.0.1"\n'
                    f'password = "env:TP_TEST_MISSING"\n{tls}\n[storage]\nmode = "sqlite"\n')
    return path


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_check_config_takes_the_file_after_c_as_the_other_subcommands_do(
        program: str, tmp_path: Path) -> None:
    path = (agent_toml if program == "edge-agent" else hub_toml)(tmp_path)
    positional = cli(program, "check-config", "--skip-secrets", str(path))
    option = cli(program, "check-config", "-c", str(path), "--skip-secrets")
    assert positional.returncode == option.returncode == 0, (positional, option)
    assert option.stdout == positional.stdout
    both = cli(program, "check-config", "-c", str(path), str(tmp_path / "other.toml"))
    assert both.returncode == 2
    assert "two config files given" in both.stderr


def test_hub_dlq_takes_c_after_its_subcommand_and_before_it(tmp_path: Path) -> None:
    path = hub_toml(tmp_path)
    want = f"hub: no hub data in {tmp_path}/hub"
    after = cli("hub", "dlq", "list", "-c", str(path))
    before = cli("hub", "dlq", "-c", str(path), "list")
    assert after.returncode == before.returncode == 1, (after, before)
    assert after.stderr.startswith(want) and before.stderr.startswith(want), (after, before)
    # the one after the subcommand is the one meant
    both = cli("hub", "dlq", "-c", str(tmp_path / "nope.toml"), "show", "x", "-c", str(path))
    assert both.stderr.startswith(want), both.stderr
    replay = cli("hub", "dlq", "replay", "--all", "-c", str(path))
    assert replay.stderr.startswith(want), replay.stderr


def test_hub_dlq_alone_says_what_it_can_do_in_words() -> None:
    result = cli("hub", "dlq")
    assert result.returncode == 2, result
    assert "dlq_command" not in result.stderr
    assert result.stderr.startswith("hub dlq: say what to do with the dead letters")
    for line in ("hub dlq list", "hub dlq show ID", "hub dlq replay"):
        assert line in result.stderr, result.stderr
    assert "-c FILE" in result.stderr


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_program_run_without_a_command_lists_its_commands(program: str) -> None:
    result = cli(program)
    assert result.returncode == 2, result
    assert "required" not in result.stderr
    assert f"{program}: say what to do: run, check-config" in result.stderr, result.stderr


@pytest.mark.parametrize(("program", "args", "example"), [
    ("edge-agent", ["check-config", "-c"], "deploy/agent.example.toml"),
    ("edge-agent", ["run", "-c"], "deploy/agent.example.toml"),
    ("edge-agent", ["probe", "-c"], "deploy/agent.example.toml"),
    ("hub", ["check-config"], "deploy/hub/hub.toml"),
    ("hub", ["dlq", "list", "-c"], "deploy/hub/hub.toml"),
])
def test_a_missing_config_file_is_said_missing_with_the_example_to_start_from(
        program: str, args: list[str], example: str, tmp_path: Path) -> None:
    missing = tmp_path / "etc" / "thermopipe.toml"
    result = cli(program, *args, str(missing))
    assert result.returncode == 2, result
    assert "invalid configuration" not in result.stderr
    assert "cannot read" not in result.stderr
    assert result.stderr.strip() == (
        f"no configuration file {missing} (it does not exist); start from the example: "
        f"cp {ROOT / example} {missing}, then edit it; or name another file with -c FILE")
    assert (ROOT / example).is_file()


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_skip_secrets_skips_only_the_secrets(program: str, tmp_path: Path) -> None:
    """install.sh's self-check on the Pi: the credential exists only while the service runs,
    but a CA file that is not there must still be found."""
    tls = f'[mqtt.tls]\nca_file = "{tmp_path}/no-such-ca.pem"'
    path = (agent_toml if program == "edge-agent" else hub_toml)(tmp_path, tls)
    skipped = cli(program, "check-config", "--skip-secrets", str(path))
    assert skipped.returncode == 2, skipped
    assert "mqtt.tls.ca_file" in skipped.stderr and "does not exist" in skipped.stderr
    assert "TP_TEST_MISSING" not in skipped.stderr  # the secret was not read
    # the file meant for another machine: its form only (the old flag still works, as before)
    for flag in ("--for-another-machine", "--no-secrets"):
        elsewhere = cli(program, "check-config", flag, str(path))
        assert elsewhere.returncode == 0, (flag, elsewhere)
        assert f"not checked ({flag}): secrets, files, directories" in elsewhere.stdout
    # with the CA in place, --skip-secrets passes and lists the unread secret
    (tmp_path / "no-such-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    passed = cli(program, "check-config", "--skip-secrets", str(path))
    assert passed.returncode == 0, passed
    assert "env:TP_TEST_MISSING" in passed.stdout and "--skip-secrets" in passed.stdout
    assert "not checked" not in passed.stdout


def test_a_misspelt_source_kind_is_said_in_the_projects_words(tmp_path: Path) -> None:
    path = agent_toml(tmp_path, source='kind = "simulatr"\nscenario = "freezer_failing"')
    result = cli("edge-agent", "check-config", str(path))
    assert result.returncode == 2, result
    assert ("  sources[0].kind: unknown source kind 'simulatr' (did you mean 'simulator'?); "
            "one of: serial, onewire, simulator") in result.stderr.splitlines(), result.stderr
    assert "Input tag" not in result.stderr
    path.write_text(path.read_text().replace('kind = "simulatr"\n', ""))
    result = cli("edge-agent", "check-config", str(path))
    assert "  sources[0].kind: missing (this key is required)" in result.stderr.splitlines()


def test_a_missing_package_names_the_pip_command_of_this_installation() -> None:
    from program_support.extras import require
    from schemas.errors import MissingDependency

    with pytest.raises(MissingDependency) as caught:
        require("hub", "hub run", ["thermopipe_test_no_such_module"])
    # run from this checkout: this interpreter's pip, the checkout, editable
    assert str(caught.value) == (
        "hub run needs thermopipe_test_no_such_module, which is not installed: "
        f"{sys.executable} -m pip install -e '{ROOT}[hub]'")
