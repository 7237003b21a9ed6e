"""Alerting: rules, grouping, silences, late events, and durable, idempotent notifications.

``consumer.AlertingConsumer`` is the hub consumer; ``engine.AlertEngine`` the pure decisions behind
it; its ``[alerting]`` section is ``hub.config.alerting.AlertingConfig``. Nothing is imported
here, so reading a config (``hub check-config``) loads no consumer and none of its packages.
"""
