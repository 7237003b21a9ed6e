"""A flood of invented identities through a real hub process over a real Mosquitto.

One MQTT client (the test broker lets it publish anywhere, as a device account could under a
loose ACL) sends valid readings, each from a site, device and sensor never seen before, while a
control device sends its own. The hub runs with the default ``[limits]``: the first identities
fill the caps, every later one is a dead letter (``identity_limit``). Checked:

- the hub's RSS after the first 10,000 invented identities, half-way and after all of them: flat
  once its bounded caches are full (the issue measured +52 MB per 10,000 invented sites before
  the caps);
- ``/api/state`` does not grow past the caps;
- every refusal is counted (``thermopipe_hub_identity_refused_total``, as many as the pure
  :class:`~hub.identity_limits.IdentityLimits` refuses for the same sequence), and logged in a
  few lines, not one per message;
- every event of the control device is stored.

``THERMOPIPE_FLOOD_IDENTITIES`` sets how many (default: the issue's 100,000, about 25 s on a
loaded 2-core machine; fewer for a quick run, at least 20,000).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.config.sections import LimitsConfig
from hub.identity_limits import IdentityLimits
from tests.e2e.pipeline import HubProc
from tests.hub_core.helpers import Publisher, reading, wait_until
from tests.servers import Mosquitto, free_port

pytestmark = [pytest.mark.servers, pytest.mark.slow]

TOTAL = int(os.environ.get("THERMOPIPE_FLOOD_IDENTITIES", "100000"))
FIRST = 10_000
CONTROL_EVERY = 500  # a control event after every this many invented ones
# RSS after the first identities, in the middle of the flood and at its end. Caches that are
# bounded but fill with use (SQLite's page caches, malloc's free lists, the ingest queue and paho's
# buffers at their high-water mark) grow with how far behind a loaded machine lets the hub fall:
# the whole flood may add up to RSS_GROWTH_MAX; its second half, with those caches full, at most
# RSS_SECOND_HALF_MAX. State kept per invented identity would show in both: some 300 bytes per
# identity (three strings in a set) is 13 MB per second half of the 100,000.
RSS_GROWTH_MAX = 16 * 1024 * 1024
RSS_SECOND_HALF_MAX = 6 * 1024 * 1024
TEMPLATE = ('{{"kind":"reading","event_id":"{eid}","site":"{site}","device_id":"{device}",'
            '"sensor_id":"{sensor}","seq":{seq},"time":"2026-11-26T08:00:00.000000Z",'
            '"clock_synced":true,"replayed":false,"value":20.5,"unit":"degC"}}')


def invented(i: int) -> tuple[str, str, str]:
    """Identity number ``i``: 150 sites (100 fit ``max_sites``), a new device each time (2,000
    fit ``max_devices``: full after about 3,000), three sensor names."""
    return f"s{i % 150}", f"d{i}", f"t{i % 3}"


def message(root: str, site: str, device: str, sensor: str, seq: int, eid: str,
            ) -> tuple[str, bytes]:
    return (f"{root}/{site}/{device}/event/{sensor}",
            TEMPLATE.format(eid=eid, site=site, device=device, sensor=sensor,
                            seq=seq).encode())


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def hub(tmp_path: Path, mosquitto: Mosquitto, topic_root: str) -> Iterator[HubProc]:
    port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text(f"""
hub_id = "flood"
data_dir = "{tmp_path / 'data'}"
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
topic_root = "{topic_root}"
client_id = "hub-{topic_root}"
[storage]
mode = "sqlite"
path = "{tmp_path / 'store.sqlite3'}"
[http]
port = {port}
[log]
level = "info"
format = "json"
[alerting]
enabled = false
""")
    proc = HubProc(config, tmp_path / "hub.log", port)
    proc.start()
    try:
        wait_until(lambda: (proc.health() or {}).get("ok"), 60, what="the hub's /healthz ok")
        yield proc
    finally:
        if proc.running:
            proc.stop()


def counter(hub: HubProc, name: str) -> float:
    samples = hub.metrics() or {}
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def api_state_size(hub: HubProc) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{hub.http_port}/api/state",
                                timeout=10) as resp:
        return len(resp.read())


def control_stored(store: Path) -> int:
    with sqlite3.connect(store) as conn:
        rows = conn.execute("SELECT tags FROM points WHERE measurement = 'sensor_event'")
        return sum(1 for (tags,) in rows if json.loads(tags).get("device") == "ctl")


def test_a_flood_of_invented_identities_keeps_the_hub_flat(
        hub: HubProc, mosquitto: Mosquitto, topic_root: str, tmp_path: Path) -> None:
    assert TOTAL > FIRST
    expected = IdentityLimits(LimitsConfig())  # the pure decision, for the expected counts
    publisher = Publisher(mosquitto.host, mosquitto.port, max_in_flight=2000)
    control = 0
    sent = 0

    def send(start: int, stop: int) -> None:
        nonlocal control, sent
        for i in range(start, stop):
            if i % CONTROL_EVERY == 0:
                control += 1
                publisher.publish(*message(topic_root, "home", "ctl", "t1", control,
                                           f"ctl{control:029d}"))
                expected.check(reading(1, site="home", device="ctl", sensor="t1"))
                sent += 1
            site, device, sensor = invented(i)
            publisher.publish(*message(topic_root, site, device, sensor, 1, f"{i:032x}"))
            expected.check(reading(1, site=site, device=device, sensor=sensor))
            sent += 1
        publisher.flush()

    def settled() -> bool:
        return counter(hub, "thermopipe_hub_events_in_total") >= sent

    pid = hub.proc.pid if hub.proc else 0
    before = rss(pid)
    started = time.monotonic()
    send(0, FIRST)
    wait_until(settled, 120, what="the hub to take the first invented identities")
    refused_first = sum(expected.refused.values())
    wait_until(lambda: counter(hub, "thermopipe_hub_identity_refused_total") == refused_first,
               30, what="the refusals counted")
    rss_first, state_first = rss(pid), api_state_size(hub)

    middle = (FIRST + TOTAL) // 2
    send(FIRST, middle)
    wait_until(settled, 300, what="the hub to take half of the invented identities")
    rss_middle = rss(pid)
    send(middle, TOTAL)
    wait_until(settled, 300, what="the hub to take every invented identity")
    refused = sum(expected.refused.values())
    wait_until(lambda: counter(hub, "thermopipe_hub_identity_refused_total") == refused,
               30, what="every refusal counted")
    wait_until(lambda: control_stored(tmp_path / "store.sqlite3") == control, 60,
               what="every control event stored")
    rss_last, state_last = rss(pid), api_state_size(hub)
    elapsed = time.monotonic() - started
    publisher.close()

    report = (f"{TOTAL:,} invented identities in {elapsed:.0f} s, {refused:,} refused; RSS "
              f"{before / 2**20:.1f} MiB before, {rss_first / 2**20:.1f} after {FIRST:,}, "
              f"{rss_middle / 2**20:.1f} after {middle:,}, {rss_last / 2**20:.1f} after "
              f"{TOTAL:,}; /api/state {state_first:,} then {state_last:,} bytes; control "
              f"events {control} stored")
    print(report)
    assert rss_last - rss_first < RSS_GROWTH_MAX, report
    assert rss_last - rss_middle < RSS_SECOND_HALF_MAX, report
    assert state_last <= state_first * 1.01 + 20_000, report  # recent events may differ
    assert counter(hub, 'thermopipe_hub_dead_lettered_total{reason="identity_limit"}') \
        == refused, report
    assert expected.devices == LimitsConfig().max_devices  # the caps did fill
    # logged: a few lines per cap, never one per refused message
    lines = [json.loads(x) for x in hub.log_text().splitlines() if x.startswith("{")]
    refusal_lines = [x for x in lines if x.get("event") == "ingest.identity_refused"]
    assert 1 <= len(refusal_lines) <= 2 * (1 + elapsed / 60), refusal_lines[:3]
    assert not [x for x in lines if x.get("event") == "ingest.dead_lettered"]
