"""Shared fixtures: private real servers, started on free loopback ports, stopped after use.

- ``mosquitto`` / ``influxdb`` / ``victoria``: one per test session, shared; tests isolate
  themselves with their own topic root (``topic_root``) or database name.
- ``mosquitto_factory`` / ``influxdb_factory`` / ``victoria_factory``: a fresh server per call,
  for tests that stop, kill or reconfigure it (outages, ACLs, TLS).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # lets tests import tests.servers and tests.helpers
    sys.path.insert(0, str(ROOT))

from tests.servers import InfluxDB1, Mosquitto, ServerProcess, VictoriaMetrics, start_server

_counter = itertools.count()

# --- progress during long tests ------------------------------------------------------------------
# The end-to-end tests run for up to a couple of minutes each; pytest prints nothing meanwhile.
# Every HEARTBEAT_S a running test says so on the terminal (written to a duplicate of the real
# stdout taken before any test's output capture, so capsys/capfd never see it).
HEARTBEAT_S = 20.0
_terminal_fd: int | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _terminal_fd
    if os.environ.get("THERMOPIPE_TEST_PROGRESS", "1") != "0" and _terminal_fd is None:
        _terminal_fd = os.dup(1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None,
                            ) -> Generator[None, object, object]:
    done = threading.Event()

    def beat() -> None:
        started = time.monotonic()
        while not done.wait(HEARTBEAT_S):
            if _terminal_fd is not None:
                took = time.monotonic() - started
                line = f"\n    ... {item.nodeid} still running ({took:.0f} s)\n"
                try:
                    os.write(_terminal_fd, line.encode())
                except OSError:
                    return

    thread = threading.Thread(target=beat, name="test-progress", daemon=True)
    thread.start()
    try:
        return (yield)
    finally:
        done.set()


def _factory(cls: type[ServerProcess], tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[Callable[..., Any]]:
    started: list[ServerProcess] = []

    def make(**kwargs: Any) -> Any:
        tmp = tmp_path_factory.mktemp(f"{cls.__name__.lower()}{next(_counter)}")
        server = start_server(cls, tmp, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory,
                      ) -> Iterator[Callable[..., Mosquitto]]:
    yield from _factory(Mosquitto, tmp_path_factory)


@pytest.fixture
def influxdb_factory(tmp_path_factory: pytest.TempPathFactory,
                     ) -> Iterator[Callable[..., InfluxDB1]]:
    yield from _factory(InfluxDB1, tmp_path_factory)


@pytest.fixture
def victoria_factory(tmp_path_factory: pytest.TempPathFactory,
                     ) -> Iterator[Callable[..., VictoriaMetrics]]:
    yield from _factory(VictoriaMetrics, tmp_path_factory)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    server = start_server(Mosquitto, tmp_path_factory.mktemp("mosquitto-shared"))
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    server = start_server(InfluxDB1, tmp_path_factory.mktemp("influxdb-shared"))
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    server = start_server(VictoriaMetrics, tmp_path_factory.mktemp("victoria-shared"))
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture
def topic_root() -> str:
    """A topic root of this test's own, so tests sharing one broker never see each other."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def influx_db_name(influxdb: InfluxDB1) -> str:
    name = f"db_{uuid.uuid4().hex[:10]}"
    influxdb.create_database(name)
    return name
