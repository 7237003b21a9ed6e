"""Real receivers for the notifier tests: an HTTP webhook server (bench/harness/receivers.py,
which bench/soak.py uses too) and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

from bench.harness.receivers import Received, WebhookReceiver
from tests.servers import free_port

__all__ = ["Received", "SmtpReceiver", "WebhookReceiver"]


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
