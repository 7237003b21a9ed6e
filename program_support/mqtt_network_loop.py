"""paho's network loop for one connection, on a thread of the owner's (a component of its
supervisor, ``program_support/supervision.py``) instead of paho's ``loop_start`` thread: the hub's
ingest and its Home Assistant connection run it.

:meth:`NetworkLoop.run` connects (:meth:`program_support.mqtt_connect.Connection.connect`), turns
paho's ``loop`` until the connection ends, waits what the :class:`ReconnectPacing` says and
connects again, until :meth:`NetworkLoop.stop`. Packets queued by other threads (publishes,
acknowledgements) wake this thread, which writes them (the hook ``build_client`` sets). A crash
of ``run`` is the supervisor's to log and restart; the next ``run`` opens a new connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic

import structlog
from paho.mqtt.enums import MQTTErrorCode

from program_support.mqtt_connect import C, Connection
from program_support.reconnect_pacing import ReconnectPacing

log = structlog.get_logger(__name__)

#: the longest paho's ``loop`` waits for the socket before the loop looks at its flags again
TURN_S = 1.0


class NetworkLoop(Generic[C]):
    def __init__(self, connection: Connection[C], pacing: ReconnectPacing, *,
                 on_connect_error: Callable[[OSError], None] | None = None) -> None:
        self.connection = connection
        self.pacing = pacing
        self._on_connect_error = on_connect_error
        self._stop = threading.Event()
        self._again = threading.Event()  # reconnect_now() asked for a new connection
        self._wake = threading.Event()   # ends a wait between attempts

    @property
    def restarting(self) -> bool:
        """The current connection is being closed for a new one (:meth:`reconnect_now`)."""
        return self._again.is_set()

    def stop(self) -> None:
        """End the connection (a DISCONNECT after what is queued) and :meth:`run`."""
        self._stop.set()
        self._wake.set()
        self.connection.client.disconnect()

    def reconnect_now(self) -> None:
        """Close the connection and open a new one at once (no pacing wait)."""
        self._again.set()
        self._wake.set()
        self.connection.client.disconnect()

    def run(self) -> None:
        while not self._stop.is_set():
            self._again.clear()
            try:
                self.connection.connect()
            except OSError as exc:
                if self._on_connect_error is not None:
                    self._on_connect_error(exc)
            else:
                self._serve()
            if self._stop.is_set():
                return
            if self._again.is_set():
                continue
            delay = self.pacing.next_delay(time.monotonic())
            log.debug("mqtt.reconnect_wait", broker=f"{self.connection.host}:"
                      f"{self.connection.port}", attempt=self.pacing.attempt,
                      retry_in_s=round(delay, 2))
            self._wake.clear()
            if self._stop.is_set() or self._again.is_set():
                continue  # asked while we were getting here: the wake may have been cleared
            self._wake.wait(delay)

    def _serve(self) -> None:
        """paho's loop until the connection ends."""
        client = self.connection.client
        if self._stop.is_set() or self._again.is_set():
            client.disconnect()  # asked while connecting: that disconnect found no socket
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            rc = client.loop(timeout=TURN_S)
