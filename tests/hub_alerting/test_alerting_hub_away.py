"""The offline grace against a real broker when the hub itself is away.

A broker restart publishes every device's will; the devices are back within seconds, but the hub
may take longer to reconnect (its reconnect waits grow with jitter), and gets the births the
broker kept for it only then. Regression (CI, tests/e2e/test_chaos.py): the grace ran out while
the hub could not hear, and the hub paged "not back within 8 s" for a device that was back after
4. The hub here reaches its private Mosquitto through a TCP relay the test cuts for longer than
the grace while the device's birth is published to the broker directly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.app import Hub
from schemas.codec import encode
from schemas.topics import Topics
from tests.hub_alerting.helpers import Feed
from tests.hub_alerting.receivers import WebhookReceiver
from tests.hub_core.helpers import Publisher, hub_config, wait_until
from tests.servers import free_port

pytestmark = pytest.mark.servers

GRACE_S = 2.0


class Relay:
    """A TCP relay on a loopback port to ``target``: :meth:`cut` drops every connection and
    refuses new ones until :meth:`restore`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listener: socket.socket | None = None
        # outside the ephemeral range: no outgoing connection takes it while the relay is cut
        self.port = free_port()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self._listener is not None
        with contextlib.suppress(OSError):  # wakes the accept (close alone may not, on Linux)
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def alerting_config(tmp_path: Path, mosquitto, topic_root: str, rx: WebhookReceiver,
                    tick_interval_s: float, **overrides: object):
    """A hub paging ``rx`` for a device that stays away past :data:`GRACE_S`."""
    return hub_config(
        tmp_path, mosquitto, topic_root, **overrides,
        alerting={"enabled": True, "offline_for_s": GRACE_S, "tick_interval_s": tick_interval_s,
                  "notifiers": {"hook": {"type": "webhook", "url": rx.url}},
                  "rules": [{"name": "all", "notifiers": ["hook"]}]})


def will_pending(pub: Publisher, topics: Topics, device: Feed, alerting) -> None:
    """The device's birth and will published; the will waits in its grace."""
    birth = device.status(True, "birth", session=1)
    will = device.status(False, "will", session=1)
    pub.publish_all([(topics.for_status(birth), encode(birth)),
                     (topics.for_status(will), encode(will))])
    wait_until(lambda: alerting.stats()["offline_pending"] == 1, 30,
               what="the will pending in its grace")


def test_a_birth_the_broker_kept_while_the_hub_was_away_is_a_flap(
        tmp_path: Path, mosquitto, topic_root) -> None:
    rx = WebhookReceiver()
    relay = Relay((mosquitto.host, mosquitto.port))
    config = alerting_config(tmp_path, mosquitto, topic_root, rx, 3600,
                             mqtt={"host": "127.0.0.1", "port": relay.port})
    topics = Topics(topic_root)
    device = Feed("pi-07", site="farm", start=datetime.now(UTC))
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        with Hub(config) as hub:
            alerting = next(c for c in hub.consumers if c.name == "alerting")
            wait_until(hub.ingest.subscribed.is_set, 30, what="the hub subscribed")
            will_pending(pub, topics, device, alerting)
            relay.cut()  # the hub is away for twice the grace; the device is back meanwhile
            wait_until(lambda: not hub.ingest.connected.is_set(), 10, what="the hub away")
            time.sleep(0.3)
            back = device.status(True, "birth", session=2)
            pub.publish_all([(topics.for_status(back), encode(back))])
            time.sleep(2 * GRACE_S)
            assert rx.requests == [], "paged while the hub could not hear the broker"
            relay.restore()
            wait_until(lambda: alerting.stats()["offline_pending"] == 0, 60,
                       what="the birth the broker kept, handled after the hub is back")
            time.sleep(GRACE_S + 0.5)  # a firing would be sent by now
            assert rx.requests == [], [r.body for r in rx.requests]
            assert alerting.stats()["offline_flaps_suppressed"] == 1
    finally:
        pub.close()
        relay.cut()
        rx.stop()


def test_a_birth_recorded_in_time_but_not_yet_handled_by_alerting_is_a_flap(
        tmp_path: Path, mosquitto, topic_root) -> None:
    """Alerting goes at its own pace: the hub recorded the birth within the grace, but the
    alerting consumer had not handled it when the grace ran out (held here at its door). The
    ticker must wait for it, not page; once handled it is a flap."""
    rx = WebhookReceiver()
    config = alerting_config(tmp_path, mosquitto, topic_root, rx, 0.5)
    topics = Topics(topic_root)
    device = Feed("pi-08", site="farm", start=datetime.now(UTC))
    pub = Publisher(mosquitto.host, mosquitto.port)
    door = threading.Event()
    door.set()
    try:
        with Hub(config) as hub:
            alerting = hub.alerting
            assert alerting is not None
            handle = alerting.handle

            def held(batch):  # outside alerting's lock: its ticker runs meanwhile
                door.wait()
                handle(batch)

            alerting.handle = held  # type: ignore[method-assign]
            wait_until(hub.ingest.subscribed.is_set, 30, what="the hub subscribed")
            will_pending(pub, topics, device, alerting)
            door.clear()
            back = device.status(True, "birth", session=2)
            recorded = hub.journal.last_offset
            pub.publish_all([(topics.for_status(back), encode(back))])
            wait_until(lambda: hub.journal.last_offset > recorded, 10,
                       what="the birth recorded by ingest")
            time.sleep(2 * GRACE_S)  # the grace runs out; ticks every 0.5 s
            assert rx.requests == [], "paged for a birth alerting had not handled yet"
            door.set()
            wait_until(lambda: alerting.stats()["offline_pending"] == 0, 30,
                       what="the birth handled")
            time.sleep(1.0)
            assert rx.requests == [], [r.body for r in rx.requests]
            assert alerting.stats()["offline_flaps_suppressed"] == 1
    finally:
        door.set()
        pub.close()
        rx.stop()
