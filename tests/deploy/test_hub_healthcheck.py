"""The hub service's healthcheck in deploy/compose.yaml, run as written (the command Docker would
run inside the container) against a real hub on a real private Mosquitto: healthy while
connected, unhealthy once the broker is gone."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from hub.app import Hub
from tests.deploy.grafana_files import DEPLOY, load_yaml
from tests.hub_core.helpers import hub_config, wait_until
from tests.servers import Mosquitto, free_port

pytestmark = pytest.mark.servers


def _healthcheck(port: int) -> int:
    test = load_yaml(DEPLOY / "compose.yaml")["services"]["hub"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    argv = [sys.executable, *[a.replace(":8780/", f":{port}/") for a in test[2:]]]
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode


def test_the_compose_healthcheck_follows_the_hubs_healthz(
        tmp_path: Path, mosquitto_factory: type[Mosquitto], topic_root: str) -> None:
    broker = mosquitto_factory()
    port = free_port()
    hub = Hub(hub_config(tmp_path, broker, topic_root, http={"enabled": True, "port": port},
                         alerting={"enabled": False}, dashboard={"enabled": False}))
    hub.start()
    try:
        wait_until(hub.ingest.connected.is_set, 20, what="the hub connected")
        assert _healthcheck(port) == 0
        broker.stop()
        wait_until(lambda: not hub.ingest.connected.is_set(), 20, what="the hub disconnected")
        assert _healthcheck(port) != 0
    finally:
        hub.stop()
    started = time.monotonic()
    assert _healthcheck(port) != 0  # nothing listens: unhealthy too, within the timeout
    assert time.monotonic() - started < 15
