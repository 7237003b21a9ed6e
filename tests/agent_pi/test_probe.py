"""``edge-agent probe``: the install script's self-check reads every configured source once."""

from __future__ import annotations

from pathlib import Path

from firmware_sim.w1_tree import format_w1_slave, scratchpad
from tests.agent_pi.helpers import edge_agent, scenario


def w1_sensor(root: Path, sensor_id: str, text: str) -> None:
    (root / sensor_id).mkdir(parents=True)
    (root / sensor_id / "w1_slave").write_text(text)


def config(tmp: Path, sources: str) -> Path:
    cfg = tmp / "agent.toml"
    cfg.write_text('site = "farm"\ndevice_id = "pi-01"\n[mqtt]\nhost = "broker.invalid"\n'
                   'password = "file:/run/credentials/edge-agent.service/mqtt-password"\n'
                   'username = "pi-01"\n'
                   f'[outbox]\npath = "{tmp}/outbox.db"\n\n{sources}')
    return cfg


def test_probe_reads_a_1wire_bus_and_a_simulator(tmp_path: Path) -> None:
    w1 = tmp_path / "w1"
    w1_sensor(w1, "28-0316a2799c2f", format_w1_slave(scratchpad(int(-18.5 * 16))))
    bad = bytearray(scratchpad(21 * 16))
    bad[8] ^= 0xFF  # a CRC that does not match
    w1_sensor(w1, "28-0316a2799c30", format_w1_slave(bytes(bad)))
    scen = scenario(tmp_path / "sim.toml", 2)
    cfg = config(tmp_path, f'[[sources]]\nkind = "onewire"\nw1_dir = "{w1}"\n\n'
                           f'[[sources]]\nkind = "simulator"\nname = "sim"\nscenario = "{scen}"\n')
    result = edge_agent("probe", "-c", str(cfg), "--seconds", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "sources[0] onewire: 2 sensors" in out
    assert "28-0316a2799c2f      -18.500 degC" in out
    assert "28-0316a2799c30      FAULT crc_error" in out
    assert "sources[1] simulator sim: 2 sensors" in out
    assert "every source (2) gave readings" in out
    assert "Traceback" not in result.stderr


def test_probe_says_what_to_check_when_a_source_is_silent(tmp_path: Path) -> None:
    empty = tmp_path / "w1"
    empty.mkdir()
    cfg = config(tmp_path, f'[[sources]]\nkind = "onewire"\nw1_dir = "{empty}"\n')
    result = edge_agent("probe", "-c", str(cfg), "--seconds", "2")
    assert result.returncode == 1
    assert "sources[0] onewire: 0 sensors" in result.stdout
    assert "dtoverlay=w1-gpio" in result.stdout
    assert "1 of 1 source(s) gave no good reading" in result.stdout
