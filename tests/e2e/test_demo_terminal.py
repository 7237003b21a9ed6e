"""What the demo says on the terminal: a broker that never answers stops it with one line and a
non-zero exit (a real ``thermopipe-demo`` run against a port nothing listens on), and its status
line counts what the live page counts, in the page's words and numbers (built from a real
:class:`hub.dashboard.state.DashboardState`, the code that feeds the page)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from demo.cli import alert_line, status_line
from hub.dashboard.state import DashboardState
from schemas import Alert
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_a_broker_that_never_answers_stops_the_demo_with_the_reason(tmp_path: Path) -> None:
    port = free_port()  # nothing listens on it
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "demo", "--broker", f"mqtt://127.0.0.1:{port}", "--duration",
         "12", "--http-port", str(free_port()), "--state-dir", str(state)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == [
        f"thermopipe-demo: the MQTT broker mqtt://127.0.0.1:{port} never answered: connection "
        "refused (not running, or wrong port); start it or check the address, or leave out "
        "--broker to use the embedded broker"], result.stderr
    assert "devices online" not in result.stdout  # no status line pretending all is well
    assert not state.exists()  # nothing was started or written


def _alert(status: str, group: str, summary: str) -> Alert:
    when = datetime(2026, 12, 1, tzinfo=UTC)
    return Alert.model_validate({
        "alert_id": str(uuid.uuid4()), "group_key": group, "rule": "temperature",
        "status": status, "severity": "warning", "site": "demo", "device_id": "pi-freezer",
        "sensor_id": "28-0000056c3d4e", "summary": summary, "event_id": str(uuid.uuid4()),
        "event_time": when, "time": when})


def test_the_status_line_counts_open_alerts_as_the_page_does() -> None:
    page = DashboardState()
    warm = "demo/pi-freezer/28-0000056c3d4e is warm (warning): -5.062 degC, threshold -15"
    page.apply_alert(_alert("firing", "g1", warm))
    page.apply_alert(_alert("resolved", "g1", "back to normal at -16.04 degC"))
    page.apply_alert(_alert("firing", "g2", "thawing: -4.96 degC"))
    state = page.snapshot()
    assert len(state["alerts"]) == 3 and len(state["open_alerts"]) == 1  # what the page shows
    line = status_line(state, {"consumers": {"storage": {"backlog": 2}, "alerting": {}}})
    assert "open alerts 1 |" in line, line
    assert line.endswith("hub backlog 2")
    # the page's numbers: one decimal and the unit's sign; the sensor's name, not its id
    names = {"demo/pi-freezer/28-0000056c3d4e": "freezer compartment"}
    shown = alert_line(state["alerts"][-1], names)
    assert shown == ("ALERT warning  demo / pi-freezer / freezer compartment: is warm (warning): "
                     "-5.1 \u00b0C, threshold -15")
    assert alert_line(state["alerts"][-2], names).startswith("RESOLVED  demo / pi-freezer / "
                                                             "freezer compartment: back to "
                                                             "normal at -16.0 \u00b0C")


def test_the_status_line_counts_devices_sensors_and_events_from_the_hub() -> None:
    state = {"devices": [
        {"online": True, "events": 1200, "counters": {"outbox_depth": 3}},
        {"online": False, "events": 34, "counters": {}},
        {"online": None, "events": 0, "counters": {}}],  # heard of, no status yet
        "sensors": [{}, {}, {}], "open_alerts": [], "alerts": []}
    assert status_line(state, None) == (
        "devices online 1/2 | devices offline 1 | sensors 3 | open alerts 0 | "
        "events received 1,234 | agent outbox 3 | hub backlog ?")
    assert status_line(None, None) == "waiting for the hub's dashboard | hub backlog ?"


def test_a_broker_lost_while_running_is_said_once_with_the_hubs_reason_then_its_return() -> None:
    from demo.cli import LOST_AFTER_S, Demo, build_parser

    demo = Demo(build_parser().parse_args(["--broker", "mqtt://127.0.0.1:1884"]))
    demo.broker_url = "mqtt://127.0.0.1:1884"
    up = {"mqtt_connected": True, "mqtt_last_error": ""}
    refused = ("cannot connect: broker 127.0.0.1:1884 unreachable: connection refused (not "
               "running, or wrong port)")
    assert demo.broker_news(up, 0.0) is None
    # the hub's first reason is the disconnect; the terminal waits for why it cannot reconnect
    assert demo.broker_news({"mqtt_connected": False,
                             "mqtt_last_error": "disconnected: Unspecified error"}, 1.0) is None
    down = {"mqtt_connected": False, "mqtt_last_error": refused}
    assert demo.broker_news(down, 1.0 + LOST_AFTER_S / 2) is None
    lost = demo.broker_news(down, 1.0 + LOST_AFTER_S)
    assert lost is not None and lost.startswith(
        "the MQTT broker mqtt://127.0.0.1:1884 lost: broker 127.0.0.1:1884 unreachable: "
        "connection refused"), lost
    assert demo.broker_news(down, 60.0) is None  # once per outage
    assert demo.broker_news(None, 61.0) is None  # the hub not answering says nothing of it
    assert demo.broker_news(up, 62.0) == "the MQTT broker mqtt://127.0.0.1:1884 answers again"
    assert demo.broker_news(up, 63.0) is None
