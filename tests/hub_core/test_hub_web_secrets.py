"""/healthz and /metrics never show a secret (issue 21, item 8), with a real hub over a real
Mosquitto: a client-id clash (the clash message once carried the hub's client id, shown as
``mqtt_last_error``), and storage failing at an InfluxDB URL with a password in it, with a
webhook whose URL is its token failing too. Neither the client id nor any credential appears."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.harness.mqtt_clients import stop_client
from hub.app import Hub
from schemas.codec import encode
from schemas.topics import Topics
from tests.hub_core.helpers import Publisher, hub_config, state_change, wait_until
from tests.servers import free_port

pytestmark = [pytest.mark.servers]
PASSWORD = "s3cret-Influx-pass"
HOOK_TOKEN = "T0KEN-in-the-hook-path-42"
QUERY_KEY = "q-key-in-the-query-77"


def test_healthz_and_metrics_show_no_client_id_and_no_credentials(
        tmp_path: Path, mosquitto: Any, topic_root: str) -> None:
    closed = free_port()  # nothing listens: storage and the webhook fail
    storage = {"enabled": True, "mode": "v1", "database": "x",
               "url": f"http://admin:{PASSWORD}@127.0.0.1:{closed}"}
    alerting = {"rules": [{"name": "all", "notifiers": ["hook"]}],
                "notifiers": {"hook": {
                    "type": "webhook", "max_retries": 0, "timeout_s": 1,
                    "url": f"http://127.0.0.1:{closed}/hooks/{HOOK_TOKEN}?api_key={QUERY_KEY}"}}}
    config = hub_config(tmp_path, mosquitto, topic_root, storage=storage, alerting=alerting,
                        dispatch={"retry_initial_s": 0.2, "retry_max_s": 0.5})
    topics = Topics(topic_root)
    with Hub(config) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        event = state_change(1, "high", "normal")
        pub = Publisher(mosquitto.host, mosquitto.port)
        try:
            pub.publish_all([(topics.for_event(event), encode(event))])
        finally:
            pub.close()
        base = f"http://127.0.0.1:{hub.web.port}"
        wait_until(lambda: httpx.get(f"{base}/healthz", timeout=10).json()["consumers"]
                   ["storage"]["last_error"], 30, what="storage failing")
        intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id,
                               protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        intruder.connect(mosquitto.host, mosquitto.port, clean_start=False, properties=props)
        intruder.loop_start()
        try:
            wait_until(lambda: "another client" in hub.ingest.last_error, 30,
                       what="the clash reported")
            health = httpx.get(f"{base}/healthz", timeout=10).text
        finally:
            stop_client(intruder)
        time.sleep(0.5)  # let the webhook's attempt fail too
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        health_after = httpx.get(f"{base}/healthz", timeout=10).text
    print(f"\n[healthz] {health[:600]}")
    assert "another client" in health  # the clash is shown...
    assert "storage" in health and "last_error" in health
    for text in (health, health_after, metrics):
        assert config.client_id not in text  # ...without the client id
        for secret in (PASSWORD, HOOK_TOKEN, QUERY_KEY):
            assert secret not in text
