"""A real uvicorn serving the dashboard's routes on a free port, in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette

from hub.dashboard.consumer import DashboardConsumer
from hub.metrics import HubMetrics
from hub.web import make_app
from tests.servers import CHROMIUM_ARGS, free_port, require_browser


class LiveServer:
    def __init__(self, dashboard: DashboardConsumer, token: str | None = None) -> None:
        self.dashboard = dashboard
        self.port = free_port()
        # with a token: the hub's own app (hub/web.py), its token gate in front of the routes
        app = (make_app(lambda: {"ok": True}, HubMetrics(), dashboard.routes(), token=token)
               if token else Starlette(routes=dashboard.routes()))
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", timeout_graceful_shutdown=3)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.dashboard.close()  # ends the event streams so the server can stop
        self.server.should_exit = True
        self.thread.join(15)


@contextmanager
def live_page(dashboard: DashboardConsumer, width: int = 1360, height: int = 900,
              token: str | None = None) -> Iterator[tuple[Any, list[str]]]:
    """The dashboard served by a real uvicorn, open in a real headless Chromium and live (its
    event stream connected); yields the page and the JavaScript errors it raised. ``token``: the
    hub's ``[http] token``, given once as ``?token=`` the way a person would."""
    sync_playwright, chromium = require_browser()
    with LiveServer(dashboard, token) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/" + (f"?token={token}" if token else ""))
            page.wait_for_function("document.querySelector('#conn').textContent === 'live'",
                                   timeout=15_000)
            yield page, errors
        finally:
            browser.close()
