"""Loading a program's TOML config into its pydantic model, and resolving secrets.

Shared by ``edge-agent`` and ``hub`` so both report errors the same way: every problem at once, each
with its key path (``mqtt.tls.ca_file``, ``sensors[2].thresholds[0].above``) and the reason, before
anything runs. Secrets are never written in the file itself: a secret field holds ``env:NAME``
(an environment variable) or ``file:/path`` (a file's first line, e.g. a systemd credential), and
its value is a ``SecretStr`` that prints as ``**********`` in logs and reprs.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from schemas.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

# ``check-config --no-secrets``: secret references are checked for their form only and listed
_unresolved: ContextVar[list[str] | None] = ContextVar("unresolved_secrets", default=None)


@contextmanager
def secrets_unresolved(enabled: bool = True) -> Iterator[list[str]]:
    """Validate without reading secrets (a workstation checking a file meant for a device).

    Inside, ``resolve_secret`` still rejects inline values and malformed references, but does not
    read the variable or file; it appends the reference to the list this yields instead. With
    ``enabled`` False secrets are read as usual (and the list stays empty)."""
    seen: list[str] = []
    token = _unresolved.set(seen if enabled else None)
    try:
        yield seen
    finally:
        _unresolved.reset(token)


def key_path(loc: tuple[int | str, ...]) -> str:
    """('sensors', 2, 'thresholds', 0, 'above') -> 'sensors[2].thresholds[0].above'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    errors = []
    for err in exc.errors(include_url=False):
        # drop pydantic's internal union/function tags from the location
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (
            p.startswith("function-") or "[" in p)))
        errors.append((key_path(loc), err["msg"]))
    return errors


def parse_config(data: dict[str, Any], model: type[M], source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, validation_errors(exc)) from None


def load_config(path: str | Path, model: type[M]) -> M:
    """Read a TOML file into ``model``; raise :class:`ConfigError` naming file, key and reason."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [("", f"not UTF-8 text (byte {exc.start})")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [("", f"not valid TOML: {exc}")]) from None
    return parse_config(data, model, source)


def resolve_secret(reference: str | None, what: str = "secret") -> SecretStr | None:
    """``env:NAME`` or ``file:/path`` -> the secret; ``None`` stays ``None``.

    Raises ``ValueError`` (which pydantic reports with the key path) when the variable or file is
    missing, or when the value is written inline (secrets do not belong in config files).
    """
    if reference is None or reference == "":
        return None
    unresolved = _unresolved.get()
    if unresolved is not None and (
            (reference.startswith("env:") and len(reference) > 4)
            or (reference.startswith("file:") and len(reference) > 5)):
        unresolved.append(reference)
        return SecretStr("")
    if reference.startswith("env:"):
        name = reference[4:]
        value = os.environ.get(name)
        if value is None:
            raise ValueError(f"{what}: environment variable {name} is not set")
        return SecretStr(value)
    if reference.startswith("file:"):
        path = Path(reference[5:])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
        return SecretStr(lines[0] if lines else "")
    raise ValueError(f"{what} must be 'env:VARIABLE' or 'file:/path', not an inline value")
