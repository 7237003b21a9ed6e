"""Issue 21, item 1 on the agent: every thread under the Agent's supervisor.

(e) a source whose reader crashes is restarted (its loop reads again) and the keeper sends no
    WATCHDOG=1 while it is down; the delivery loop crashing is restarted from the outbox and
    every event still reaches the broker (a real Mosquitto); a component past its budget stops
    the agent's run loop.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge_agent.agent import Agent
from edge_agent.config import load
from edge_agent.decide import Reading
from edge_agent.sources.base import ReadingSink, SensorSpec, start_source_thread
from edge_agent.supervisor import Supervisor as Keeper
from edge_agent.systemd_notify import Notifier
from program_support.supervision import EXIT_COMPONENT_FAILED, TEST_CRASH_ENV, Supervisor
from tests.agent_e2e.e2e_helpers import Subscriber
from tests.agent_pi.helpers import (
    ROOT,
    NotifySocket,
    agent_config,
    agent_env,
    start_agent,
    wait_until,
)
from tests.servers import Mosquitto

SID = "28-0000000000aa"


class CrashingSource:
    """Puts readings; its first run raises once ``crash`` is set (a bug in a reader)."""

    kind = "simulator"
    name = "crashy"

    def __init__(self) -> None:
        self.crash = threading.Event()
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, sink: ReadingSink, supervisor: Supervisor | None = None) -> None:
        self._thread = start_source_thread(self.name, self._run, sink, self._thread, supervisor)

    def _run(self, sink: ReadingSink) -> None:
        self.runs += 1
        value = 20.0
        while not self._stop.wait(0.05):
            if self.runs == 1 and self.crash.is_set():
                raise RuntimeError("injected: a reader bug")
            value += 0.5
            sink(Reading(SID, 1_700_000_000.0 + value, value))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def sensors(self) -> list[SensorSpec]:
        return [SensorSpec(SID)]

    discovered = True

    @property
    def firmware(self) -> str:
        return ""

    def counters(self) -> dict[str, float]:
        return {"runs": self.runs}


@pytest.mark.timeout(90)
def test_a_crashed_source_withholds_the_watchdog_until_it_runs_again(tmp_path: Path) -> None:
    cfg = load(agent_config(tmp_path, 9))  # no broker: events wait in the outbox
    source = CrashingSource()
    agent = Agent(cfg, sources=[source], clock_synced=lambda: True)
    agent.supervisor.restart_initial_s = 5.0  # the time the test looks at the keeper
    sock = NotifySocket(tmp_path / "notify")
    keeper = Keeper(agent, tmp_path / "state.json", 0.1, Notifier(str(sock.path), 0.1),
                    lambda: True, "test")
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    keeper.start()
    runner.start()
    component = "source crashy"
    try:
        with capture_logs() as logs:
            sock.wait_for("READY=1", 30)
            sock.wait_for("WATCHDOG=1", 10)
            source.crash.set()
            wait_until(lambda: agent.supervisor.components[component].state == "restarting",
                       30, "the source to crash")
            writes = keeper.writes
            wait_until(lambda: keeper.writes >= writes + 2, 30, "a keeper tick after it")
            while sock.receive(0.05) is not None:  # pings sent before the crash was seen
                pass
            pings, writes = keeper.pings, keeper.writes
            wait_until(lambda: keeper.writes >= writes + 5, 30, "five more keeper ticks")
            assert agent.supervisor.components[component].state == "restarting"
            assert keeper.pings == pings
            assert sock.receive(0.2) is None, sock.messages[-3:]
            # restarted after its backoff: reading again, and the pings resume
            wait_until(lambda: source.runs == 2, 30, "the source's second run")
            sock.wait_for("WATCHDOG=1", 10)
            readings = agent.counters.readings
            wait_until(lambda: agent.counters.readings > readings, 30, "readings again")
        crashed = [e for e in logs if e["event"] == "supervisor.component_crashed"]
        assert [e["component"] for e in crashed] == [component]
        assert "injected: a reader bug" in crashed[0]["traceback"]
        assert any(e["event"] == "supervisor.watchdog_withheld"
                   and component in e["problems"] for e in logs)
    finally:
        stop.set()
        runner.join(30)
        keeper.stop()
        sock.close()
    assert agent.supervisor.components[component].state == "stopped"


@pytest.mark.servers
@pytest.mark.timeout(120)
def test_a_crashed_delivery_loop_restarts_from_the_outbox_and_delivers_everything(
        tmp_path: Path, mosquitto, topic_root: str) -> None:
    cfg = load(agent_config(tmp_path, mosquitto.port, speed=50, root=topic_root))
    sub = Subscriber(mosquitto.host, mosquitto.port, topic_root)
    agent = Agent(cfg, clock_synced=lambda: True)
    agent.supervisor.restart_initial_s = 0.2
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    real = agent.delivery._publish_ready
    crashed = threading.Event()

    def publish_ready(now: float) -> None:
        if not crashed.is_set() and agent.delivery.count("acked") >= 20:
            crashed.set()
            raise RuntimeError("injected: a delivery bug")
        real(now)

    agent.delivery._publish_ready = publish_ready  # type: ignore[method-assign]
    runner.start()
    try:
        with capture_logs() as logs:
            assert crashed.wait(60)
            wait_until(lambda: agent.supervisor.components["delivery"].state == "running"
                       and agent.delivery.count("acked") >= 60, 60,
                       "delivery restarted and acknowledging again")
    finally:
        stop.set()
        runner.join(60)
    made = agent.counters.events
    wait_until(lambda: len({e.seq for e in sub.events()}) >= made, 30, "every event at the broker")
    sub.close()
    seqs = {e.seq for e in sub.events()}
    assert seqs == set(range(min(seqs), min(seqs) + made))
    assert [e["component"] for e in logs if e["event"] == "supervisor.component_crashed"] \
        == ["delivery"]
    assert any(e["event"] == "delivery.reset" for e in logs)


def test_a_component_past_its_budget_stops_the_agents_run_loop(tmp_path: Path) -> None:
    cfg = load(agent_config(tmp_path, 9))

    class AlwaysCrashing(CrashingSource):
        def _run(self, sink: ReadingSink) -> None:
            raise RuntimeError("injected: always")

    agent = Agent(cfg, sources=[AlwaysCrashing()], clock_synced=lambda: True)
    agent.supervisor.restart_initial_s = agent.supervisor.restart_max_s = 0.01
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "the run loop did not stop on its own"
    assert agent.supervisor.fatal.is_set()
    assert agent.supervisor.fatal_reason.startswith("source crashy crashed 6 times")


@pytest.mark.servers
@pytest.mark.slow
def test_edge_agent_run_exits_70_in_one_line_and_its_restart_delivers_what_it_kept(
        tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]) -> None:
    """The exit-70 path through the real process (``THERMOPIPE_TEST_CRASH_COMPONENT``: delivery
    raises at every turn once five events are in the outbox): one line on stderr naming the
    component and why, every crash logged, and the events made before the exit kept in the
    outbox, so the agent systemd starts again delivers every one of them."""
    broker = mosquitto_factory()
    cfg = agent_config(tmp_path, broker.port, boards=1, sensors_per_board=2, speed=5.0)
    sub = Subscriber("127.0.0.1", broker.port, "thermopipe")
    try:
        proc = subprocess.run([sys.executable, "-m", "edge_agent", "run", "-c", str(cfg)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120,
                              check=False, env=agent_env(**{TEST_CRASH_ENV: "delivery"}))
        assert proc.returncode == EXIT_COMPONENT_FAILED, proc.stderr[-3000:]
        lines = proc.stderr.splitlines()
        assert [line for line in lines if not line.startswith("{")] == [
            "edge-agent: stopped: delivery crashed 6 times within 600 s (last: RuntimeError: "
            "crash injected by THERMOPIPE_TEST_CRASH_COMPONENT (a test)); exit 70 for systemd "
            "to restart it"], proc.stderr[-3000:]
        logged = [json.loads(line)["event"] for line in lines if line.startswith("{")]
        assert logged.count("supervisor.component_crashed") == 6
        with sqlite3.connect(tmp_path / "outbox" / "outbox.db") as conn:
            kept = {seq for seq, kind in conn.execute("SELECT seq, kind FROM events")
                    if kind != "status"}
        assert len(kept) >= 5, kept
        # as systemd restarts it (no seam): everything the first run kept reaches the broker
        restarted = start_agent(cfg, tmp_path / "restarted.stderr")
        try:
            wait_until(lambda: kept <= {e.seq for e in sub.events()}, 60,
                       "every event the first run kept, at the broker")
        finally:
            restarted.send_signal(signal.SIGTERM)
            assert restarted.wait(30) == 0, (tmp_path / "restarted.stderr").read_text()[-3000:]
    finally:
        sub.close()
