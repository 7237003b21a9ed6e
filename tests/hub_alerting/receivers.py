"""Real receivers for the notifier tests: an HTTP webhook server and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.servers import free_port


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


class SmtpReceiver:
    """aiosmtpd with STARTTLS (a trustme certificate) and AUTH LOGIN/PLAIN, required over TLS."""

    def __init__(self, tmp: Path, username: str = "hub", password: str = "s3cret") -> None:
        import trustme
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[Any] = []
        self.logins: list[str] = []
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        self.ca_file = tmp / "smtp-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.messages.append(envelope)
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                          auth_data: Any) -> Any:
            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login.decode() == username
                  and auth_data.password.decode() == password)
            if ok:
                outer.logins.append(username)
            return AuthResult(success=ok, handled=False)

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     tls_context=context, require_starttls=True,
                                     authenticator=authenticator, auth_require_tls=True,
                                     auth_exclude_mechanism=["CRAM-MD5"])
        self.controller.start()

    def wait_messages(self, n: int, timeout: float = 20) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages

    def stop(self) -> None:
        self.controller.stop()
