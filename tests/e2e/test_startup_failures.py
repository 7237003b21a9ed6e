"""Every start-up failure a user can cause reads as the reason, where, and what to do: a config
problem exits 2 with its key path, anything else exits 1 in one line; never a traceback.
``check-config`` finds what it can without starting (directories included)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port, in_ci

ROOT = Path(__file__).resolve().parents[2]


def run(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, check=False)


def agent_toml(tmp: Path, outbox: Path, host: str = "127.0.0.1") -> Path:
    path = tmp / "agent.toml"
    path.write_text(f'site = "s"\ndevice_id = "d"\n[mqtt]\nhost = "{host}"\nport = {free_port()}\n'
                    f'[outbox]\npath = "{outbox}"\n[log]\nformat = "json"\n'
                    '[[sources]]\nkind = "simulator"\nscenario = "greenhouse_day"\n')
    return path


def hub_toml(tmp: Path, data_dir: Path, http_port: int = 0, host: str = "127.0.0.1") -> Path:
    path = tmp / "hub.toml"
    path.write_text(f'data_dir = "{data_dir}"\n[mqtt]\nhost = "{host}"\nport = {free_port()}\n'
                    f'[storage]\nmode = "sqlite"\n[http]\nport = {http_port}\n')
    return path


def assert_config_error(result: subprocess.CompletedProcess[str], key: str, *words: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("invalid configuration "), result.stderr
    line = next((x for x in result.stderr.splitlines() if x.startswith(f"  {key}: ")), "")
    assert line and all(w in line for w in words), result.stderr


def assert_one_line(result: subprocess.CompletedProcess[str], prefix: str, *words: str) -> None:
    assert result.returncode == 1, result
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(prefix) and all(w in err for w in words), err


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can write in: mode 0555 for a user, a read-only tmpfs for root (root
    writes through file modes)."""
    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        reason = f"cannot mount a read-only tmpfs as root here: {mounted.stderr.strip()}"
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


# --- the agent ----------------------------------------------------------------------------------

def test_agent_outbox_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where a directory should be")
    config = agent_toml(tmp_path, tmp_path / "state" / "outbox.db")
    for args in (["check-config", str(config)], ["run", "-c", str(config)]):
        assert_config_error(run("edge_agent.cli", *args), "outbox.path", "is a file, not a dir")


def test_agent_outbox_in_a_read_only_directory(tmp_path: Path, read_only_dir: Path) -> None:
    config = agent_toml(tmp_path, read_only_dir / "thermopipe" / "outbox.db")
    for args in (["check-config", str(config)], ["run", "-c", str(config)]):
        assert_config_error(run("edge_agent.cli", *args), "outbox.path", str(read_only_dir),
                            "read-only file system" if os.geteuid() == 0 else "not writable")


def test_agent_outbox_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    # the directory is fine, but the outbox "file" is a directory: found only when opening it
    outbox = tmp_path / "outbox.db"
    outbox.mkdir()
    result = run("edge_agent.cli", "run", "-c", str(agent_toml(tmp_path, outbox)))
    assert result.returncode == 1, result
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("edge-agent: cannot start: cannot open the outbox"), result.stderr
    assert str(outbox) in last and "Traceback" not in result.stderr


def test_agent_with_a_broker_host_that_does_not_resolve_keeps_running(tmp_path: Path) -> None:
    config = agent_toml(tmp_path, tmp_path / "outbox.db", host="no-such-broker.invalid")
    checked = run("edge_agent.cli", "check-config", str(config))
    assert checked.returncode == 0, checked
    assert "warning  mqtt.host 'no-such-broker.invalid' does not resolve" in checked.stdout
    assert_keeps_running_without_its_broker("edge_agent.cli", config)


# --- the hub ------------------------------------------------------------------------------------

def test_hub_data_dir_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file")
    config = hub_toml(tmp_path, tmp_path / "var" / "hub")
    for args in (["check-config", str(config)], ["run", "-c", str(config)]):
        assert_config_error(run("hub.cli", *args), "data_dir", "is a file, not a directory")


def test_hub_data_dir_in_a_read_only_directory(tmp_path: Path, read_only_dir: Path) -> None:
    config = hub_toml(tmp_path, read_only_dir / "hub")
    for args in (["check-config", str(config)], ["run", "-c", str(config)]):
        assert_config_error(run("hub.cli", *args), "data_dir", str(read_only_dir))


def test_hub_database_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "hub" / "hub.sqlite3").mkdir(parents=True)  # a directory in the file's place
    result = run("hub.cli", "run", "-c", str(hub_toml(tmp_path, tmp_path / "hub")))
    assert_one_line(result, "hub: cannot start: cannot open the hub database",
                    str(tmp_path / "hub" / "hub.sqlite3"))


def test_hub_http_port_taken_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("hub.cli", "run", "-c", str(hub_toml(tmp_path, tmp_path / "hub", port)))
    assert_one_line(result, "hub: cannot start: cannot listen on", f"127.0.0.1:{port}",
                    "Address already in use", "http.port")


def test_hub_restarts_on_its_http_port_at_once(tmp_path: Path) -> None:
    """A browser connected to the dashboard leaves the port in TIME_WAIT when the hub stops; the
    next hub must still get the port (SO_REUSEADDR)."""
    port = free_port()
    config = hub_toml(tmp_path, tmp_path / "hub", port)
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "-c", str(config)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        _lines_until(proc, "http.listening", 30)
        with socket.create_connection(("127.0.0.1", port)) as client:  # the server closes first
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            client.recv(4096)
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "Traceback" not in out


def test_hub_with_a_broker_host_that_does_not_resolve_keeps_running(tmp_path: Path) -> None:
    config = hub_toml(tmp_path, tmp_path / "hub", host="no-such-broker.invalid")
    checked = run("hub.cli", "check-config", str(config))
    assert checked.returncode == 0, checked
    assert "warning   mqtt.host 'no-such-broker.invalid' does not resolve" in checked.stdout
    assert_keeps_running_without_its_broker("hub.cli", config)


def assert_keeps_running_without_its_broker(module: str, config: Path) -> None:
    """``run`` says once that the broker's name does not resolve, keeps running (a Pi may boot
    before its network), and stops cleanly on SIGTERM; no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", module, "run", "-c", str(config)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = _lines_until(proc, "cannot resolve the host name", 30)
    assert proc.poll() is None, f"{module} stopped while its broker's name did not resolve"
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "Traceback" not in lines + out


def _lines_until(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    """Read the process's output until a line contains ``needle`` (the reader thread keeps the
    pipe from filling)."""
    import queue
    import threading

    got: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            got.put(line)
            if needle in line:
                return

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = got.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if needle in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"no line with {needle!r} within {timeout} s:\n{''.join(seen)}")
