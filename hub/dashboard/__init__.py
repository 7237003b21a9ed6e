"""The live dashboard: current state of every device and sensor, streamed to the browser."""

from hub.dashboard.config import DashboardConfig
from hub.dashboard.consumer import DashboardConsumer
from hub.dashboard.state import DashboardState

__all__ = ["DashboardConfig", "DashboardConsumer", "DashboardState"]
