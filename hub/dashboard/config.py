"""The ``[dashboard]`` section of the hub's TOML."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DashboardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    #: shown in the page header and the browser tab
    title: str = Field("thermopipe", min_length=1, max_length=80)
    #: how many recent events and alerts the page lists
    recent_events: int = Field(50, ge=1, le=1000)
    recent_alerts: int = Field(50, ge=1, le=1000)
    #: changes buffered per browser before it is sent a full snapshot instead (counted)
    client_buffer: int = Field(500, ge=10, le=100_000)
    #: an SSE comment this often keeps proxies from closing an idle stream
    heartbeat_s: float = Field(15.0, gt=0, le=300)
