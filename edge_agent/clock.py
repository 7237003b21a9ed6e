"""Is the system clock NTP-synchronised? Cheap enough to ask for every event.

A Raspberry Pi has no real-time clock: until NTP (systemd-timesyncd, chrony, ntpd) sets the time,
events carry wrong times, so each event says whether the clock was synchronised when it was made.

How we ask, cheapest first:

1. ``adjtimex(2)`` through ctypes (no process spawned): the kernel reports ``TIME_ERROR`` or the
   ``STA_UNSYNC`` status bit while no time daemon has disciplined the clock. This is what chrony,
   ntpd and systemd-timesyncd all maintain, and what ``timedatectl`` itself reads.
2. ``/run/systemd/timesync/synchronized`` exists: systemd-timesyncd (Raspberry Pi OS's time
   daemon) has synchronised the clock. Needed under the systemd unit, whose ``ProtectClock=yes``
   denies ``adjtimex(2)`` even to read (EPERM); a missing file says nothing (chrony, ntpd).
3. ``timedatectl show -p NTPSynchronized --value`` (a process spawned: the last resort).
4. Otherwise ``False``: an unknown clock is treated as unsynchronised, never the reverse.

The answer is cached for :data:`CACHE_S` seconds.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
import time

import structlog

log = structlog.get_logger(__name__)

CACHE_S = 5.0
TIME_ERROR = 5          # adjtimex() return value: the clock is not synchronised
STA_UNSYNC = 0x0040     # status bit: "clock unsynchronized"


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>: the leading fields we read, then generous padding for the
    # rest (the kernel writes the whole struct; 11 reserved ints at the end on every ABI).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 512),
    ]


def synced_from_adjtimex(result: int, status: int) -> bool:
    """The kernel's answer -> synchronised? (pure: tested without a kernel)."""
    return result >= 0 and result != TIME_ERROR and not status & STA_UNSYNC


TIMESYNCD_FLAG = "/run/systemd/timesync/synchronized"
_libc: ctypes.CDLL | None = None


def _adjtimex() -> bool | None:
    global _libc
    try:
        if _libc is None:
            # the C library this process already has (find_library would run ldconfig, a
            # process spawned on every probe)
            _libc = ctypes.CDLL(None, use_errno=True)
        libc = _libc
        tx = _Timex()  # modes = 0: read only, needs no privilege
        result = int(libc.adjtimex(ctypes.byref(tx)))
    except (OSError, AttributeError):
        return None
    if result < 0:
        return None
    return synced_from_adjtimex(result, int(tx.status))


def _timesyncd() -> bool | None:
    return True if os.path.exists(TIMESYNCD_FLAG) else None


def _timedatectl() -> bool | None:
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
    for probe in (_adjtimex, _timesyncd, _timedatectl):
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
