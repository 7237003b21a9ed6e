"""Which optional packages each role needs, and a one-line error when one is missing.

The pip extras in ``pyproject.toml`` install them; this table names what each program checks at
start (``tests/install/test_role_dependencies.py`` keeps the two in step):

    extra   packages (import names)                                    used by
    agent   serial                                                     a [[sources]] kind = "serial"
    avro    fastavro                                                   mqtt.encoding = "avro"
    models  pydantic                                                   schemas.models, .codec,
                                                                       the hub (not the agent,
                                                                       nor firmware-sim)
    hub     pydantic, fastavro, influxdb_client, urllib3,              hub run
            prometheus_client, starlette, uvicorn, httpx
    demo    amqtt (and everything of agent and hub)                    scripts/demo

A check looks the package up without importing it (``importlib.util.find_spec``), so it costs
nothing and loads nothing the configuration does not use.

The error names the command that works where the user stands (:func:`install_command`): this
Python's pip, and thermopipe from where it was installed, e.g. ``/home/pi/thermopipe/.venv/bin/
python -m pip install -e '/home/pi/thermopipe[hub]'`` for a checkout (``scripts/demo``'s .venv,
or ``pip install -e``); the directory or wheel file it was installed from; else the package name.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

from schemas.errors import MissingDependency

#: extra -> the import names it provides, as pyproject.toml's optional-dependencies install them
EXTRAS: dict[str, tuple[str, ...]] = {
    "agent": ("serial",),
    "avro": ("fastavro",),
    "models": ("pydantic",),
    "hub": ("pydantic", "fastavro", "influxdb_client", "urllib3", "prometheus_client",
            "starlette", "uvicorn", "httpx"),
    "demo": ("amqtt",),
}


_ROOT = Path(__file__).resolve().parents[1]


def _installed_from() -> tuple[str, bool] | None:
    """(the directory or wheel file thermopipe was installed from, editable), when pip recorded
    one (PEP 610's direct_url.json) and it is still there."""
    from importlib import metadata

    for dist in metadata.distributions(name="thermopipe"):
        text = dist.read_text("direct_url.json")
        if not text:
            continue
        try:
            record = json.loads(text)
        except ValueError:
            return None
        url = urlparse(str(record.get("url", "")))
        path = Path(unquote(url.path))
        if url.scheme == "file" and path.exists():
            return str(path), bool(record.get("dir_info", {}).get("editable"))
        return None
    return None


def install_command(extra: str) -> str:
    """The one command that adds ``extra`` to this installation: this interpreter's pip (the
    venv the program runs in, activated or not), and thermopipe from the checkout it runs from,
    the directory or wheel it was installed from, else by name."""
    pip = f"{shlex.quote(sys.executable)} -m pip install"
    if (_ROOT / "pyproject.toml").is_file():  # running from a checkout (editable or not)
        return f"{pip} -e {shlex.quote(f'{_ROOT}[{extra}]')}"
    source = _installed_from()
    if source is not None:
        where, editable = source
        return f"{pip} {'-e ' if editable else ''}{shlex.quote(f'{where}[{extra}]')}"
    return f"{pip} 'thermopipe[{extra}]'"


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The import names among ``modules`` that cannot be imported here."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def require(extra: str, what: str, modules: Iterable[str] | None = None) -> None:
    """Raise :class:`MissingDependency` naming ``extra`` when any of its packages is missing.

    ``modules`` narrows the check to the packages ``what`` really uses (default: all of them).
    """
    missing = missing_modules(EXTRAS[extra] if modules is None else modules)
    if missing:
        raise MissingDependency(what, missing, extra, install_command(extra))


def missing_reason(extra: str, what: str, modules: Iterable[str] | None = None) -> str | None:
    """The one-line reason :func:`require` would raise, or ``None`` when all is installed."""
    try:
        require(extra, what, modules)
    except MissingDependency as exc:
        return str(exc)
    return None
