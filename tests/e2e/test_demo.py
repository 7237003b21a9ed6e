"""The one-command demo: it starts, the dashboard shows simulated sensors updating live in a real
browser, Ctrl-C stops it cleanly, and a taken port or a bad option exits non-zero with a reason.

The demo runs exactly as ``scripts/demo`` runs it (``thermopipe-demo``), with its embedded amqtt
broker and embedded SQLite store: nothing but the project's own Python packages.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import CHROMIUM_ARGS, free_port, require_browser


class DemoProcess:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.http_port = free_port()
        self.mqtt_port = free_port()
        self.state = tmp / "state"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo", "--http-port", str(self.http_port),
             "--mqtt-port", str(self.mqtt_port), "--state-dir", str(self.state), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                         for p in sorted((self.state / "logs").glob("*.log")))
        raise AssertionError(f"no line starting {prefix!r} within {timeout}s; demo said:\n"
                             f"{self.output()}\n{logs}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"the demo ignored Ctrl-C:\n{self.output()}") from None
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return int(self.proc.returncode)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoProcess]:
    process = DemoProcess(tmp_path, "--speed", "900")
    yield process
    process.stop()


def _sensor_values_js() -> str:
    return ("() => Array.from(document.querySelectorAll('[data-sensor] .num'))"
            ".map(e => e.closest('[data-sensor]').dataset.sensor + '=' + e.textContent)")


@pytest.mark.slow
def test_demo_dashboard_shows_simulated_sensors_updating_live(demo: DemoProcess) -> None:
    sync_playwright, chromium = require_browser()

    url = demo.wait_for_line("dashboard: ", 90).split("dashboard: ", 1)[1].strip()
    assert url == f"http://127.0.0.1:{demo.http_port}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function("document.querySelector('#conn').textContent === 'live'",
                                   timeout=20_000)
            # both simulated devices and their sensors appear within seconds
            page.wait_for_function(
                "document.querySelectorAll('[data-sensor] .num').length >= 3", timeout=30_000)
            page.evaluate("window.__sameDocument = 'yes'")
            first = page.evaluate(_sensor_values_js())
            page.wait_for_function(f"() => JSON.stringify(({_sensor_values_js()})()) !== "
                                   f"{json.dumps(json.dumps(first, separators=(',', ':')))}",
                                   timeout=45_000)
            later = page.evaluate(_sensor_values_js())
            assert page.evaluate("window.__sameDocument") == "yes"  # updated without a reload
            page.screenshot(path=str(demo.state.parent / "demo-dashboard.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    assert first != later
    assert any("pi-freezer" in v for v in later) and any("pi-greenhouse" in v for v in later)
    # the terminal counts what the page counts (2 devices with 2 sensors each)
    demo.wait_for_line("devices online 2/2 | devices offline 0 | sensors 4 | open alerts ", 60)

    assert demo.stop() == 0, demo.output()
    assert "stopped." in demo.output()
    with sqlite3.connect(demo.state / "store.sqlite3") as db:
        stored = dict(db.execute("SELECT measurement, count(*) FROM points GROUP BY 1"))
    db.close()
    assert stored.get("sensor_event", 0) > 0 and stored.get("device_status", 0) > 0, stored


def test_demo_refuses_a_taken_port_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "demo", "--http-port", str(port),
             "--state-dir", str(tmp_path / "s")], check=False, capture_output=True, text=True,
            timeout=60)
    assert result.returncode == 3, result
    assert f"port {port}" in result.stderr and "is taken" in result.stderr
    assert "--http-port" in result.stderr
    assert not (tmp_path / "s").exists()  # nothing was started


def test_demo_rejects_a_bad_broker_option(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo", "--broker", "amqp://nowhere",
         "--http-port", str(free_port()), "--state-dir", str(tmp_path / "s")],
        check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert "expected embedded, mosquitto or mqtt://HOST:PORT" in result.stderr


@pytest.mark.parametrize(("option", "value", "reason"), [
    ("--speed", "-5", "must be above 0, got -5"),
    ("--duration", "0", "must be above 0, got 0"),
    ("--http-port", "99999", "expected a port number from 1 to 65535"),
])
def test_demo_reports_a_bad_option_against_the_option(tmp_path: Path, option: str, value: str,
                                                      reason: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo", option, value, "--state-dir",
         str(tmp_path / "s")], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert f"argument {option}: {reason}" in result.stderr, result.stderr
    assert "generated config" not in result.stderr
    assert not (tmp_path / "s").exists()


def test_a_dead_components_reason_is_shown_whole(tmp_path: Path) -> None:
    from demo.cli import Program

    log = tmp_path / "hub.log"
    frames = "".join(f'  File "x.py", line {i}, in f{i}\n    f{i + 1}()\n    ^^^^^^^^\n'
                     for i in range(8))
    log.write_text('{"event": "hub_started"}\n' * 30 + "Traceback (most recent call last):\n"
                   + frames + "RuntimeError: the real reason\n")
    shown = Program("hub", [], log).tail()
    assert shown.startswith("Traceback (most recent call last):")
    assert shown.endswith("RuntimeError: the real reason")
    assert "hub_started" not in shown
    log.write_text("".join(f"line {i}\n" for i in range(40)) + "hub: cannot start: port taken\n")
    shown = Program("hub", [], log).tail()
    assert shown.splitlines()[-1] == "hub: cannot start: port taken"
    assert len(shown.splitlines()) == 15
