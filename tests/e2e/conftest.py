"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.receipts_harness import ReceiptRun
from tests.servers import InfluxDB1, Mosquitto


@pytest.fixture
def receipt_run(tmp_path: Path, influxdb: InfluxDB1, influx_db_name: str,
                topic_root: str) -> Iterator[Callable[..., ReceiptRun]]:
    """``receipt_run(broker, **options)``: a ReceiptRun (agent and hub processes) on ``broker``,
    the shared InfluxDB with a database of its own; its processes are stopped afterwards."""
    runs: list[ReceiptRun] = []

    def make(broker: Mosquitto, **options: Any) -> ReceiptRun:
        run = ReceiptRun(tmp_path, broker, influxdb, influx_db_name, topic_root, **options)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()
