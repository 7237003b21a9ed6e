"""A private Mosquitto with a TLS listener, certificates made for the test, per-device passwords:
bench's harness (bench/harness/tls.py), skipping or failing as the tests do when
``mosquitto_passwd`` is missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.harness import tls as _tls
from bench.harness.tls import TlsBroker
from tests.servers import Mosquitto, require_binary

__all__ = ["TlsBroker", "make_tls_broker"]


def make_tls_broker(mosquitto_factory: Callable[..., Mosquitto], workdir: Path,
                    users: dict[str, str], acl_lines: list[str] | None = None) -> TlsBroker:
    """Start a broker whose TLS listener needs a password per user; plain port stays loopback."""
    require_binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    return _tls.make_tls_broker(mosquitto_factory, workdir, users, acl_lines)
