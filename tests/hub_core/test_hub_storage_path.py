"""Ingest -> journal -> storage with real Mosquitto and InfluxDB 1.x (and VictoriaMetrics v2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.app import Hub
from schemas.topics import Topics
from tests.hub_core.helpers import (
    Publisher,
    hub_config,
    influx_count,
    messages_for,
    readings,
    wait_until,
)

pytestmark = [pytest.mark.servers]


def test_n_events_become_exactly_n_points_in_influxdb_1x(tmp_path: Path, mosquitto, influxdb,
                                                         influx_db_name, topic_root) -> None:
    n = 2000
    events = readings(n)
    config = hub_config(tmp_path, mosquitto, topic_root, storage={
        "enabled": True, "mode": "v1", "url": influxdb.url, "database": influx_db_name,
        "batch_size": 500})
    with Hub(config) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="hub subscribed")
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            # every event twice: the copies are dropped as duplicates
            pub.publish_all(messages_for(Topics(topic_root), events + events[:100]))
        finally:
            pub.close()
        wait_until(lambda: hub.runners[0].state.processed >= n, 60, what="storage caught up")
        # the copies were published last: the broker has acknowledged them, the hub may still be
        # taking them in when storage has caught up with the originals
        wait_until(lambda: hub.metrics.duplicates._value.get() >= 100, 30,
                   what="the 100 copies dropped")
        assert hub.metrics.duplicates._value.get() == 100
        assert hub.runners[0].state.processed == n
    assert influx_count(influxdb, influx_db_name) == n
    rows = influxdb.series_rows(
        'SELECT "value", "seq", "event_id" FROM "sensor_event" WHERE "device" = \'d1\'',
        influx_db_name)
    by_seq = {row["seq"]: row for row in rows}
    sample = events[5]  # device d1
    assert by_seq[sample.seq]["event_id"] == sample.event_id
    assert by_seq[sample.seq]["value"] == sample.value


def test_v2_mode_writes_every_event_to_victoriametrics(tmp_path: Path, mosquitto, victoria,
                                                       topic_root) -> None:
    n = 600
    events = readings(n, devices=3)
    site = f"v{topic_root}"  # a site label of this test's own in the shared VictoriaMetrics
    events = [e.model_copy(update={"site": site}) for e in events]
    config = hub_config(tmp_path, mosquitto, topic_root, storage={
        "enabled": True, "mode": "v2", "url": victoria.url, "bucket": "thermopipe",
        "org": "thermopipe", "token": None, "batch_size": 250})
    with Hub(config) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="hub subscribed")
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            pub.publish_all(messages_for(Topics(topic_root), events))
        finally:
            pub.close()
        wait_until(lambda: hub.runners[0].state.processed >= n, 60, what="storage caught up")

    def stored() -> int:
        series = victoria.export(f'{{__name__="sensor_event_value",site="{site}"}}')
        return sum(len(s["values"]) for s in series)

    wait_until(lambda: stored() >= n, 30, interval=0.5, what="points in VictoriaMetrics")
    assert stored() == n
