"""sd_notify over a real unix datagram socket, and a hung agent that stops pinging the watchdog."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import load
from edge_agent.supervisor import Supervisor, agent_alive
from edge_agent.systemd_notify import Notifier, socket_address, watchdog_interval_s
from tests.agent_pi.helpers import NotifySocket, agent_config, wait_until


def test_the_notify_address_and_the_watchdog_interval() -> None:
    assert socket_address(None) is None and socket_address("") is None
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@sd-notify") == b"\0sd-notify"
    assert socket_address("vsock:2:1") is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}, 7) is None
    assert watchdog_interval_s({}, 7) is None
    assert agent_alive(100.0, True, 105.0, 10.0)
    assert not agent_alive(100.0, True, 111.0, 10.0)
    assert not agent_alive(100.0, False, 100.0, 10.0)


def test_datagrams_reach_a_bound_socket_and_nothing_breaks_without_one(tmp_path: Path) -> None:
    sock = NotifySocket(tmp_path / "notify")
    try:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(sock.path),
                                          "WATCHDOG_USEC": "4000000",
                                          "WATCHDOG_PID": str(os.getpid())})
        assert notifier.enabled and notifier.watchdog_s == 2.0
        assert notifier.ready("16 sensors\nand more")
        assert sock.receive(5) == "READY=1\nSTATUS=16 sensors and more"
        assert notifier.watchdog() and sock.receive(5) == "WATCHDOG=1"
        assert notifier.stopping() and sock.receive(5) == "STOPPING=1"
    finally:
        sock.close()
    # the socket gone (systemd restarted), or no systemd at all: False, never an exception
    assert not Notifier(str(tmp_path / "notify")).watchdog()
    assert not Notifier.from_environ({}).ready()


@pytest.mark.slow
def test_a_hung_agent_loop_stops_the_watchdog_pings(tmp_path: Path) -> None:
    """The run loop blocks (as in a clock probe that never returns): the keeper keeps writing the
    state file but sends no WATCHDOG=1, so systemd would restart the service; when the loop
    moves again the pings resume."""
    cfg = load(agent_config(tmp_path, 9, speed=20))
    hang = threading.Event()
    release = threading.Event()

    def clock_synced() -> bool:  # called by the run loop for every batch of events
        if hang.is_set():
            release.wait(60)
        return True

    agent = Agent(cfg, clock_synced=clock_synced)
    sock = NotifySocket(tmp_path / "notify")
    keeper = Supervisor(agent, tmp_path / "state.json", 0.1, Notifier(str(sock.path), 0.1),
                        lambda: True, "test", stall_s=1.0)
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    keeper.start()
    runner.start()
    try:
        sock.wait_for("READY=1", 30)
        sock.wait_for("WATCHDOG=1", 10)
        hang.set()
        wait_until(lambda: keeper.pings > 0 and keeper.stall_s < _loop_age(agent), 30,
                   "the run loop to stall")
        while sock.receive(0.05) is not None:  # pings sent before the stall was seen
            pass
        pings, writes = keeper.pings, keeper.writes
        wait_until(lambda: keeper.writes >= writes + 5, 30, "five more state writes")
        assert keeper.pings == pings
        assert sock.receive(0.2) is None, sock.messages[-3:]
        release.set()
        sock.wait_for("WATCHDOG=1", 10)
    finally:
        release.set()
        stop.set()
        runner.join(30)
        keeper.stop()
        sock.close()
    assert not (tmp_path / "state.json").exists()


def _loop_age(agent: Agent) -> float:
    import time

    return time.monotonic() - agent.last_turn
