"""The dashboard's web side: the JSON API, the SSE stream over a real uvicorn, the page."""

from __future__ import annotations

import json
import threading
import time
import warnings
from typing import Any

import httpx
from starlette.applications import Starlette

with warnings.catch_warnings():
    # starlette 1.x prefers the httpx2 package for its test client; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from hub.alerting.consumer import AlertingConsumer
from hub.config.alerting import AlertingConfig
from hub.config.dashboard import DashboardConfig
from hub.dashboard.consumer import DashboardConsumer
from tests.hub_alerting.helpers import Feed, env
from tests.hub_dashboard.live import LiveServer


def test_api_state_shows_the_final_state() -> None:
    dash = DashboardConsumer(DashboardConfig(title="Greenhouse"))
    f = Feed("pi-1", "gh")
    dash.handle([env(f.status(True, "birth")), env(f.reading("t1", 20.0))])
    dash.handle([env(f.reading("t1", 20.7)), env(f.state("t1", "high", value=31.2))])
    dash.handle([env(f.status(False, "will"))])
    with TestClient(Starlette(routes=dash.routes())) as client:
        state = client.get("/api/state").json()
        page = client.get("/")
    assert state["title"] == "Greenhouse"
    assert [(d["key"], d["online"], d["reason"]) for d in state["devices"]] == [
        ("gh/pi-1", False, "will")]
    assert [(s["key"], s["value"], s["state"]) for s in state["sensors"]] == [
        ("gh/pi-1/t1", 31.2, "high")]
    assert [e["kind"] for e in state["events"]] == ["status", "state_change", "status"]
    assert page.status_code == 200 and "EventSource" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside
    dash.close()


def test_alerts_reach_the_dashboard_through_the_listener(tmp_path: Any) -> None:
    dash = DashboardConsumer()
    alerting = AlertingConsumer(AlertingConfig(), state_dir=tmp_path)
    alerting.add_listener(dash.on_alert)
    try:
        f = Feed()
        batch = [env(f.state("t1", "very_high", severity="critical"))]
        alerting.handle(batch)
        dash.handle(batch)
        snap = dash.snapshot()
        assert [(a["status"], a["severity"]) for a in snap["alerts"]] == [("firing", "critical")]
        assert len(snap["open_alerts"]) == 1
    finally:
        alerting.close()
        dash.close()


def _read_events(resp: httpx.Response, out: list[tuple[str, dict[str, Any]]],
                 done: threading.Event) -> None:
    event = ""
    for line in resp.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, json.loads(line[6:])))
        if done.is_set():
            return


def test_sse_streams_a_snapshot_then_changes_over_real_uvicorn() -> None:
    dash = DashboardConsumer()
    f = Feed("pi-2")
    dash.handle([env(f.reading("t1", 5.0))])
    got: list[tuple[str, dict[str, Any]]] = []
    done = threading.Event()
    with LiveServer(dash) as server, httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{server.url}/api/events") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            reader = threading.Thread(target=_read_events, args=(resp, got, done), daemon=True)
            reader.start()
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                time.sleep(0.02)
            assert got[0][0] == "snapshot"
            assert got[0][1]["sensors"][0]["value"] == 5.0
            for value in (6.0, 7.5):
                dash.handle([env(f.reading("t1", value))])
            dash.handle([env(f.status(False, "will"))])
            while len(got) < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            done.set()
            assert dash.stats()["clients"] == 1
            dash.close()  # ends the stream from the server side
            reader.join(10)
    kinds = [k for k, _ in got]
    assert kinds[:4] == ["snapshot", "change", "change", "change"]
    values = [c["data"]["value"] for _, m in got[1:3] for c in m["changes"]
              if c["type"] == "sensor"]
    assert values == [6.0, 7.5]
    versions = [m["version"] for _, m in got]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    last = got[3][1]["changes"]
    assert any(c["type"] == "device" and c["data"]["online"] is False for c in last)


def test_a_slow_browser_gets_a_snapshot_instead_of_a_partial_view() -> None:
    dash = DashboardConsumer(DashboardConfig(client_buffer=10))
    f = Feed()
    with LiveServer(dash) as server, httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{server.url}/api/events") as resp:
            lines = resp.iter_lines()
            assert next(lines).startswith("retry:")
            assert next(lines) == "event: snapshot"
            # 50 batches while the server cannot forward them (its event loop held busy for a
            # moment, as on a loaded Pi): this browser's buffer of 10 overflows
            loop = next(iter(dash._subscribers)).loop
            loop.call_soon_threadsafe(time.sleep, 0.5)
            for i in range(50):
                dash.handle([env(f.reading("t1", float(i)))])
            deadline = time.monotonic() + 10
            while dash.stats()["resyncs"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert dash.stats()["resyncs"] >= 1
            final = dash.snapshot()["version"]
            snapshots = 0
            value = None
            event = "snapshot"  # the data line of the first snapshot is still to come
            for line in lines:
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "snapshot":
                        snapshots += 1
                        value = data["sensors"][0]["value"] if data["sensors"] else None
                    else:
                        value = next((c["data"]["value"] for c in reversed(data["changes"])
                                      if c["type"] == "sensor"), value)
                    if data["version"] == final:
                        break
            # a resync snapshot came instead of the lost changes, and no value is missing
            assert snapshots >= 2 and value == 49.0
            dash.close()


def test_a_browser_that_leaves_is_unsubscribed() -> None:
    dash = DashboardConsumer()
    with LiveServer(dash) as server, httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{server.url}/api/events") as resp:
            lines = resp.iter_lines()
            next(lines)
            assert dash.stats()["clients"] == 1
        deadline = time.monotonic() + 10
        feed = Feed()
        # the server notices a disconnect by itself, or at the latest on its next write
        while dash.stats()["clients"] and time.monotonic() < deadline:
            dash.handle([env(feed.reading("t1", 1.0))])
            time.sleep(0.05)
        assert dash.stats()["clients"] == 0
