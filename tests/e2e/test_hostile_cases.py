"""Regression tests of issue 21's cases through real processes: a private Mosquitto, a private
InfluxDB 1.x, ``hub run`` as a subprocess and a control device (tests/e2e/hostile.py).

1. ``{"kind": "reading", "seq": 18446744073709551616}`` on a device's own event topic: the payload
   is refused, and the pipeline goes on: control events sent after it are stored, after a hub
   restart too, and after the loss detector's gap timeout (its state came back from disk).
2. A ``data_loss`` record still unhandled in the journal when the hub restarts (InfluxDB down when
   the gap was declared), then InfluxDB back: the record is stored, and so is everything after it.
3. 2,001 ``data_loss`` records decided at once (a device whose every other seq never arrived) are
   2,001 points in InfluxDB.

Each test fails with a message saying what stopped (and whether /healthz said ok meanwhile).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.hostile import DEVICE, SENSOR, SITE, ControlDevice, HostileRig
from tests.servers import InfluxDB1, Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.timeout(300)]

SEQ_2_64 = b'{"kind": "reading", "seq": 18446744073709551616}'


@pytest.fixture
def make_rig(tmp_path: Path, mosquitto: Mosquitto,
             influxdb_factory: Callable[..., InfluxDB1]) -> Iterator[Callable[..., HostileRig]]:
    """``make_rig(**options)``: a HostileRig on the shared broker (its own topic root) and an
    InfluxDB of its own (the tests stop it)."""
    rigs: list[HostileRig] = []

    def make(**options: Any) -> HostileRig:
        tmp = tmp_path / f"rig{len(rigs)}"
        tmp.mkdir()
        rig = HostileRig(tmp, mosquitto, influxdb_factory(), **options)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def metric(rig: HostileRig, name: str) -> float:
    samples = rig.hub.metrics() or {}
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


# FAILS on the code of issue 21 (case 1): the seq is read from the refused payload and receipted;
# building the receipt raises a ValidationError (hub/receipts.py), the ingest thread dies, nothing
# is stored after it and /healthz stays 200 ok; after a restart the loss detector's stored state
# (a held range at 2^64) makes a DataLoss fail to build once the gap times out: ingest dies again.
def test_seq_2_64_on_a_device_topic_stops_nothing(make_rig: Callable[..., HostileRig]) -> None:
    gap_timeout_s = 2.0
    rig = make_rig(gap_timeout_s=gap_timeout_s)
    rig.start_hub()
    rig.check(after=3)
    rig.hostile.publish(rig.topics.event(SITE, DEVICE, SENSOR), SEQ_2_64)

    def sleep_past_gap_timeout() -> None:
        time.sleep(gap_timeout_s + 3)  # the loss detector checks every second

    def sleep_past_receipt_interval() -> None:
        time.sleep(2.5)  # receipts go out at most once a second: the payload's is due by then

    problems: list[str] = []
    for stage, action in (("after the payload", sleep_past_receipt_interval),
                          ("after a hub restart (SIGTERM)", rig.restart_hub),
                          ("after the loss detector's gap timeout", sleep_past_gap_timeout)):
        try:
            action()
        except AssertionError as exc:
            problems.append(f"{stage}: {exc}")
            break
        try:
            rig.check(after=3, timeout=30)
        except AssertionError as exc:
            problems.append(f"{stage}: {exc}")
        if stage == "after the payload" and rig.hub.running:  # counters restart with the hub
            dead_lettered = metric(rig, "thermopipe_hub_dead_lettered_total")
            assert dead_lettered >= 1 or problems, "the payload was not dead-lettered"
    print(rig.summary())
    assert not problems, "\n\n".join(problems)


# Failed before the journal's fix in 9b77a9c (issue 21 case 2: reading the data_loss row back
# tripped an assert in hub/journal.py and the storage thread died); passes on the foundation.
def test_data_loss_unhandled_at_a_restart_is_stored_when_influxdb_is_back(
        make_rig: Callable[..., HostileRig]) -> None:
    rig = make_rig(gap_timeout_s=2.0)
    rig.start_hub()
    rig.check(after=3)  # seqs 0-2
    rig.influx_stop()
    rig.control.skip(2)  # seqs 3 and 4 never sent
    rig.control.send(3)  # 5-7
    assert rig.wait_for(lambda: metric(rig, "thermopipe_hub_data_loss_records_total") >= 1, 60), (
        f"no data_loss record for seqs 3-4 within 60 s:\n{rig.log_tail()}")
    health = rig.hub.health() or {}
    assert health.get("consumers", {}).get("storage", {}).get("backlog", 0) > 0, health
    rig.restart_hub()  # the record is in the journal, not yet stored
    time.sleep(2)      # the restarted hub's storage reads it back while InfluxDB is down
    rig.influx_start()
    rig.check(after=3, timeout=60)

    def loss_stored() -> bool:
        rows = rig.influx.series_rows(
            f"SELECT first_seq, last_seq, \"count\" FROM data_loss WHERE \"device\" = '{DEVICE}'",
            rig.db)
        return [(r["first_seq"], r["last_seq"], r["count"]) for r in rows] == [(3, 4, 2)]

    assert rig.wait_for(loss_stored, 60), (
        f"the data_loss record of seqs 3-4 is not stored 60 s after InfluxDB came back; "
        f"/healthz: {rig.hub.health()}; exceptions: {rig.tracebacks()}")
    assert rig.wait_for(lambda: (rig.hub.health() or {}).get("consumers", {})
                        .get("storage", {}).get("backlog") == 0, 30), rig.hub.health()
    print(rig.summary())


# FAILS on the code of issue 21 (case 5): data_loss points decided in the same instant share a
# timestamp unless their first_seq differ modulo 1000 (hub/storage/points.py), so they overwrite
# each other: about 500 of 2,001 stored.
def test_2001_data_loss_records_are_2001_points(make_rig: Callable[..., HostileRig],
                                                mosquitto: Mosquitto) -> None:
    rig = make_rig(gap_timeout_s=3.0)
    rig.start_hub()
    rig.hub.stop()  # its session stays: the burst below waits for it at the broker
    device = ControlDevice(mosquitto, rig.root, device="loss-dev")
    try:
        infos = []
        for seq in range(0, 4003, 2):  # seqs 0, 2, ..., 4002: 2,001 gaps of one seq each
            event = device.event(seq)
            infos.append(device._client.publish(device.topics.for_event(event),
                                                event.model_dump_json().encode(), qos=1))
        for info in infos:
            info.wait_for_publish(60)
    finally:
        device.close()
    rig.start_hub()  # the backlog arrives in a few batches: every gap is seen at once
    assert rig.wait_for(
        lambda: metric(rig, "thermopipe_hub_data_loss_records_total") >= 2001, 90), (
        f"{metric(rig, 'thermopipe_hub_data_loss_records_total')} data_loss records of 2,001 "
        f"after 90 s:\n{rig.log_tail()}")
    stored = 0

    def all_stored() -> bool:
        nonlocal stored
        # The backlog first, then the count: a write that lands between the two is then
        # counted (the other way round, the last write could finish after the count and
        # before the backlog read 0, and the test saw 2,000 of 2,001 on a loaded machine)
        backlog = (rig.hub.health() or {}).get("consumers", {}).get("storage", {}).get("backlog")
        rows = rig.influx.series_rows(
            "SELECT count(\"first_seq\") FROM data_loss WHERE \"device\" = 'loss-dev'", rig.db)
        stored = int(sum(r.get("count") or 0 for r in rows))
        return stored >= 2001 or backlog == 0

    rig.wait_for(all_stored, 60)
    assert stored == 2001, (
        f"{stored} data_loss points stored of 2,001 records "
        f"({metric(rig, 'thermopipe_hub_data_loss_records_total')} records made); /healthz: "
        f"{rig.hub.health()}; exceptions: {rig.tracebacks()}")
