"""Fuzzing the three places untrusted bytes enter: serial lines, MQTT payloads, config files.

Random and mutated inputs (hypothesis): nothing crashes, nothing hangs (each input has a time
budget), and every rejection is one of our typed errors with a non-empty reason.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from program_support import plain_config
from program_support.pydantic_loading import load_config, parse_config
from schemas import ConfigError, DecodeError, Encoding, ProtocolError, ReadingEvent, decode
from schemas import encode as encode_event
from schemas.serial_protocol import ErrorCode as FwErrorCode
from schemas.serial_protocol import (
    FrameDecoder,
    Hello,
    ReadingFrame,
    SensorError,
    SensorInfoFrame,
    encode,
)

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BUDGET_S = 1.0  # far above what any single input needs: a hang or a blow-up shows as a failure

GOOD_FRAMES = [
    encode(Hello("1.2.0", "pico-01", 1000, (SensorInfoFrame("t1"), SensorInfoFrame("t2")))),
    encode(ReadingFrame("t1", 21.375, 5, 1234)),
    encode(ReadingFrame("t2", -127.0, 6, 1300)),
    encode(SensorError("t1", FwErrorCode.CRC, 7, 1400)),
]


def mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Flip, delete or insert bytes: the damage a noisy serial line or a bad writer does."""
    buf = bytearray(data)
    for op, pos, value in ops:
        if not buf:
            buf.append(value)
            continue
        at = pos % len(buf)
        if op == 0:
            buf[at] ^= value or 1
        elif op == 1:
            del buf[at]
        else:
            buf.insert(at, value)
    return bytes(buf)


_OPS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)),
                max_size=12)


# -- serial line protocol -----------------------------------------------------------------------

@FUZZ
@given(st.lists(st.sampled_from(GOOD_FRAMES) | st.binary(max_size=300), max_size=20), _OPS,
       st.integers(1, 64))
def test_serial_decoder_survives_random_and_mutated_streams(
        chunks: list[bytes], ops: list[tuple[int, int, int]], split: int) -> None:
    stream = mutate(b"".join(chunks), ops)
    decoder = FrameDecoder()
    started = time.perf_counter()
    items = []
    for i in range(0, len(stream), split):  # arbitrary read sizes, as a serial port delivers
        items.extend(decoder.feed(stream[i:i + split]))
    assert time.perf_counter() - started < BUDGET_S
    for item in items:
        if isinstance(item, ProtocolError):
            assert item.reason
    # the decoder's accounting adds up: nothing vanishes without being counted
    assert decoder.frames + decoder.errors >= len(items)


@FUZZ
@given(st.sampled_from(GOOD_FRAMES), st.integers(1, 200), st.integers(1, 255))
def test_a_frame_with_one_damaged_byte_is_always_rejected(frame: bytes, pos: int,
                                                          flip: int) -> None:
    # CRC-8 detects every burst error of up to 8 bits, so one damaged byte inside the frame
    # (between '$' and the newline) can never decode to a frame, let alone a different reading
    pos = 1 + pos % (len(frame) - 2)
    damaged = bytearray(frame)
    damaged[pos] ^= flip
    if damaged[pos] in b"$\n\r":
        return  # a new frame start or line end: a cut line, covered by the stream test
    decoder = FrameDecoder()
    items = decoder.feed(bytes(damaged))
    assert all(isinstance(item, ProtocolError) and item.reason for item in items), items
    assert decoder.frames == 0


# -- MQTT payloads ------------------------------------------------------------------------------

_EVENT = ReadingEvent(event_id="fuzz0000000000", site="lab", device_id="pi-01", sensor_id="t1",
                      seq=1, time=__import__("datetime").datetime(2026, 1, 1, tzinfo=__import__(
                          "datetime").UTC), clock_synced=True, value=21.5, unit="degC")
_PAYLOADS = [encode_event(_EVENT, Encoding.JSON), encode_event(_EVENT, Encoding.AVRO)]


@FUZZ
@given(st.sampled_from(_PAYLOADS) | st.binary(max_size=400), _OPS)
def test_payload_decoder_survives_random_and_mutated_payloads(payload: bytes,
                                                              ops: list[tuple[int, int, int]]
                                                              ) -> None:
    data = mutate(payload, ops)
    started = time.perf_counter()
    try:
        decode(data)
    except DecodeError as exc:
        assert exc.reason
    assert time.perf_counter() - started < BUDGET_S


# -- configuration files ------------------------------------------------------------------------

CONFIG_MODELS = [("edge_agent.config", "AgentConfig", ROOT / "deploy" / "agent.example.toml"),
                 ("hub.config", "HubConfig", ROOT / "deploy" / "hub" / "hub.toml")]
SECRETS = {"FUZZ_SECRET": "s3cret", "HUB_MQTT_PASSWORD": "s3cret", "INFLUXDB_TOKEN": "t0ken"}


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def example_text(example: Path) -> str:
    """The shipped example, with its systemd credential path swapped for an env secret."""
    return re.sub(r'"file:[^"]*"', '"env:FUZZ_SECRET"', example.read_text())


def test_shipped_examples_load_before_fuzzing(tmp_path: Path) -> None:
    for module, name, example in CONFIG_MODELS:
        path = tmp_path / example.name
        path.write_text(example_text(example))
        _load(path, _model(module, name))  # the fuzzing starts from valid files


def _model(module: str, name: str) -> type[Any]:
    model: type[Any] = getattr(importlib.import_module(module), name)
    return model


def _load(path: Path, model: type[Any]) -> Any:
    """The hub's pydantic models, or the agent's plain sections (program_support/plain_config)."""
    if dataclasses.is_dataclass(model):
        return plain_config.load(path, model)
    return load_config(path, model)


def _parse(doc: dict[str, Any], model: type[Any], source: str) -> Any:
    if dataclasses.is_dataclass(model):
        return plain_config.parse(doc, model, source)
    return parse_config(doc, model, source)


@pytest.mark.parametrize(("module", "name", "example"), CONFIG_MODELS)
def test_config_loader_survives_mutated_files(module: str, name: str, example: Path,
                                              tmp_path: Path) -> None:
    model = _model(module, name)
    text = example_text(example).encode()

    @FUZZ
    @given(_OPS)
    def check(ops: list[tuple[int, int, int]]) -> None:
        path = tmp_path / "fuzzed.toml"
        path.write_bytes(mutate(text, ops))
        try:
            _load(path, model)
        except ConfigError as exc:
            assert exc.errors
            assert all(reason for _, reason in exc.errors)
            assert str(path) in str(exc)

    check()


_TOML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=12)


@pytest.mark.parametrize(("module", "name", "example"), CONFIG_MODELS)
def test_config_models_reject_random_documents_with_key_paths(module: str, name: str,
                                                              example: Path) -> None:
    model = _model(module, name)
    base: dict[str, Any] = tomllib.loads(example_text(example))

    @FUZZ
    @given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=3), _TOML_VALUES)
    def check(path: list[str], value: Any) -> None:
        doc: dict[str, Any] = dict(base)
        node = doc
        for key in path[:-1]:
            child = node.get(key)
            node[key] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        node[path[-1]] = value
        try:
            _parse(doc, model, "fuzzed.toml")
        except ConfigError as exc:
            assert exc.errors
            for key_path, reason in exc.errors:
                assert reason
                assert key_path or "fuzzed.toml" in str(exc)
        except ValueError as exc:  # only our own ValueError subclasses may escape
            pytest.fail(f"untyped error escaped the config loader: {exc!r}")

    check()
