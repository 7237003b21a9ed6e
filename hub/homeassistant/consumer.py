"""The hub consumer that keeps Home Assistant's discovery configs and states on the broker.

It has its own MQTT connection (client id ``<hub client id>-ha``, the hub's ``[mqtt]`` account,
clean start: it only publishes), whose will marks ``{root}/_hub/ha/availability`` ``offline``.
A batch is handled when every message it called for is acknowledged by the broker (QoS 1, retained);
otherwise ``handle`` raises :class:`DeliveryError`, the dispatcher retries the same batch with
backoff, and the pure state (:class:`Discovery`) is put back as it was before the batch, so
nothing is skipped. What the broker holds is also kept in ``state_path`` (JSON, replaced
atomically after each batch), so a restarted hub still knows which entities it announced and can
remove them. A crash between the broker's acknowledgement and the file's replacement makes the
dispatcher hand the batch over again, which publishes the same retained messages again.

A publish the broker refuses (an MQTT 5 PUBACK with a failure reason: the ACL does not grant the
topic) is logged (``homeassistant.publish_refused``, with the topic) and counted in
``refused``; it is not retried, since a retry gets the same answer until the ACL changes. Over
MQTT 3.1.1 a refusal cannot be seen: the broker acknowledges and drops the message.

Its connection's network loop is the ``homeassistant-mqtt`` component of the hub's supervisor
(``program_support.supervision``) instead of paho's own ``loop_start`` thread: if it crashes, it is
logged, counted and restarted with a new connection.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import structlog

from hub.config.homeassistant import HomeAssistantConfig
from hub.config.mqtt import MqttConfig
from hub.consumers.base import ConsumerDefaults, Envelope
from hub.homeassistant.discovery import Discovery, Publish
from hub.mqtt_client import wait_acked
from program_support.mqtt_connect import Will, build_client
from program_support.mqtt_network_loop import NetworkLoop
from program_support.reconnect_pacing import hub_pacing
from program_support.supervision import Supervisor
from program_support.version import thermopipe_version
from schemas.errors import DeliveryError
from schemas.topics import Topics

log = structlog.get_logger("hub.homeassistant")


class HomeAssistantConsumer(ConsumerDefaults):
    name = "homeassistant"

    COMPONENT = "homeassistant-mqtt"

    def __init__(self, config: HomeAssistantConfig, mqtt_config: MqttConfig, client_id: str,
                 state_path: Path, *, supervisor: Supervisor | None = None) -> None:
        self.config = config
        self.topics = Topics(mqtt_config.topic_root)
        self.state_path = state_path
        self.discovery = self._new_discovery()
        if state_path.exists():
            self.discovery.load(json.loads(state_path.read_text(encoding="utf-8")))
        self.connected = threading.Event()
        self.published = 0
        self.refused = 0
        self._refused_mids: dict[int, str] = {}  # mid -> reason, from the network thread
        self._refused_lock = threading.Lock()
        self._pacing = hub_pacing()
        self._network = self._make_network_loop(mqtt_config, f"{client_id}-ha")
        self._client = self._network.connection.client
        self.supervisor = supervisor or Supervisor()
        self.supervisor.spawn(self.COMPONENT, self._network.run)

    def _new_discovery(self) -> Discovery:
        return Discovery(self.topics, self.config.discovery_prefix, self.config.expire_after_s,
                         hub_version=thermopipe_version(), support_url=self.config.support_url)

    def _make_network_loop(self, cfg: MqttConfig, client_id: str) -> NetworkLoop[mqtt.Client]:
        connection = build_client(mqtt.Client, cfg, client_id, persistent=False,  # publishes only
                                  will=Will(self.topics.ha_status(), b"offline"))
        client = connection.client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return NetworkLoop(connection, self._pacing)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any) -> None:
        if reason.is_failure:
            log.error("homeassistant.refused", reason=str(reason))
            return
        self._pacing.accepted(time.monotonic())
        client.publish(self.topics.ha_status(), b"online", qos=1, retain=True)
        self.connected.set()
        log.info("homeassistant.connected", prefix=self.config.discovery_prefix)

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason: Any,
                    _props: Any) -> None:
        # runs before the message counts as published, so _publish sees it after wait_acked
        if getattr(reason, "is_failure", False):
            with self._refused_lock:
                self._refused_mids[mid] = str(reason)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        self.connected.clear()
        log.warning("homeassistant.disconnected", reason=str(reason))

    # -- Consumer ------------------------------------------------------------------------------
    def handle(self, batch: Sequence[Envelope]) -> None:
        before = self.discovery.dump()
        messages = self.discovery.apply(batch)
        try:
            self._publish(messages)
        except DeliveryError:
            self.discovery = self._new_discovery()  # as before the batch: retried whole
            self.discovery.load(before)
            raise
        if messages:
            self._save()

    def _publish(self, messages: list[Publish]) -> None:
        if not messages:
            return
        timeout = self.config.publish_timeout_s
        if not self.connected.wait(timeout):
            raise DeliveryError(f"not connected to the broker within {timeout:g} s; "
                                f"{len(messages)} Home Assistant messages wait")
        infos = []
        for m in messages:
            infos.append((m, self._client.publish(m.topic, m.payload, qos=1, retain=m.retain)))
        for m, info in infos:
            wait_acked(info, m.topic, timeout)
            with self._refused_lock:
                refused = self._refused_mids.pop(info.mid, None)
            if refused is not None:
                self.refused += 1
                log.error("homeassistant.publish_refused", topic=m.topic, reason=refused,
                          hint="the broker's ACL does not let this account publish there")
            elif not m.retain:
                log.info("homeassistant.rebirth_asked", topic=m.topic)
            elif not m.payload:
                log.info("homeassistant.removed", topic=m.topic)
        self.published += len(messages)

    def _save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.discovery.dump()), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def close(self) -> None:
        """Say offline (the will would too, later) and disconnect."""
        if self.connected.is_set():
            info = self._client.publish(self.topics.ha_status(), b"offline", qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                log.warning("homeassistant.offline_not_published")
        self.supervisor.retire(self.COMPONENT)
        self._network.stop()
        self.supervisor.join(self.COMPONENT, 10)
