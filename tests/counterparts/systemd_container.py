"""A real systemd (Debian bookworm's 252) booted in a container, for the units in deploy/systemd.

- :func:`os_root`: a bookworm root made by ``debootstrap`` with :data:`PACKAGES`, cached under
  ``$THERMOPIPE_CACHE/systemd/`` (default ``~/.cache/thermopipe``, outside the checkout, so a
  fresh clone on the same machine reuses it), keyed by the suite and the package list. The first
  build takes 1 to 2 minutes (it downloads from the Debian mirror); later runs reuse it.
  The cached root is never written: the container boots it with ``--volatile=overlay`` (every
  change goes to a tmpfs and is gone when it stops).
- :func:`wheelhouse`: the project's dependencies as wheels, built outside (the container has no
  network), cached keyed by pyproject.toml. The project itself is built inside from a copy of the
  checkout, as the documented install steps do.
- :class:`Machine`: ``systemd-nspawn --boot --private-network --register=no --keep-unit`` (there is
  no systemd on the host: without the last two nspawn stops at "Failed to open system bus"), and
  commands go in with ``nsenter`` into the container's init. :meth:`Machine.stop` powers it off and
  kills what is left; nspawn also gets SIGTERM if the test process dies (setpriv --pdeathsig).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.servers import in_ci, require_binary

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("THERMOPIPE_CACHE", Path.home() / ".cache" / "thermopipe")) / "systemd"
SUITE = "bookworm"
PACKAGES = ("dbus", "mosquitto", "python3-venv", "systemd", "systemd-sysv")
MIRROR = os.environ.get("THERMOPIPE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# where the container sees the checkout's copy and the wheelhouse
CHECKOUT = "/srv/thermopipe"
WHEELS = "/srv/wheelhouse"
# pip inside: the wheelhouse only (no network in the container)
PIP_ENV = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELS, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def tools() -> dict[str, str]:
    """The host tools; skip on a laptop without them, fail under CI=true."""
    if os.geteuid() != 0:
        reason = "booting a container needs root"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return {name: require_binary(name, f"/usr/sbin/{name}", f"/usr/bin/{name}")
            for name in ("debootstrap", "systemd-nspawn", "nsenter", "setpriv")}


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One builder at a time (two pytest shards may want the same cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def os_root(debootstrap: str) -> Path:
    """The cached bookworm root with :data:`PACKAGES`; built (1 to 2 min) when missing."""
    root = CACHE / f"{SUITE}-{_key(SUITE, 'minbase', PACKAGES)}"
    if root.is_dir():
        return root
    with _locked("root"):
        if root.is_dir():
            return root
        building = CACHE / f".building-{root.name}"
        shutil.rmtree(building, ignore_errors=True)
        log = CACHE / f"{root.name}.debootstrap.log"
        started = time.monotonic()
        with log.open("w") as out:
            done = subprocess.run(
                [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                 str(building), MIRROR], stdout=out, stderr=subprocess.STDOUT, timeout=1800,
                check=False)
        if done.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            raise RuntimeError(f"debootstrap failed ({done.returncode}): "
                               f"{log.read_text(errors='replace')[-3000:]}")
        for deb in (building / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            deb.unlink()  # the downloaded packages: 70 MB the container never needs
        for old in CACHE.glob(f"{SUITE}-*"):  # a root for another package list: not used again
            if old.is_dir() and old != root:
                shutil.rmtree(old, ignore_errors=True)
        building.rename(root)
        print(f"\nbuilt the {SUITE} root in {time.monotonic() - started:.0f} s: {root}")
    return root


def wheelhouse() -> Path:
    """The dependencies of '.[agent,hub]' and the build backend as wheels, for pip inside."""
    if sys.version_info[:2] != (3, 11):  # bookworm's python3 is 3.11: its wheels must match
        pytest.fail(f"the wheelhouse for bookworm's Python 3.11 needs a 3.11 host Python "
                    f"(this is {sys.version.split()[0]})", pytrace=False)
    key = _key((ROOT / "pyproject.toml").read_bytes(), sys.version_info[:2])
    house = CACHE / f"wheelhouse-{key}"
    if house.is_dir():
        return house
    with _locked("wheelhouse"):
        if house.is_dir():
            return house
        building = CACHE / ".building-wheelhouse"
        shutil.rmtree(building, ignore_errors=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(building),
             f"{ROOT}[agent,hub]", "setuptools>=77"],
            capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pip wheel failed: {done.stderr[-3000:]}")
        for wheel in building.glob("thermopipe-*.whl"):
            wheel.unlink()  # built inside from the checkout, as the install steps say
        for old in CACHE.glob("wheelhouse-*"):
            shutil.rmtree(old, ignore_errors=True)
        building.rename(house)
    return house


_NOT_COPIED = {".git", ".venv", ".cache", "__pycache__", ".mypy_cache", ".ruff_cache",
               ".pytest_cache", ".hypothesis", "build", "dist", "node_modules", ".thermopipe-demo"}


def copy_checkout(dest: Path) -> Path:
    """The checkout as a user would have it on the machine (pip builds in it: a copy)."""
    def ignore(directory: str, names: list[str]) -> set[str]:
        return {n for n in names if n in _NOT_COPIED or n.endswith(".egg-info")
                or (Path(directory) == ROOT and n == "var")}

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


class Machine:
    """One booted container. ``run`` executes a command inside, as root, with a clean env."""

    def __init__(self, root: Path, binds: Mapping[Path, str], console_log: Path,
                 nspawn: str, nsenter: str, setpriv: str) -> None:
        self.root = root
        self.binds = binds
        self.console_log = console_log
        self.nspawn = nspawn
        self.nsenter = nsenter
        self.setpriv = setpriv
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid = 0
        self.notes: dict[str, str] = {}  # what one fixture leaves for the tests (a cursor)

    def boot(self, timeout: float = 180.0) -> None:
        # setpriv --pdeathsig: nspawn gets SIGTERM (an orderly power-off) if the test process dies
        args = [self.setpriv, "--pdeathsig", "TERM", "--",
                self.nspawn, "--quiet", "-D", str(self.root), "--boot", "--private-network",
                "--register=no", "--keep-unit", "--volatile=overlay", "--console=read-only",
                "--machine=thermopipe-units"]
        for host, inside in self.binds.items():
            args.append(f"--bind={host}:{inside}")
        with self.console_log.open("wb") as console:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=console,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.init_pid:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.proc.returncode}: "
                                   f"{self.console()[-3000:]}")
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            with contextlib.suppress(OSError, ValueError):
                pids = children.read_text().split()
                if pids and Path(f"/proc/{pids[0]}/comm").read_text().strip() == "systemd":
                    self.init_pid = int(pids[0])
            if time.monotonic() > deadline:
                raise TimeoutError(f"no init in the container: {self.console()[-3000:]}")
            time.sleep(0.2)
        # --wait waits out "initializing" and "starting", but not a manager whose bus is not up
        # yet: init has exec'd but not opened its socket (a loaded machine widens that window),
        # and systemctl says "offline" at once. Ask again until the deadline.
        while True:
            state = self.run("systemctl", "is-system-running", "--wait",
                             timeout=max(10.0, deadline - time.monotonic()), check=False)
            said = state.stdout.strip()
            if said in ("running", "degraded"):
                return
            if said not in ("offline", "unknown", "") or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the container's systemd is {said!r} ({state.stderr.strip()!r}):\n"
                    f"{self.run('systemctl', '--failed', check=False).stdout}")
            time.sleep(0.5)

    def console(self) -> str:
        return self.console_log.read_text(errors="replace")

    def run(self, *cmd: str, env: Mapping[str, str] | None = None, input: str | None = None,
            timeout: float = 120.0, check: bool = True, cwd: str = "/",
            ) -> subprocess.CompletedProcess[str]:
        assert self.init_pid, "not booted"
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        argv = [self.nsenter, "-t", str(self.init_pid), "-m", "-u", "-i", "-n", "-p", "-C",
                "env", "-i", f"--chdir={cwd}", f"PATH={PATH}", "HOME=/root", "LANG=C.UTF-8",
                *extra, *cmd]
        done = subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n"
                                 f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def sh(self, script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.run("bash", "-euo", "pipefail", "-c", script, **kwargs)  # type: ignore[arg-type]

    # --- systemd ---------------------------------------------------------------------------------

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> float:
        """Seconds until ``check()`` holds; fails with ``what`` after ``timeout``."""
        started = time.monotonic()
        while not check():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"not within {timeout:.0f} s: {what}")
            time.sleep(0.5)
        return time.monotonic() - started

    def cursor(self) -> str:
        """The journal's current end, for reading only what comes after it."""
        out = self.run("journalctl", "-n", "0", "--show-cursor", "--no-pager").stdout
        return out.rsplit("-- cursor: ", 1)[1].strip()

    def journal(self, unit: str, after: str) -> list[dict[str, str]]:
        """The unit's journal entries after ``after`` (a :meth:`cursor`): its processes' lines and
        systemd's about it. Filtered here, not by journalctl: with a match, ``--after-cursor``
        skips the first matching entry when the cursor's own entry does not match."""
        name = unit if "." in unit else f"{unit}.service"
        out = self.run("journalctl", f"--after-cursor={after}", "-o", "json", "--no-pager")
        entries = [json.loads(line) for line in out.stdout.splitlines() if line]
        return [e for e in entries if name in (e.get("_SYSTEMD_UNIT"), e.get("UNIT"))]

    def stop(self, timeout: float = 60.0) -> None:
        """Power off (nspawn turns SIGTERM into an orderly shutdown); SIGKILL what is left."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the group this class started
                proc.wait(30)
        self.proc = None
        if self.init_pid:
            deadline = time.monotonic() + 30
            while Path(f"/proc/{self.init_pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            # nspawn gone and its init not: an init that had not yet set up its signal handlers
            # ignores the power-off signal (PID 1 of a namespace). It is not in nspawn's process
            # group; SIGKILL to it takes every process of the container's PID namespace along.
            if Path(f"/proc/{self.init_pid}").exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.init_pid, signal.SIGKILL)
                deadline = time.monotonic() + 30
                while Path(f"/proc/{self.init_pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.2)

    def gone(self) -> list[str]:
        """What is left of the machine on the host: an empty list when nothing is."""
        left = []
        if self.init_pid and Path(f"/proc/{self.init_pid}").exists():
            left.append(f"container init {self.init_pid} still running")
        mounts = Path("/proc/self/mountinfo").read_text()
        left += [line for line in mounts.splitlines()
                 if str(self.root) in line or "nspawn-volatile" in line]
        return left
