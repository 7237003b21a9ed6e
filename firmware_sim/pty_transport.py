"""The device on a pseudo-terminal: a real tty that pyserial opens like /dev/ttyACM0.

Unplug closes the master, so a reader gets an error at once, as with a USB unplug. Replug
opens a new pty whose path always differs: it is allocated while the old one still exists.
The optional ``link`` symlink plays udev's /dev/serial/by-id/...: removed while unplugged,
re-pointed (atomically) to the new path on replug.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import termios
import threading
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from firmware_sim.simulation import Submit

WRITE_TIMEOUT = 0.5  # seconds a write may wait for a slow reader before bytes are dropped
DRAIN_TIMEOUT = 0.5  # seconds to let a reader take buffered bytes before the pty is closed


class _Pty:
    """One pty generation: fds, path and the thread reading host commands from it."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        # Raw: no echo, no CR/LF translation. We keep the slave open so that termios settings
        # and buffered bytes survive until a client opens it (as a real port's would).
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.stop_r, self.stop_w = os.pipe()
        self.thread: threading.Thread | None = None

    def pending(self) -> int:
        """Bytes written but not yet read by the client."""
        buf = fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", buf)[0])

    def close(self) -> None:
        os.write(self.stop_w, b"x")
        if self.thread is not None:
            self.thread.join()
        for fd in (self.master, self.slave, self.stop_r, self.stop_w):
            os.close(fd)


class PtyTransport:
    """``with PtyTransport(link=...) as pty: print(pty.path)``."""

    def __init__(self, link: str | Path | None = None,
                 on_path: Callable[[str], None] | None = None) -> None:
        self.link = Path(link) if link is not None else None
        self.on_path = on_path
        self._submit: Submit | None = None
        self._pty: _Pty | None = None
        self._spare: _Pty | None = None
        self._blocked = False
        self._stop = threading.Event()
        self.paths: list[str] = []  # every path this device had, in order
        self.dropped_bytes = 0

    @property
    def path(self) -> str | None:
        """The current tty path, or None while unplugged."""
        return self._pty.path if self._pty is not None else None

    def bind(self, submit: Submit) -> None:
        self._submit = submit

    def open(self) -> PtyTransport:
        if self._pty is None:
            self._plug(self._spare or _Pty())
            self._spare = None
        return self

    def _plug(self, pty: _Pty) -> None:
        self._pty = pty
        self._blocked = False
        self.paths.append(pty.path)
        pty.thread = threading.Thread(target=self._read_host, args=(pty,), daemon=True,
                                      name=f"pty-reader {pty.path}")
        pty.thread.start()
        if self.link is not None:
            tmp = self.link.with_name(f".{self.link.name}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(pty.path)
            os.replace(tmp, self.link)  # never a moment without a valid link while plugged
        if self.on_path is not None:
            self.on_path(pty.path)

    def _read_host(self, pty: _Pty) -> None:
        while True:
            ready, _, _ = select.select([pty.master, pty.stop_r], [], [])
            if pty.stop_r in ready:
                return
            try:
                data = os.read(pty.master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            if data and self._submit is not None:
                self._submit(data, self.send)

    def send(self, data: bytes) -> None:
        pty = self._pty
        if pty is None:
            return  # unplugged: the bytes go nowhere, as on a real line
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(pty.master, view):]
                self._blocked = False
                continue
            except BlockingIOError:
                pass
            # Nobody reads (no client, or a slow one): wait a little, then drop like a UART.
            timeout = 0.0 if self._blocked else WRITE_TIMEOUT
            _, ready, _ = select.select([], [pty.master], [], timeout)
            if not ready:
                self._blocked = True
                self.dropped_bytes += len(view)
                return

    def _drain(self, pty: _Pty) -> None:
        # Bytes still queued in the pty die with it; give a reading client a moment to take
        # them (closing a real port loses them too, but tests want every frame before it).
        deadline = DRAIN_TIMEOUT
        while pty.pending() and deadline > 0 and not self._stop.is_set():
            self._stop.wait(0.01)
            deadline -= 0.01

    def unplug(self) -> None:
        pty = self._pty
        if pty is None:
            return
        self._spare = _Pty()  # allocated before the old one is freed: a different number
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        self._drain(pty)
        self._pty = None
        pty.close()

    def replug(self) -> None:
        if self._pty is None:
            self._plug(self._spare or _Pty())
            self._spare = None

    def close(self) -> None:
        """Drain, close everything, remove the link. Idempotent."""
        if self._pty is not None:
            self._drain(self._pty)
        self._stop.set()
        for pty in (self._pty, self._spare):
            if pty is not None:
                pty.close()
        self._pty = self._spare = None
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    stop = close

    def __enter__(self) -> PtyTransport:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
