"""The agent's config models as they were before the agent dropped pydantic (copied from
edge_agent/config.py, edge_agent/decide/rules.py, edge_agent/mqtt_link.py and edge_agent/outbox.py
at commit bd84359): the oracle the plain loader (edge_agent/config) is held to. Test code, not
product code. ``[mqtt]``'s shared keys come from the live program_support/mqtt_settings.py
``MqttConnection`` (the hub's model), so a change there is a change of the oracle too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from program_support.mqtt_settings import MqttConnection
from program_support.pydantic_loading import parse_config
from schemas.errors import ConfigError
from schemas.ids import DeviceId, SiteId, check_identifier
from schemas.models import NAME_MAX, THRESHOLDS_MAX, Severity, Unit

DEFAULT_W1_DIR = Path("/sys/bus/w1/devices")
MiB = 1024 * 1024


#: State names the decider uses itself; a threshold cannot be called this.
NORMAL = "normal"
UNKNOWN = "unknown"
RESERVED_STATES = frozenset({NORMAL, UNKNOWN})


class _Rules(BaseModel):
    # finite numbers only (TOML has inf and nan): the thresholds go into the birth status, and
    # the contract refuses a non-finite float
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Smoothing(_Rules):
    """Median or moving average over the last ``window`` good readings."""

    kind: Literal["median", "mean"] = "median"
    window: int = Field(default=3, ge=1, le=1000)


class Threshold(_Rules):
    """One band boundary: the band ``name`` holds while the value is above/below ``value``.

    Entering needs the value strictly past the threshold for ``dwell_s`` seconds; leaving needs it
    back at or past ``threshold -/+ hysteresis`` for ``dwell_s`` seconds.
    """

    name: str
    above: float | None = None
    below: float | None = None
    hysteresis: float = Field(default=0.5, ge=0.0)
    dwell_s: float = Field(default=0.0, ge=0.0)
    severity: Severity = "warning"

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        check_identifier(value, "state name")
        if value in RESERVED_STATES:
            raise ValueError(f"{value!r} is reserved (the state when no threshold holds / "
                             "before the first reading); pick another name")
        return value

    @model_validator(mode="after")
    def _one_direction(self) -> Self:
        if (self.above is None) == (self.below is None):
            raise ValueError(f"threshold {self.name!r} needs exactly one of 'above' or 'below'")
        return self

    @property
    def direction(self) -> Literal["above", "below"]:
        return "above" if self.above is not None else "below"

    @property
    def value(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]


class SensorRules(_Rules):
    """Everything the edge decides for one sensor. See the module docstring for units."""

    # validation
    min_c: float = -55.0
    max_c: float = 125.0
    reject_power_on_value: bool = True
    disconnected_value: float | None = -127.0
    max_jump_per_s: float | None = Field(default=None, gt=0.0)
    # smoothing (None = raw values)
    smoothing: Smoothing | None = None
    # threshold bands
    thresholds: list[Threshold] = Field(default_factory=list, max_length=THRESHOLDS_MAX)
    # rate of change alarm (None = off)
    rate_limit_per_min: float | None = Field(default=None, gt=0.0)
    rate_window_s: float = Field(default=60.0, gt=0.0)
    #: the alarm clears at ``limit - rate_hysteresis_per_min``; None = 10 % of the limit
    rate_hysteresis_per_min: float | None = Field(default=None, ge=0.0)
    rate_severity: Severity = "warning"
    # report by exception
    deadband: float | None = Field(default=None, ge=0.0)
    report_every_s: float | None = Field(default=None, gt=0.0)
    # periodic summary (None = off)
    summary_interval_s: float | None = Field(default=60.0, gt=0.0)
    # faults
    stale_after_s: float | None = Field(default=30.0, gt=0.0)
    fault_severity: Severity = "warning"

    @model_validator(mode="after")
    def _cross_field(self) -> Self:
        if self.min_c >= self.max_c:
            raise ValueError(f"min_c ({self.min_c}) must be below max_c ({self.max_c})")
        names = [t.name for t in self.thresholds]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"threshold names must be unique: {', '.join(dupes)} repeated")
        for direction in ("above", "below"):
            values = [t.value for t in self.thresholds if t.direction == direction]
            if len(set(values)) != len(values):
                raise ValueError(f"two '{direction}' thresholds share one value: "
                                 f"{sorted(values)}; each band needs its own boundary")
        for hi in self.thresholds:
            for lo in self.thresholds:
                if hi.direction == "above" and lo.direction == "below" and (
                        hi.value - hi.hysteresis <= lo.value + lo.hysteresis):
                    raise ValueError(
                        f"threshold {hi.name!r} (above {hi.value}, hysteresis {hi.hysteresis}) "
                        f"must lie above {lo.name!r} (below {lo.value}, hysteresis "
                        f"{lo.hysteresis}) including both hysteresis bands")
        if (self.rate_limit_per_min is not None and self.rate_hysteresis_per_min is not None
                and self.rate_hysteresis_per_min >= self.rate_limit_per_min):
            raise ValueError(f"rate_hysteresis_per_min ({self.rate_hysteresis_per_min}) must be "
                             f"below rate_limit_per_min ({self.rate_limit_per_min})")
        return self

    @property
    def rate_clear_per_min(self) -> float | None:
        """The rate at or under which an active rate alarm clears."""
        if self.rate_limit_per_min is None:
            return None
        hyst = self.rate_hysteresis_per_min
        if hyst is None:
            hyst = 0.1 * self.rate_limit_per_min
        return self.rate_limit_per_min - hyst


class MqttSettings(MqttConnection):
    """``[mqtt]`` in the agent's TOML config: the shared connection keys
    (:class:`program_support.mqtt_settings.MqttConnection`) and the agent's own."""

    client_id: str | None = None  # None -> "thermopipe-<site>-<device>"
    reconnect_min_s: Annotated[float, Field(gt=0)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0)] = 60.0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    max_inflight: Annotated[int, Field(ge=1, le=60000)] = 500
    status_interval_s: Annotated[float, Field(gt=0)] = 30.0
    encoding: Literal["json", "avro"] = "json"
    # receipts (schemas/TOPICS.md "Receipts"): keep each event until a hub says it holds it
    receipts: Literal["auto", "on", "off"] = "auto"
    receipt_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    receipt_gap_s: Annotated[float, Field(gt=0)] = 10.0
    receipt_detect_s: Annotated[float, Field(gt=0)] = 600.0
    receipt_window: Annotated[int, Field(ge=100)] = 10_000

    @model_validator(mode="after")
    def _check_backoff(self) -> MqttSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class OutboxSettings(BaseModel):
    """``[outbox]`` in the agent's TOML config."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Path("/var/lib/thermopipe/outbox.db")
    max_bytes: Annotated[int, Field(gt=0)] = 64 * MiB
    max_age_s: Annotated[float, Field(gt=0)] = 7 * 24 * 3600.0
    min_free_bytes: Annotated[int, Field(ge=0)] = 200 * MiB
    flush_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    flush_max_events: Annotated[int, Field(gt=0)] = 500
    backlog_rate_per_s: Annotated[float, Field(ge=0)] = 200.0  # 0 = unlimited


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


def parse_reference(data: dict[str, Any], source: str = "agent.toml") -> AgentConfig:
    """What edge_agent.config.load did with the file's tables (before the machine checks)."""
    try:
        return parse_config(data, AgentConfig, source)
    except ConfigError as exc:
        errors = [(_SOURCE_TAG.sub(r"\1", key), _source_kind(key, reason))
                  for key, reason in exc.errors]
        raise ConfigError(exc.source, errors) from None
