"""systemd's notification protocol (``sd_notify(3)``) with the socket module: no new dependency.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket) and waits for ``READY=1`` before it calls the unit started. With ``WatchdogSec=`` it also
passes ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``); the service must send ``WATCHDOG=1`` more often
than that, or systemd kills and restarts it. The agent pings only while its own loop is turning
(``edge_agent/supervisor.py``), so a hung agent stops pinging and is restarted.

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op that returns False.

    notifier = Notifier.from_environ()
    notifier.ready("16 sensors")        # READY=1 + STATUS=...
    notifier.watchdog()                 # WATCHDOG=1
    notifier.stopping()                 # STOPPING=1
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "socket_address", "watchdog_interval_s"]


def socket_address(value: str | None) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` -> an address for ``socket.sendto`` (None: not under systemd). Pure.

    A leading ``@`` names a socket in the abstract namespace (a leading NUL byte)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other forms are not used for services


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """How often to ping, from ``$WATCHDOG_USEC`` / ``$WATCHDOG_PID``: half the timeout, as
    ``sd_watchdog_enabled(3)`` recommends; None when no watchdog is asked of this process. Pure."""
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None  # meant for another process (e.g. a parent shell)
    return int(usec) / 2e6


class Notifier:
    """Sends datagrams to systemd's notification socket; a no-op without one."""

    def __init__(self, address: str | bytes | None, watchdog_s: float | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_s
        self.sent = 0

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(socket_address(env.get("NOTIFY_SOCKET")),
                   watchdog_interval_s(env, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False when there is no socket or it failed
        (systemd gone, or a socket that is not there: the agent keeps running regardless)."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError:
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


def _one_line(text: str) -> str:
    return " ".join(text.split())
