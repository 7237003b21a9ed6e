"""Identity caps (hub/identity_limits.py) without a broker: each cap refuses with its config key,
known identities always pass, a status's sensors count, refusals keep no state per identity and
log a bounded number of lines, the ingest decision makes them dead letters that are never
receipted, and the journal keeps the admitted identities across a restart. The real-hub flood
test is tests/hub_core/test_identity_flood.py."""

from __future__ import annotations

import itertools
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub.config import HubConfig, LimitsConfig
from hub.identity_limits import IDENTITY_LIMIT, IdentityLimits, RefusalLog
from hub.ingest_decision import decide_batch
from hub.journal import BatchRecord, Journal
from hub.validate import OrderTracker, Rejection
from schemas.codec import encode
from schemas.models import DeviceStatus, SensorInfo
from schemas.topics import Topics
from tests.hub_core.helpers import BASE_TIME, reading

TOPICS = Topics("t")
SMALL = LimitsConfig(max_sites=2, max_devices_per_site=3, max_devices=4,
                     max_sensors_per_device=2, max_sensors=5)


def status(site: str, device: str, sensors: list[str]) -> DeviceStatus:
    return DeviceStatus(event_id=f"st-{site}-{device}-{len(sensors)}", site=site,
                        device_id=device, time=BASE_TIME, clock_synced=True, online=True,
                        reason="birth", session=1,
                        sensors=[SensorInfo(sensor_id=s, unit="degC", source="simulator")
                                 for s in sensors])


def refusal(limits: IdentityLimits, site: str, device: str, sensor: str = "t1") -> str | None:
    out = limits.check(reading(1, site=site, device=device, sensor=sensor))
    return out.reason if isinstance(out, Rejection) else None


@pytest.mark.parametrize(("steps", "key"), [
    ([("a", "d1"), ("b", "d1"), ("c", "d1")], "limits.max_sites"),
    ([("a", "d1"), ("a", "d2"), ("a", "d3"), ("a", "d4")], "limits.max_devices_per_site"),
    ([("a", "d1"), ("a", "d2"), ("b", "d3"), ("b", "d4"), ("b", "d5")], "limits.max_devices"),
])
def test_each_device_and_site_cap_refuses_with_its_config_key(
        steps: list[tuple[str, str]], key: str) -> None:
    limits = IdentityLimits(SMALL)
    *admitted, (site, device) = steps
    for s, d in admitted:
        assert refusal(limits, s, d) is None
    reason = refusal(limits, site, device)
    assert reason is not None and key in reason and "hub's config" in reason
    # the refused identity was not admitted: asking again refuses again
    assert refusal(limits, site, device) == reason


def test_sensor_caps_per_device_and_in_all() -> None:
    limits = IdentityLimits(SMALL)
    assert refusal(limits, "a", "d1", "t1") is None
    assert refusal(limits, "a", "d1", "t2") is None
    assert "limits.max_sensors_per_device" in (refusal(limits, "a", "d1", "t3") or "")
    for site, device in (("a", "d2"), ("a", "d3"), ("b", "d4")):
        assert refusal(limits, site, device, "t1") is None
    assert "limits.max_sensors " in (refusal(limits, "b", "d4", "t2") or "") + " "  # 6th
    assert limits.refused == {"site": 0, "device": 0, "sensor": 2}
    # known identities always pass, whatever is refused around them
    assert refusal(limits, "a", "d1", "t2") is None


def test_a_status_admits_its_device_and_the_sensors_it_lists() -> None:
    limits = IdentityLimits(SMALL)
    assert limits.check(status("a", "d1", [])) == status("a", "d1", [])
    assert limits.take_new() == [("a", "d1", "")]
    assert not isinstance(limits.check(status("a", "d1", ["t1", "t2"])), Rejection)
    assert limits.take_new() == [("a", "d1", "t1"), ("a", "d1", "t2")]
    refused = limits.check(status("a", "d1", ["t1", "t2", "t3"]))  # three sensors: past 2
    assert isinstance(refused, Rejection) and refused.code == IDENTITY_LIMIT
    assert "max_sensors_per_device" in refused.reason
    assert limits.sensors == 2 and limits.take_new() == []


def test_known_identities_are_kept_across_a_restart_even_past_lowered_caps(
        tmp_path: Path) -> None:
    journal = Journal(tmp_path / "hub.sqlite3")
    limits = IdentityLimits(LimitsConfig(), journal.load_identities())
    for site in ("a", "b", "c"):
        assert refusal(limits, site, "d1") is None
    journal.record(BatchRecord(identities=limits.take_new()))
    journal.close()

    journal = Journal(tmp_path / "hub.sqlite3")  # the restarted hub, with lower caps
    restarted = IdentityLimits(SMALL, journal.load_identities())
    journal.close()
    assert (restarted.sites, restarted.devices, restarted.sensors) == (3, 3, 3)
    assert restarted.over_caps() == ["limits.max_sites: 3 sites known"]
    for site in ("a", "b", "c"):  # admitted once, admitted for good
        assert refusal(restarted, site, "d1") is None
    assert "limits.max_sites" in (refusal(restarted, "d", "d1") or "")
    assert restarted.take_new() == []


def test_refusals_keep_no_state_per_identity() -> None:
    limits = IdentityLimits(LimitsConfig(max_sites=1))
    assert refusal(limits, "a", "d1") is None
    events = [reading(1, site=f"s{i}", device=f"d{i}", sensor=f"t{i}") for i in range(2_000)]
    for event in events[:200]:  # warm-up: first-use allocations are not per identity
        limits.check(event, 0.0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for event in events:
            assert isinstance(limits.check(event, 1.0), Rejection)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 5_000, f"{grown} bytes kept for 2,000 refused identities"
    assert limits.refused["site"] == 2_200 and limits.sites == 1


def test_refusal_log_lines_are_bounded_per_cap() -> None:
    log = RefusalLog(log_every_s=60.0)
    for i in range(100_000):
        log.note("limits.max_sites", f"s{i}/d", now=i / 10_000)  # 100,000 in 10 s
    lines = log.due(10.0)
    assert len(lines) == 1 and lines[0].count == 100_000 and lines[0].first
    assert lines[0].example == "s99999/d"
    log.note("limits.max_sites", "x/d", now=20.0)
    assert log.due(20.0) == []  # within a minute of the last line: counted, not logged
    log.note("limits.max_devices", "y/d", now=21.0)
    assert [(x.key, x.count, x.first) for x in log.due(21.0)] == [
        ("limits.max_devices", 1, True)]
    assert [(x.key, x.count, x.first) for x in log.due(70.0)] == [
        ("limits.max_sites", 1, False)]
    assert log.due(1_000.0) == []  # nothing refused since: no line


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    received_at: float
    replay_row: int | None = None


def test_the_ingest_decision_dead_letters_identities_past_a_cap() -> None:
    """After the contract and topic checks: a dead letter with reason code identity_limit, its
    seq never held (no receipt, no loss-detector state for an identity the hub refused); a
    replay gets the same outcome; the admitted identity's events go on."""
    limits = IdentityLimits(LimitsConfig(max_sites=1))
    good = reading(1, site="home", device="d1")
    invented = [reading(i, site=f"x{i}", device="d1") for i in range(1, 4)]
    batch = [Msg(TOPICS.for_event(e), encode(e), 1.0) for e in (good, *invented)]
    batch.append(Msg(TOPICS.for_event(invented[0]), encode(invented[0]), 1.0, replay_row=7))
    batch.append(Msg(TOPICS.for_event(invented[0]), b'{"kind": "reading", "seq": 5}', 1.0))
    ids = itertools.count()
    decision = decide_batch(batch, TOPICS, max_size=4096, late_after_s=600,
                            tracker=OrderTracker(), known_ids=lambda _ids: set(),
                            new_id=lambda: f"dl{next(ids)}", limits=limits)
    assert [p.message.event_id for p in decision.pending] == [good.event_id]
    assert [d.reason_code for d in decision.dead] == [IDENTITY_LIMIT] * 3 + ["invalid"]
    assert all("limits.max_sites" in d.reason for d in decision.dead[:3])
    assert decision.held == {("home", "d1"): [1]}  # nothing of a refused identity
    assert [(r.accepted, r.reason_code) for r in decision.replays] == [(False, IDENTITY_LIMIT)]
    assert limits.take_new() == [("home", "d1", "t1")]
    assert limits.take_refused() == {"site": 4}


def test_the_limits_section_has_documented_defaults() -> None:
    limits = HubConfig().limits
    assert (limits.max_sites, limits.max_devices_per_site, limits.max_devices,
            limits.max_sensors_per_device, limits.max_sensors) == (100, 1_000, 2_000, 64,
                                                                   10_000)
    readme = (Path(__file__).resolve().parents[2] / "hub" / "README.md").read_text()
    for key in LimitsConfig.model_fields:
        assert key in readme, f"[limits] {key} is not in hub/README.md"
