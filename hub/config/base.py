"""What every section model of the hub's config shares: closed to unknown keys, frozen, and
secrets given as references (``env:NAME``, ``file:/path``) read while validating."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from program_support.pydantic_loading import resolve_secret


class Section(BaseModel):
    """A ``[section]`` of the hub's TOML: an unknown key is an error, a loaded value is final."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def secret(value: Any) -> Any:
    """A ``mode="before"`` validator of secret fields: the reference read (or left unread
    under ``secrets_unresolved``), a :class:`SecretStr` or ``None`` kept."""
    if isinstance(value, SecretStr) or value is None:
        return value
    if not isinstance(value, str):
        raise ValueError("must be 'env:VARIABLE' or 'file:/path'")
    return resolve_secret(value)
