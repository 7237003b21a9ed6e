"""A failed TCP/TLS connect to a server, said in one line that tells what to check.

Shared by the agent's and the hub's MQTT connections: the same refused port, unknown host or
rejected certificate reads the same in both programs' logs.
"""

from __future__ import annotations

import socket
import ssl

from schemas.errors import ServerError


def connect_error(exc: OSError, host: str, port: int, tls: bool = False) -> ServerError:
    """Translate a failed TCP/TLS connect into a :class:`ServerError` with a clear reason."""
    where = f"{host}:{port}"
    if tls and isinstance(exc, ConnectionResetError | ssl.SSLEOFError | BrokenPipeError):
        # TCP was accepted, then the server hung up on our ClientHello
        err = ServerError(f"TLS failure with the broker {where}: the server closed the "
                          "connection during the TLS handshake (is it a TLS port?)")
    elif isinstance(exc, ssl.SSLCertVerificationError):
        err = ServerError(f"TLS failure with the broker {where}: certificate not accepted "
                          f"({exc.verify_message}); check tls.ca_file and the broker's name")
    elif isinstance(exc, ssl.SSLError):
        err = ServerError(f"TLS failure with the broker {where}: {exc.reason or exc} (is it a "
                          "TLS port? are the certificate and key right?)")
    elif isinstance(exc, ConnectionRefusedError):
        err = ServerError(f"broker {where} unreachable: connection refused (not running, or "
                          "wrong port)")
    elif isinstance(exc, socket.gaierror):
        err = ServerError(f"broker {where} unreachable: cannot resolve the host name ({exc})")
    elif isinstance(exc, TimeoutError):
        err = ServerError(f"broker {where} unreachable: timed out")
    else:
        err = ServerError(f"broker {where} unreachable: {exc.strerror or exc}")
    err.__cause__ = exc
    return err


def unresolved_host(host: str) -> str | None:
    """Why ``host`` cannot be looked up from here, or ``None`` when it resolves (check-config)."""
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return f"{host!r} does not resolve from this machine ({exc})"
    return None
