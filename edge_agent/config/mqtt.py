"""``[mqtt]`` in the agent's config: the keys both programs share, and the agent's own.

The shared keys mean what ``program_support/mqtt_settings.py``'s ``MqttConnection`` (the hub's
pydantic model, the reference) says they mean; ``tests/agent_config`` proves it with a property
test over generated ``[mqtt]`` tables (the same refused, the same values read). Here they are
stdlib dataclasses (``program_support/plain_config.py``), so loading the agent's config imports
neither pydantic nor paho.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from program_support.plain_config import Before, Check, FieldProblem, Range, Secret
from schemas.topics import DEFAULT_ROOT, Topics

if TYPE_CHECKING:
    from program_support.tls_context import ClosingContext


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """``[mqtt.tls]``: verify the broker with ``ca_file`` (the system's CAs if unset), and
    optionally present a client certificate."""

    #: (old, new): the agent's older name of ``insecure``, still read (with a deprecation note)
    OLD_KEYS = (("insecure_skip_verify", "insecure"),)

    ca_file: Path | None = None
    cert_file: Path | None = None   # may hold the key too (one PEM)
    key_file: Path | None = None
    insecure: bool = False          # a lab broker only: no certificate and no host-name check

    def __post_init__(self) -> None:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not")

    def missing_files(self, section: str = "mqtt.tls") -> list[tuple[str, str]]:
        """``(key path, reason)`` for each file this section names that is not there (checked at
        start-up; skipped by ``check-config --no-secrets``)."""
        named = (("ca_file", self.ca_file), ("cert_file", self.cert_file),
                 ("key_file", self.key_file))
        return [(f"{section}.{key}", f"{str(path)!r} does not exist")
                for key, path in named if path is not None and not path.is_file()]

    def context(self) -> ClosingContext:
        """An SSL context; raises ``ServerError`` when a file cannot be used."""
        from program_support.tls_context import client_context  # only with TLS configured

        return client_context(self.ca_file, self.cert_file, self.key_file, self.insecure)


def _protocol(value: Any) -> Any:
    # protocol = 5 (a number) means "5"
    return str(value) if value in (5, 5.0) else value


def _topic_root(value: str) -> str:
    Topics(value)
    return value


def _client_id(value: str) -> str:
    if not 1 <= len(value.encode()) <= 65535:
        raise ValueError("client_id must be 1-65535 bytes")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """``[mqtt]`` in the agent's TOML config."""

    # -- shared with the hub (program_support/mqtt_settings.py's MqttConnection) --
    host: str = "localhost"
    port: Annotated[int, Range(ge=1, le=65535)] = 1883
    #: "5" (session expiry and shared subscriptions need it) or "3.1.1" (an older broker)
    protocol: Annotated[Literal["5", "3.1.1"], Before(_protocol)] = "5"
    client_id: Annotated[str, Check(_client_id)] | None = None  # None: thermopipe-<site>-<device>
    username: str | None = None
    password: Secret | None = None  # "env:NAME" or "file:/path", resolved when loaded
    tls: TlsSettings | None = None
    topic_root: Annotated[str, Check(_topic_root)] = DEFAULT_ROOT
    keepalive_s: Annotated[int, Range(ge=5, le=65535)] = 30
    #: how long the broker keeps this client's session (and its queue) after a disconnect
    session_expiry_s: Annotated[int, Range(ge=0)] = 7 * 24 * 3600
    # -- the agent's own --
    reconnect_min_s: Annotated[float, Range(gt=0)] = 1.0
    reconnect_max_s: Annotated[float, Range(gt=0)] = 60.0
    connect_timeout_s: Annotated[float, Range(gt=0)] = 10.0
    max_inflight: Annotated[int, Range(ge=1, le=60000)] = 500
    status_interval_s: Annotated[float, Range(gt=0)] = 30.0
    encoding: Literal["json", "avro"] = "json"
    # receipts (schemas/TOPICS.md "Receipts"): keep each event until a hub says it holds it
    receipts: Literal["auto", "on", "off"] = "auto"
    receipt_timeout_s: Annotated[float, Range(gt=0)] = 60.0
    receipt_gap_s: Annotated[float, Range(gt=0)] = 10.0
    receipt_detect_s: Annotated[float, Range(gt=0)] = 600.0
    receipt_window: Annotated[int, Range(ge=100)] = 10_000

    def __post_init__(self) -> None:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise FieldProblem("reconnect_max_s", f"must be >= reconnect_min_s "
                                                  f"({self.reconnect_min_s})")
