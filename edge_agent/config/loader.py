"""Loading the agent's config: the file checked against the sections (stdlib only), then what
this machine lacks to run it."""

from __future__ import annotations

from pathlib import Path

from edge_agent.config.agent import AgentConfig, SerialSourceConfig
from program_support import plain_config
from program_support.config_loading import checking_elsewhere, directory_problem
from program_support.extras import missing_reason
from schemas.errors import ConfigError


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
    cfg = plain_config.load(path, AgentConfig)
    problems = [] if checking_elsewhere() else environment_problems(cfg)
    if problems:
        raise ConfigError(str(path), problems)
    return cfg
