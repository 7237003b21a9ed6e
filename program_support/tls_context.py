"""The SSL context both programs hand to paho. Its own module so that importing the settings
does not import ``ssl``: an agent without TLS never loads it (nor OpenSSL's libraries; see
``edge_agent/deferred_imports.py``)."""

from __future__ import annotations

import ssl
from typing import Any


class ClosingContext(ssl.SSLContext):
    """paho leaves the socket of a failed TLS handshake open; remember it so we can close it."""

    last_socket: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock = super().wrap_socket(*args, **kwargs)
        self.last_socket = sock
        return sock

    def close_failed(self) -> None:
        sock, self.last_socket = self.last_socket, None
        if sock is not None:
            sock.close()
