"""The one ``[mqtt]`` connection model of both programs: broker, account, TLS, topic root.

The hub (``hub.config.mqtt.MqttConfig``) extends :class:`MqttConnection` with what it alone needs
(the shared subscription and receive maximum). The agent reads the same keys without pydantic
(``edge_agent/config/mqtt.py``, stdlib dataclasses: pydantic does not install on every Pi);
``tests/agent_config`` holds it to this model, the reference: a property test that every
``[mqtt]`` table this model refuses the agent refuses too, and every one it accepts the agent
reads to the same values. A key means the same in both files::

    [mqtt]
    host = "broker.lan"
    port = 8883
    username = "pi-01"
    password = "file:/run/credentials/edge-agent.service/mqtt-password"   # or env:NAME

    [mqtt.tls]
    ca_file = "/etc/thermopipe/ca.pem"
    insecure = false      # true: neither the certificate nor the host name is checked (a lab)

``insecure_skip_verify`` (the agent's older name for ``insecure``) is still read, with a
deprecation note that ``check-config`` prints and ``run`` logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from program_support.config_loading import deprecated
from program_support.pydantic_loading import resolve_secret
from schemas.topics import DEFAULT_ROOT, Topics

if TYPE_CHECKING:
    from program_support.tls_context import ClosingContext


class TlsSettings(BaseModel):
    """``[mqtt.tls]``: verify the broker with ``ca_file`` (the system's CAs if unset), and
    optionally present a client certificate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None   # may hold the key too (one PEM)
    key_file: Path | None = None
    insecure: bool = False          # a lab broker only: no certificate and no host-name check

    @model_validator(mode="before")
    @classmethod
    def _old_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "insecure_skip_verify" in data:
            if "insecure" in data:
                raise ValueError("insecure_skip_verify is the old name of insecure: keep one")
            data = dict(data)
            data["insecure"] = data.pop("insecure_skip_verify")
            deprecated("mqtt.tls.insecure_skip_verify", "renamed insecure (same meaning)")
        return data

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not")
        return self

    def missing_files(self, section: str = "mqtt.tls") -> list[tuple[str, str]]:
        """``(key path, reason)`` for each file this section names that is not there (the
        start-up checks of both programs; skipped by ``check-config --no-secrets``)."""
        named = (("ca_file", self.ca_file), ("cert_file", self.cert_file),
                 ("key_file", self.key_file))
        return [(f"{section}.{key}", f"{str(path)!r} does not exist")
                for key, path in named if path is not None and not path.is_file()]

    def context(self) -> ClosingContext:
        """An SSL context; raises :class:`ServerError` when a file cannot be used."""
        from program_support.tls_context import client_context  # only with TLS configured

        return client_context(self.ca_file, self.cert_file, self.key_file, self.insecure)


class MqttConnection(BaseModel):
    """The keys of ``[mqtt]`` that agent and hub share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    #: "5" (session expiry and shared subscriptions need it) or "3.1.1" (an older broker)
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None    # each program has its default
    username: str | None = None
    password: SecretStr | None = None  # "env:NAME" or "file:/path", resolved when loaded
    tls: TlsSettings | None = None
    topic_root: str = DEFAULT_ROOT
    keepalive_s: Annotated[int, Field(ge=5, le=65535)] = 30
    #: how long the broker keeps this client's session (and its queue) after a disconnect
    session_expiry_s: Annotated[int, Field(ge=0)] = 7 * 24 * 3600

    @field_validator("password", mode="before")
    @classmethod
    def _resolve_password(cls, value: Any) -> Any:
        if isinstance(value, SecretStr) or value is None:
            return value
        if not isinstance(value, str):
            raise ValueError("a secret is written 'env:VARIABLE' or 'file:/path'")
        return resolve_secret(value)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: Any) -> Any:
        return str(value) if value in (5, 5.0) else value

    @field_validator("topic_root")
    @classmethod
    def _check_root(cls, value: str) -> str:
        Topics(value)
        return value

    @field_validator("client_id")
    @classmethod
    def _check_client_id(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= len(value.encode()) <= 65535:
            raise ValueError("client_id must be 1-65535 bytes")
        return value
