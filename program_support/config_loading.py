"""Loading a program's TOML config into its model, and resolving secrets.

Shared by ``edge-agent`` and ``hub`` so both report errors the same way
(:func:`format_config_error`): every problem at once, each with its key path
(``mqtt.tls.ca_file``, ``sensors[2].thresholds[0].above``) and the reason in the user's words
(``unknown key 'intervall_s' (did you mean 'interval_s'?)``, a TOML syntax error with its line),
before anything runs. Secrets are never written in the file itself: a secret field holds
``env:NAME`` (an environment variable) or ``file:/path`` (a file's first line, e.g. a systemd
credential), and its value (pydantic's ``SecretStr`` in the hub, ``plain_config.Secret`` in the
agent) prints as ``**********`` in logs and reprs.

Two validators share this layout: pydantic for the hub's models (:func:`load_config`), and
``program_support/plain_config.py`` for the agent's (stdlib only: the agent runs where pydantic
cannot be installed). Importing this module imports no pydantic; the functions that take a
pydantic model import it when called.
"""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from schemas.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel, SecretStr, ValidationError

M = TypeVar("M", bound="BaseModel")

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

    Inside, ``resolve_secret`` still rejects inline values and malformed references, but does not
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


# pydantic's prefixes for errors raised in our own validators; the reason reads better without
_PREFIXES = ("Value error, ", "Assertion failed, ")


def _models_at(model: Any, loc: Sequence[int | str]) -> list[type[BaseModel]]:
    """The model classes that the value at ``loc`` (below ``model``) may be."""
    from pydantic import BaseModel

    current: list[Any] = [model]
    for part in loc:
        following: list[Any] = []
        for tp in _flatten(current):
            if isinstance(part, int):
                args = typing.get_args(tp)
                if typing.get_origin(tp) in (list, tuple, set, frozenset) and args:
                    following.append(args[0])
            elif isinstance(tp, type) and issubclass(tp, BaseModel):
                field = tp.model_fields.get(part)
                if field is not None:
                    following.append(field.annotation)
                elif _tag_matches(tp, part):  # a discriminated union's tag in the location
                    following.append(tp)
            elif typing.get_origin(tp) is dict and len(typing.get_args(tp)) == 2:
                following.append(typing.get_args(tp)[1])
        current = following
    return [tp for tp in _flatten(current) if isinstance(tp, type) and issubclass(tp, BaseModel)]


def _flatten(types_: list[Any]) -> list[Any]:
    out: list[Any] = []
    for tp in types_:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            out.extend(_flatten([typing.get_args(tp)[0]]))
        elif origin is typing.Union or isinstance(tp, types.UnionType):
            out.extend(_flatten(list(typing.get_args(tp))))
        else:
            out.append(tp)
    return out


def _tag_matches(model: type[BaseModel], tag: str) -> bool:
    field = model.model_fields.get("kind")
    return field is not None and tag in typing.get_args(field.annotation)


def _unknown_key(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> str:
    key = str(loc[-1])
    known: list[str] = []
    if model is not None:
        for candidate in _models_at(model, loc[:-1]):
            known.extend(n for n in candidate.model_fields if n not in known)
    import difflib  # only for a config with a mistake in it (0.15 MB a running agent never needs)

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}"


def _reason(err: Any, path: str) -> str:
    msg = str(err["msg"])
    for prefix in _PREFIXES:
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if path and msg.startswith(f"{path}: "):  # a validator that named the key itself
        msg = msg[len(path) + 2:]
    if err["type"] == "missing":
        return "missing (this key is required)"
    return msg


def validation_errors(exc: ValidationError,
                      model: type[BaseModel] | None = None) -> list[tuple[str, str]]:
    """pydantic's report as ``(key path, reason)`` pairs in the user's words."""
    errors = []
    for err in exc.errors(include_url=False):
        # drop pydantic's internal union/function tags from the location
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (
            p.startswith("function-") or "[" in p)))
        if err["type"] == "extra_forbidden" and loc:
            errors.append((key_path(loc[:-1]), _unknown_key(model, loc)))
            continue
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            errors.append(_tag_error(err, loc))
            continue
        path = key_path(loc)
        errors.append((path, _reason(err, path)))
    return errors


def _tag_error(err: Any, loc: tuple[int | str, ...]) -> tuple[str, str]:
    """A discriminated union's tag (``kind``, ``type``) that is missing or names nothing known:
    the tag's own key path, the closest known value and the list of them."""
    ctx = err.get("ctx") or {}
    tag_key = str(ctx.get("discriminator", "kind")).strip("'\"")
    path = key_path((*loc, tag_key))
    if err["type"] == "union_tag_not_found":
        return path, "missing (this key is required)"
    expected = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
    tag = str(ctx.get("tag", ""))
    import difflib  # only for a config with a mistake in it

    close = difflib.get_close_matches(tag, expected, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return path, f"unknown {tag_key} {tag!r}{hint}; one of: {', '.join(expected)}"


def parse_config(data: dict[str, Any], model: type[M], source: str) -> M:
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, validation_errors(exc, model)) from None


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


def load_config(path: str | Path, model: type[M]) -> M:
    """Read a TOML file into ``model``; raise :class:`ConfigError` naming file, key and reason."""
    return parse_config(read_toml(path), model, str(path))


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


#: the reason :func:`load_config` gives for a file that is not there (said apart by
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


def resolve_secret(reference: str | None) -> SecretStr | None:
    """``env:NAME`` or ``file:/path`` -> the secret as pydantic's ``SecretStr`` (the hub's
    models); ``None`` stays ``None``. The rules are :func:`secret_value`'s."""
    from pydantic import SecretStr

    value = secret_value(reference)
    return None if value is None else SecretStr(value)


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
