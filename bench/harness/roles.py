"""The product as users install it: the wheel built once, each role in a fresh venv of its own.

    wheel (pip wheel --no-deps .)  ──pip install 'thermopipe-….whl[agent]'──▶  .cache/roles/H/agent
                                   ──pip install 'thermopipe-….whl[hub]'────▶  .cache/roles/H/hub

Non-editable, from the built artifact, without the dev extra: exactly what deploy/pi/install.sh
and deploy/hub/Dockerfile install. ``H`` is a hash of the wheel's contents, so a second run on an
unchanged tree reuses the venvs (a changed file makes new ones; CI's clean clone always does).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "roles"
ROLES = ("agent", "hub")

#: what the agent's install on a Pi must not pull in (the hub's packages)
HUB_ONLY = ("starlette", "uvicorn", "prometheus-client", "influxdb-client", "httpx", "fastavro",
            "amqtt")

#: what a production install of any role must not hold: test tools, the demo's broker, and
#: packages that change what a role loads (structlog imports rich and greenlet when they are
#: there: 4-5 MB more RSS in a hub process that a user's hub never has)
NOT_IN_PRODUCTION = ("pytest", "hypothesis", "mypy", "ruff", "trustme", "playwright", "amqtt",
                     "rich", "greenlet")

_lock = threading.Lock()


class InstallFailed(RuntimeError):
    pass


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=env, check=False)
    if result.returncode != 0:
        raise InstallFailed(f"{' '.join(cmd)} exited {result.returncode}:\n"
                            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def source_copy(dest: Path) -> Path:
    """The files git would put in a clone (tracked, and new ones not ignored), as they are in the
    working tree: an in-tree build could package stale files from an earlier ``build/``."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                  cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        src = ROOT / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def build_wheel(out: Path) -> Path:
    """The project's wheel, built from a clean copy of this tree the way pip builds it."""
    out.mkdir(parents=True, exist_ok=True)
    src = source_copy(out.parent / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out),
          str(src)], timeout=300)
    wheels = sorted(out.glob("thermopipe-*.whl"))
    if len(wheels) != 1:
        raise InstallFailed(f"expected one wheel in {out}, found {wheels}")
    return wheels[0]


def wheel_digest(wheel: Path) -> str:
    """A hash of the wheel's files (a zip's timestamps change on every build; its files do not)."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            digest.update(name.encode())
            digest.update(zf.read(name))
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class RoleEnv:
    """One role's venv: run its console scripts, list what it installed."""

    role: str
    venv: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    @property
    def python(self) -> Path:
        return self.bin("python")

    def distributions(self) -> dict[str, str]:
        """Installed distribution name (normalised) -> version."""
        out = _run([str(self.python), "-c",
                    "import importlib.metadata as m\n"
                    "for d in m.distributions(): print(d.metadata['Name'], d.version)"])
        found = {}
        for line in out.splitlines():
            name, _, version = line.partition(" ")
            found[name.lower().replace("_", "-")] = version
        return found

    def size_mb(self) -> float:
        """Installed size of the role's packages in MB (site-packages without pip/setuptools,
        which every venv carries, and without byte-code caches)."""
        site = next((self.venv / "lib").glob("python3.*/site-packages"))
        total = 0
        for path in site.rglob("*"):
            rel = path.relative_to(site).parts
            if rel[0].startswith(("pip", "setuptools", "_distutils_hack", "pkg_resources")) or \
                    "__pycache__" in rel or not path.is_file():
                continue
            total += path.stat().st_size
        return total / 1e6


def make_role_env(wheel: Path, role: str, where: Path) -> RoleEnv:
    venv = where / role
    if not (venv / ".installed").exists():
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)])
        # the user's command, from the built wheel: pip install 'thermopipe-X.whl[role]'
        _run([str(venv / "bin" / "pip"), "install", "--quiet", f"{wheel}[{role}]"])
        (venv / ".installed").write_text(wheel.name)
    return RoleEnv(role, venv)


def _cache_for(wheel: Path) -> Path:
    """The venvs' directory of this wheel; those of other wheels (older trees) are removed."""
    where = CACHE / wheel_digest(wheel)
    where.mkdir(parents=True, exist_ok=True)
    for old in CACHE.iterdir():
        if old != where:
            shutil.rmtree(old, ignore_errors=True)
    return where


def role_envs(wheel: Path) -> dict[str, RoleEnv]:
    """Every role's venv from the built wheel (in parallel), reusing an identical earlier set."""
    with _lock:
        where = _cache_for(wheel)
        envs: dict[str, RoleEnv] = {}
        errors: list[BaseException] = []

        def make(role: str) -> None:
            try:
                envs[role] = make_role_env(wheel, role, where)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=make, args=(r,)) for r in ROLES]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return envs


def production_role(role: str) -> RoleEnv:
    """``role`` as users install it, for a benchmark: the built wheel, ``'.[role]'`` (no dev or
    test extra), a fresh venv (reused while the tree is unchanged). Prints what it holds, and
    refuses a venv with a test tool in it (or, for the agent, a hub package)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp) / "wheel")
        with _lock:
            env = make_role_env(wheel, role, _cache_for(wheel))
    dists = {n: v for n, v in env.distributions().items() if n not in ("pip", "setuptools")}
    banned = NOT_IN_PRODUCTION + (HUB_ONLY if role == "agent" else ())
    stray = [n for n in banned if n in dists]
    if stray:
        raise InstallFailed(f"{env.venv} is not a production install: it has {stray}")
    print(f"production install of the {role}: {env.venv} ('{wheel.name}[{role}]': "
          + ", ".join(f"{n} {v}" for n, v in sorted(dists.items())) + ")", flush=True)
    return env
