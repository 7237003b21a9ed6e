"""/healthz and /metrics (and the routes consumers expose), served by uvicorn in a thread.

``/healthz`` answers 200 when the report's ``ok`` is true, else 503 with the same report (the
hub's is ``Hub.health``: a supervised component down, restarting, failed or stalled makes it
false, naming the component and the exception). The server's thread is the ``web`` component of
the hub's supervisor; a crash is restarted on a newly bound socket of the same address.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hub.metrics import HubMetrics
from schemas.errors import ServerError
from schemas.supervision import Supervisor

log = structlog.get_logger("hub.web")


def make_app(health: Callable[[], dict[str, Any]], metrics: HubMetrics,
             extra_routes: list[BaseRoute] | None = None) -> Starlette:
    async def healthz(_request: Request) -> JSONResponse:
        report = health()
        return JSONResponse(report, status_code=200 if report["ok"] else 503)

    async def metrics_route(_request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [Route("/healthz", healthz), Route("/metrics", metrics_route)]
    return Starlette(routes=[*routes, *(extra_routes or [])])


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or :class:`ServerError` in one line (port taken, address unknown).

    Bound here rather than by uvicorn, so a taken port is our error with the reason and the key to
    change, not uvicorn's log line followed by a traceback. SO_REUSEADDR, as every server sets:
    a hub restarted at once must not wait for the old connections' TIME_WAIT."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerError(f"http.host {host!r} is not an address of this machine "
                          f"({exc.strerror})") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServerError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): stop what "
                          "uses it or change http.port") from None
    return sock


class WebServer:
    """uvicorn in a supervised thread; ``port`` is known after ``start`` (0 picks a free one)."""

    def __init__(self, app: Starlette, host: str, port: int, *,
                 supervisor: Supervisor | None = None) -> None:
        self._app = app
        self._server = self._new_server(app, host, port)
        self.supervisor = supervisor or Supervisor()
        self._socket: socket.socket | None = None
        self._stopping = threading.Event()
        self.host = host
        self.port = port

    @staticmethod
    def _new_server(app: Starlette, host: str, port: int) -> uvicorn.Server:
        return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                             access_log=False, lifespan="on"))

    def _serve(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket] if self._socket else None))

    def _reset(self) -> None:
        """Before a restart: a new server on a newly bound socket (the old one may be closed)."""
        if self._socket is not None:
            self._socket.close()
        self._socket = bind(self.host, self.port)
        self._server = self._new_server(self._app, self.host, self.port)

    def start(self, timeout: float = 15.0) -> None:
        self._socket = bind(self.host, self.port)
        component = self.supervisor.spawn("web", self._serve, reset=self._reset)
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if component.state != "running" or time.monotonic() > deadline:
                raise ServerError(f"the HTTP server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        for server in self._server.servers:
            for sock in server.sockets:
                self.port = int(sock.getsockname()[1])
                break
        log.info("http.listening", host=self.host, port=self.port)

    def stop(self) -> None:
        self.supervisor.retire("web")
        self._server.should_exit = True
        self.supervisor.join("web", 10)
        if self._socket is not None:
            self._socket.close()
