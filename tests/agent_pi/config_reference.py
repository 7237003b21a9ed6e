"""Every key of the agent's config, from its sections, as edge_agent/README.md names it.

    python -m tests.agent_pi.config_reference     # the rows (key | default) to paste and describe

Paths are written as a user writes the TOML: ``mqtt.tls.ca_file``; a source's keys per kind,
``sources[onewire].w1_dir``; the rules (the same for ``[defaults]`` and
``[sensors.<id>.rules]``) as ``rules.deadband`` and ``rules.thresholds[].above``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_agent.config import (
    AgentConfig,
    OneWireSourceConfig,
    SensorConfig,
    SensorRules,
    SerialSourceConfig,
    SimulatorSourceConfig,
)
from program_support.plain_config import fields_of, is_section

SOURCES = (SerialSourceConfig, OneWireSourceConfig, SimulatorSourceConfig)
REQUIRED = object()


def _sections(annotation: Any) -> list[type[Any]]:
    if is_section(annotation):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _sections(arg)]


def default_text(value: Any) -> str:
    """A default as the README's second column shows it."""
    if value is REQUIRED:
        return "required"
    if value is None:
        return "none"
    if dataclasses.is_dataclass(value):
        return "(below)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    if isinstance(value, list | dict):
        return f"`{value!r}`"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"`{value:.1f}`"
    return f"`{value!r}`"


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return typing.get_origin(annotation) is list


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return REQUIRED


def _walk(section: type[Any], prefix: str) -> Iterator[tuple[str, str]]:
    annotations = fields_of(section)
    for field in dataclasses.fields(section):
        name, annotation = field.name, annotations[field.name]
        path = f"{prefix}{name}"
        nested = [m for m in _sections(annotation) if m not in SOURCES]
        if name == "sources" and section is AgentConfig:
            yield path, "required"
            for source in SOURCES:
                kind = typing.get_args(fields_of(source)["kind"])[0]
                yield from _walk(source, f"sources[{kind}].")
            continue
        if section is AgentConfig and name == "defaults":
            yield path, "(rules below)"
            yield from _walk(SensorRules, "rules.")
            continue
        if section is AgentConfig and name == "sensors":
            yield "sensors.<id>", "`{}`"
            yield from _walk(SensorConfig, "sensors.<id>.")
            continue
        if section is SensorConfig and name == "rules":
            yield path, "none: `[defaults]`"
            continue
        yield path, default_text(_default(field))
        for sub in nested:
            yield from _walk(sub, f"{path}[]." if _is_list(annotation) else f"{path}.")


def reference() -> list[tuple[str, str]]:
    """(path, default) for every key, in model order, without repeats."""
    return list(dict.fromkeys(_walk(AgentConfig, "")))


if __name__ == "__main__":
    for path, default in reference():
        print(f"| `{path}` | {default} | |")
