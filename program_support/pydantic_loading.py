"""Loading a TOML config into a pydantic model (the hub's), and its secrets as ``SecretStr``.

pydantic's report is turned into ``program_support.config_loading``'s layout: every problem at
once as ``(key path, reason)``, an unknown key with the closest known one, a union's unknown tag
with the names it may take. The agent and firmware-sim read their files with
``program_support/plain_config.py`` instead (they run where pydantic is not installed), so this
module is the hub's side alone: nothing the agent loads imports it.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from program_support.config_loading import key_path, read_toml, secret_value
from schemas.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


# pydantic's prefixes for errors raised in our own validators; the reason reads better without
_PREFIXES = ("Value error, ", "Assertion failed, ")


def _models_at(model: Any, loc: Sequence[int | str]) -> list[type[BaseModel]]:
    """The model classes that the value at ``loc`` (below ``model``) may be."""
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
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, validation_errors(exc, model)) from None


def load_config(path: str | Path, model: type[M]) -> M:
    """Read a TOML file into ``model``; raise :class:`ConfigError` naming file, key and reason."""
    return parse_config(read_toml(path), model, str(path))


def resolve_secret(reference: str | None) -> SecretStr | None:
    """``env:NAME`` or ``file:/path`` -> the secret as pydantic's ``SecretStr`` (the hub's
    models); ``None`` stays ``None``. The rules are ``config_loading.secret_value``'s."""
    value = secret_value(reference)
    return None if value is None else SecretStr(value)
