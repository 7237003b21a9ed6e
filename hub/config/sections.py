"""The hub's small sections: ``[http]``, ``[dead_letters]``, ``[log]``, ``[dispatch]``,
``[journal]``, ``[limits]`` and ``[receipts]``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from hub.config.base import Section, secret
from program_support.config_loading import secrets_left_unread


class HttpConfig(Section):
    """``[http]``: /healthz, /metrics, the dashboard and its API. Loopback by default: for
    remote access put a reverse proxy in front (deploy/README.md)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8780, ge=0, le=65535)  # 0: any free port (tests)
    #: ``env:NAME`` or ``file:/path``: with a token, every route but /healthz needs it
    #: (``Authorization: Bearer ...``, or the page's ``?token=`` once, kept as a cookie:
    #: hub/web.py). None: no authentication (fine on loopback behind a proxy that has its own)
    token: SecretStr | None = None

    _secrets = field_validator("token", mode="before")(secret)

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if (value is not None and not secrets_left_unread()
                and len(value.get_secret_value().strip()) < 16):
            raise ValueError("too short: use at least 16 characters (e.g. "
                             "`openssl rand -hex 24`)")
        return value


class DeadLettersConfig(Section):
    """``[dead_letters]``: retention of the dead-letter store, oldest first, checked every
    minute by the ingest thread (hub/journal/dead_letters.py ``prune``). ``max_bytes`` counts
    the rows' data (each row at most 8 KiB: hub/records.py), not SQLite's page overhead."""

    max_bytes: int = Field(100_000_000, ge=100_000)   # 100 MB
    max_age_days: float = Field(30.0, gt=0)


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class DispatchConfig(Section):
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    batch_size: int = Field(1000, ge=1)  # for consumers that do not say their own


class JournalConfig(Section):
    # "full": a commit survives power loss before the broker sees our ack; "normal" survives a
    # process crash only (faster on SD cards). See hub/journal/.
    synchronous: Literal["full", "normal"] = "full"
    dedup_retention_days: float = Field(7.0, gt=0)
    dedup_max_ids: int = Field(5_000_000, ge=1000)


class LimitsConfig(Section):
    """``[limits]``: the identities the hub takes events from (hub/identity_limits.py). An
    event or status of a site, device or sensor past a cap is a dead letter (reason code
    ``identity_limit``), counted in ``thermopipe_hub_identity_refused_total{level}``.

    The defaults are far above a real deployment (a site is a building or a cold room, a
    device a Pi, a sensor a probe on its bus: a 1-Wire bus rarely carries more than 20) and
    bound what identities can take of the hub's memory (hub/README.md, "Limits", has the
    measured cost: about 5 KB per device with one sensor, so some 30 MB at the caps)."""

    max_sites: int = Field(100, ge=1)
    max_devices_per_site: int = Field(1_000, ge=1)
    max_devices: int = Field(2_000, ge=1)          # in all sites together
    max_sensors_per_device: int = Field(64, ge=1)
    max_sensors: int = Field(10_000, ge=1)         # of all devices together


class ReceiptsConfig(Section):
    """``[receipts]``: tell each device which of its events this hub holds (schemas/TOPICS.md,
    "Receipts"), and turn the seqs no hub holds into ``data_loss`` records."""

    enabled: bool = True
    interval_s: float = Field(1.0, gt=0, le=60)   # at most one receipt per device this often
    encoding: Literal["json", "avro"] = "json"
    #: read every hub's receipts and report the gaps (worker 0 only with ``--workers N``)
    detect_gaps: bool = True
    gap_timeout_s: float = Field(300.0, gt=0)     # a gap without progress this long is lost
    grace_s: float = Field(5.0, ge=0)
    #: a seq more than this above the highest held for the device (or below the lowest) is a
    #: jump, not a gap: the loss detector restarts the device's tracking there and logs
    #: ``ingest.seq_jump``; no data_loss record is ever larger than this
    max_seq_jump: int = Field(1_000_000, ge=1, le=2**63 - 1)
