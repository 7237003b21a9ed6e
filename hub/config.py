"""The hub's one TOML config, validated at start-up (``hub check-config FILE``).

Secrets (MQTT password, InfluxDB token/password) are references, ``env:NAME`` or ``file:/path``,
resolved while validating, so a missing secret is reported with its key path before anything runs.

Example::

    hub_id = "hub-1"
    data_dir = "/var/lib/thermopipe-hub"

    [mqtt]
    host = "127.0.0.1"
    port = 1883
    topic_root = "thermopipe"
    shared_group = "hubs"          # MQTT 5 shared subscription; required for `hub run --workers N`
    username = "hub"
    password = "env:HUB_MQTT_PASSWORD"
    account_per_connection = true  # worker i logs in as "hub-w0"..., Home Assistant as "hub-ha"

    [storage]
    mode = "v1"                    # "v2": influxdb-client (2.x, 3.x, Cloud, 1.8+); "v1": /write
    url = "http://127.0.0.1:8086"
    database = "thermopipe"

    [limits]                       # identities past a cap are dead letters (hub/README.md)
    max_sites = 100
    max_devices = 2000
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hub.alerting.config import AlertingConfig  # the [alerting] section, owned by the consumer
from hub.dashboard.config import DashboardConfig  # the [dashboard] section, owned by the consumer
from hub.homeassistant.config import HomeAssistantConfig  # [homeassistant], owned likewise
from program_support.config_loading import (
    checking_elsewhere,
    directory_problem,
    load_config,
    resolve_secret,
    secrets_left_unread,
)
from program_support.extras import missing_reason
from program_support.mqtt_settings import MqttConnection
from schemas.codec import DEFAULT_MAX_PAYLOAD
from schemas.errors import ConfigError
from schemas.ids import check_identifier


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret(value: Any) -> Any:
    if isinstance(value, SecretStr) or value is None:
        return value
    if not isinstance(value, str):
        raise ValueError("must be 'env:VARIABLE' or 'file:/path'")
    return resolve_secret(value)


class MqttConfig(MqttConnection):
    """``[mqtt]`` of the hub: the shared connection keys
    (:class:`program_support.mqtt_settings.MqttConnection`) and the hub's own."""

    host: str = "127.0.0.1"
    #: default: "thermopipe-hub-{hub_id}-{random}", the random part made once and kept in
    #: data_dir/client_id (HubConfig.client_id), so no one can guess it from the config
    client_id: str | None = None
    shared_group: str | None = None
    #: one broker account per MQTT connection of the hub: worker i of ``hub run --workers N``
    #: logs in as "{username}-w{i}", the Home Assistant connection as "{username}-ha" (a worker's
    #: as "{username}-w{i}-ha"), all with the one password. Needed on a broker that binds the
    #: client id to the account (deploy's Mosquitto: use_username_as_clientid), where two
    #: connections of one account would take over each other's session.
    account_per_connection: bool = False
    max_payload_bytes: int = Field(DEFAULT_MAX_PAYLOAD, ge=256)
    # Unacknowledged messages the broker may have in flight to us: bounds the in-memory queue.
    receive_maximum: int = Field(2000, ge=10, le=65535)

    @field_validator("shared_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "shared group")

    @model_validator(mode="after")
    def _shared_needs_v5(self) -> MqttConfig:
        if self.shared_group and self.protocol != "5":
            raise ValueError("shared_group needs protocol = \"5\" (shared subscriptions are "
                             "MQTT 5)")
        return self

    @model_validator(mode="after")
    def _accounts_need_username(self) -> MqttConfig:
        if self.account_per_connection and not self.username:
            raise ValueError("account_per_connection needs a username (the accounts are named "
                             "after it)")
        return self

    def account(self, connection: str) -> MqttConfig:
        """The settings of the hub's connection ``connection`` ("ha", "w0"...): its own
        username ``{username}-{connection}`` when :attr:`account_per_connection`, else these."""
        if not self.account_per_connection or not self.username:
            return self
        return self.model_copy(update={"username": f"{self.username}-{connection}"})


class StorageConfig(_Section):
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

    _secrets = field_validator("token", "password", mode="before")(_secret)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")




class HttpConfig(_Section):
    """``[http]``: /healthz, /metrics, the dashboard and its API. Loopback by default: for
    remote access put a reverse proxy in front (deploy/README.md)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8780, ge=0, le=65535)  # 0: any free port (tests)
    #: ``env:NAME`` or ``file:/path``: with a token, every route but /healthz needs it
    #: (``Authorization: Bearer ...``, or the page's ``?token=`` once, kept as a cookie:
    #: hub/web.py). None: no authentication (fine on loopback behind a proxy that has its own)
    token: SecretStr | None = None

    _secrets = field_validator("token", mode="before")(_secret)

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if (value is not None and not secrets_left_unread()
                and len(value.get_secret_value().strip()) < 16):
            raise ValueError("too short: use at least 16 characters (e.g. "
                             "`openssl rand -hex 24`)")
        return value


class DeadLettersConfig(_Section):
    """``[dead_letters]``: retention of the dead-letter store, oldest first, checked every
    minute by the ingest thread (hub/journal/dead_letters.py ``prune``). ``max_bytes`` counts
    the rows' data (each row at most 8 KiB: hub/records.py), not SQLite's page overhead."""

    max_bytes: int = Field(100_000_000, ge=100_000)   # 100 MB
    max_age_days: float = Field(30.0, gt=0)


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class DispatchConfig(_Section):
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    batch_size: int = Field(1000, ge=1)  # for consumers that do not say their own


class JournalConfig(_Section):
    # "full": a commit survives power loss before the broker sees our ack; "normal" survives a
    # process crash only (faster on SD cards). See hub/journal/.
    synchronous: Literal["full", "normal"] = "full"
    dedup_retention_days: float = Field(7.0, gt=0)
    dedup_max_ids: int = Field(5_000_000, ge=1000)


class LimitsConfig(_Section):
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


class ReceiptsConfig(_Section):
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


class HubConfig(_Section):
    hub_id: str = "hub"
    data_dir: Path = Path("/var/lib/thermopipe-hub")
    late_after_s: float = Field(300.0, gt=0)
    mqtt: MqttConfig = MqttConfig()
    storage: StorageConfig = StorageConfig()
    alerting: AlertingConfig = AlertingConfig()
    dashboard: DashboardConfig = DashboardConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    http: HttpConfig = HttpConfig()
    dead_letters: DeadLettersConfig = DeadLettersConfig()
    log: LogConfig = LogConfig()
    dispatch: DispatchConfig = DispatchConfig()
    journal: JournalConfig = JournalConfig()
    receipts: ReceiptsConfig = ReceiptsConfig()
    limits: LimitsConfig = LimitsConfig()

    @field_validator("hub_id")
    @classmethod
    def _hub_id(cls, value: str) -> str:
        return check_identifier(value, "hub id")

    @property
    def client_id(self) -> str:
        """``mqtt.client_id``, else ``thermopipe-hub-{hub_id}-{random}`` with the random part
        made on first use and kept in ``data_dir/client_id`` (:func:`persistent_client_id`):
        the same id across restarts (the broker keeps our session and queue under it), but not
        one that a client knowing the config could take over."""
        return self.mqtt.client_id or persistent_client_id(self.data_dir, self.hub_id)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "hub.sqlite3"

    def for_worker(self, index: int) -> HubConfig:
        """The config of worker ``index`` of ``hub run --workers N``: own data dir and client id
        (``{client_id}-w{index}``), its own account with ``mqtt.account_per_connection``
        (``{username}-w{index}``), the same shared subscription, its own HTTP port
        (port + index)."""
        mqtt = self.mqtt.account(f"w{index}").model_copy(
            update={"client_id": f"{self.client_id}-w{index}"})
        http = self.http.model_copy(
            update={"port": self.http.port + index if self.http.port else 0})
        # one loss detector for all workers: it reads every worker's receipts
        receipts = self.receipts.model_copy(
            update={"detect_gaps": self.receipts.detect_gaps and index == 0})
        return self.model_copy(update={"data_dir": self.data_dir / f"worker-{index}",
                                       "mqtt": mqtt, "http": http, "receipts": receipts,
                                       "hub_id": f"{self.hub_id}-w{index}"})


CLIENT_ID_FILE = "client_id"


def persistent_client_id(data_dir: Path, hub_id: str) -> str:
    """The hub's default client id, ``thermopipe-hub-{hub_id}-{80 random bits}``, read from
    ``data_dir/client_id`` or made there once (mode 0600; two workers starting together agree:
    the first file written wins). Raises :class:`OSError` when ``data_dir`` cannot be written."""
    path = data_dir / CLIENT_ID_FILE
    try:
        kept = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        return kept
    data_dir.mkdir(parents=True, exist_ok=True)
    made = f"thermopipe-hub-{hub_id}-{secrets.token_hex(10)}"
    tmp = data_dir / f".{CLIENT_ID_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(made + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process wrote one first: keep it
            os.link(tmp, path)  # atomic, and never replaces an id already there
    finally:
        tmp.unlink(missing_ok=True)
    kept = path.read_text(encoding="utf-8").strip()
    if not kept:  # an empty file left by hand: make a new id in its place
        path.write_text(made + "\n", encoding="utf-8")
        kept = made
    return kept


def environment_problems(config: HubConfig) -> list[tuple[str, str]]:
    """What this machine lacks to run ``config``: the hub's packages, writable directories."""
    problems: list[tuple[str, str]] = []
    packages = missing_reason("hub", "the hub")
    if packages:
        problems.append(("", packages))
    if config.mqtt.tls is not None:
        problems.extend(config.mqtt.tls.missing_files())
    dirs = [("data_dir", config.data_dir)]
    if config.storage.enabled and config.storage.mode == "sqlite" and config.storage.path:
        dirs.append(("storage.path", config.storage.path.parent))
    if config.alerting.enabled and config.alerting.state_dir is not None:
        dirs.append(("alerting.state_dir", config.alerting.state_dir))
    for key, directory in dirs:
        problem = directory_problem(directory)
        if problem:
            problems.append((key, problem))
    return problems


def load_hub_config(path: str | Path) -> HubConfig:
    """Read and validate; raises :class:`schemas.errors.ConfigError` with every key path,
    including what this machine lacks to run it (:func:`environment_problems`)."""
    config = load_config(path, HubConfig)
    problems = [] if checking_elsewhere() else environment_problems(config)
    if "storage" not in config.model_fields_set:
        # an empty file would otherwise be "OK" and then write to an InfluxDB that is not there
        problems.append(("storage", 'missing: say where events are stored ([storage] with '
                                    'mode = "v1", "v2" or "sqlite" and its url or path), or '
                                    "turn storage off (enabled = false)"))
    if problems:
        raise ConfigError(str(path), problems)
    return config
