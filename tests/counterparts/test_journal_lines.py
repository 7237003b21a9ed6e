"""What the agent and the hub write to the journal when they cannot start, checked without systemd
(the stream's $JOURNAL_STREAM made by hand): every line at priority error (``<3>``), and a bad
config one line per problem, each naming the file. Under a real systemd: test_systemd_units.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = {
    "edge-agent": [sys.executable, "-m", "edge_agent", "run", "-c"],
    "hub": [sys.executable, "-c", "import sys; from hub.cli import main; sys.exit(main())",
            "run", "-c"],
}


def run(program: str, config: Path, tmp: Path, journal: bool) -> tuple[int, list[str]]:
    stderr = tmp / f"{program}.stderr"
    stderr.touch()
    env = {k: v for k, v in os.environ.items()
           if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["PYTHONPATH"] = str(ROOT)
    if journal:
        st = os.stat(stderr)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    with stderr.open("w") as err:
        code = subprocess.run([*PROGRAMS[program], str(config)], cwd=ROOT, stderr=err,
                              stdout=subprocess.DEVNULL, env=env, timeout=60,
                              check=False).returncode
    return code, stderr.read_text().splitlines()


BAD = {  # one problem each: mqtt.port out of range
    "edge-agent": 'site = "lab"\ndevice_id = "ct-01"\n[mqtt]\nhost = "127.0.0.1"\nport = 70000\n'
                  '[[sources]]\nkind = "simulator"\nscenario = "greenhouse_day"\n',
    "hub": '[mqtt]\nhost = "127.0.0.1"\nport = 70000\n[storage]\nmode = "sqlite"\n',
}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_a_bad_config_is_one_error_line_per_problem_in_the_journal(
        program: str, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(BAD[program])
    code, lines = run(program, config, tmp_path, journal=True)
    assert code == 2, lines
    assert lines == [f"<3>invalid configuration {config}: mqtt.port: Input should be less than "
                     "or equal to 65535"], lines
    # two problems: two lines, each complete
    config.write_text(BAD[program].replace('port = 70000\n', 'port = 70000\nkeepalive_ss = 3\n'))
    code, lines = run(program, config, tmp_path, journal=True)
    assert code == 2 and len(lines) == 2, lines
    assert all(line.startswith(f"<3>invalid configuration {config}: mqtt") for line in lines), lines
    # on a terminal or a file: the table, no priority
    code, lines = run(program, config, tmp_path, journal=False)
    assert code == 2 and lines[0] == f"invalid configuration {config} (2 problems):", lines


def test_a_hub_that_cannot_start_says_so_at_priority_error(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"  # --workers 2 without a shared subscription
    config.write_text(BAD["hub"].replace("70000", "1883"))
    stderr = tmp_path / "stderr"
    stderr.touch()
    st = os.stat(stderr)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    with stderr.open("w") as err:
        code = subprocess.run([*PROGRAMS["hub"][:-2], "run", "--workers", "2", "-c", str(config)],
                              cwd=ROOT, stderr=err, stdout=subprocess.DEVNULL, env=env,
                              timeout=60, check=False).returncode
    lines = stderr.read_text().splitlines()
    assert code == 2 and lines and all(line.startswith("<3>hub run --workers") for line in lines), (
        lines)
