"""What the agent-on-a-Pi tests share: an agent config with simulated boards, a notify socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.agent_e2e.e2e_helpers import wait_until

__all__ = ["NotifySocket", "agent_config", "agent_env", "edge_agent", "start_agent", "wait_until"]

ROOT = Path(__file__).resolve().parents[2]


def scenario(path: Path, sensors: int, first: int = 0) -> Path:
    """A simulator scenario: ``sensors`` constant sensors at 1 reading/s for a day."""
    body = "".join(
        f'[[sensors]]\nid = "28-0000000000{i:02x}"\n'
        f'profile = {{ kind = "constant", value = {20 + i} }}\nnoise = 0.2\n\n'
        for i in range(first, first + sensors))
    path.write_text(f'duration = "1d"\ninterval = "1s"\n\n{body}')
    return path


def agent_config(tmp: Path, port: int, *, boards: int = 1, sensors_per_board: int = 2,
                 speed: float = 1.0, extra: str = "", root: str = "thermopipe") -> Path:
    """An agent TOML with ``boards`` simulated boards, its outbox and state file under ``tmp``."""
    sources = ""
    for b in range(boards):
        scen = scenario(tmp / f"board{b}.toml", sensors_per_board, b * sensors_per_board)
        sources += (f'[[sources]]\nkind = "simulator"\nname = "board{b}"\n'
                    f'scenario = "{scen}"\nspeed = {speed}\nseed = {b}\n\n')
    cfg = tmp / "agent.toml"
    cfg.write_text(
        f'site = "farm"\ndevice_id = "pi-test"\nstate_interval_s = 0.5\n{extra}\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntopic_root = "{root}"\n'
        f'[outbox]\npath = "{tmp}/outbox/outbox.db"\n'
        f'[defaults]\ndeadband = 0.1\n\n[sensors."28-000000000000"]\nname = "freezer"\n\n'
        f'{sources}')
    return cfg


def agent_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                        "RUNTIME_DIRECTORY")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def start_agent(cfg: Path, stderr: Path, **env: str) -> subprocess.Popen[bytes]:
    with stderr.open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "-c", str(cfg)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                env=agent_env(**env))


def edge_agent(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False,
                          env=agent_env(**env))


class NotifySocket:
    """A unix datagram socket bound where $NOTIFY_SOCKET points, as systemd's is."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        text = data.decode()
        self.messages.append((time.monotonic(), text))
        return text

    def wait_for(self, field: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            text = self.receive(left)
            if text is not None and field in text.splitlines():
                return text
        raise AssertionError(f"no {field} on the notify socket in {timeout}s: {self.messages}")

    def close(self) -> None:
        self.sock.close()
