"""The hub's one TOML config, validated at start-up (``hub check-config FILE``): the loader and
every section's model, in one place.

Secrets (MQTT password, InfluxDB token/password, the HTTP token, notifier passwords) are
references, ``env:NAME`` or ``file:/path``, resolved while validating, so a missing secret is
reported with its key path before anything runs.

- ``loader.py``: :class:`HubConfig` (the whole file) and :func:`load_hub_config`;
- ``base.py``: what every section shares (closed to unknown keys, frozen; secret references);
- ``mqtt.py`` ``[mqtt]``, ``storage.py`` ``[storage]``, ``alerting.py`` ``[alerting]`` (rules,
  notifiers, silences), ``dashboard.py`` ``[dashboard]``, ``homeassistant.py``
  ``[homeassistant]``;
- ``sections.py``: the small ones, ``[http]``, ``[dead_letters]``, ``[log]``, ``[dispatch]``,
  ``[journal]``, ``[limits]``, ``[receipts]``.

Section modules import nothing of the hub beyond ``base.py``: a consumer imports its section from
here, and reading a config (``hub check-config``) loads no consumer and none of its packages.

Example::

    hub_id = "hub-1"
    data_dir = "/var/lib/thermopipe-hub"

    [mqtt]
    host = "127.0.0.1"
    port = 1883
    topic_root = "thermopipe"
    shared_group = "hubs"          # MQTT 5 shared subscription; required for `hub run --workers N`
    username = "hub"
    password = "env:HUB_MQTT_PASSWORD"
    account_per_connection = true  # worker i logs in as "hub-w0"..., Home Assistant as "hub-ha"

    [storage]
    mode = "v1"                    # "v2": influxdb-client (2.x, 3.x, Cloud, 1.8+); "v1": /write
    url = "http://127.0.0.1:8086"
    database = "thermopipe"

    [limits]                       # identities past a cap are dead letters (hub/README.md)
    max_sites = 100
    max_devices = 2000
"""

from hub.config.alerting import AlertingConfig
from hub.config.dashboard import DashboardConfig
from hub.config.homeassistant import HomeAssistantConfig
from hub.config.loader import (
    CLIENT_ID_FILE,
    HubConfig,
    environment_problems,
    load_hub_config,
    persistent_client_id,
)
from hub.config.mqtt import MqttConfig
from hub.config.sections import (
    DeadLettersConfig,
    DispatchConfig,
    HttpConfig,
    JournalConfig,
    LimitsConfig,
    LogConfig,
    ReceiptsConfig,
)
from hub.config.storage import StorageConfig

__all__ = ["CLIENT_ID_FILE", "AlertingConfig", "DashboardConfig", "DeadLettersConfig",
           "DispatchConfig", "HomeAssistantConfig", "HttpConfig", "HubConfig", "JournalConfig",
           "LimitsConfig", "LogConfig", "MqttConfig", "ReceiptsConfig", "StorageConfig",
           "environment_problems", "load_hub_config", "persistent_client_id"]
