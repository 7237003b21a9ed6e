"""Every metric the docs name is served on ``/metrics`` by a running hub, from one registry.

The names are read from the docs themselves (hub/README.md's metrics table, hub/metrics.py's
docstring, hub/alerting/README.md), so a metric documented but registered elsewhere (as the
alerting counters once were, in prometheus_client's default registry) fails here.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.app import Hub
from tests.hub_core.helpers import hub_config, wait_until

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "hub" / "README.md", ROOT / "hub" / "metrics.py",
        ROOT / "hub" / "alerting" / "README.md"]

pytestmark = pytest.mark.servers


def documented_metrics() -> set[str]:
    names: set[str] = set()
    for doc in DOCS:
        for name in re.findall(r"\b((?:thermopipe|process|python)_[a-z0-9_]+)\b",
                               doc.read_text()):
            if not name.endswith("_"):  # "thermopipe_alerts_*" and other families
                names.add(name)
    return names


def family_name(sample: str) -> str:
    """A documented sample name -> its family (counters are documented with ``_total``)."""
    return re.sub(r"_(total|bucket|count|sum)$", "", sample)


def test_every_documented_metric_is_served(tmp_path: Path, mosquitto, influxdb,
                                           influx_db_name: str, topic_root: str) -> None:
    documented = documented_metrics()
    assert {"thermopipe_alerts_sent_total", "thermopipe_hub_events_in_total",
            "process_resident_memory_bytes"} <= documented, documented
    config = hub_config(tmp_path, mosquitto, topic_root,
                        storage={"enabled": True, "mode": "v1", "url": influxdb.url,
                                 "database": influx_db_name},
                        alerting={"state_dir": str(tmp_path / "alerting")})
    with Hub(config) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        assert hub.web is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{hub.web.port}/metrics",
                                    timeout=10) as resp:
            text = resp.read().decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    missing = sorted(n for n in documented if family_name(n) not in families)
    assert not missing, f"documented but not on /metrics: {missing}"
