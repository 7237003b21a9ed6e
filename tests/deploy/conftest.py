"""Fixtures for deploy/'s tests: a scratch copy of deploy/ set up by its own scripts, and a real
Mosquitto started with deploy/'s broker config, ACL and the password file those scripts made."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import Mosquitto

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@dataclass
class DeployCopy:
    root: Path  # the copy of deploy/

    def run(self, script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(self.root / script), *args], capture_output=True,
                              text=True, timeout=60, check=check)

    def env(self) -> dict[str, str]:
        out = {}
        for line in (self.root / ".env").read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                out[key] = value
        return out

    def add_device(self, site: str, device: str) -> tuple[Path, str]:
        """add-device.sh SITE DEVICE; returns the agent config it wrote and the password."""
        out = self.root / "devices" / device
        self.run("scripts/add-device.sh", "--broker", "127.0.0.1", "--password-path",
                 str(out / "mqtt-password"), site, device)
        return out / "agent.toml", (out / "mqtt-password").read_text().strip()

    def broker_config(self) -> list[str]:
        """deploy/mosquitto/mosquitto.conf for a test broker: the fixture owns the listener,
        the persistence directory and logging; every other line is used as written, with the
        container's /mosquitto/config paths pointing at this copy."""
        conf_dir = self.root / "mosquitto"
        lines = []
        for raw in (conf_dir / "mosquitto.conf").read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.split()[0] in ("listener", "protocol", "persistence_location", "log_dest"):
                continue
            lines.append(line.replace("/mosquitto/config", str(conf_dir)))
        return lines


def copy_deploy(dest: Path) -> DeployCopy:
    root = dest / "deploy"
    shutil.copytree(DEPLOY, root, ignore=shutil.ignore_patterns(
        ".env", "passwd", "devices", "*.conf.new"))
    return DeployCopy(root)


@pytest.fixture
def deploy_copy(tmp_path: Path) -> DeployCopy:
    """A copy of deploy/ after setup-server.sh (its .env and the hub's MQTT user)."""
    copy = copy_deploy(tmp_path)
    copy.run("scripts/setup-server.sh")
    return copy


@pytest.fixture
def deploy_broker(deploy_copy: DeployCopy,
                  mosquitto_factory: Callable[..., Mosquitto]) -> Callable[[], Mosquitto]:
    """Starts a Mosquitto with deploy/'s config, ACL and password file (call after adding
    devices: Mosquitto reads the password file at start)."""
    def start() -> Mosquitto:
        return mosquitto_factory(extra_config=deploy_copy.broker_config())
    return start
