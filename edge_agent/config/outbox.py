"""``[outbox]`` in the agent's config: where the durable outbox lives and its bounds
(``edge_agent/outbox.py`` says what each bound does)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from program_support.plain_config import Range

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxSettings:
    """``[outbox]`` in the agent's TOML config."""

    path: Path = Path("/var/lib/thermopipe/outbox.db")
    max_bytes: Annotated[int, Range(gt=0)] = 64 * MiB
    max_age_s: Annotated[float, Range(gt=0)] = 7 * 24 * 3600.0
    min_free_bytes: Annotated[int, Range(ge=0)] = 200 * MiB
    flush_interval_s: Annotated[float, Range(gt=0, le=60)] = 0.5
    flush_max_events: Annotated[int, Range(gt=0)] = 500
    backlog_rate_per_s: Annotated[float, Range(ge=0)] = 200.0  # 0 = unlimited
