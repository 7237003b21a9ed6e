"""Real servers for the tests: a private Mosquitto, InfluxDB 1.x and VictoriaMetrics, each on a
free loopback port with its own config and data directory, stopped after use. The servers
themselves are bench's harness (bench/harness/servers.py: the benchmarks start the same ones);
what is here is the tests' side of it.

Nothing here ever talks to a server that happens to be running (a Mosquitto may listen on 1883 on
these machines). When a binary is missing the test skips on a laptop but fails under CI
(``CI=true``): CI cannot pass by skipping.

Servers can be stopped and started again on the same port and data directory (``stop()`` /
``start()``), which is how the outage tests take a broker or database away for a while.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

import pytest

from bench.harness import servers as _servers
from bench.harness.servers import (
    BINARIES,
    InfluxDB1,
    MissingServer,
    Mosquitto,
    ServerProcess,
    VictoriaMetrics,
    find_binary,
    free_port,
    wait_for_http,
    wait_for_port,
)

__all__ = ["CHROMIUM_ARGS", "InfluxDB1", "Mosquitto", "ServerProcess", "VictoriaMetrics",
           "free_port", "in_ci", "require_binary", "require_browser", "start_server",
           "wait_for_http", "wait_for_port"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, *candidates: str) -> str:
    """Path of a server binary; skip (laptop) or fail (CI) with a clear reason when missing."""
    try:
        return find_binary(name, *candidates)
    except MissingServer as exc:
        _missing(str(exc))


def start_server(cls: type[ServerProcess], tmp: Path, **kwargs: Any) -> ServerProcess:
    """:func:`bench.harness.servers.start_server`, skipping or failing on a missing binary."""
    require_binary(*BINARIES[cls])
    return _servers.start_server(cls, tmp, **kwargs)


# --- headless browser -------------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def require_browser() -> tuple[Any, str]:
    """Playwright's ``sync_playwright`` and Debian's chromium; skip on a laptop, fail in CI."""
    chromium = require_binary("chromium", "/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - depends on the machine
        if in_ci():
            pytest.fail(f"CI=true and playwright is not installed: {exc}", pytrace=False)
        pytest.skip("playwright is not installed (pip install playwright)")
    return sync_playwright, chromium
