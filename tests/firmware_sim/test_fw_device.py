"""The device state machine with no I/O: host commands, reboots, the in-process source."""

from __future__ import annotations

from fw_helpers import ALL_FAULTS, UNPLUG, load

from firmware_sim import device as fw
from firmware_sim.device import Kind, SimulatedDevice, expected
from firmware_sim.inprocess import SimulatedSensors
from schemas.serial_protocol import (
    Ack,
    Hello,
    Identify,
    Nak,
    NakCode,
    ProtocolError,
    ReadingFrame,
    SetInterval,
    encode,
    parse_line,
)


def test_step_until_is_chunking_independent() -> None:
    scenario = load(ALL_FAULTS)
    device = SimulatedDevice(scenario)
    stepped = []
    for t in range(0, scenario.duration + 7_000, 7_000):
        stepped += device.step_until(t)
    assert stepped == fw.script(scenario)
    assert device.finished
    assert device.step_until(10**9) == []


def test_identify_and_set_interval() -> None:
    device = SimulatedDevice(load(ALL_FAULTS))
    device.step_until(12_000)  # samples at 0, 5 s, 10 s
    hello = parse_line(device.handle_command(encode(Identify())))
    assert isinstance(hello, Hello)
    assert hello.interval_ms == 5000
    assert hello.device_id == "test-dev"
    assert device.handle_command(b"$INT,20") == b""  # a command may arrive in pieces
    reply = device.handle_command(b"000*" + encode(SetInterval(20000))[-3:])
    assert parse_line(reply) == Ack("INT", "20000")
    times = sorted({e.t_ms for e in device.step_until(100_000) if e.sample})
    assert times[:3] == [30_000, 50_000, 70_000]  # last sample (10 s) + the new interval
    assert parse_line(device.handle_command(b"$INT,5*E2\n")) == Nak("?", NakCode.BAD_FRAME)
    assert parse_line(device.handle_command(encode(SetInterval(5)))) == Nak("INT", NakCode.RANGE)
    r = encode(ReadingFrame("x", 1.0, 0, 0))
    assert parse_line(device.handle_command(r)) == Nak("R", NakCode.UNKNOWN)


def test_stalled_device_answers_nothing() -> None:
    device = SimulatedDevice(load(ALL_FAULTS))
    device.step_until(365_000)  # stalled from 6m for 40s
    assert device.handle_command(encode(Identify())) == b""
    device.step_until(400_000)
    assert device.handle_command(encode(Identify())).startswith(b"$HELLO")


def test_unplug_reboots_the_device() -> None:
    script = fw.script(load(UNPLUG))
    kinds = [e.kind for e in script]
    assert kinds.count(Kind.HELLO) == 2
    unplug, replug = kinds.index(Kind.UNPLUG), kinds.index(Kind.REPLUG)
    assert (script[unplug].t_ms, script[replug].t_ms) == (480_000, 720_000)
    after = [e.frame for e in script[replug:] if isinstance(e.frame, ReadingFrame)]
    assert (after[0].seq, after[0].ms) == (0, 0)
    before = [e.frame for e in script[:unplug] if isinstance(e.frame, ReadingFrame)]
    assert before[-1].seq == 47
    assert all(f.value == -18.5 for f in before + after)
    assert len(before) + len(after) == 120 - 24


def test_in_process_source_matches_the_script() -> None:
    scenario = load(ALL_FAULTS)
    sensors = SimulatedSensors(scenario, speed=100, start=1000.0)
    assert sensors.next_due() == 1000.0
    got = []
    now = 1000.0
    while not sensors.finished:
        got += sensors.poll(now)
        now += 0.37
    frames = [g for g in got if not isinstance(g, ProtocolError)]
    exp = expected(fw.script(scenario))
    assert frames == exp.frames
    d = sensors.decoder
    assert (d.bad_checksum, d.cut_lines, d.garbage_bytes) == (3, 2, 150)
    assert sensors.next_due() is None


def test_in_process_command() -> None:
    sensors = SimulatedSensors(load(UNPLUG), speed=60)
    out = sensors.command(SetInterval(1000), now=1.0)  # scenario time 60 s
    assert out[-1] == Ack("INT", "1000")
    assert sum(isinstance(f, ReadingFrame) for f in out) == 7  # 0..60 s every 10 s
    assert sum(isinstance(f, ReadingFrame) for f in sensors.poll(1.5)) == 30  # 60..90 s every 1 s
