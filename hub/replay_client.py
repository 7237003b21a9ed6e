"""The ``hub dlq replay`` side of ``POST /api/dlq/replay`` (hub/dead_letter_api.py): where the
running hub listens, from the same config file, and the request. Standard library only: the
command works where the hub's packages are installed or not.

Where: ``[http] host`` and ``port`` (a wildcard host is asked on loopback), with ``[http] token``
read from its ``env:``/``file:`` reference when set. A hub run with ``--workers N`` has one
store per worker under ``data_dir/worker-I`` and worker I listens on ``port + I``: each is asked
for its own dead letters (:func:`targets`).
"""

from __future__ import annotations

import json
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.deadletters import stores
from program_support.pydantic_loading import resolve_secret
from schemas.errors import ServerError

REPLAY_PATH = "/api/dlq/replay"  # hub/dead_letter_api.py
_WILDCARD = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


class HubNotRunning(ServerError):
    """Nothing answers at the hub's address."""


@dataclass(frozen=True, slots=True)
class Target:
    """One running hub to ask: its base URL and the store it replays from."""

    url: str
    store: Path


def base_url(host: str, port: int) -> str:
    host = _WILDCARD.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def targets(host: str, port: int, data_dir: Path) -> list[Target]:
    """The hubs that hold the stores under ``data_dir``: the hub itself (``hub.sqlite3``) on
    ``port``, worker I of ``--workers`` (``worker-I/hub.sqlite3``) on ``port + I``."""
    out = []
    for store in stores(data_dir):
        worker = store.parent.name.removeprefix("worker-")
        offset = int(worker) if store.parent != data_dir and worker.isdigit() else 0
        out.append(Target(base_url(host, port + offset), store))
    return out or [Target(base_url(host, port), data_dir / "hub.sqlite3")]


def token_of(config_file: str | Path) -> str | None:
    """``[http] token`` of the config file, read from its reference (the only secret replay
    needs: the MQTT password and the others stay unread). ValueError: it cannot be read."""
    with open(config_file, "rb") as f:
        http = tomllib.load(f).get("http", {})
    reference = http.get("token") if isinstance(http, dict) else None
    if reference is None:
        return None
    if not isinstance(reference, str):
        raise ValueError("must be 'env:VARIABLE' or 'file:/path'")
    secret = resolve_secret(reference)
    return secret.get_secret_value().strip() if secret is not None else None


def send(target: Target, ids: list[str] | None, token: str | None,
         timeout_s: float) -> list[dict[str, str]]:
    """Ask one hub to replay ``ids`` (None: every open dead letter of its store); its answers,
    ``{"id", "result", "reason"}`` each. :class:`HubNotRunning` when nothing answers there,
    :class:`ServerError` with the hub's reason when it refused the request."""
    body = json.dumps({"all": True} if ids is None else {"ids": ids}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    # an http:// URL made by base_url, never a file: or custom scheme
    request = urllib.request.Request(target.url + REPLAY_PATH, body, headers,  # noqa: S310
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            answer: Any = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ServerError(_refusal(exc, target, token)) from None
    except (urllib.error.URLError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError | FileNotFoundError):
            raise HubNotRunning("connection refused") from None
        if isinstance(reason, TimeoutError):
            raise ServerError(f"{target.url} did not answer within {timeout_s:.0f} s (the "
                              "replay may still happen: hub dlq list shows it)") from None
        raise HubNotRunning(str(reason)) from None
    except TimeoutError:
        raise ServerError(f"{target.url} did not answer within {timeout_s:.0f} s (the replay "
                          "may still happen: hub dlq list shows it)") from None
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        raise ServerError(f"{target.url} answered without results: is it a thermopipe hub?")
    return [{k: str(r.get(k, "")) for k in ("id", "result", "reason")}
            for r in results if isinstance(r, dict)]


def _refusal(exc: urllib.error.HTTPError, target: Target, token: str | None) -> str:
    if exc.code == 401:
        return (f"the hub at {target.url} refused the token: set [http] token in this config "
                "file to the running hub's" if token else
                f"the hub at {target.url} needs its [http] token: this config file has none")
    if exc.code == 404:
        return (f"the hub at {target.url} has no {REPLAY_PATH}: an older hub? (restart it with "
                "this version)")
    try:
        detail = str(json.loads(exc.read()).get("error", ""))
    except (ValueError, AttributeError, OSError):
        detail = ""
    return f"the hub at {target.url} answered {exc.code}{': ' + detail if detail else ''}"


def merge(answers: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    """The answers of several hubs (workers) as one per id: an id unknown to one hub is
    another's; it is unknown only if every hub says so. In the order first seen."""
    merged: dict[str, dict[str, str]] = {}
    for answer in answers:
        for r in answer:
            if r["id"] not in merged or merged[r["id"]]["result"] == "unknown":
                merged[r["id"]] = r
    return list(merged.values())
