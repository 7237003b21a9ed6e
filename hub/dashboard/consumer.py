"""The live dashboard: a hub consumer that keeps the current picture, and the web routes that
serve it.

``routes()`` gives the hub's web server (Starlette) its pages:

- ``GET /``            the page (one self-contained HTML file: no CDN, no build step)
- ``GET /api/state``   the whole state as JSON (devices, sensors, recent events and alerts)
- ``GET /api/events``  Server-Sent Events: first ``event: snapshot`` with the whole state, then
  ``event: change`` with ``{"version": n, "changes": [...]}`` per batch; ``id:`` is the version
- ``GET /static/...``  files from ``hub/dashboard/static/``

Browsers get changes through a bounded buffer each; a browser too slow to keep up is sent a
fresh snapshot instead of the changes it missed (counted in ``stats()``), never a partial view.
The state is rebuilt after a hub restart because the dispatcher replays the backlog.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hub.config.dashboard import DashboardConfig
from hub.consumers.base import ConsumerDefaults, Envelope
from hub.dashboard.state import Change, DashboardState
from schemas.models import Alert, DataLoss

log = structlog.get_logger("hub.dashboard")
STATIC = Path(__file__).with_name("static")


class _Resync:
    """Queue marker: the browser missed changes, send it a snapshot."""


class _Close:
    """Queue marker: the hub is stopping, end the stream."""


@dataclass(eq=False)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any]
    resyncs: int = 0


class DashboardConsumer(ConsumerDefaults):
    name = "dashboard"

    def __init__(self, config: DashboardConfig | None = None) -> None:
        self.config = config or DashboardConfig()
        self.state = DashboardState(self.config.recent_events, self.config.recent_alerts,
                                    self.config.trend_window_s, self.config.trend_points)
        self._lock = threading.Lock()
        self._subscribers: set[_Subscriber] = set()
        self._closed = False
        self._resyncs = 0
        self._page = (STATIC / "index.html").read_text(encoding="utf-8")

    # -- Consumer ------------------------------------------------------------------------------
    def handle(self, batch: Sequence[Envelope]) -> None:
        with self._lock:  # one change set per batch, whatever its size
            self._broadcast(self.state.apply_batch(batch))

    def on_alert(self, alert: Alert) -> None:
        """Show an alert; wire it with ``AlertingConsumer.add_listener(dashboard.on_alert)``."""
        with self._lock:
            self._broadcast(self.state.apply_alert(alert))

    def on_data_loss(self, loss: DataLoss) -> None:
        """Show a ``data_loss`` record (a range of a device's events that never arrived), once."""
        with self._lock:
            self._broadcast(self.state.apply_data_loss(loss))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for sub in list(self._subscribers):
                self._offer_threadsafe(sub, _Close())

    # -- observability -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._snapshot()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"clients": len(self._subscribers), "resyncs": self._resyncs,
                    "devices": len(self.state.devices), "sensors": len(self.state.sensors),
                    "trend_points": sum(len(t) for t in self.state.trends.values()),
                    "version": self.state.version}

    def _snapshot(self) -> dict[str, Any]:
        return {"title": self.config.title, "recent_events": self.config.recent_events,
                "recent_alerts": self.config.recent_alerts, **self.state.snapshot()}

    # -- fan-out to browsers -------------------------------------------------------------------
    def _broadcast(self, changes: list[Change]) -> None:
        if not changes or not self._subscribers:
            return
        message = {"version": self.state.version, "changes": changes}
        for sub in list(self._subscribers):
            self._offer_threadsafe(sub, message)

    def _offer_threadsafe(self, sub: _Subscriber, item: Any) -> None:
        try:
            sub.loop.call_soon_threadsafe(self._offer, sub, item)
        except RuntimeError:  # its event loop is gone (server stopped): forget it
            self._subscribers.discard(sub)

    def _offer(self, sub: _Subscriber, item: Any) -> None:
        """Runs in the subscriber's event loop."""
        if sub.queue.full() and not isinstance(item, _Close):
            # too slow: drop its backlog, tell it to reload the whole state instead
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.resyncs += 1
            with self._lock:
                self._resyncs += 1
            log.warning("dashboard.client_too_slow",
                        buffered=self.config.client_buffer)
            sub.queue.put_nowait(_Resync())
            return
        sub.queue.put_nowait(item)

    def _subscribe(self) -> tuple[_Subscriber, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        sub = _Subscriber(loop, asyncio.Queue(maxsize=self.config.client_buffer))
        with self._lock:  # the snapshot and the registration see the same version
            self._subscribers.add(sub)
            return sub, self._snapshot()

    def _unsubscribe(self, sub: _Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    # -- web -----------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        return [Route("/", self._page_endpoint, methods=["GET"]),
                Route("/api/state", self._state_endpoint, methods=["GET"]),
                Route("/api/events", self._events_endpoint, methods=["GET"]),
                Mount("/static", app=StaticFiles(directory=STATIC), name="dashboard-static")]

    async def _page_endpoint(self, request: Request) -> Response:
        return HTMLResponse(self._page, headers={"Cache-Control": "no-cache"})

    async def _state_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.snapshot(), headers={"Cache-Control": "no-store"})

    async def _events_endpoint(self, request: Request) -> Response:
        if self._closed:
            return Response("the hub is stopping", status_code=503)
        sub, first = self._subscribe()
        return StreamingResponse(self._stream(sub, first), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    async def _stream(self, sub: _Subscriber, first: dict[str, Any]) -> AsyncIterator[str]:
        try:
            yield _sse("snapshot", first, first["version"], retry_ms=2000)
            while True:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), self.config.heartbeat_s)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if isinstance(item, _Close):
                    return
                if isinstance(item, _Resync):
                    snap = self.snapshot()
                    yield _sse("snapshot", snap, snap["version"])
                else:
                    yield _sse("change", item, item["version"])
        finally:
            self._unsubscribe(sub)


def _sse(event: str, data: dict[str, Any], version: int, retry_ms: int | None = None) -> str:
    head = f"retry: {retry_ms}\n" if retry_ms else ""
    body = json.dumps(data, separators=(",", ":"))
    return f"{head}event: {event}\nid: {version}\ndata: {body}\n\n"
