"""The device's serial stream on TCP, for pyserial's ``socket://127.0.0.1:PORT`` URLs.

Every connected client gets the whole output; a host command is answered to the client that
sent it. Unplug closes the listener and every connection; replug listens again on the same port.
"""

from __future__ import annotations

import contextlib
import functools
import os
import selectors
import socket
import threading
from types import TracebackType

from firmware_sim.simulation import Submit

SEND_TIMEOUT = 0.5  # a client that takes nothing for this long is dropped


class TcpTransport:
    """``with TcpTransport("127.0.0.1", 0) as tcp: print(tcp.url)``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._submit: Submit | None = None
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()  # guards _clients between the reader and the sender
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = -1, -1
        self.connected = threading.Event()  # set once any client has connected
        self.connections = 0

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def bind(self, submit: Submit) -> None:
        self._submit = submit

    def open(self) -> TcpTransport:
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(8)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]  # keep the port for replug
        self._listener = listener
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, args=(listener, self._stop_r),
                                        daemon=True, name=f"tcp {self.url}")
        self._thread.start()
        return self

    def _serve(self, listener: socket.socket, stop_r: int) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            sel.register(stop_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj == stop_r:
                        return
                    if key.fileobj is listener:
                        conn, _ = listener.accept()
                        conn.settimeout(SEND_TIMEOUT)
                        with self._lock:
                            self._clients.append(conn)
                        self.connections += 1
                        self.connected.set()
                        sel.register(conn, selectors.EVENT_READ)
                        continue
                    conn = key.fileobj  # type: ignore[assignment]
                    try:
                        data = conn.recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(conn)
                        self._drop(conn)
                    elif self._submit is not None:
                        self._submit(data, functools.partial(self._send_to, conn))

    def _drop(self, conn: socket.socket) -> None:
        with self._lock:
            if conn in self._clients:
                self._clients.remove(conn)
        conn.close()

    def _send_to(self, conn: socket.socket, data: bytes) -> None:
        try:
            conn.sendall(data)
        except OSError:
            # The reader thread owns closing; waking it with a shutdown makes it drop us.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def send(self, data: bytes) -> None:
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            self._send_to(conn, data)

    def unplug(self) -> None:
        self.close()

    def replug(self) -> None:
        self.open()

    def close(self) -> None:
        """Stop listening and close every connection (after sending what was queued)."""
        if self._listener is None:
            return
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            clients, self._clients = self._clients, []
        for conn in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)  # FIN after the data: the client reads to EOF
            conn.close()
        self._listener.close()
        os.close(self._stop_r)
        os.close(self._stop_w)
        self._listener = None
        self._thread = None

    stop = close

    def __enter__(self) -> TcpTransport:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
