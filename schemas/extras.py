"""Which optional packages each role needs, and a one-line error when one is missing.

The pip extras in ``pyproject.toml`` install them; this table names what each program checks at
start (``tests/install/test_role_dependencies.py`` keeps the two in step):

    extra   packages (import names)                                    used by
    agent   serial                                                     a [[sources]] kind = "serial"
    avro    fastavro                                                   mqtt.encoding = "avro"
    hub     fastavro, influxdb_client, urllib3, prometheus_client,     hub run
            starlette, uvicorn, httpx
    demo    amqtt (and everything of agent and hub)                    scripts/demo

A check looks the package up without importing it (``importlib.util.find_spec``), so it costs
nothing and loads nothing the configuration does not use.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from schemas.errors import MissingDependency

#: extra -> the import names it provides, as pyproject.toml's optional-dependencies install them
EXTRAS: dict[str, tuple[str, ...]] = {
    "agent": ("serial",),
    "avro": ("fastavro",),
    "hub": ("fastavro", "influxdb_client", "urllib3", "prometheus_client", "starlette", "uvicorn",
            "httpx"),
    "demo": ("amqtt",),
}


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
        raise MissingDependency(what, missing, extra)


def missing_reason(extra: str, what: str, modules: Iterable[str] | None = None) -> str | None:
    """The one-line reason :func:`require` would raise, or ``None`` when all is installed."""
    try:
        require(extra, what, modules)
    except MissingDependency as exc:
        return str(exc)
    return None
