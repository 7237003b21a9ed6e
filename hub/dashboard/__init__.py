"""The live dashboard: current state of every device and sensor, streamed to the browser.

``consumer.DashboardConsumer`` (starlette routes), ``state.DashboardState`` (pure),
``trend.Trend`` (a sensor's bounded ring of recent values for its chart, pure); the
``[dashboard]`` section is ``hub.config.dashboard.DashboardConfig``. Nothing is imported here, so
reading a config loads neither starlette nor the consumer.
"""
