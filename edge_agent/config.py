"""The agent's one TOML config file, validated at start-up (``edge-agent check-config FILE``).

Every problem is reported at once with its key path (``sensors.t1.rules.thresholds[0].above``)
by :func:`program_support.config_loading.load_config`. Secrets (the MQTT password) are written as
``env:NAME`` or ``file:/path``, never inline; see ``deploy/agent.example.toml`` for every option.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.decide import SensorRules
from edge_agent.mqtt_link import MqttSettings
from edge_agent.outbox import OutboxSettings
from edge_agent.sources.onewire import DEFAULT_W1_DIR
from program_support.config_loading import checking_elsewhere, directory_problem, load_config
from program_support.extras import missing_reason
from schemas.errors import ConfigError
from schemas.ids import DeviceId, SiteId, check_identifier
from schemas.models import NAME_MAX, Unit


class _Strict(BaseModel):
    # a misspelt key is an error, never silently ignored
    model_config = ConfigDict(extra="forbid", frozen=True)


class SerialSourceConfig(_Strict):
    """A microcontroller on USB serial speaking schemas/SERIAL_PROTOCOL.md."""

    kind: Literal["serial"]
    name: str | None = None
    #: a device path, a stable /dev/serial/by-id/... path, or a pyserial URL (socket://h:p)
    port: str = Field(min_length=1)
    baudrate: int = Field(default=115200, gt=0)
    #: sensor ids to expect even before the device announces them (then `device_lost` is
    #: reported for them if the device is absent at start-up)
    sensors: list[str] = []
    reopen_max_s: float = Field(default=5.0, gt=0, le=300)

    @field_validator("sensors")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        return [check_identifier(v, "sensor id") for v in value]


class OneWireSourceConfig(_Strict):
    """DS18B20 sensors on the Linux 1-Wire bus."""

    kind: Literal["onewire"]
    name: str | None = None
    w1_dir: Path = DEFAULT_W1_DIR
    interval_s: float = Field(default=10.0, gt=0)
    #: read only these sensor ids (default: every 28-* device found)
    sensors: list[str] = []
    max_workers: int = Field(default=4, ge=1, le=32)

    @field_validator("sensors")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        return [check_identifier(v, "sensor id") for v in value]


class SimulatorSourceConfig(_Strict):
    """firmware_sim in-process: a scenario name (``firmware-sim list``) or a scenario file."""

    kind: Literal["simulator"]
    name: str | None = None
    scenario: str
    speed: float = Field(default=1.0, gt=0)
    seed: int | None = None
    loop: bool = False

    @field_validator("scenario")
    @classmethod
    def _loads(cls, value: str) -> str:
        from firmware_sim import scenario as scenarios

        try:
            scenarios.load(value)
        except ConfigError as exc:
            raise ValueError(f"scenario {value!r} is invalid: {exc}") from None
        return value


SourceConfig = Annotated[SerialSourceConfig | OneWireSourceConfig | SimulatorSourceConfig,
                         Field(discriminator="kind")]


class SensorConfig(_Strict):
    """``[sensors.<id>]``: a sensor's unit, a name for people, and its decision rules."""

    unit: Unit = "degC"
    name: str = Field("", max_length=NAME_MAX)  # the contract's bound (SensorInfo.name)
    #: None = the ``[defaults]`` rules
    rules: SensorRules | None = None


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: auto = coloured console lines on a terminal, JSON lines otherwise (journald)
    format: Literal["auto", "json", "console"] = "auto"


class AgentConfig(_Strict):
    site: SiteId
    device_id: DeviceId
    #: a name for people ("Freezer"): Home Assistant's device name, sent in the birth
    #: (default "": the device id is shown)
    name: str = Field("", max_length=NAME_MAX)  # the contract's bound (DeviceStatus.device_name)
    mqtt: MqttSettings
    outbox: OutboxSettings = OutboxSettings()
    #: how often the one-line human status is printed (with --status-line or on a terminal)
    status_line_interval_s: float = Field(default=5.0, gt=0)
    #: the state file `edge-agent status` reads (default: $RUNTIME_DIRECTORY/agent-state.json,
    #: /run/thermopipe under the systemd unit, else beside the outbox)
    state_file: Path | None = None
    #: how often the state file is rewritten (and systemd's watchdog pinged), seconds
    state_interval_s: float = Field(default=2.0, gt=0, le=60)
    #: how often the deciders get a tick (stale detection, summary windows), seconds
    tick_s: float = Field(default=1.0, gt=0, le=60)
    #: readings waiting between the sources and the deciders; beyond it readings are dropped
    #: (counted, logged) rather than blocking a source
    queue_size: int = Field(default=10_000, ge=10)
    sources: list[SourceConfig] = Field(min_length=1)
    #: rules for a sensor that a source discovers but ``[sensors]`` does not list
    defaults: SensorRules = SensorRules()
    sensors: dict[str, SensorConfig] = {}
    log: LogConfig = LogConfig()

    @field_validator("sensors")
    @classmethod
    def _sensor_ids(cls, value: dict[str, SensorConfig]) -> dict[str, SensorConfig]:
        for sid in value:
            check_identifier(sid, "sensor id")
        return value

    @model_validator(mode="after")
    def _unique_source_names(self) -> Self:
        names = [s.name for s in self.sources if s.name]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique: {', '.join(dupes)} repeated")
        return self

    def rules_for(self, sensor_id: str) -> SensorRules:
        sensor = self.sensors.get(sensor_id)
        return sensor.rules if sensor is not None and sensor.rules is not None else self.defaults


_SOURCE_TAG = re.compile(r"^(sources\[\d+\])\.(?:serial|onewire|simulator)(?=\.|$)")


def _source_kind(key: str, reason: str) -> str:
    """``unknown kind 'x'`` said as what it is at ``sources[N].kind``: a source kind."""
    if re.fullmatch(r"sources\[\d+\]\.kind", key) and reason.startswith("unknown kind "):
        return "unknown source kind " + reason.removeprefix("unknown kind ")
    return reason


def environment_problems(cfg: AgentConfig) -> list[tuple[str, str]]:
    """What this machine lacks for ``cfg``: an optional package, a writable outbox directory."""
    problems: list[tuple[str, str]] = []
    for i, source in enumerate(cfg.sources):
        if isinstance(source, SerialSourceConfig):
            reason = missing_reason("agent", "a serial source", ["serial"])
            if reason:
                problems.append((f"sources[{i}].kind", reason))
    if cfg.mqtt.encoding == "avro":
        reason = missing_reason("avro", 'encoding = "avro"')
        if reason:
            problems.append(("mqtt.encoding", reason))
    if cfg.mqtt.tls is not None:
        problems.extend(cfg.mqtt.tls.missing_files())
    outbox_dir = directory_problem(cfg.outbox.path.parent)
    if outbox_dir:
        problems.append(("outbox.path", outbox_dir))
    return problems


def load(path: str | Path) -> AgentConfig:
    """Load and validate; raises :class:`ConfigError` listing every problem with its key path,
    including what this machine lacks to run it (:func:`environment_problems`)."""
    try:
        cfg = load_config(path, AgentConfig)
    except ConfigError as exc:
        # pydantic puts the union tag into the location (sources[0].serial.port); users never
        # wrote it, so the path they see is sources[0].port.
        errors = [(_SOURCE_TAG.sub(r"\1", key), _source_kind(key, reason))
                  for key, reason in exc.errors]
        raise ConfigError(exc.source, errors) from None
    problems = [] if checking_elsewhere() else environment_problems(cfg)
    if problems:
        raise ConfigError(str(path), problems)
    return cfg
