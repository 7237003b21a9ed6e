"""The ``[storage]`` section of the hub's TOML: where events are stored (InfluxDB v2 or v1, or
the embedded SQLite store), read by ``hub/storage/``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from hub.config.base import Section, secret


class StorageConfig(Section):
    enabled: bool = True
    #: v2: influxdb-client's v2 write API; v1: InfluxDB 1.x /write; sqlite: the embedded store
    #: (one SQLite file, for the demo and for trying the hub with nothing installed)
    mode: Literal["v2", "v1", "sqlite"] = "v2"
    url: str = "http://127.0.0.1:8086"
    path: Path | None = None        # sqlite: the file (default: <data_dir>/store.sqlite3)
    token: SecretStr | None = None  # v2
    org: str = "thermopipe"         # v2
    bucket: str = "thermopipe"      # v2
    database: str = "thermopipe"    # v1
    retention_policy: str | None = None  # v1, optional
    username: str | None = None     # v1 basic auth
    password: SecretStr | None = None
    gzip: bool = False
    batch_size: int = Field(2000, ge=1, le=100_000)
    flush_interval_s: float = Field(0.2, gt=0, le=60)
    timeout_s: float = Field(10.0, gt=0, le=300)
    #: every this often the hub stores its own health (measurement hub_health, any mode)
    health_interval_s: float = Field(10.0, gt=0, le=3600)

    _secrets = field_validator("token", "password", mode="before")(secret)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")
