"""The agent's role resolves from PyPI alone, as wheels, on every Raspberry Pi: nothing to build.

For each Pi userland (Raspberry Pi OS Bookworm, Python 3.11) pip resolves the built wheel's
``[agent]`` extra against PyPI only, wheels only, with that Pi's platform tags:

    pip download --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \\
        --platform <the Pi's tags> --index-url https://pypi.org/simple -d DIR \\
        'thermopipe-….whl[agent]'

- ``armv6l`` (Pi 1, Zero, Zero W): no manylinux tag exists for it and PyPI takes no ``linux_*``
  wheel, so every file must be a pure-Python wheel (``-none-any``);
- ``armv7l`` (32-bit OS on a Pi 2 to 5, Zero 2 W) and ``aarch64`` (64-bit OS): ``manylinux_2_36``
  (Bookworm's glibc) down to ``manylinux_2_17`` / ``manylinux2014``, or pure Python.

A compiled package without a wheel for a Pi fails the test with its name (pip's resolution error
is read for it). Only PyPI is asked: this machine's pip configuration (local indexes, find-links,
constraints) is left out (``PIP_CONFIG_FILE=/dev/null``), as a Pi has none of it. piwheels, which
Raspberry Pi OS adds, is not asked either: the point is that the agent does not need it.
pip's HTTP cache is ``~/.cache/thermopipe/pip``, so a second run downloads nothing again. Needs
PyPI: skipped with the reason when it cannot be reached, failed instead under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

from bench.harness.roles import HUB_ONLY, ROOT
from tests.install.conftest import REPORT

pytestmark = [pytest.mark.slow]

PYPI = "https://pypi.org/simple"
PIP_CACHE = Path.home() / ".cache" / "thermopipe" / "pip"


def _wheels_script() -> ModuleType:
    """deploy/pi/wheels.py (a script, not a package): its tags are what pip on each Pi accepts."""
    spec = importlib.util.spec_from_file_location("pi_wheels", ROOT / "deploy" / "pi" / "wheels.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


WHEELS = _wheels_script()
ARCHES = ("armv6l", "armv7l", "aarch64")


def pip_env() -> dict[str, str]:
    """This machine's pip settings left out: no config file, no PIP_* variable but the CA bundle
    (a TLS-inspecting proxy may need it; it changes which server is trusted, not which index)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    if os.environ.get("PIP_CERT"):
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    return env


@pytest.fixture(scope="module")
def pypi() -> str:
    """PyPI's simple index, reachable; otherwise skip (fail under CI=true) with the reason."""
    cafile = os.environ.get("PIP_CERT") or None
    try:
        context = ssl.create_default_context(cafile=cafile)
        with urllib.request.urlopen(f"{PYPI}/paho-mqtt/", timeout=20, context=context) as resp:
            resp.read(1)
    except (OSError, ssl.SSLError) as exc:
        reason = f"PyPI ({PYPI}) cannot be reached from here: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: this test needs it)", pytrace=False)
        pytest.skip(reason)
    return PYPI


def download(wheel: Path, arch: str, dest: Path, index: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "pip", "download", "--only-binary=:all:",
            "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
            "--index-url", index, "--cache-dir", str(PIP_CACHE), "--progress-bar", "off",
            "--dest", str(dest)]
    for tag in WHEELS.platform_tags(arch):
        args += ["--platform", tag]
    return subprocess.run([*args, f"{wheel}[agent]"], capture_output=True, text=True,
                          timeout=600, env=pip_env(), check=False)


def without_wheel(pip_output: str) -> list[str]:
    """The packages pip found no usable wheel of, from its error: "No matching distribution
    found for X", or a conflict whose every candidate needs a version of X without one
    ("pydantic 2.14.4 depends on pydantic-core==2.50.5")."""
    names = re.findall(r"No matching distribution found for ([A-Za-z0-9._-]+)", pip_output)
    names += re.findall(r"^\s+\S+ \S+ depends on ([A-Za-z0-9._-]+)", pip_output, re.MULTILINE)
    return sorted({re.sub(r"[-_.]+", "-", n).lower() for n in names})


def wheel_platform(name: str) -> str:
    """The platform tag of a wheel file name (``name-version[-build]-py-abi-platform.whl``)."""
    return name.removesuffix(".whl").split("-")[-1]


def check_downloaded(files: list[str], arch: str) -> list[str]:
    """What is wrong with the files pip chose for ``arch``: one line per offending file."""
    wrong = []
    accepted = set(WHEELS.platform_tags(arch)) | {"any"}
    for name in files:
        if not name.endswith(".whl"):
            wrong.append(f"{name}: not a wheel (it would be built on the Pi)")
        elif not set(wheel_platform(name).split(".")) & accepted:
            wrong.append(f"{name}: a wheel for another platform than {arch}")
        elif arch == "armv6l" and wheel_platform(name) != "any":
            wrong.append(f"{name}: compiled; an armv6l Pi takes pure-Python wheels only")
    return wrong


@pytest.mark.parametrize("arch", ARCHES)
def test_the_agent_role_resolves_from_pypi_wheels_alone(project_wheel: Path, pypi: str,
                                                        arch: str, tmp_path: Path) -> None:
    result = download(project_wheel, arch, tmp_path, pypi)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        missing = without_wheel(output)
        lines = output.strip().splitlines()
        said = [ln for ln in lines if " depends on " in ln][:3] + \
            [ln for ln in lines if ln.startswith("ERROR")]
        pytest.fail(f"the agent role ('{project_wheel.name}[agent]') does not install on an "
                    f"{arch} Pi ({WHEELS.MODELS[arch]}) from PyPI wheels alone: no wheel for "
                    f"{', '.join(missing) or '(see pip)'} on {arch}. pip said:\n"
                    + "\n".join(said or lines[-12:]), pytrace=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    wrong = check_downloaded(files, arch)
    assert not wrong, f"{arch}: " + "; ".join(wrong)
    names = {re.sub(r"[-_.]+", "-", f.split("-")[0]).lower() for f in files}
    assert {"thermopipe", "paho-mqtt", "structlog", "pyserial"} <= names, files
    assert not [n for n in HUB_ONLY if n in names], files
    kinds = {f: "pure" if wheel_platform(f) == "any" else "compiled" for f in files}
    REPORT.append(f"agent role from PyPI wheels alone on {arch}: " + ", ".join(
        f"{f.split('-')[0]} {f.split('-')[1]} ({kind})" for f, kind in kinds.items()
        if not f.startswith("thermopipe-")))


def test_a_compiled_package_without_a_wheel_is_named() -> None:
    """What the test above reads from pip's two kinds of refusal (as pip 24 words them)."""
    conflict = ("ERROR: Cannot install thermopipe because these package versions have "
                "conflicting dependencies.\n\nThe conflict is caused by:\n"
                "    pydantic 2.14.4 depends on pydantic-core==2.50.5\n"
                "    pydantic 2.14.3 depends on pydantic-core==2.50.4\n")
    assert without_wheel(conflict) == ["pydantic-core"]
    missing = ("ERROR: Could not find a version that satisfies the requirement fastavro<2,>=1.9 "
               "(from thermopipe) (from versions: none)\n"
               "ERROR: No matching distribution found for fastavro<2,>=1.9")
    assert without_wheel(missing) == ["fastavro"]
    assert check_downloaded(["pydantic_core-2.50.5-cp311-cp311-manylinux_2_17_armv7l."
                             "manylinux2014_armv7l.whl"], "armv7l") == []
    assert check_downloaded(["paho_mqtt-2.2.1-py3-none-any.whl"], "armv6l") == []
    assert check_downloaded(["x-1-cp311-cp311-manylinux_2_17_aarch64.whl"], "armv7l")
    assert check_downloaded(["x-1.tar.gz"], "aarch64")
