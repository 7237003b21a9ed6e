"""Loading the hub's config: :class:`HubConfig` (the whole file, one model per section) and
:func:`load_hub_config`, which validates it and what this machine lacks to run it
(:func:`environment_problems`); the client id kept in the data directory
(:func:`persistent_client_id`). The file and its sections: the package docstring
(``hub/config/__init__.py``)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pydantic import Field, field_validator

from hub.config.alerting import AlertingConfig
from hub.config.base import Section
from hub.config.dashboard import DashboardConfig
from hub.config.homeassistant import HomeAssistantConfig
from hub.config.mqtt import MqttConfig
from hub.config.sections import (
    DeadLettersConfig,
    DispatchConfig,
    HttpConfig,
    JournalConfig,
    LimitsConfig,
    LogConfig,
    ReceiptsConfig,
)
from hub.config.storage import StorageConfig
from program_support.config_loading import checking_elsewhere, directory_problem
from program_support.extras import missing_reason
from program_support.pydantic_loading import load_config
from schemas.errors import ConfigError
from schemas.ids import check_identifier


class HubConfig(Section):
    """The whole file: the top-level keys and one model per ``[section]`` (this package's
    modules)."""

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
