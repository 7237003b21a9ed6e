"""The three sources against real things: a pty with a by-id style link, a w1 tree, the sim."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from edge_agent.decide.types import Reading
from edge_agent.sources import SensorSource
from edge_agent.sources.onewire import OneWireSource
from edge_agent.sources.serial_source import SerialSource
from edge_agent.sources.simulator import SimulatorSource
from firmware_sim import device as fw
from firmware_sim.device import Condition, Sample, expected
from firmware_sim.pty_transport import PtyTransport
from firmware_sim.simulation import Simulation
from firmware_sim.w1_tree import W1Tree
from schemas.serial_protocol import ReadingFrame, SensorError
from tests.agent_sources.helpers import LINE_FAULTS, UNPLUG, Collect, load

pytestmark = pytest.mark.timeout(90)
FAULTS = {"MISSING": "disconnected", "READ_FAILED": "read_failed", "CRC": "crc_error"}


def _expected_readings(text: str) -> list[tuple[str, float | None, str | None]]:
    out: list[tuple[str, float | None, str | None]] = []
    for f in expected(fw.script(load(text))).frames:
        if isinstance(f, ReadingFrame):
            out.append((f.sensor_id, f.value, None))
        elif isinstance(f, SensorError):
            out.append((f.sensor_id, None, FAULTS[f.code.value]))
    return out


def _simple(readings: list[Reading]) -> list[tuple[str, float | None, str | None]]:
    return [(r.sensor_id, r.value, r.fault) for r in readings]


def test_every_source_satisfies_the_interface(tmp_path: Path) -> None:
    sources: list[SensorSource] = [
        SerialSource("/dev/null-not-there"), OneWireSource(tmp_path),
        SimulatorSource("greenhouse_day")]
    for s in sources:
        assert isinstance(s, SensorSource)


def test_serial_over_a_pty_gets_every_valid_frame_and_counts_the_rest(tmp_path: Path) -> None:
    link = tmp_path / "ttyTHERMO"
    sink = Collect()
    with PtyTransport(link) as pty:
        source = SerialSource(str(link), reopen_max_s=0.2)
        source.start(sink)
        try:
            deadline = time.monotonic() + 10
            while not source.connected and time.monotonic() < deadline:
                time.sleep(0.02)
            assert source.connected
            with Simulation(load(LINE_FAULTS), speed=300, sinks=[pty]) as sim:
                assert sim.wait(30)
            want = _expected_readings(LINE_FAULTS)
            assert sink.wait_for(lambda rs: len(rs) >= len(want), 10)
        finally:
            source.stop()
    exp = expected(fw.script(load(LINE_FAULTS)))
    assert _simple(sink.readings) == want
    counters = source.counters()
    assert counters["bad_checksum"] == exp.bad_checksum == 3
    assert counters["cut_lines"] == exp.cut_lines == 2
    assert counters["garbage_bytes"] == exp.garbage_bytes
    # the cut frames are missing from the seq stream: the bad-checksum ones too
    assert counters["seq_gaps"] == exp.bad_checksum + exp.cut_lines
    assert counters["reconnects"] == 0
    assert source.firmware.startswith("sim-1.0.0")
    assert {s.sensor_id for s in source.sensors} == {"28-0000075a1b2c", "28-00000a3f9e21"}


def test_serial_unplug_reports_device_lost_and_recovers_by_the_same_path(
        tmp_path: Path) -> None:
    link = tmp_path / "ttyTHERMO"
    sink = Collect()
    sid = "28-0000056c3d4e"
    with PtyTransport(link) as pty:
        source = SerialSource(str(link), reopen_min_s=0.05, reopen_max_s=0.2)
        source.start(sink)
        try:
            deadline = time.monotonic() + 10
            while not source.connected and time.monotonic() < deadline:
                time.sleep(0.02)
            with Simulation(load(UNPLUG), speed=30, sinks=[pty]) as sim:
                assert sink.wait_for(lambda rs: any(r.fault == "device_lost" for r in rs), 20)
                lost_at = next(i for i, r in enumerate(sink.readings)
                               if r.fault == "device_lost")
                # back: good readings again after the loss, through the same configured path
                assert sink.wait_for(
                    lambda rs: any(r.value is not None for r in rs[lost_at:]), 20)
                assert sim.wait(30)
        finally:
            source.stop()
    assert len(pty.paths) == 2 and pty.paths[0] != pty.paths[1]  # a new tty number
    lost = [r for r in sink.readings if r.fault == "device_lost"]
    assert [r.sensor_id for r in lost] == [sid]
    assert "disappeared" in lost[0].detail
    counters = source.counters()
    assert counters["reconnects"] == 1
    assert counters["device_lost"] == 1
    assert counters["hellos"] >= 2
    assert all(r.value == -18.5 for r in sink.readings if r.fault is None)


def test_serial_keeps_retrying_a_missing_port_and_reports_configured_sensors_lost(
        tmp_path: Path) -> None:
    from edge_agent.sources.base import SensorSpec
    sink = Collect()
    source = SerialSource(str(tmp_path / "nothing"), sensors=[SensorSpec("t1")],
                          reopen_min_s=0.01, reopen_max_s=0.05)
    source.start(sink)
    try:
        assert sink.wait_for(lambda rs: len(rs) == 1)
        deadline = time.monotonic() + 10
        while source.counters()["open_failures"] < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        source.stop()
    assert source.counters()["open_failures"] >= 5
    assert _simple(sink.readings) == [("t1", None, "device_lost")]  # once, not per attempt


def test_simulator_source_delivers_the_scripted_readings(tmp_path: Path) -> None:
    sink = Collect()
    source = SimulatorSource(_scenario_file(tmp_path, LINE_FAULTS), speed=600)
    source.start(sink)
    try:
        assert source.finished.wait(30)
    finally:
        source.stop()
    assert _simple(sink.readings) == _expected_readings(LINE_FAULTS)
    assert source.counters()["bad_checksum"] == 3


def test_simulator_source_reports_a_scripted_unplug(tmp_path: Path) -> None:
    sink = Collect()
    source = SimulatorSource(_scenario_file(tmp_path, UNPLUG), speed=600)
    source.start(sink)
    try:
        assert source.finished.wait(30)
    finally:
        source.stop()
    faults = [r for r in sink.readings if r.fault is not None]
    assert [(r.sensor_id, r.fault) for r in faults] == [("28-0000056c3d4e", "device_lost")]
    i = sink.readings.index(faults[0])
    assert sink.readings[i + 1:] and all(r.value == -18.5 for r in sink.readings[i + 1:])


def _scenario_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return str(path)


S1, S2, S3 = "28-0000075a1b2c", "28-00000a3f9e21", "28-00000b1e6c01"


def test_onewire_reads_values_faults_and_vanished_sensors(tmp_path: Path) -> None:
    tree = W1Tree(tmp_path)
    tree.create()
    tree.apply(Sample(0, S1, Condition.OK, 21500, 21500))
    tree.apply(Sample(0, S2, Condition.CRC_ERROR, None, -18000))
    sink = Collect()
    source = OneWireSource(tmp_path, interval_s=0.1, sensor_ids=None)
    source.start(sink)
    try:
        assert sink.wait_for(lambda rs: {r.sensor_id for r in rs} == {S1, S2})
        tree.apply(Sample(0, S2, Condition.DISCONNECTED, None, 0))  # gone from the bus
        assert sink.wait_for(lambda rs: any(r.fault == "disconnected" for r in rs))
    finally:
        source.stop()
    by = {(r.sensor_id, r.value, r.fault) for r in sink.readings}
    assert (S1, 21.5, None) in by
    assert (S2, None, "crc_error") in by
    assert (S2, None, "disconnected") in by
    c = source.counters()
    assert c["crc_errors"] >= 1
    assert c["disconnects"] == 1
    assert {s.sensor_id for s in source.sensors} == {S1, S2}


def test_onewire_a_hung_sensor_does_not_stall_the_others(tmp_path: Path) -> None:
    """A read that blocks (a FIFO nobody writes: like a read stuck in the kernel) must not
    delay the other sensor: it keeps its interval, and the hung one is not read twice."""
    tree = W1Tree(tmp_path)
    tree.create()
    tree.apply(Sample(0, S1, Condition.OK, 21500, 21500))
    (tmp_path / S3).mkdir()
    fifo = tmp_path / S3 / "w1_slave"
    os.mkfifo(fifo)
    sink = Collect()
    source = OneWireSource(tmp_path, interval_s=0.05)
    source.start(sink)
    try:
        assert sink.wait_for(lambda rs: sum(r.sensor_id == S1 for r in rs) >= 10)
        assert source.counters()["busy_skips"] >= 5
    finally:
        source.stop()
        # release the blocked read so the pool thread can end
        releaser = threading.Thread(target=lambda: fifo.write_text(""), daemon=True)
        releaser.start()
        releaser.join(5)
    assert not any(r.sensor_id == S3 and r.value is not None for r in sink.readings)
