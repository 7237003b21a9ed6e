"""A real Home Assistant (2024.3.3, the last release for Python 3.11), headless, in its own venv.

Its config directory is written before it starts: ``configuration.yaml`` (the HTTP API on a free
loopback port, metric units, UTC), an MQTT config entry in ``.storage/core.config_entries`` (the
broker, Home Assistant's own account, discovery on with the default prefix) and an owner with a
long-lived access token in ``.storage/auth`` (the JWT is made here, signed with the refresh
token's key, as Home Assistant's ``async_create_access_token`` makes it). It runs with
``--skip-pip``: nothing is installed at start (the venv holds what its integrations import).

The tests read its state machine over the REST API (``/api/states``) and its entity and device
registries over the websocket API (``config/entity_registry/list``,
``config/device_registry/list``), and its log (``home-assistant.log``) for errors.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.servers import free_port

HA_VERSION = "2024.3.3"
START_TIMEOUT_S = 240  # cold start on 2 busy cores: the frontend and 40-odd integrations


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_jwt(claims: dict[str, Any], key: str) -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _store(path: Path, key: str, data: dict[str, Any], minor: int = 1) -> None:
    path.write_text(json.dumps({"version": 1, "minor_version": minor, "key": key, "data": data}))


@dataclass
class HomeAssistant:
    python: Path
    config_dir: Path
    broker_port: int
    username: str
    password: str
    port: int = field(default_factory=free_port)
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    # -- set-up ----------------------------------------------------------------------------------
    def write_config(self) -> None:
        storage = self.config_dir / ".storage"
        storage.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(
            "homeassistant:\n  name: thermopipe tests\n  unit_system: metric\n"
            "  time_zone: UTC\n  latitude: 0\n  longitude: 0\n  elevation: 0\n"
            "  currency: EUR\n  country: DE\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\n"
            "logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: info\n")
        _store(storage / "core.config_entries", "core.config_entries", {"entries": [{
            "entry_id": uuid.uuid4().hex, "version": 1, "minor_version": 1, "domain": "mqtt",
            "title": "thermopipe test broker",
            "data": {"broker": "127.0.0.1", "port": self.broker_port,
                     "username": self.username, "password": self.password,
                     "discovery": True, "discovery_prefix": "homeassistant"},
            "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False,
            "source": "user", "unique_id": None, "disabled_by": None}]})
        user_id, token_id, jwt_key = uuid.uuid4().hex, uuid.uuid4().hex, secrets.token_hex(64)
        _store(storage / "auth", "auth", {
            "users": [{"id": user_id, "group_ids": ["system-admin"], "is_owner": True,
                       "is_active": True, "name": "tests", "system_generated": False,
                       "local_only": False}],
            "groups": [{"id": "system-admin"}, {"id": "system-users"},
                       {"id": "system-read-only"}],
            "credentials": [],
            "refresh_tokens": [{
                "id": token_id, "user_id": user_id, "client_id": None,
                "client_name": "thermopipe tests", "client_icon": None,
                "token_type": "long_lived_access_token",
                "created_at": datetime.now(UTC).isoformat(),
                "access_token_expiration": 10 * 365 * 86400.0,
                "token": secrets.token_hex(64), "jwt_key": jwt_key,
                "last_used_at": None, "last_used_ip": None, "credential_id": None,
                "version": HA_VERSION}]})
        now = int(time.time())
        self.token = hs256_jwt({"iss": token_id, "iat": now, "exp": now + 10 * 365 * 86400},
                               jwt_key)
        # onboarding done: nothing waits for a person to create the first user
        _store(storage / "onboarding", "onboarding",
               {"done": ["user", "core_config", "analytics", "integration"]}, minor=1)

    # -- process ---------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.config_dir / "home-assistant.log"

    def start(self, timeout: float = START_TIMEOUT_S) -> float:
        """Start it and wait until the MQTT integration is set up; the seconds that took."""
        started = time.monotonic()
        with (self.config_dir / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.python), "-m", "homeassistant", "--config", str(self.config_dir),
                 "--skip-pip", "--log-no-color"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")})
        self.starts += 1
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            with contextlib.suppress(OSError, ValueError):
                config = self.get("/api/config")
                if config.get("state") == "RUNNING" and "mqtt" in config["components"]:
                    return time.monotonic() - started
            time.sleep(0.5)
        raise TimeoutError(f"Home Assistant not running with MQTT after {timeout:.0f} s:\n"
                           + self.log_tail())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    # -- REST ------------------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.get("/api/states")}

    # -- websocket -------------------------------------------------------------------------------
    def ws(self, *commands: dict[str, Any]) -> list[Any]:
        """Run websocket commands (``{"type": ...}``); their results, in order."""
        from websockets.sync.client import connect  # installed with amqtt (the demo extra)

        results = []
        with connect(f"ws://127.0.0.1:{self.port}/api/websocket", open_timeout=10) as conn:
            assert json.loads(conn.recv(10))["type"] == "auth_required"
            conn.send(json.dumps({"type": "auth", "access_token": self.token}))
            assert json.loads(conn.recv(10))["type"] == "auth_ok"
            for i, command in enumerate(commands, 1):
                conn.send(json.dumps({"id": i, **command}))
                while True:
                    answer = json.loads(conn.recv(30))
                    if answer.get("id") == i and answer.get("type") == "result":
                        break
                if not answer["success"]:
                    raise RuntimeError(f"{command}: {answer.get('error')}")
                results.append(answer["result"])
        return results

    def entity_entry(self, entity_id: str) -> dict[str, Any]:
        """One entity registry entry in full (capabilities too)."""
        entry: dict[str, Any] = self.ws({"type": "config/entity_registry/get",
                                         "entity_id": entity_id})[0]
        return entry

    def registries(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The entity registry and the device registry."""
        entities, devices = self.ws({"type": "config/entity_registry/list"},
                                    {"type": "config/device_registry/list"})
        return entities, devices


class StateChanges:
    """Every ``state_changed`` event Home Assistant fires, collected by a websocket thread:
    ``(entity_id, state or None when removed, last_changed as epoch seconds)``, in order."""

    def __init__(self, ha: HomeAssistant) -> None:
        import threading

        from websockets.sync.client import connect

        self.events: list[tuple[str, str | None, float]] = []
        self._lock = threading.Lock()
        self._conn = connect(f"ws://127.0.0.1:{ha.port}/api/websocket", open_timeout=10)
        assert json.loads(self._conn.recv(10))["type"] == "auth_required"
        self._conn.send(json.dumps({"type": "auth", "access_token": ha.token}))
        assert json.loads(self._conn.recv(10))["type"] == "auth_ok"
        self._conn.send(json.dumps({"id": 1, "type": "subscribe_events",
                                    "event_type": "state_changed"}))
        assert json.loads(self._conn.recv(10))["success"]
        self._thread = threading.Thread(target=self._run, name="ha-state-changes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            for raw in self._conn:
                msg = json.loads(raw)
                if msg.get("type") != "event":
                    continue
                data = msg["event"]["data"]
                new = data.get("new_state")
                when = (datetime.fromisoformat(new["last_changed"]).timestamp() if new
                        else time.time())
                with self._lock:
                    self.events.append((data["entity_id"], new["state"] if new else None,
                                        when))

    def of(self, entity_id: str) -> list[tuple[str | None, float]]:
        with self._lock:
            return [(s, t) for e, s, t in self.events if e == entity_id]

    def close(self) -> None:
        self._conn.close()
        self._thread.join(5)
