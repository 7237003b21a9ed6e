"""Issue 14: the live page never shows a rejected DS18B20 reading as the temperature.

The trace (21.5, 85.0, -127.0, a CRC-failed read, 22.0) goes through the real w1_slave files,
the agent's parser and decider, and the dashboard consumer; ``/api/state`` is read from a real
uvicorn after every step.
"""

from __future__ import annotations

import httpx

from hub.config.dashboard import DashboardConfig
from hub.dashboard.consumer import DashboardConsumer
from hub.dashboard.state import DashboardState
from tests.hub_alerting.helpers import Feed, env
from tests.hub_dashboard.ds18b20_trace import SENSOR, trace_envelopes
from tests.hub_dashboard.live import LiveServer

KEY = f"cellar/pi-7/{SENSOR}"


def test_api_state_keeps_the_last_accepted_value_through_a_ds18b20_glitch_trace() -> None:
    dash = DashboardConsumer(DashboardConfig())
    seen: list[tuple[str, float | None, str, list[str], str | None]] = []
    with LiveServer(dash) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        for label, envs in trace_envelopes("cellar", "pi-7"):
            dash.handle(envs)
            sensor = next(s for s in client.get("/api/state").json()["sensors"]
                          if s["key"] == KEY)
            seen.append((label, sensor["value"], sensor["state"], sensor["faults"],
                         sensor["value_time"]))
        events = client.get("/api/state").json()["events"]
    t_first, t_last = seen[0][4], seen[-1][4]
    assert [s[:4] for s in seen] == [
        ("21.5", 21.5, "normal", []),
        ("85.0 power-on", 21.5, "normal", ["power_on_value"]),
        ("-127.0 disconnected", 21.5, "normal", ["disconnected"]),
        ("crc failed", 21.5, "normal", ["crc_error"]),
        ("22.0", 22.0, "normal", []),
    ]
    # the value's time is the accepted reading's: a glitch does not make 21.5 look fresh
    assert [s[4] for s in seen[:4]] == [t_first] * 4 and t_last != t_first
    texts = [e["text"] for e in reversed(events)]
    assert texts == [
        "unknown \u2192 normal at 21.5 \u00b0C",
        "power-on value: 85.0 \u00b0C rejected",
        "power-on value ended, now sensor disconnected",
        "sensor disconnected: -127.0 \u00b0C rejected",
        "sensor disconnected ended, now CRC error",
        "CRC error",
        "CRC error cleared",
    ]


def test_a_fault_events_value_never_becomes_the_sensors_value() -> None:
    # whatever a fault event carries (an older agent sent the superseding glitch as a
    # recovery's value), the shown value stays the last accepted one
    st = DashboardState()
    f = Feed("pi-1", "lab")
    st.apply(env(f.reading("t1", 4.0)))
    st.apply(env(f.fault("t1", "power_on_value", True, value=85.0)))
    st.apply(env(f.fault("t1", "power_on_value", False, value=-127.0)))
    sensor = st.sensors["lab/pi-1/t1"]
    assert (sensor["value"], sensor["faults"]) == (4.0, [])


def test_status_updates_fold_into_one_line_per_device() -> None:
    st = DashboardState()
    f, g = Feed("pi-1", "lab"), Feed("pi-2", "lab")
    st.apply(env(f.status(True, "birth")))
    for _ in range(5):
        st.apply_batch([env(f.status(True, "update")), env(g.status(True, "update"))])
    st.apply(env(f.fault("t1", "device_lost", True)))
    st.apply(env(f.fault("t1", "device_lost", False)))
    lines = [(e["device_id"], e["title"], e["text"]) for e in st.snapshot()["events"]]
    assert lines == [
        ("pi-1", "recovered", "device lost cleared"),
        ("pi-1", "fault", "device lost"),
        ("pi-2", "status", "5 status updates (counters refreshed)"),
        ("pi-1", "status", "5 status updates (counters refreshed)"),
        ("pi-1", "online", "online (session 1)"),
    ]
