"""/healthz and /metrics (and the routes consumers expose), served by uvicorn in a thread.

Neither shows a secret: every string of the health report and the metrics text goes through
:func:`hub.redact.redact` with the config's secrets and the client id (``secrets``).

With ``[http] token`` set, every route but /healthz needs it (:class:`TokenGate`): an
``Authorization: Bearer <token>`` header (scripts, Prometheus' ``authorization`` setting), or,
for a browser, ``?token=<token>`` once: the answer is a redirect to the same page without it and
an HttpOnly, SameSite=Strict cookie that the page's own requests (its state, its event stream)
carry from then on. Anything else gets 401 with one line. The token is compared in constant time
and never logged; the cookie holds a hash of it, not the token.

``/healthz`` answers 200 when the report's ``ok`` is true, else 503 with the same report (the
hub's is ``Hub.health``: a supervised component down, restarting, failed or stalled makes it
false, naming the component and the exception). The server's thread is the ``web`` component of
the hub's supervisor; a crash is restarted on a newly bound socket of the same address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hub.metrics import HubMetrics
from hub.redact import redact, redact_all
from program_support.supervision import Supervisor
from schemas.errors import ServerError

log = structlog.get_logger("hub.web")


def make_app(health: Callable[[], dict[str, Any]], metrics: HubMetrics,
             extra_routes: list[BaseRoute] | None = None, *, token: str | None = None,
             secrets: Sequence[str] = ()) -> Starlette:
    """The hub's web app; ``token``: required by every route but /healthz (None: open);
    ``secrets``: strings never shown by /healthz or /metrics (besides URL credentials)."""
    hidden = (*secrets, *([token] if token else []))

    async def healthz(_request: Request) -> JSONResponse:
        report = health()
        return JSONResponse(redact_all(report, hidden),
                            status_code=200 if report["ok"] else 503)

    async def metrics_route(_request: Request) -> Response:
        text = generate_latest(metrics.registry).decode("utf-8", "replace")
        return Response(redact(text, hidden), media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [Route("/healthz", healthz), Route("/metrics", metrics_route)]
    middleware = [Middleware(TokenGate, token=token)] if token else []
    return Starlette(routes=[*routes, *(extra_routes or [])], middleware=middleware)


COOKIE = "thermopipe_hub_token"
OPEN_PATHS = frozenset({"/healthz"})  # health checks (compose, systemd, a proxy) need no token


def cookie_value(token: str) -> str:
    """What the browser keeps: a hash of the token (the cookie alone is not the API token)."""
    return hashlib.sha256(f"thermopipe-hub-cookie:{token}".encode()).hexdigest()


class TokenGate:
    """ASGI middleware (pure ASGI: the dashboard's event stream is passed through untouched):
    a request without the token gets 401; ``?token=`` on a GET sets the cookie and redirects to
    the same URL without it."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()
        self._cookie = cookie_value(token).encode()

    def _is(self, given: str, expected: bytes) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._is(given.strip(), self._token):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self._is(request.cookies.get(COOKIE, ""), self._cookie):
            await self.app(scope, receive, send)
            return
        query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
        if scope["type"] == "http" and scope.get("method") == "GET" and self._is(
                query.get("token", ""), self._token):
            response: Response = _into_cookie(scope, query)
        else:
            response = PlainTextResponse(
                "401 unauthorized: this hub needs its [http] token (Authorization: Bearer "
                "<token>, or ?token=<token> once in a browser)\n", status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="thermopipe-hub"'})
        await response(scope, receive, send)


def _into_cookie(scope: Scope, query: QueryParams) -> Response:
    """The redirect that takes the token out of the address bar (and history, and logs),
    leaving it as a cookie. Relative, so it stays right behind a proxy that adds a prefix."""
    path = str(scope["path"])
    rest = [(k, v) for k, v in query.multi_items() if k != "token"]
    target = (path.rsplit("/", 1)[-1] or "./") + (f"?{QueryParams(rest)}" if rest else "")
    response = RedirectResponse(target, status_code=303)
    token = next(v for k, v in query.multi_items() if k == "token")
    response.set_cookie(COOKIE, cookie_value(token), httponly=True, samesite="strict",
                        secure=scope.get("scheme") == "https", path="/")
    return response


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
