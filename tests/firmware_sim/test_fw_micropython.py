"""The MicroPython reference firmware encodes exactly what protocol.py parses."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from schemas.serial_protocol import ErrorCode, ReadingFrame, SensorError, encode, parse_line

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware_sim" / "micropython" / "main.py"


def _pure_functions() -> dict[str, Any]:
    # The script needs machine/onewire and runs forever: take only its pure helpers.
    tree = ast.parse(FIRMWARE.read_text())
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef)
            and n.name in {"crc8", "frame", "rom_id", "fmt_milli"}]
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(FIRMWARE), "exec"), namespace)
    return namespace


def test_firmware_frames_match_the_protocol() -> None:
    fw = _pure_functions()
    assert fw["frame"]("R,28-0000075a1b2c,23.125,41,205013") == encode(
        ReadingFrame("28-0000075a1b2c", 23.125, 41, 205013)).decode()
    line = fw["frame"]("E,28-00000a3f9e21,CRC,45,215014").encode()
    assert parse_line(line) == SensorError("28-00000a3f9e21", ErrorCode.CRC, 45, 215014)
    for milli in (23125, -62, -10125, 0, 85000, -55000):
        sent = encode(ReadingFrame("s", milli / 1000, 0, 0)).split(b",")[2].decode()
        assert fw["fmt_milli"](milli) == sent
    rom = bytes([0x28, 0x2C, 0x1B, 0x5A, 0x07, 0x00, 0x00, 0x9F])
    assert fw["rom_id"](rom) == "28-0000075a1b2c"
