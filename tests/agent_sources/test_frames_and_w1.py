"""Pure parts of the sources: frame mapping, sequence gaps, w1_slave parsing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.decide.types import Reading
from edge_agent.sources.base import SensorSpec
from edge_agent.sources.frames import FrameHandler
from edge_agent.sources.onewire import parse_w1_slave
from firmware_sim.device import Condition, Sample
from firmware_sim.w1_tree import render_w1_slave
from schemas.serial_protocol import (
    ErrorCode,
    Hello,
    ProtocolError,
    ReadingFrame,
    SensorError,
    SensorInfoFrame,
)

S1, S2 = "28-0000075a1b2c", "28-00000a3f9e21"


def test_frames_become_readings_and_faults() -> None:
    h = FrameHandler("t")
    assert h.handle(Hello("1.0.0", "pico-1", 5000, (SensorInfoFrame(S1), SensorInfoFrame(S2, "F"))),
                    1.0) is None
    assert h.firmware == "1.0.0 (pico-1)"
    assert h.sensors == [SensorSpec(S1, "degC"), SensorSpec(S2, "degF")]
    assert h.handle(ReadingFrame(S1, 85.0, 0, 10), 2.0) == Reading(S1, 2.0, 85.0)
    out = [h.handle(SensorError(S2, code, i + 1, 10), 3.0) for i, code in enumerate(ErrorCode)]
    assert [r.fault for r in out if r is not None] == ["disconnected", "read_failed",
                                                       "crc_error"]
    assert h.handle(ProtocolError("bad checksum"), 4.0) is None
    assert h.counters.readings == 1
    assert h.counters.sensor_errors == 3
    assert h.counters.seq_gaps == 0


def test_seq_gaps_are_counted_but_not_across_a_reboot() -> None:
    h = FrameHandler("t")
    h.handle(ReadingFrame(S1, 1.0, 5, 0), 0)
    h.handle(ReadingFrame(S1, 1.0, 9, 0), 0)  # 6, 7, 8 lost
    assert h.counters.seq_gaps == 3
    h.handle(Hello("1", "d", 1000, (SensorInfoFrame(S1),)), 0)  # reboot: seq restarts
    h.handle(ReadingFrame(S1, 1.0, 0, 0), 0)
    h.handle(ReadingFrame(S1, 1.0, 1, 0), 0)
    assert h.counters.seq_gaps == 3
    h.handle(ReadingFrame(S1, 1.0, 0, 0), 0)  # backwards without HELLO: not a gap either
    assert h.counters.seq_gaps == 3


def test_configured_unit_wins_and_unknown_units_are_counted() -> None:
    h = FrameHandler("t", {S1: SensorSpec(S1, "degF")})
    h.handle(Hello("1", "d", 1000, (SensorInfoFrame(S1), SensorInfoFrame(S2, "K"))), 0)
    assert h.sensors == [SensorSpec(S1, "degF")]
    assert h.counters.unknown_unit == 1


def _sample(condition: Condition, milli: int = 23125) -> Sample:
    return Sample(0, S1, condition, milli, milli)


def test_w1_slave_files_as_the_kernel_writes_them() -> None:
    ok = render_w1_slave(_sample(Condition.OK, -10062))
    assert ok is not None
    assert parse_w1_slave(S1, ok, 5.0) == Reading(S1, 5.0, -10.062)
    power_on = render_w1_slave(_sample(Condition.POWER_ON))
    assert power_on is not None
    assert parse_w1_slave(S1, power_on, 5.0).value == 85.0  # the decider rejects it, not us
    crc = render_w1_slave(_sample(Condition.CRC_ERROR))
    assert crc is not None
    assert parse_w1_slave(S1, crc, 5.0).fault == "crc_error"
    failed = render_w1_slave(_sample(Condition.READ_FAILED))
    assert failed is not None
    assert parse_w1_slave(S1, failed, 5.0).fault == "read_failed"
    assert parse_w1_slave(S1, "", 5.0).fault == "read_failed"
    assert parse_w1_slave(S1, "xx : crc=00 YES\nxx t=abc\n", 5.0).fault == "read_failed"


@given(st.integers(min_value=-55000, max_value=125000))
def test_any_good_w1_value_round_trips(milli: int) -> None:
    # quantised like a 12-bit DS18B20 (1/16 degC), as the simulator writes it
    text = render_w1_slave(_sample(Condition.OK, milli))
    assert text is not None
    reading = parse_w1_slave(S1, text, 0.0)
    assert reading.fault is None
    assert reading.value is not None
    assert abs(reading.value - milli / 1000) <= 0.0625


@given(st.text(max_size=200))
def test_garbage_w1_content_is_a_fault_never_a_crash(text: str) -> None:
    reading = parse_w1_slave(S1, text, 0.0)
    assert (reading.value is None) == (reading.fault is not None)
