"""A real HTTP webhook receiver for the hub's alert notifications (bench/soak.py and the alerting
tests): answers each request as told, remembers what came."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .servers import free_port


@dataclass
class Received:
    key: str
    body: dict[str, Any]
    status: int  # what we answered; 0: hung up without answering


@dataclass
class WebhookReceiver:
    """``behaviour(n, key)`` says how to answer request ``n`` (0-based): an HTTP status, or
    ``"hang"`` to hold the request until released, then drop it."""

    behaviour: Callable[[int, str], int | str] = lambda n, key: 200
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Idempotency-Key", "")
                with receiver._lock:
                    n = len(receiver.requests)
                    answer = receiver.behaviour(n, key)
                    rec = Received(key, body, 0)
                    receiver.requests.append(rec)
                if answer == "hang":
                    receiver.release.wait(60)
                    self.close_connection = True
                    return
                assert isinstance(answer, int)
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._cond:
                    rec.status = answer
                    receiver._cond.notify_all()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def acked(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def wait_acked(self, n: int, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len([r for r in self.requests if 200 <= r.status < 300]) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return self.acked()

    def wait_requests(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
