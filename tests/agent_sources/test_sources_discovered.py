"""Whether a birth's sensor list is whole (``DeviceStatus.sensors_complete``), and the device's
name for people in it. Issue 22 c: with ``sensors = []`` a birth sent before the first 1-Wire scan
listed no sensors, and the hub took that as every sensor removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.sources import frames
from edge_agent.sources.frames import FrameHandler
from edge_agent.sources.onewire import OneWireSource
from firmware_sim.device import Condition, Sample
from firmware_sim.w1_tree import W1Tree
from program_support.plain_config import parse
from schemas.serial_protocol import Hello, SensorInfoFrame

S1, S2 = "28-0000075a1b2c", "28-00000a3f9e21"


def _config(tmp_path: Path, **extra: object) -> AgentConfig:
    return parse({
        "site": "lab", "device_id": "pi-1",
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "outbox": {"path": str(tmp_path / "outbox.db"), "min_free_bytes": 0},
        "sources": [{"kind": "onewire", "w1_dir": str(tmp_path / "w1")}], **extra}, AgentConfig)


def test_a_onewire_source_is_discovered_after_its_first_scan_only(tmp_path: Path) -> None:
    tree = W1Tree(tmp_path)
    tree.create()
    tree.apply(Sample(0, S1, Condition.OK, 21500, 21500))
    source = OneWireSource(tmp_path, interval_s=3600)
    assert (source.discovered, source.sensors) == (False, [])
    source.poll_once(lambda _r: True)
    assert source.discovered and [s.sensor_id for s in source.sensors] == [S1]
    source.stop()
    # a scan that fails says nothing about the bus
    broken = OneWireSource(tmp_path / "not-there", interval_s=3600)
    broken.poll_once(lambda _r: True)
    assert not broken.discovered
    broken.stop()


def test_a_serial_device_is_discovered_once_its_hello_is_accepted() -> None:
    handler = FrameHandler("t")
    assert not handler.discovered
    handler.handle(Hello("1.0.0", "pico-1", 5000, (SensorInfoFrame(S1),)), 0.0)
    assert handler.discovered
    other = FrameHandler("t")
    other.handle(Hello("1.0.0", "pico-1", 5000, (), protocol=99), 0.0)  # refused
    assert not other.discovered


def test_a_hello_is_never_seen_as_whole_before_its_sensors_are_there(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A status is built on another thread while the source's thread takes the HELLO: at any
    moment inside it, the handler must not say its list is whole while the list is not there
    yet (CI: a birth said ``sensors_complete`` with no sensors, which withdraws every entity).
    Each log call inside the HELLO stands for such a moment."""
    handler = FrameHandler("t")
    seen: list[tuple[bool, list[str]]] = []

    def look(*_a: object, **_k: object) -> None:
        seen.append((handler.discovered, [s.sensor_id for s in handler.sensors]))

    monkeypatch.setattr(frames.log, "info", look)
    monkeypatch.setattr(frames.log, "error", look)
    handler.handle(Hello("1.0.0", "pico-1", 5000, (SensorInfoFrame(S1), SensorInfoFrame(
        S2, unit="furlongs"))), 0.0)
    assert seen and all(not whole or ids for whole, ids in seen), seen
    assert handler.discovered and [s.sensor_id for s in handler.sensors] == [S1]


def test_the_birth_says_whether_its_list_is_whole_and_carries_the_name(tmp_path: Path) -> None:
    tree = W1Tree(tmp_path / "w1")
    tree.create()
    tree.apply(Sample(0, S2, Condition.OK, -18000, -18000))
    agent = Agent(_config(tmp_path, name="Freezer"), clock_synced=lambda: True)
    try:
        before = agent.status_info()
        assert (before["sensors"], before["sensors_complete"]) == ([], False)
        assert before["device_name"] == "Freezer"
        agent.sources[0].poll_once(lambda _r: True)  # type: ignore[attr-defined]
        after = agent.status_info()
        assert [s.sensor_id for s in after["sensors"]] == [S2]
        assert after["sensors_complete"] is True
    finally:
        agent.sources[0].stop()
        agent.outbox.close()
    unnamed = Agent(_config(tmp_path / "b"), clock_synced=lambda: True)
    assert unnamed.status_info()["device_name"] == ""
    unnamed.outbox.close()
