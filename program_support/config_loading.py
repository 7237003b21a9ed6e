"""Loading a program's TOML config into its model, and resolving secrets.

Shared by ``edge-agent`` and ``hub`` so both report errors the same way
(:func:`format_config_error`): every problem at once, each with its key path
(``mqtt.tls.ca_file``, ``sensors[2].thresholds[0].above``) and the reason in the user's words
(``unknown key 'intervall_s' (did you mean 'interval_s'?)``, a TOML syntax error with its line),
before anything runs. Secrets are never written in the file itself: a secret field holds
``env:NAME`` (an environment variable) or ``file:/path`` (a file's first line, e.g. a systemd
credential), and its value (pydantic's ``SecretStr`` in the hub, ``plain_config.Secret`` in the
agent and firmware-sim) prints as ``**********`` in logs and reprs.

Two validators share this layout: pydantic for the hub's models
(``program_support/pydantic_loading.py``), and ``program_support/plain_config.py`` for the
agent's and firmware-sim's (stdlib only: they run where pydantic cannot be installed). This module
holds what both use, and imports no pydantic.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError

# ``check-config --skip-secrets`` (and ``--for-another-machine``): secret references are checked
# for their form only and listed
_unresolved: ContextVar[list[str] | None] = ContextVar("unresolved_secrets", default=None)
# ``check-config --for-another-machine``: what this machine has (directories, packages, TLS files)
# says nothing about the file
_elsewhere: ContextVar[bool] = ContextVar("checking_elsewhere", default=False)
# old keys still read, with a note for the person who wrote them (see ``collect_deprecations``)
_deprecations: ContextVar[list[str] | None] = ContextVar("deprecations", default=None)


def deprecated(key: str, message: str) -> None:
    """A validator read an old key: note it for ``check-config`` to print and ``run`` to log."""
    notes = _deprecations.get()
    if notes is not None and f"{key}: {message}" not in notes:
        notes.append(f"{key}: {message}")


@contextmanager
def collect_deprecations() -> Iterator[list[str]]:
    """Collect the deprecation notes of the configs loaded inside (``key: what to write``)."""
    notes: list[str] = []
    token = _deprecations.set(notes)
    try:
        yield notes
    finally:
        _deprecations.reset(token)


@contextmanager
def secrets_unresolved(enabled: bool = True, *, elsewhere: bool = True) -> Iterator[list[str]]:
    """Validate without reading secrets.

    Inside, ``secret_value`` still rejects inline values and malformed references, but does not
    read the variable or file; it appends the reference to the list this yields instead. With
    ``elsewhere`` (the default: a workstation checking a file meant for a device, or a command
    that needs only part of the file) what this machine has is not checked either
    (:func:`checking_elsewhere`); with ``elsewhere=False`` only the secrets are left unread
    (``check-config --skip-secrets``: a systemd credential that exists only while the service
    runs). With ``enabled`` False secrets are read as usual (and the list stays empty)."""
    seen: list[str] = []
    token = _unresolved.set(seen if enabled else None)
    where = _elsewhere.set(enabled and elsewhere)
    try:
        yield seen
    finally:
        _elsewhere.reset(where)
        _unresolved.reset(token)


def secrets_left_unread() -> bool:
    """True inside ``secrets_unresolved(True)``: every secret is a placeholder, so a check of
    its value (a token's length) has nothing to check."""
    return _unresolved.get() is not None


def checking_elsewhere() -> bool:
    """True inside ``secrets_unresolved(True)`` (not with ``elsewhere=False``): the file is checked
    away from the machine that runs it, so what this machine has (directories, packages, TLS
    files) says nothing about it."""
    return _elsewhere.get()


def key_path(loc: tuple[int | str, ...]) -> str:
    """('sensors', 2, 'thresholds', 0, 'above') -> 'sensors[2].thresholds[0].above'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_TOML_AT = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def _toml_error(exc: tomllib.TOMLDecodeError, text: str) -> tuple[str, str]:
    """A TOML syntax error as ``("line N", reason + the offending line and a caret)``."""
    found = _TOML_AT.match(str(exc))
    if found is None:
        return "", f"not valid TOML: {exc}"
    line, col = int(found["line"]), int(found["col"])
    lines = text.splitlines()
    shown = lines[line - 1] if 0 < line <= len(lines) else ""
    caret = " " * (max(col, 1) - 1) + "^"
    return f"line {line}", f"not valid TOML: {found['msg']} (column {col})\n{shown}\n{caret}"


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML file's tables; raise :class:`ConfigError` for a file that is missing, unreadable,
    not UTF-8 or not TOML (with the line, the offending text and a caret)."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, [("", FILE_MISSING)]) from None
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [("", f"not UTF-8 text (byte {exc.start})")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [_toml_error(exc, text)]) from None
    return data


def directory_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be created or written by this process, or ``None`` if it can.

    Looks at the directory or, when it does not exist yet, its nearest existing ancestor (where it
    would be created): a file in the way, a read-only file system, or no write permission.
    """
    existing = directory
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return (f"{existing} is a file, not a directory" if existing == directory else
                f"cannot create {directory}: {existing} is a file, not a directory")
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    where = "" if existing == directory else f"cannot create {directory}: "
    if read_only:
        return f"{where}{existing} is on a read-only file system"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{where}{existing} is not writable by this user"
    return None


#: the reason :func:`read_toml` gives for a file that is not there (said apart by
#: :func:`format_config_error`: a missing file is not an invalid one)
FILE_MISSING = "the file does not exist"
_ROOT = Path(__file__).resolve().parents[1]


def example_hint(relative: str, target: str) -> str:
    """How to start ``target`` from the example config ``relative`` (``deploy/agent.example.toml``):
    a ``cp`` from its absolute path when thermopipe runs from a checkout, else where it is in
    thermopipe's source (an installed wheel has no deploy/ directory)."""
    here = _ROOT / relative
    if here.is_file():
        return f"start from the example: cp {here} {target}, then edit it"
    return f"start from the example {relative} in thermopipe's source (copy it to {target})"


def format_config_error(exc: ConfigError, example: str | None = None) -> str:
    """The one layout both programs print a bad config in::

        invalid configuration agent.toml (2 problems):
          mqtt.port: Input should be less than or equal to 65535
          sources[1]: unknown key 'intervall_s' (did you mean 'interval_s'?)

    A file that is not there is said as such, with the example to start from (``example``, a
    path relative to the source tree, :func:`example_hint`)."""
    if tuple(exc.errors) == (("", FILE_MISSING),):
        start = f"; {example_hint(example, exc.source)}" if example else ""
        return (f"no configuration file {exc.source} (it does not exist){start}; or name "
                "another file with -c FILE")
    count = len(exc.errors)
    lines = [f"invalid configuration {exc.source} ({count} problem{'s' if count != 1 else ''}):"]
    for path, reason in exc.errors:
        first, *rest = reason.split("\n")
        lines.append(f"  {path or '(file)'}: {first}")
        lines.extend(f"      {more}" for more in rest)
    return "\n".join(lines)


def format_config_error_journal(exc: ConfigError) -> str:
    """The same problems for the journal: one line per problem, each naming the file, so that
    ``journalctl -p err`` shows a one-problem config as one line and every line stands alone::

        invalid configuration agent.toml: mqtt.port: Input should be less than or equal to 65535
    """
    return "\n".join(
        f"invalid configuration {exc.source}: {path or '(file)'}: {' '.join(reason.split())}"
        for path, reason in exc.errors)


def secret_value(reference: str | None) -> str | None:
    """``env:NAME`` or ``file:/path`` -> the secret's text; ``None`` and ``""`` -> ``None``
    (inside :func:`secrets_unresolved`: ``""``, the reference listed, nothing read).

    Raises ``ValueError`` (which the validators report with the key path) when the variable or
    file is missing, or when the value is written inline (secrets do not belong in config files).
    """
    if reference is None or reference == "":
        return None
    unresolved = _unresolved.get()
    if unresolved is not None and (
            (reference.startswith("env:") and len(reference) > 4)
            or (reference.startswith("file:") and len(reference) > 5)):
        unresolved.append(reference)
        return ""
    if reference.startswith("env:"):
        name = reference[4:]
        value = os.environ.get(name)
        if value is None:
            raise ValueError(f"environment variable {name} is not set")
        return value
    if reference.startswith("file:"):
        path = Path(reference[5:])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
        return lines[0] if lines else ""
    raise ValueError("a secret is written 'env:VARIABLE' or 'file:/path', never inline in the "
                     "file")
