"""Is the system clock NTP-synchronised? Cheap enough to ask for every event.

A Raspberry Pi has no real-time clock: until NTP (systemd-timesyncd, chrony, ntpd) sets the time,
events carry wrong times, so each event says whether the clock was synchronised when it was made.

How we ask, cheapest first (each probe's modules are imported only when it runs: ctypes and
subprocess cost about 0.5 MB of resident memory, which a Pi with timesyncd never needs):

1. ``/run/systemd/timesync/synchronized`` exists: systemd-timesyncd (Raspberry Pi OS's time
   daemon) has synchronised the clock since boot. A file test, no syscall beyond ``stat``; it is
   also the only probe that works under the systemd unit, whose ``ProtectClock=yes`` denies
   ``adjtimex(2)`` even to read (EPERM). A missing file says nothing (chrony, ntpd, or not yet).
2. ``adjtimex(2)`` through ctypes (no process spawned): the kernel reports ``TIME_ERROR`` or the
   ``STA_UNSYNC`` status bit while no time daemon has disciplined the clock. This is what chrony,
   ntpd and systemd-timesyncd all maintain, and what ``timedatectl`` itself reads. Once denied
   (EPERM, the unit), it is not asked again.
3. ``timedatectl show -p NTPSynchronized --value`` (a process spawned: the last resort).
4. Otherwise ``False``: an unknown clock is treated as unsynchronised, never the reverse.

The answer is cached for :data:`CACHE_S` seconds.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Any

import structlog

log = structlog.get_logger(__name__)

CACHE_S = 5.0
TIME_ERROR = 5          # adjtimex() return value: the clock is not synchronised
STA_UNSYNC = 0x0040     # status bit: "clock unsynchronized"


def synced_from_adjtimex(result: int, status: int) -> bool:
    """The kernel's answer -> synchronised? (pure: tested without a kernel)."""
    return result >= 0 and result != TIME_ERROR and not status & STA_UNSYNC


TIMESYNCD_FLAG = "/run/systemd/timesync/synchronized"


def _timesyncd() -> bool | None:
    return True if os.path.exists(TIMESYNCD_FLAG) else None


def _load_adjtimex() -> tuple[Any, Any]:
    """(libc's ``adjtimex``, the ``struct timex`` type), importing ctypes now."""
    import ctypes

    class Timex(ctypes.Structure):
        # struct timex from <sys/timex.h>: the leading fields we read, then generous padding
        # (the kernel writes the whole struct; 11 reserved ints at its end on every ABI)
        _fields_ = [
            ("modes", ctypes.c_uint),
            ("offset", ctypes.c_long),
            ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long),
            ("esterror", ctypes.c_long),
            ("status", ctypes.c_int),
            ("_rest", ctypes.c_byte * 512),
        ]

    # the C library this process already has (find_library would run ldconfig, a process
    # spawned on every probe)
    return ctypes.CDLL(None, use_errno=True).adjtimex, Timex


class _Adjtimex:
    """``adjtimex(2)`` read-only, through ctypes imported on the first call."""

    def __init__(self) -> None:
        self._call: tuple[Any, Any] | None = None  # _load_adjtimex()'s answer, once asked
        self.denied = False                         # EPERM once (ProtectClock): never again

    def __call__(self) -> bool | None:
        if self.denied:
            return None
        try:
            import ctypes

            if self._call is None:
                self._call = _load_adjtimex()
            adjtimex, timex = self._call
            tx = timex()  # modes = 0: read only, needs no privilege
            result = int(adjtimex(ctypes.byref(tx)))
        except (OSError, AttributeError, ImportError):
            return None
        if result < 0:
            self.denied = ctypes.get_errno() in (errno.EPERM, errno.EACCES, errno.ENOSYS)
            return None
        return synced_from_adjtimex(result, int(tx.status))


_adjtimex = _Adjtimex()


def _timedatectl() -> bool | None:
    import shutil
    import subprocess

    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "show", "-p", "NTPSynchronized", "--value"],
                             capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip().lower()
    return {"yes": True, "no": False}.get(value)


_lock = threading.Lock()
_cached: tuple[float, bool] | None = None


def read_sync_status() -> bool:
    """Ask the system now (uncached)."""
    for probe in (_timesyncd, _adjtimex, _timedatectl):
        answer = probe()
        if answer is not None:
            return answer
    return False


def clock_synchronised() -> bool:
    """True when the clock is NTP-synchronised; cached for a few seconds."""
    global _cached
    now = time.monotonic()
    with _lock:
        if _cached is not None and now - _cached[0] < CACHE_S:
            return _cached[1]
    synced = read_sync_status()
    with _lock:
        if _cached is None or _cached[1] != synced:
            log.info("clock.sync_status", synchronised=synced)
        _cached = (now, synced)
    return synced
