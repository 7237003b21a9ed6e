"""Regression: frames that arrive just before the device goes away must still be delivered.

pyserial's ``read(n)`` with a timeout keeps collecting until it has ``n`` bytes or the timeout
ends; when the port fails meanwhile (EIO: the device was unplugged, or firmware-sim closed its
pty at the end of a scenario) it raises, and every byte it had already taken from the kernel is
thrown away. The reader used to ask for 4096 bytes at a time, so the last frames before an
unplug were lost whenever the unplug came within one read timeout of them: the end-to-end test
saw summaries one reading short per sensor (the last round of readings). The pty here is drained
(the kernel buffer is empty) before it is closed, exactly as firmware-sim closes it, and the read
timeout is long, so the old reader loses the frame every time.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_agent.sources.serial_source import SerialSource
from firmware_sim.pty_transport import PtyTransport
from firmware_sim.tcp_transport import TcpTransport
from schemas.serial_protocol import ReadingFrame, encode
from tests.agent_sources.helpers import Collect

pytestmark = pytest.mark.timeout(60)
SID = "28-0000075a1b2c"


@pytest.mark.parametrize("frames", [1, 3])
def test_frames_sent_right_before_an_unplug_are_delivered(tmp_path: Path, frames: int) -> None:
    link = tmp_path / "ttyTHERMO"
    sink = Collect()
    with PtyTransport(link) as pty:
        # a read timeout far longer than the test: the old reader held the bytes that long
        source = SerialSource(str(link), read_timeout_s=30.0, reopen_min_s=0.05,
                              reopen_max_s=0.2, identify=False)
        source.start(sink)
        try:
            deadline = time.monotonic() + 10
            while not source.connected and time.monotonic() < deadline:
                time.sleep(0.02)
            assert source.connected
            for seq in range(frames):
                pty.send(encode(ReadingFrame(SID, 20.0 + seq, seq, 1000 * seq)))
            # A pty moves written bytes to the reading side asynchronously (the kernel's flip
            # buffer), so an unplug at once could lose them in the kernel, before any reader.
            # Give that a moment; the old reader then held them for read_timeout_s (30 s).
            time.sleep(0.3)
            pty.unplug()  # waits until the reader took every byte, then closes the pty
            deadline = time.monotonic() + 10
            while source.counters()["device_lost"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert source.counters()["device_lost"] == 1
            # device_lost goes to every sensor heard: none at all if the frames were lost
            assert sink.wait_for(lambda rs: any(r.fault == "device_lost" for r in rs), 5), (
                f"the frames before the unplug never arrived: {sink.readings}")
        finally:
            source.stop()
    got = [(r.sensor_id, r.value, r.fault) for r in sink.readings]
    assert got[:frames] == [(SID, 20.0 + seq, None) for seq in range(frames)]
    assert got[frames:] == [(SID, None, "device_lost")]
    assert source.counters()["readings"] == frames


def test_socket_url_frames_sent_right_before_the_peer_closes_are_delivered() -> None:
    # pyserial's socket:// read(n) has the same shape: bytes collected, then "socket
    # disconnected" raised and the bytes thrown away
    sink = Collect()
    with TcpTransport("127.0.0.1", 0) as tcp:
        source = SerialSource(tcp.url, read_timeout_s=30.0, reopen_min_s=0.05,
                              reopen_max_s=0.2, identify=False)
        source.start(sink)
        try:
            assert tcp.connected.wait(10)
            # pyserial's socket:// open() flushes what already arrived (reset_input_buffer), as
            # a serial port's open does: send only once the open has returned, or a loaded
            # machine drops the frames in the flush (seen in CI)
            deadline = time.monotonic() + 10
            while not source.connected and time.monotonic() < deadline:
                time.sleep(0.01)
            assert source.connected
            for seq in range(3):
                tcp.send(encode(ReadingFrame(SID, 20.0 + seq, seq, 1000 * seq)))
            time.sleep(0.3)  # as above: the bytes reach the reader's socket, nothing more
            tcp.close()  # FIN after the data
            deadline = time.monotonic() + 10
            while source.counters()["device_lost"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sink.wait_for(lambda rs: any(r.fault == "device_lost" for r in rs), 5), (
                f"the frames before the close never arrived: {sink.readings}")
        finally:
            source.stop()
    got = [(r.sensor_id, r.value, r.fault) for r in sink.readings]
    assert got == [(SID, 20.0 + seq, None) for seq in range(3)] + [(SID, None, "device_lost")]


def test_socket_bytes_that_arrive_together_with_the_close_are_all_read() -> None:
    # The reader busy elsewhere (a loaded machine): frames and the peer's FIN are both queued
    # before the next read. pyserial's socket read(n) would collect the frames, see the EOF in
    # the same call, raise, and drop them; read_available must return every byte first.
    import socket

    import serial

    from edge_agent.sources.serial_source import open_port, read_available

    server = socket.create_server(("127.0.0.1", 0))
    try:
        port = open_port(f"socket://127.0.0.1:{server.getsockname()[1]}", 115200, 5.0)
        peer, _ = server.accept()
        frames = b"".join(encode(ReadingFrame(SID, 20.0 + seq, seq, 1000 * seq))
                          for seq in range(3))
        peer.sendall(frames)
        peer.close()
        time.sleep(0.2)  # both the bytes and the FIN are in the reader's socket now
        got = b""
        closed = False
        for _ in range(len(frames) + 1):  # at least one byte per call until the close
            try:
                got += read_available(port)
            except serial.SerialException:
                closed = True
                break
        assert closed
        assert got == frames
        port.close()
    finally:
        server.close()
