"""Scenario files: loading, every error with its key path, deterministic scripts."""

from __future__ import annotations

import pytest
from fw_helpers import ALL_FAULTS, load

from firmware_sim import device as fw
from firmware_sim import scenario as scenarios
from firmware_sim import signals
from firmware_sim.cli import main
from firmware_sim.device import Condition, Kind, expected
from schemas.errors import ConfigError
from schemas.serial_protocol import ReadingFrame, SensorError

GOOD_SENSOR = '[[sensors]]\nid = "28-0000075a1b2c"\nprofile = { kind = "constant", value = 1 }\n'


@pytest.mark.parametrize("name", ["greenhouse_day", "freezer_failing", "flaky_sensor"])
def test_shipped_scenarios_load_and_script(name: str) -> None:
    scenario = scenarios.load(name)
    script = fw.script(scenario)
    assert script[0].kind is Kind.HELLO
    assert fw.script(scenario) == script  # deterministic
    assert expected(script).frames


def test_shipped_scenarios_script_their_faults() -> None:
    freezer = fw.samples(scenarios.load("freezer_failing"))
    conditions = {s.condition for s in freezer}
    assert {Condition.CRC_ERROR, Condition.DISCONNECTED} <= conditions
    assert any(s.milli == -127_000 for s in freezer)
    green = fw.samples(scenarios.load("greenhouse_day"))
    assert [s.milli for s in green if s.condition is Condition.POWER_ON] == [85_000]


@pytest.mark.parametrize(
    ("value", "ms"),
    [(90, 90_000), (1.5, 1500), ("750ms", 750), ("1h30m", 5_400_000), ("-3h", -10_800_000),
     ("2d", 172_800_000), ("+12h", 43_200_000), ("0.5s", 500)],
)
def test_durations(value: object, ms: int) -> None:
    assert scenarios.parse_duration(value) == ms


@pytest.mark.parametrize("value", ["", "10", "1x", "h", "1h 30", True, None, "1h-2m",
                                   float("inf"), float("nan"), 1.8e305, "9" * 400 + "h"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        scenarios.parse_duration(value)


def _errors(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        scenarios.loads(text, "greenhouse.toml")
    assert info.value.source == "greenhouse.toml"
    return list(info.value.errors)


def test_unknown_profile_names_key_path_and_choices() -> None:
    text = ('duration = "1h"\n' + GOOD_SENSOR +
            '[[sensors]]\nid = "28-00000a3f9e21"\nprofile = { kind = "sawtooth" }\n')
    with pytest.raises(ConfigError) as info:
        scenarios.loads(text, "greenhouse.toml")
    assert str(info.value) == (
        "greenhouse.toml: sensors[1].profile.kind: unknown profile 'sawtooth' "
        "(expected one of constant, ramp, sine, steps, piecewise)")


def test_every_problem_is_reported_with_its_path() -> None:
    text = """
duration = "1h"
interval = "1ms"
colour = "blue"
[[sensors]]
id = "ds18b20"
profile = { kind = "sine", mean = 20 }
noise = -1
[[faults]]
kind = "meltdown"
at = "1m"
[[faults]]
kind = "stall"
at = "soon"
"""
    errors = dict(_errors(text))
    assert set(errors) == {"interval", "colour", "sensors[0].id", "sensors[0].profile.amplitude",
                           "sensors[0].noise", "faults[0].kind", "faults[1].at",
                           "faults[1].duration"}
    assert errors["colour"] == "unknown key"
    assert errors["sensors[0].profile.amplitude"] == "missing"
    assert "unknown fault 'meltdown'" in errors["faults[0].kind"]
    assert "duration" in errors["faults[1].at"]


def test_cross_checks() -> None:
    text = ('duration = "1h"\n' + GOOD_SENSOR + GOOD_SENSOR +
            '[[faults]]\nkind = "crc_error"\nsensor = "28-ffffffffffff"\nat = "2h"\n'
            '[[faults]]\nkind = "missing"\nsensor = "28-0000075a1b2c"\nat = 0\ncount = 1\n'
            'duration = 5\n')
    assert _errors(text) == [
        ("sensors[1].id", "duplicate sensor id '28-0000075a1b2c'"),
        ("faults[0].at", "at or after the end of the scenario"),
        ("faults[0].sensor", "unknown sensor '28-ffffffffffff' (expected one of "
                             "['28-0000075a1b2c', '28-0000075a1b2c'])"),
        ("faults[1]", "give 'count' or 'duration', not both"),
    ]


def test_not_toml_and_missing_file(tmp_path: object) -> None:
    assert _errors("duration = ")[0][1].startswith("not valid TOML")
    with pytest.raises(ConfigError, match="no such file or shipped scenario"):
        scenarios.load("no_such_scenario")


def test_check_command(tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
                       ) -> None:
    bad = tmp_path / "bad.toml"  # type: ignore[operator]
    bad.write_text('duration = "1h"\n[[sensors]]\nid = "x"\nprofile = { kind = "sawtooth" }\n')
    assert main(["check", str(bad), "flaky_sensor"]) == 2
    out = capsys.readouterr().out
    assert f"{bad}: sensors[0].id:" in out
    assert f"{bad}: sensors[0].profile.kind: unknown profile 'sawtooth'" in out
    assert "flaky_sensor: ok (2 sensors, 9 faults)" in out
    assert main(["check", "greenhouse_day"]) == 0


def test_list_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    names = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["flaky_sensor", "freezer_failing", "greenhouse_day"]


def test_seed_changes_noise_but_not_faults() -> None:
    scenario = load(ALL_FAULTS)
    a, b = fw.samples(scenario, 1), fw.samples(scenario, 2)
    assert [s.milli for s in a] != [s.milli for s in b]
    assert [s.condition for s in a] == [s.condition for s in b]
    assert fw.samples(scenario, 1) == a


def test_all_faults_script() -> None:
    scenario = load(ALL_FAULTS)
    script = fw.script(scenario)
    samples = fw.samples(scenario)
    by = {c: [s for s in samples if s.condition is c] for c in Condition}
    assert len(by[Condition.POWER_ON]) == 1
    assert by[Condition.POWER_ON][0].t_ms == 30_000
    assert [s.t_ms for s in by[Condition.DISCONNECTED]] == [60_000, 65_000, 70_000, 75_000]
    assert len(by[Condition.MISSING]) == 2
    assert len(by[Condition.CRC_ERROR]) == 2
    assert len(by[Condition.READ_FAILED]) == 1
    # the stall: no samples in [6m, 6m40s)
    assert not [s for s in samples if 360_000 <= s.t_ms < 400_000]
    assert len(samples) == 2 * (120 - 8)
    exp = expected(script)
    assert (exp.bad_checksum, exp.cut_lines, exp.garbage_bytes) == (3, 2, 150)
    # seq counts every data frame, cut and corrupted ones included
    data = [e.frame for e in script if isinstance(e.frame, ReadingFrame | SensorError)]
    assert [f.seq for f in data] == list(range(len(data)))
    # the clock jumped back an hour at 7m: ms wraps like an unsigned 32-bit counter
    jumped = [f for f in data if f.ms > 2**31]
    assert jumped
    assert jumped[0].ms == 2**32 + 420_000 - 3_600_000


def test_signals() -> None:
    assert signals.ramp(0, 1, 3, 10, 20) == 1
    assert signals.ramp(20, 1, 3, 10, 20) == 2
    assert signals.ramp(99, 1, 3, 10, 20) == 3
    assert signals.sine(5, 10, 2, 20, 5) == 12
    assert round(signals.sine(15, 10, 2, 20, 5), 9) == 8
    pts = [(0, 1.0), (10, 2.0), (20, 0.0)]
    assert signals.steps(9, pts) == 1
    assert signals.steps(10, pts) == 2
    assert signals.piecewise(15, pts) == 1
    assert signals.piecewise(99, pts) == 0
    assert signals.quantize(23.13) == 370
    assert signals.quantize(23.13, 9) == 368
    assert signals.quantize(200) == 2000
    assert signals.raw_to_milli(-1) == -62
