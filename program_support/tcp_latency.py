"""No 40 ms stalls on an MQTT connection: Nagle's algorithm and delayed ACKs, switched off.

MQTT sends small packets in both directions. With Nagle's algorithm on (the default of every TCP
socket, and paho never turns it off), a small packet written while an earlier one is still
unacknowledged waits for that ACK; the peer's kernel delays its ACK by up to 40 ms (Linux) when
it has nothing to send back. The hub met this once a second: it publishes its receipts at QoS 1,
the broker answers with a PUBACK (the hub's kernel delays its ACK), and an event the broker
forwards within the next 40 ms waits behind that ACK in a stock Mosquitto (``set_tcp_nodelay``
is false by default). A crossing's webhook then took 20-45 ms instead of 3-5 (bench/README.md,
issue 26, found with strace on the broker and the hub).

- :func:`send_at_once` sets ``TCP_NODELAY`` on a connection's socket: what we write (an event,
  a batch of PUBACKs, a receipt) leaves at once. Every paho client of ours gets it when its
  socket opens (``program_support/mqtt_connect.py``).
- :func:`ack_at_once` asks the kernel to ACK what was just read without delay
  (``TCP_QUICKACK``, Linux only; the kernel drops back to delayed ACKs by itself, so the hub's
  read path asks again after each read): the broker's Nagle then never waits on us. The
  broker's own fix is ``set_tcp_nodelay true`` (deploy/mosquitto/mosquitto.conf sets it), but the
  hub cannot count on every broker having it.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

#: None where the platform has no quick-ACK switch (everything but Linux)
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def send_at_once(sock: Any) -> None:
    """``TCP_NODELAY`` on ``sock`` (a socket, an SSL socket or a wrapper with ``setsockopt``);
    a socket that is not TCP (a Unix socket in a test) is left as it is."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def ack_at_once(sock: Any) -> None:
    """ACK at once what was read from ``sock`` so far (Linux; nothing elsewhere)."""
    if QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
