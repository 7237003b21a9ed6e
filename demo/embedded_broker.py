"""An MQTT broker inside the demo process (amqtt), so the demo needs no server installed.

amqtt speaks MQTT 3.1.1 and moves about 1,500-2,000 QoS-1 messages/s here: plenty for a demo of a
few simulated devices, far too slow for production. Production uses Mosquitto or EMQX (deploy/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from schemas.errors import ServerError


class EmbeddedBroker:
    """amqtt on ``host:port`` in a thread of its own; ``start()`` returns once it listens."""

    def __init__(self, host: str = "127.0.0.1", port: int = 18830) -> None:
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        try:
            import amqtt  # noqa: F401
        except ImportError:
            from program_support.extras import install_command

            raise ServerError("the embedded broker needs amqtt, which is not installed: "
                              f"{install_command('demo')}") from None
        # amqtt logs every connection at INFO; the demo shows its own status instead
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ServerError(f"the embedded MQTT broker did not start within {timeout:.0f} s")
        if self._error is not None:
            raise ServerError(f"the embedded MQTT broker cannot listen on {self.host}:{self.port}:"
                              f" {self._error}") from self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start() and re-raised there
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from amqtt.broker import Broker

        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        broker = Broker(config)
        await broker.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await broker.shutdown()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
