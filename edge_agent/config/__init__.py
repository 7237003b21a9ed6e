"""The agent's one TOML config file, validated at start-up (``edge-agent check-config FILE``).

Every problem is reported at once with its key path (``sensors.t1.rules.thresholds[0].above``)
by :func:`load`. Secrets (the MQTT password) are written as ``env:NAME`` or ``file:/path``, never
inline; see ``deploy/agent.example.toml`` for every option.

The sections are stdlib dataclasses checked by ``program_support/plain_config.py``: loading a
config imports neither pydantic (which does not install on every Raspberry Pi) nor paho. One
module a part: :mod:`.agent` (the file), :mod:`.mqtt`, :mod:`.outbox`, :mod:`.rules` (a sensor's
decision rules), :mod:`.loader`.
"""

from edge_agent.config.agent import (
    DEFAULT_W1_DIR,
    AgentConfig,
    LogConfig,
    OneWireSourceConfig,
    SensorConfig,
    SerialSourceConfig,
    SimulatorSourceConfig,
    SourceConfig,
)
from edge_agent.config.loader import environment_problems, load
from edge_agent.config.mqtt import MqttSettings, TlsSettings
from edge_agent.config.outbox import OutboxSettings
from edge_agent.config.rules import SensorRules, Smoothing, Threshold

__all__ = [
    "DEFAULT_W1_DIR",
    "AgentConfig",
    "LogConfig",
    "MqttSettings",
    "OneWireSourceConfig",
    "OutboxSettings",
    "SensorConfig",
    "SensorRules",
    "SerialSourceConfig",
    "SimulatorSourceConfig",
    "Smoothing",
    "SourceConfig",
    "Threshold",
    "TlsSettings",
    "environment_problems",
    "load",
]
