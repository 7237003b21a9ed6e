"""Issue 23: the sensor rows in a real headless Chromium. Names first with the id small; a
stale row says what is stale and since when, on one clock; a trend chart per sensor (its
points, its threshold bands, its faults) that follows live; a late event never moves a row
back; an alert's sentence is not preceded by the name it starts with. Fails (never skips)
under CI=true when Chromium or playwright is missing."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.config.dashboard import DashboardConfig
from hub.dashboard.consumer import DashboardConsumer
from schemas.models import Alert, SensorInfo, ThresholdInfo
from tests.hub_alerting.helpers import Feed, env
from tests.hub_dashboard.live import live_page
from tests.servers import require_browser

SHOT = Path(os.environ.get("TP_DASHBOARD_SCREENSHOT_DIR", "/tmp")) / "thermopipe-rows.png"
FREEZER, KITCHEN = "28-0000056c3d4e", "28-0000056c9f10"
KEY, KITCHEN_KEY = f"demo/pi-freezer/{FREEZER}", f"demo/pi-freezer/{KITCHEN}"


def _birth(f: Feed) -> Any:
    msg = f.status(True, "birth", sensors=(FREEZER, KITCHEN))
    warm = ThresholdInfo(name="warm", direction="above", value=-15.0, hysteresis=1.0,
                         dwell_s=10, severity="warning")
    thawing = ThresholdInfo(name="thawing", direction="above", value=-5.0, hysteresis=1.0,
                            dwell_s=5, severity="critical")
    return env(msg.model_copy(update={"sensors": [
        SensorInfo(sensor_id=FREEZER, unit="degC", source="simulator",
                   name="freezer compartment", thresholds=[warm, thawing]),
        SensorInfo(sensor_id=KITCHEN, unit="degC", source="simulator")]}))


def _row(page: Any, key: str) -> Any:
    return page.locator(f'[data-sensor="{key}"]')


def _chart(page: Any, key: str) -> dict[str, Any]:
    return dict(page.evaluate("""key => {
        const svg = document.querySelector(`[data-sensor="${key}"] svg.trend`);
        if (!svg) return {};
        return {points: Number(svg.dataset.points),
                bands: [...svg.querySelectorAll('rect.band')].map(r => r.dataset.band),
                faults: [...svg.querySelectorAll('rect.fault')].map(r => r.dataset.fault),
                line: svg.querySelector('path.line').getAttribute('d').split(/[ML]/).length - 1};
    }""", key))


@pytest.mark.slow
def test_sensor_rows_names_stale_chart_and_no_going_back() -> None:
    require_browser()
    dash = DashboardConsumer(DashboardConfig(title="demo"))
    # the chart shows the last hour of the page's clock: the feed runs in the recent past
    start = datetime.now(UTC) - timedelta(minutes=21)
    f = Feed("pi-freezer", "demo", start=start)
    dash.handle([_birth(f)])
    history = []
    for i in range(40):  # 20 minutes of the freezer warming, one reading each 30 s
        msg = f.reading(FREEZER, -18.0 + i * 0.3)
        history.append(env(msg.model_copy(update={"time": start + timedelta(seconds=30 * i)})))
    f.time = datetime.now(UTC) - timedelta(seconds=30)  # the events below: the last 30 s
    history += [env(f.fault(FREEZER, "crc_error", True)), env(f.fault(FREEZER, "crc_error", False)),
                env(f.reading(KITCHEN, 22.5))]
    dash.handle(history)
    with live_page(dash) as (page, errors):
        page.wait_for_function("v => S.version >= v", arg=dash.state.version, timeout=10_000)
        # names first, the id small beneath; a sensor with no name shows its id once
        row = _row(page, KEY)
        assert row.locator(".sname").inner_text() == "freezer compartment"
        assert FREEZER in row.locator(".sub").inner_text()
        kitchen = _row(page, KITCHEN_KEY)
        assert kitchen.locator(".sname").inner_text() == KITCHEN
        assert KITCHEN not in kitchen.locator(".sub").inner_text()

        # the chart: every point of the hub's ring, both threshold bands, the fault marked
        chart = _chart(page, KEY)
        assert chart["points"] == 40 and chart["line"] == 40
        assert sorted(chart["bands"]) == ["thawing", "warm"] and chart["faults"] == ["crc_error"]
        assert _chart(page, KITCHEN_KEY)["bands"] == []

        # stale: one clock, the value's age, and since when it is stale; no "last heard" beside
        stale = f.fault(KITCHEN, "stale", True)
        dash.handle([env(stale.model_copy(update={"time": datetime.now(UTC)}))])
        page.wait_for_function(f"""() => document.querySelector(
            '[data-sensor="{KITCHEN_KEY}"]').innerText.includes('stale since')""",
                               timeout=10_000)
        cells = kitchen.locator("td").all_inner_texts()
        assert "no fresh reading" in cells[1]
        assert cells[4].split("\n")[1].startswith("stale since ")
        headers = page.locator("thead th").all_inner_texts()
        assert headers == ["Sensor", "Value", "Band", "Last hour", "Value as of"]

        # live: a new reading adds a point; the band comes and is shown left by a newer value
        dash.handle([env(f.state(FREEZER, "thawing", prev="warm", value=-4.0,
                                 severity="critical"))])
        late_band = f.state(FREEZER, "warm", prev="thawing", value=-6.0)  # made, not yet sent
        dash.handle([env(f.reading(FREEZER, -18.1).model_copy(
            update={"time": datetime.now(UTC)}))])
        page.wait_for_function(f"""() => document.querySelector(
            '[data-sensor="{KEY}"] .num').textContent === '-18.1'""", timeout=10_000)
        assert _chart(page, KEY)["points"] == 42
        band = row.locator("td").nth(2)
        assert "leaving" in (band.locator(".pill").get_attribute("class") or "")
        assert band.inner_text().startswith("thawing\nvalue left it; ends after its 5")
        # the older band change arrives late: the band moves on, the value stays
        dash.handle([env(late_band, out_of_order=True)])
        # an even older reading arrives late: nothing moves back
        dash.handle([env(f.reading(FREEZER, -3.0).model_copy(
            update={"seq": 2, "time": datetime.now(UTC) - timedelta(minutes=15)}),
            out_of_order=True)])
        page.wait_for_function("v => S.version >= v", arg=dash.state.version, timeout=10_000)
        assert row.locator(".num").inner_text() == "-18.1"
        assert band.locator(".pill").inner_text() == "warm"

        # the alert: the sentence names the sensor, so the path above it stops at the device
        dash.on_alert(Alert(alert_id="d" * 32, group_key="rule=t,sensor", status="firing",
                            severity="critical", rule="t", site="demo", device_id="pi-freezer",
                            sensor_id=FREEZER,
                            summary="freezer compartment is thawing: -4.0 \u00b0C, above -5.0 "
                                    "\u00b0C (was warm)",
                            event_id="e" * 32, event_time=f.time, time=f.time))
        page.wait_for_selector("#alerts .item", timeout=10_000)
        item = " ".join(page.locator("#alerts .item").first.inner_text().split())
        assert "critical demo / pi-freezer freezer compartment is thawing" in item
        assert item.count("freezer compartment") == 1
        assert errors == []
        page.screenshot(path=str(SHOT), full_page=True)
