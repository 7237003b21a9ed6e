"""Home Assistant's own venv for tests/counterparts: made once, cached under
``$THERMOPIPE_CACHE/homeassistant/<hash>/`` (default ``~/.cache/thermopipe``: outside the
checkout, so a fresh clone on the same machine, as CI makes, reuses it), keyed by the SHA-256 of
``ha_requirements.txt``.

It is a venv of its own because Home Assistant 2024.3.3 pins paho-mqtt 1.6.1 and the project
uses paho-mqtt 2. The install is guarded by a file lock (two pytest shards may ask at once) and
marked complete by a stamp written last, so an interrupted install is redone, not trusted.
Run as a script (``python -m tests.counterparts.ha_venv``) it only installs and prints the path.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "ha_requirements.txt"
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("THERMOPIPE_CACHE", Path.home() / ".cache" / "thermopipe")) \
    / "homeassistant"
#: a cold install (download and unpack about 300 MB) takes minutes on 2 cores
INSTALL_TIMEOUT_S = 1800


class InstallError(RuntimeError):
    """pip could not make the venv (no network, a pin gone from PyPI...)."""


def requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]


def venv_dir() -> Path:
    return CACHE / requirements_hash()


def ensure_venv(python: str = sys.executable) -> tuple[Path, float]:
    """The venv's python, and how long this call spent installing (0.0 when cached). ``python``
    makes the venv (from inside a venv, ``-m venv`` uses the base interpreter: Python 3.11)."""
    root = venv_dir()
    stamp = root / ".complete"
    exe = root / "bin" / "python"
    if stamp.exists():
        return exe, 0.0
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (CACHE / f"{root.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another shard may be installing it: wait for it
        if stamp.exists():
            return exe, time.monotonic() - started
        log = CACHE / f"{root.name}.install.log"
        with log.open("w") as out:
            for cmd in ([python, "-m", "venv", "--clear", str(root)],
                        [str(exe), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                         "-r", str(REQUIREMENTS)]):
                try:
                    done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                                          timeout=INSTALL_TIMEOUT_S, check=False)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    raise InstallError(f"{' '.join(cmd[:3])}...: {exc}") from None
                if done.returncode != 0:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise InstallError(f"{' '.join(cmd[:4])}... exited {done.returncode} "
                                       f"(log: {log}):\n{tail}")
        stamp.write_text(REQUIREMENTS.read_text())
    return exe, time.monotonic() - started


if __name__ == "__main__":
    path, spent = ensure_venv(sys.argv[1] if len(sys.argv) > 1 else sys.executable)
    print(f"{path} ({spent:.0f} s installing)")
