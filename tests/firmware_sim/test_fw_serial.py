"""The simulator on real transports, read through pyserial: a pty, TCP, unplug, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial
from fw_helpers import ALL_FAULTS, UNPLUG, Collector, decode, load

from firmware_sim import device as fw
from firmware_sim.device import Kind, expected
from firmware_sim.pty_transport import PtyTransport
from firmware_sim.simulation import Simulation
from firmware_sim.tcp_transport import TcpTransport
from firmware_sim.w1_tree import parse_w1_slave
from schemas.serial_protocol import Ack, Hello, Identify, ReadingFrame, SetInterval, encode

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def _assert_exact(data: bytes, text: str) -> None:
    frames, decoder = decode(data)
    exp = expected(fw.script(load(text)))
    assert frames == exp.frames
    assert (decoder.bad_checksum, decoder.cut_lines, decoder.garbage_bytes, decoder.malformed) == (
        exp.bad_checksum, exp.cut_lines, exp.garbage_bytes, 0)


def test_pty_carries_exactly_the_scripted_stream() -> None:
    with PtyTransport() as pty:
        assert pty.path is not None
        assert pty.path.startswith("/dev/pts/")
        with serial.Serial(pty.path, 115200, timeout=0.2) as ser:
            reader = Collector(ser)
            sim = Simulation(load(ALL_FAULTS), speed=600, sinks=[pty])
            with sim:
                assert sim.wait(20)
            pty.close()  # the reader sees the port go away
            data = reader.join()
    assert isinstance(reader.error, serial.SerialException)
    assert pty.dropped_bytes == 0
    _assert_exact(data, ALL_FAULTS)


def test_tcp_carries_exactly_the_scripted_stream_to_every_client() -> None:
    with TcpTransport() as tcp:
        with serial.serial_for_url(tcp.url, timeout=0.2) as a, \
                serial.serial_for_url(tcp.url, timeout=0.2) as b:
            assert tcp.connected.wait(5)
            while len(tcp._clients) < 2:  # accept runs in the transport's thread
                time.sleep(0.01)
            readers = [Collector(a), Collector(b)]
            with Simulation(load(ALL_FAULTS), speed=600, sinks=[tcp]) as sim:
                assert sim.wait(20)
            tcp.close()
            outputs = [r.join() for r in readers]
    assert outputs[0] == outputs[1]
    _assert_exact(outputs[0], ALL_FAULTS)


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_host_commands_are_answered(transport: str) -> None:
    scenario = load(UNPLUG.replace('duration = "4m"', 'duration = "1m"'))
    sink = PtyTransport() if transport == "pty" else TcpTransport()
    with sink:
        url = sink.path if isinstance(sink, PtyTransport) else sink.url
        with serial.serial_for_url(url, timeout=2) as ser:
            if isinstance(sink, TcpTransport):
                assert sink.connected.wait(5)  # accepted: the boot HELLO will reach us
            with Simulation(scenario, speed=10, sinks=[sink]):
                ser.write(encode(Identify()) + encode(SetInterval(500)))
                replies = []
                while len([f for f in replies if not isinstance(f, ReadingFrame)]) < 3:
                    line = ser.readline()
                    assert line, "no answer"
                    replies += decode(line)[0]
    others = [f for f in replies if not isinstance(f, ReadingFrame)]
    assert isinstance(others[0], Hello)
    assert isinstance(others[1], Hello)
    assert others[2] == Ack("INT", "500")


def _read_until_gone(path: str) -> tuple[bytes, str]:
    real = os.path.realpath(path)
    with serial.Serial(path, timeout=0.2) as ser:
        reader = Collector(ser)
        return reader.join(), real


def test_unplug_closes_the_tty_and_returns_at_a_new_path(tmp_path: Path) -> None:
    link = tmp_path / "serial" / "by-id" / "usb-thermopipe-if00"
    link.parent.mkdir(parents=True)
    scenario = load(UNPLUG)
    script = fw.script(scenario)
    with PtyTransport(link=link) as pty:
        first_path = pty.path
        assert first_path is not None
        assert os.readlink(link) == first_path
        with serial.Serial(str(link), timeout=0.2) as ser:
            reader = Collector(ser)
            sim = Simulation(scenario, speed=400, sinks=[pty])  # unplugged for 0.6 s
            sim.start()
            before = reader.join()
        assert isinstance(reader.error, serial.SerialException)
        assert not os.path.exists(first_path) or pty.path != first_path
        # The agent reopens the stable path once udev (here: the transport) brings it back.
        deadline = time.monotonic() + 10
        while not link.exists():
            assert time.monotonic() < deadline, "the link never came back"
            time.sleep(0.02)
        with serial.Serial(str(link), timeout=0.2) as ser:
            second_path = os.path.realpath(link)
            reader = Collector(ser)
            assert sim.wait(20)
            sim.stop()
            pty.close()
            after = reader.join()
    assert second_path != first_path
    assert pty.paths == [first_path, second_path]
    assert not link.exists()
    unplug = [e.kind for e in script].index(Kind.UNPLUG)
    assert decode(before)[0] == expected(script[:unplug]).frames
    # Lines sent between the replug and the reopen are flushed by pyserial's open(), as on
    # real hardware; everything after that arrives, up to the end.
    exp_after = expected(script[unplug:]).frames
    got_after = decode(after)[0]
    assert got_after
    assert got_after == exp_after[len(exp_after) - len(got_after):]
    # rebooted: seq restarted
    assert all(f.seq < 48 for f in got_after if isinstance(f, ReadingFrame))


def _cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "firmware_sim.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_serve_tcp_pty_and_w1(tmp_path: Path) -> None:
    scenario_file = tmp_path / "all.toml"
    scenario_file.write_text(ALL_FAULTS)
    w1 = tmp_path / "w1" / "devices"
    link = tmp_path / "ttyTHERMO"
    proc = _cli("serve", "--scenario", str(scenario_file), "--pty", "--link", str(link),
                "--tcp", "127.0.0.1:0", "--w1-dir", str(w1), "--speed", "600", "--wait")
    try:
        assert proc.stdout is not None
        lines = dict(proc.stdout.readline().split(" ", 1) for _ in range(4))
        lines = {k: v.strip() for k, v in lines.items()}
        assert lines["pty"].startswith("/dev/pts/")
        assert lines["link"] == str(link)
        assert lines["w1"] == str(w1)
        assert lines["tcp"].startswith("socket://127.0.0.1:")
        assert os.readlink(link) == lines["pty"]
        with serial.serial_for_url(lines["tcp"], timeout=0.2) as ser:
            data = Collector(ser).join()
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    _assert_exact(data, ALL_FAULTS)
    last = {s.sensor_id: s for s in fw.samples(load(ALL_FAULTS))}
    for sid, sample in last.items():
        assert parse_w1_slave((w1 / sid / "w1_slave").read_text()) == (True, sample.milli)
    assert not link.exists()


def test_cli_stops_on_sigterm() -> None:
    proc = _cli("serve", "--scenario", "greenhouse_day", "--pty", "--loop", "--speed", "100")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("pty /dev/pts/")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_cli_rejects_a_bad_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "greenhouse.toml"
    bad.write_text('duration = "1h"\n[[sensors]]\nid = "28-0000075a1b2c"\n'
                   'profile = { kind = "sawtooth" }\n')
    proc = _cli("serve", "--scenario", str(bad), "--pty")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert f"{bad}: sensors[0].profile.kind: unknown profile 'sawtooth'" in err
