"""The simulated 1-Wire sysfs tree: real w1_therm format, scripted temperatures and faults."""

from __future__ import annotations

from pathlib import Path

from fw_helpers import ALL_FAULTS, load

from firmware_sim import device as fw
from firmware_sim.device import Condition, Sample
from firmware_sim.simulation import Simulation
from firmware_sim.w1_tree import W1Tree, format_w1_slave, parse_w1_slave, scratchpad


def test_real_w1_slave_format() -> None:
    assert format_w1_slave(scratchpad(0x0172)) == (
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n")
    assert format_w1_slave(scratchpad(0x0550, power_on=True)).startswith(
        "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES")
    assert parse_w1_slave(format_w1_slave(scratchpad(-162))) == (True, -10125)


def _check(root: Path, sample: Sample) -> None:
    device = root / sample.sensor_id
    slaves = (root / "w1_bus_master1" / "w1_master_slaves").read_text().split()
    if sample.condition in (Condition.DISCONNECTED, Condition.MISSING):
        assert not device.exists()
        assert sample.sensor_id not in slaves
        return
    assert sample.sensor_id in slaves
    text = (device / "w1_slave").read_text()
    ok, milli = parse_w1_slave(text)
    if sample.condition is Condition.CRC_ERROR:
        assert not ok
        assert " NO\n" in text
    elif sample.condition is Condition.READ_FAILED:
        assert text.startswith("ff ff ff ff ff ff ff ff ff : crc=c9 NO")
    else:
        assert ok
        assert milli == sample.milli


def test_tree_follows_every_scripted_sample(tmp_path: Path) -> None:
    samples = fw.samples(load(ALL_FAULTS))
    tree = W1Tree(tmp_path)
    tree.create()
    assert (tmp_path / "w1_bus_master1" / "w1_master_slaves").read_text() == "not found.\n"
    for sample in samples:
        tree.apply(sample)
        _check(tmp_path, sample)
    seen = {s.condition for s in samples}
    assert seen == set(Condition)
    assert not list(tmp_path.rglob(".*.tmp"))  # atomic writes leave no temporary file
    tree.remove()
    assert list(tmp_path.iterdir()) == []


def test_tree_written_by_a_running_simulation(tmp_path: Path) -> None:
    scenario = load(ALL_FAULTS)
    root = tmp_path / "devices"
    with Simulation(scenario, speed=1200, w1=W1Tree(root)) as sim:
        assert sim.wait(20)
    last = {s.sensor_id: s for s in fw.samples(scenario)}
    for sample in last.values():
        _check(root, sample)
