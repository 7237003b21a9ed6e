"""The line protocol of schemas/SERIAL_PROTOCOL.md: exact bytes, parser errors, stream decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.serial_protocol import (
    MAX_LINE,
    Ack,
    ErrorCode,
    Frame,
    FrameDecoder,
    Hello,
    Identify,
    Nak,
    NakCode,
    ProtocolError,
    ReadingFrame,
    SensorError,
    SensorInfoFrame,
    SetInterval,
    checksum,
    encode,
    parse_line,
)

DOC = Path(__file__).resolve().parents[2] / "schemas" / "SERIAL_PROTOCOL.md"
R1 = ReadingFrame("28-0000075a1b2c", 23.125, 41, 205013)


def test_checksum_is_crc8_maxim() -> None:
    assert checksum(b"123456789") == 0xA1
    assert checksum(bytes.fromhex("72014b467fff0e10")) == 0x57  # a real DS18B20 scratchpad


@pytest.mark.parametrize(
    ("frame", "line"),
    [
        (R1, b"$R,28-0000075a1b2c,23.125,41,205013*07\n"),
        (ReadingFrame("28-00000a3f9e21", -18.062, 42, 205014),
         b"$R,28-00000a3f9e21,-18.062,42,205014*12\n"),
        (SensorError("28-00000a3f9e21", ErrorCode.MISSING, 44, 210014),
         b"$E,28-00000a3f9e21,MISSING,44,210014*12\n"),
        (Hello("1.0.0", "pico-e66038b7", 5000,
               (SensorInfoFrame("28-0000075a1b2c"), SensorInfoFrame("28-00000a3f9e21"))),
         b"$HELLO,1,1.0.0,pico-e66038b7,5000,28-0000075a1b2c:C;28-00000a3f9e21:C*4E\n"),
        (Identify(), b"$ID*0E\n"),
        (SetInterval(10000), b"$INT,10000*9C\n"),
        (Ack("INT", "10000"), b"$ACK,INT,10000*60\n"),
        (Nak("INT", NakCode.RANGE), b"$NAK,INT,RANGE*D7\n"),
        (Nak("?", NakCode.BAD_FRAME), b"$NAK,?,BAD_FRAME*DC\n"),
    ],
)
def test_exact_bytes_match_protocol_md(frame: Frame, line: bytes) -> None:
    assert encode(frame) == line
    assert parse_line(line) == frame
    assert line.decode().rstrip("\n") in DOC.read_text()


def test_hello_without_sensors_and_crlf() -> None:
    hello = Hello("1.0.0", "dev", 1000, ())
    line = encode(hello)
    assert parse_line(line.replace(b"\n", b"\r\n")) == hello


def test_negative_zero_is_never_sent() -> None:
    assert b",0.000," in encode(ReadingFrame("s", -0.0001, 0, 0))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"R,28-0000075a1b2c,23.125,41,205013*07\n", "does not start with '$'"),
        (b"$R,28-0000075a1b2c,23.125,41,205013\n", "no '*'"),
        (b"$R,28-0000075a1b2c,23.125,41,205013*5D\n", "bad checksum 5D, expected 07"),
        (b"$R,28-0000075a1b2c,23.125,41,205013*07x\n", "two upper-case hex"),
        (b"$R,28-0000075a1b2c,23.125,41,205013*0e\n", "two upper-case hex"),
        (encode(Identify()).replace(b"ID", b"XY").replace(b"*0E", b"*%02X" % checksum(b"XY")),
         "unknown frame type 'XY'"),
        (b"$R,a,23.1,1,1*%02X\n" % checksum(b"R,a,23.1,1,1"), "3 decimals"),
        (b"$R,a,23.100,1*%02X\n" % checksum(b"R,a,23.100,1"), "3 fields, expected 4"),
        (b"$E,a,BOOM,1,1*%02X\n" % checksum(b"E,a,BOOM,1,1"), "unknown error code 'BOOM'"),
        (b"$R,a b,1.000,1,1*%02X\n" % checksum(b"R,a b,1.000,1,1"), "sensor id 'a b'"),
        (b"$R,a,1.000,-1,1*%02X\n" % checksum(b"R,a,1.000,-1,1"), "seq '-1'"),
        (b"$" + b"A" * MAX_LINE + b"*00\n", "exceeds 256"),
    ],
)
def test_parse_line_names_what_is_wrong(line: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=None) as info:
        parse_line(line)
    assert reason in info.value.reason
    assert info.value.line == line


def test_decoder_resyncs_after_garbage_cut_line_and_bad_checksum() -> None:
    good = encode(R1)
    stream = (b"\x00\xffnoise\n" + b"$R,28-00" + good + encode(R1, bad_checksum=True)
              + b"x" * 300 + b"$" + b"y" * 300 + b"\n" + good)
    decoder = FrameDecoder()
    items = decoder.feed(stream)
    assert [i for i in items if not isinstance(i, ProtocolError)] == [R1, R1]
    counts = (decoder.frames, decoder.cut_lines, decoder.bad_checksum, decoder.too_long)
    assert counts == (2, 1, 1, 1)
    assert decoder.garbage_bytes >= len(b"\x00\xffnoise\n") + 300
    assert decoder.errors == 3


def test_decoder_counts_malformed_and_resets() -> None:
    decoder = FrameDecoder()
    assert isinstance(decoder.feed(b"$R,x*00\n")[0], ProtocolError)
    assert decoder.malformed + decoder.bad_checksum == 1
    decoder.feed(b"$R,28-00")
    decoder.reset()
    assert decoder.feed(encode(R1)) == [R1]


def test_decoder_max_line_boundary() -> None:
    decoder = FrameDecoder(max_line=len(encode(R1)))
    assert decoder.feed(encode(R1)) == [R1]
    short = FrameDecoder(max_line=len(encode(R1)) - 1)
    assert isinstance(short.feed(encode(R1))[0], ProtocolError)
    assert short.too_long == 1
    assert short.feed(b"$ID*0E\n") == [Identify()]


# --- properties -------------------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9._-]{1,32}", fullmatch=True)
uints = st.integers(0, 2**32 - 1)
frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(ReadingFrame, ids, st.integers(-999_998_999, 999_998_999).map(lambda m: m / 1000),
              uints, uints),
    st.builds(SensorError, ids, st.sampled_from(ErrorCode), uints, uints),
    st.builds(Hello, ids, ids, st.integers(100, 86_400_000),
              st.lists(st.builds(SensorInfoFrame, ids, st.from_regex(r"[A-Za-z%]{1,8}",
                                                                 fullmatch=True)),
                       max_size=3).map(tuple)),
    st.builds(Ack, ids, ids),
    st.builds(Nak, ids, st.sampled_from(NakCode)),
    st.just(Identify()),
    st.builds(SetInterval, uints),
)


@given(frames)
def test_encode_parse_round_trip(frame: Frame) -> None:
    line = encode(frame)
    assert len(line) <= MAX_LINE
    assert parse_line(line) == frame
    with pytest.raises(ProtocolError, match="bad checksum"):
        parse_line(encode(frame, bad_checksum=True))


@given(st.binary(max_size=600), st.integers(1, 64))
def test_arbitrary_bytes_never_raise(data: bytes, chunk: int) -> None:
    decoder = FrameDecoder()
    for i in range(0, len(data), chunk):
        for item in decoder.feed(data[i : i + chunk]):
            assert isinstance(item, ProtocolError | Frame)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.binary(max_size=40), frames), min_size=1, max_size=8),
       st.integers(1, 50))
def test_garbage_between_frames_never_loses_the_next_frame(
    parts: list[tuple[bytes, Frame]], chunk: int
) -> None:
    stream = b"".join(garbage + encode(frame) for garbage, frame in parts)
    decoder = FrameDecoder()
    got: list[Frame | ProtocolError] = []
    for i in range(0, len(stream), chunk):
        got += decoder.feed(stream[i : i + chunk])
    good = [item for item in got if not isinstance(item, ProtocolError)]
    # Garbage can at worst forge extra frames (it holds '$' and a valid checksum), never hide one.
    expected = [frame for _, frame in parts]
    it = iter(good)
    assert all(any(frame == g for g in it) for frame in expected)
    assert decoder.frames >= len(expected)
