"""A real headless Chromium opens the dashboard served by a real uvicorn and sees a value change
live, without a reload. Fails (never skips) under CI=true when Chromium or playwright is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hub.config.dashboard import DashboardConfig
from hub.dashboard.consumer import DashboardConsumer
from schemas.models import Alert
from tests.hub_alerting.helpers import Feed, env
from tests.hub_dashboard.live import live_page
from tests.servers import require_browser

SCREENSHOT = Path(os.environ.get("TP_DASHBOARD_SCREENSHOT", "/tmp/thermopipe-dashboard.png"))


def _cell_is(sensor: str, text: str) -> str:
    return (f"() => {{ const e = document.querySelector('[data-sensor=\"{sensor}\"] .num');"
            f" return e !== null && e.textContent === '{text}'; }}")


@pytest.mark.slow
def test_page_shows_a_value_change_live_without_reload() -> None:
    require_browser()
    dash = DashboardConsumer(DashboardConfig(title="Cold room"))
    f = Feed("pi-4", "shop")
    g = Feed("pi-5", "shop")
    dash.handle([env(f.status(True, "birth", sensors=("freezer", "fridge"))),
                 env(f.reading("freezer", -18.2)), env(f.reading("fridge", 3.9)),
                 env(g.status(True, "birth", sensors=("ambient",))),
                 env(g.reading("ambient", 21.4))])
    with live_page(dash) as (page, errors):
        page.wait_for_function(_cell_is("shop/pi-4/freezer", "-18.2"), timeout=10_000)
        assert page.title() == "Cold room"
        page.evaluate("window.__sameDocument = 'yes'")

        # a new envelope reaches the consumer: the page changes by itself
        hot = f.state("freezer", "high", value=-9.5, severity="critical")
        dash.handle([env(hot)])
        page.wait_for_function(_cell_is("shop/pi-4/freezer", "-9.5"), timeout=10_000)
        pill = page.locator('[data-sensor="shop/pi-4/freezer"] .pill').first
        assert pill.text_content() == "high"
        assert "critical" in (pill.get_attribute("class") or "")
        dash.on_alert(Alert(alert_id="c" * 32, group_key="rule=default,freezer",
                            status="firing", severity="critical", rule="default",
                            site="shop", device_id="pi-4", sensor_id="freezer",
                            summary="shop/pi-4/freezer is high (critical): -9.5 degC",
                            event_id=hot.event_id, event_time=hot.time, time=hot.time))
        dash.handle([env(g.status(False, "will"))])
        page.wait_for_function(
            "document.querySelector('#t-offline').textContent === '1' && "
            "document.querySelector('#t-alerting').textContent === '1'", timeout=10_000)
        assert "offline" in (page.locator('[data-device="shop/pi-5"] .badge')
                             .text_content() or "")
        assert page.evaluate("window.__sameDocument") == "yes"  # no reload happened
        assert errors == []
        page.screenshot(path=str(SCREENSHOT), full_page=True)


@pytest.mark.slow
def test_with_a_token_the_page_stays_live_on_its_cookie() -> None:
    """``[http] token``: opened once with ``?token=``, the page loses the token from its address,
    and its own requests (state, the live event stream) go on with the HttpOnly cookie."""
    require_browser()
    token = "browser-token-0123456789"
    dash = DashboardConsumer(DashboardConfig(title="Locked room"))
    f = Feed("pi-7", "lab")
    dash.handle([env(f.status(True, "birth", sensors=("bench",))), env(f.reading("bench", 20.5))])
    with live_page(dash, token=token) as (page, errors):  # went live: the stream is connected
        assert "token" not in page.url
        page.wait_for_function(_cell_is("lab/pi-7/bench", "20.5"), timeout=10_000)
        dash.handle([env(f.reading("bench", 22.5))])
        page.wait_for_function(_cell_is("lab/pi-7/bench", "22.5"), timeout=10_000)
        assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
        assert page.evaluate("fetch('api/state').then(r => r.status)") == 200
        stranger = page.context.browser.new_page()  # another context: no cookie
        try:
            assert stranger.goto(page.url).status == 401
        finally:
            stranger.close()
        assert errors == []
