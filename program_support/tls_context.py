"""The SSL context both programs hand to paho. Its own module so that importing the settings
does not import ``ssl``: an agent without TLS never loads it (nor OpenSSL's libraries; see
``edge_agent/deferred_imports.py``)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from schemas.errors import ServerError


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


def client_context(ca_file: Path | None, cert_file: Path | None = None,
                   key_file: Path | None = None, insecure: bool = False) -> ClosingContext:
    """The context of ``[mqtt.tls]``: the broker verified with ``ca_file`` (the system's CAs if
    unset), host name checked, a client certificate if ``cert_file`` (which may hold the key
    too); ``insecure`` checks neither (a lab broker). :class:`ServerError` when a file cannot be
    used."""
    try:
        ctx = ClosingContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, cert required
        if ca_file is not None:
            ctx.load_verify_locations(cafile=str(ca_file))
        else:
            ctx.load_default_certs()
        if cert_file is not None:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ServerError(f"TLS configuration unusable (ca_file={ca_file}, "
                          f"cert_file={cert_file}): {exc}") from exc
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
