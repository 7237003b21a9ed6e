"""Every key of the agent's config, from the pydantic model, as edge_agent/README.md names it.

    python -m tests.agent_pi.config_reference     # the rows (key | default) to paste and describe

Paths are written as a user writes the TOML: ``mqtt.tls.ca_file``; a source's keys per kind,
``sources[onewire].w1_dir``; the rules (the same for ``[defaults]`` and
``[sensors.<id>.rules]``) as ``rules.deadband`` and ``rules.thresholds[].above``.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

from edge_agent.config import (
    AgentConfig,
    OneWireSourceConfig,
    SensorConfig,
    SerialSourceConfig,
    SimulatorSourceConfig,
)
from edge_agent.decide.rules import SensorRules

SOURCES = (SerialSourceConfig, OneWireSourceConfig, SimulatorSourceConfig)


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def default_text(value: Any) -> str:
    """A default as the README's second column shows it."""
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, BaseModel):
        return "(below)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    if isinstance(value, SecretStr):
        return "none"
    if isinstance(value, list | dict):
        return f"`{value!r}`"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"`{value:.1f}`"
    return f"`{value!r}`"


def _walk(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str]]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = [m for m in _models(field.annotation) if m not in SOURCES]
        if name == "sources" and model is AgentConfig:
            yield path, "required"
            for source in SOURCES:
                kind = typing.get_args(source.model_fields["kind"].annotation)[0]
                yield from _walk(source, f"sources[{kind}].")
            continue
        if model is AgentConfig and name == "defaults":
            yield path, "(rules below)"
            yield from _walk(SensorRules, "rules.")
            continue
        if model is AgentConfig and name == "sensors":
            yield "sensors.<id>", "`{}`"
            yield from _walk(SensorConfig, "sensors.<id>.")
            continue
        if model is SensorConfig and name == "rules":
            yield path, "none: `[defaults]`"
            continue
        default = field.get_default(call_default_factory=True)
        yield path, default_text(default)
        for sub in nested:
            inner = f"{path}[]." if typing.get_origin(field.annotation) is list else f"{path}."
            yield from _walk(sub, inner)


def reference() -> list[tuple[str, str]]:
    """(path, default) for every key, in model order, without repeats."""
    return list(dict.fromkeys(_walk(AgentConfig, "")))


if __name__ == "__main__":
    for path, default in reference():
        print(f"| `{path}` | {default} | |")
