"""The agent's config file as typed sections: identity, ``[mqtt]``, ``[outbox]``, the sources,
the sensors and their rules, ``[log]`` (``deploy/agent.example.toml`` shows every option)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from edge_agent.config.mqtt import MqttSettings
from edge_agent.config.outbox import OutboxSettings
from edge_agent.config.rules import SensorRules
from program_support.plain_config import Check, FieldProblem, Length, Range, Tagged
from schemas.errors import ConfigError
from schemas.ids import DeviceId, SensorId, SiteId
from schemas.vocabulary import NAME_MAX, Unit

#: where Linux lists the 1-Wire bus's devices
DEFAULT_W1_DIR = Path("/sys/bus/w1/devices")


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialSourceConfig:
    """A microcontroller on USB serial speaking schemas/SERIAL_PROTOCOL.md."""

    kind: Literal["serial"]
    name: str | None = None
    #: a device path, a stable /dev/serial/by-id/... path, or a pyserial URL (socket://h:p)
    port: Annotated[str, Length(min=1)]
    baudrate: Annotated[int, Range(gt=0)] = 115200
    #: sensor ids to expect even before the device announces them (then `device_lost` is
    #: reported for them if the device is absent at start-up)
    sensors: list[SensorId] = field(default_factory=list)
    reopen_max_s: Annotated[float, Range(gt=0, le=300)] = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OneWireSourceConfig:
    """DS18B20 sensors on the Linux 1-Wire bus."""

    kind: Literal["onewire"]
    name: str | None = None
    w1_dir: Path = DEFAULT_W1_DIR
    interval_s: Annotated[float, Range(gt=0)] = 10.0
    #: read only these sensor ids (default: every 28-* device found)
    sensors: list[SensorId] = field(default_factory=list)
    max_workers: Annotated[int, Range(ge=1, le=32)] = 4


def _scenario_loads(value: str) -> str:
    from firmware_sim import scenario as scenarios  # only a config with a simulator source

    try:
        scenarios.load(value)
    except ConfigError as exc:
        raise ValueError(f"scenario {value!r} is invalid: {exc}") from None
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorSourceConfig:
    """firmware_sim in-process: a scenario name (``firmware-sim list``) or a scenario file."""

    kind: Literal["simulator"]
    name: str | None = None
    scenario: Annotated[str, Check(_scenario_loads)]
    speed: Annotated[float, Range(gt=0)] = 1.0
    seed: int | None = None
    loop: bool = False


SourceConfig = Annotated[SerialSourceConfig | OneWireSourceConfig | SimulatorSourceConfig,
                         Tagged("kind", "source kind")]


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorConfig:
    """``[sensors.<id>]``: a sensor's unit, a name for people, and its decision rules."""

    unit: Unit = "degC"
    name: Annotated[str, Length(max=NAME_MAX)] = ""  # the contract's bound (SensorInfo.name)
    #: None = the ``[defaults]`` rules
    rules: SensorRules | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """The ``[log]`` table: how much the agent logs, and in which form."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    #: auto = coloured console lines on a terminal, JSON lines otherwise (journald)
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """The whole agent config file: who this agent is, its broker, outbox, sources and sensors."""

    site: SiteId
    device_id: DeviceId
    #: a name for people ("Freezer"): Home Assistant's device name, sent in the birth
    #: (default "": the device id is shown)
    name: Annotated[str, Length(max=NAME_MAX)] = ""  # the contract's bound (device_name)
    mqtt: MqttSettings
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    #: how often the one-line human status is printed (with --status-line or on a terminal)
    status_line_interval_s: Annotated[float, Range(gt=0)] = 5.0
    #: the state file `edge-agent status` reads (default: $RUNTIME_DIRECTORY/agent-state.json,
    #: /run/thermopipe under the systemd unit, else beside the outbox)
    state_file: Path | None = None
    #: how often the state file is rewritten (and systemd's watchdog pinged), seconds
    state_interval_s: Annotated[float, Range(gt=0, le=60)] = 2.0
    #: how often the deciders get a tick (stale detection, summary windows), seconds
    tick_s: Annotated[float, Range(gt=0, le=60)] = 1.0
    #: readings waiting between the sources and the deciders; beyond it readings are dropped
    #: (counted, logged) rather than blocking a source
    queue_size: Annotated[int, Range(ge=10)] = 10_000
    sources: Annotated[list[SourceConfig], Length(min=1)]
    #: rules for a sensor that a source discovers but ``[sensors]`` does not list
    defaults: SensorRules = field(default_factory=SensorRules)
    sensors: dict[SensorId, SensorConfig] = field(default_factory=dict)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources if s.name]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FieldProblem("sources", f"source names must be unique: {', '.join(dupes)} "
                                          "repeated")

    def rules_for(self, sensor_id: str) -> SensorRules:
        sensor = self.sensors.get(sensor_id)
        return sensor.rules if sensor is not None and sensor.rules is not None else self.defaults
