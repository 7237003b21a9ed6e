"""``edge-agent status`` run by a user who may not read the agent's files: one line and exit 1,
never a traceback. (Under systemd, as documented: tests/counterparts/test_systemd_units.py.)"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from edge_agent import cli, state_file

NOBODY = 65534


def status_as_nobody(state: Path) -> tuple[int, str]:
    """``edge-agent status --state STATE`` in a child that dropped to uid/gid 65534 (the venv's
    interpreter may live where that user cannot exec it, so the child forks instead of execs)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report (exit code, stderr) through the pipe, never return
        code, text = 1, ""
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(["status", "--state", str(state)])
            text = err.getvalue()
        except BaseException as exc:  # a traceback is what this test looks for
            code, text = 99, f"TRACEBACK {type(exc).__name__}: {exc}"
        finally:
            os.write(write_fd, json.dumps([code, text]).encode())
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    code, text = json.loads(data)
    return int(code), str(text)


def a_state_file(directory: Path) -> Path:
    path = directory / state_file.STATE_NAME
    state_file.write_atomic(path, {"format": state_file.FORMAT, "written_at": time.time()})
    return path


def test_a_state_file_in_a_directory_it_may_not_enter_is_one_line(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    code, err = status_as_nobody(a_state_file(private))
    assert code == cli.EXIT_FAILED, err
    assert "TRACEBACK" not in err and len(err.strip().splitlines()) == 1, err
    assert "cannot read" in err and "Permission denied" in err, err


def test_a_state_file_it_may_not_read_is_one_line() -> None:
    # in /tmp: pytest's own temporary directories are 0700, closed to the other user
    with tempfile.TemporaryDirectory(prefix="thermopipe-status-") as name:
        directory = Path(name)
        directory.chmod(0o755)
        path = a_state_file(directory)
        path.chmod(0o640)
        code, err = status_as_nobody(path)
    assert code == cli.EXIT_FAILED, err
    assert "TRACEBACK" not in err and len(err.strip().splitlines()) == 1, err
    assert f"cannot read {path}: Permission denied" in err, err
