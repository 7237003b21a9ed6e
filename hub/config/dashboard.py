"""The ``[dashboard]`` section of the hub's TOML."""

from __future__ import annotations

from pydantic import Field

from hub.config.base import Section


class DashboardConfig(Section):
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
    #: the trend chart per sensor: its window, and the points it keeps in it (one per
    #: window/points seconds, 12 bytes each; see hub/dashboard/trend.py for the memory bound)
    trend_window_s: float = Field(3600.0, ge=60, le=86_400)
    trend_points: int = Field(360, ge=10, le=3600)
