"""Secrets out of what the hub shows: /healthz and /metrics are read by monitoring, proxies and
people who do not hold the hub's credentials, and their text comes from error messages (a broker
refusing the connection, InfluxDB unreachable at a URL with a password in it, a webhook whose URL
is its token).

:func:`redact` is pure: it replaces, in any text, the userinfo of a URL (``user:pass@``), the value
of a secret-looking query parameter or header (``?token=``, ``&p=``, ``Bearer ...``) and every
string of ``secrets`` (the client id, the configured passwords and tokens, the path of a webhook
URL) with ``***``. :func:`config_secrets` lists those strings from a config. What it does not do:
find a secret it was not told about and that has no recognisable form (a password printed bare by
a library in an error message): such messages should not carry one in the first place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

MASK = "***"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#'\"]+@")
_QUERY = re.compile(r"(?i)([?&;](?:access_token|api_?key|apikey|auth|code|key|p|password|pass|"
                    r"pwd|secret|sig|signature|token|u)=)[^&;#\s'\"]*")
_AUTH = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{6,}")
_MIN_SECRET = 4  # shorter "secrets" would mask ordinary words


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL userinfo, secret query values, authorization values and each of
    ``secrets`` replaced by ``***`` (longest first, so one secret inside another goes whole)."""
    for secret in sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _AUTH.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def redact_all(value: Any, secrets: Iterable[str] = ()) -> Any:
    """Every string inside ``value`` (dicts, lists, keys too) redacted; other values as they
    are. For a health report made of JSON types."""
    found = tuple(secrets)
    if isinstance(value, str):
        return redact(value, found)
    if isinstance(value, dict):
        return {redact_all(k, found): redact_all(v, found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_all(v, found) for v in value]
    return value


def config_secrets(config: BaseModel) -> list[str]:
    """The strings of a config that must never be shown: every :class:`SecretStr` (passwords,
    tokens), every value of a ``headers`` table (a webhook's Authorization), and of every
    ``url`` its userinfo and, for a URL with a path or query (a webhook's path is often its
    token), everything after the host."""
    out: list[str] = []

    def walk(value: Any, name: str) -> None:
        if isinstance(value, SecretStr):
            out.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for field in type(value).model_fields:
                walk(getattr(value, field), field)
        elif isinstance(value, dict):
            for key, item in value.items():
                if name == "headers" and isinstance(item, str):
                    out.append(item)
                else:
                    walk(item, str(key))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, name)
        elif isinstance(value, str) and (name == "url" or name.endswith("_url")):
            out.extend(_url_secrets(value))

    walk(config, "")
    return [s for s in out if s]


def _url_secrets(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    out = []
    if "@" in parts.netloc:
        out.append(parts.netloc.rsplit("@", 1)[0])
    rest = url.split(parts.netloc, 1)[1] if parts.netloc else ""
    if rest.strip("/"):
        out.append(rest)
    return out
