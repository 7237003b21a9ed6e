"""One run of the receipts end-to-end tests (issue 12, item 5): an edge agent (in-process
simulator, every reading an event) -> a private Mosquitto -> a hub process (or ``hub run
--workers N``) -> a private InfluxDB 1.x, and the tally each test prints and checks.

The tally compares what the agent made (its outbox's ``next_seq``: seqs are dense, 0..N-1) with
what InfluxDB holds: distinct event ids, event ids stored in more than one row, and the seq
ranges missing. It also reads the agent's own record of what it sent again (``delivery.resend``)
and of what its outbox evicted (``outbox.dropped``), and the hub's ``data_loss`` records.

Every wait is on a condition with a generous timeout; the faults are paced by how many events the
agent has made since a mark (``wait_made``), not by sleeping, so a loaded machine only makes
the run longer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from schemas.models import Receipt
from schemas.seq_ranges import merge_ranges
from tests.agent_e2e.e2e_helpers import AgentProc, Subscriber, wait_until
from tests.e2e.pipeline import (
    HubProc,
    MqttAccess,
    agent_toml,
    hub_toml,
    outbox_state,
    simulator_source,
    stored_events,
    stored_rows,
)
from tests.servers import InfluxDB1, Mosquitto, free_port

DEVICE = "pi-receipts"
SITE = "e2e"
SPEED = 20.0  # scenario seconds per second: two sensors read every scenario second, 40 events/s
SCENARIO = """name = "receipts"
duration = "2h"
interval = "1s"
seed = 5

[[sensors]]
id = "28-0000075a1b2c"
profile = { kind = "sine", mean = 20.0, amplitude = 3.0, period = "30m" }
noise = 0.05

[[sensors]]
id = "28-00000a3f9e21"
profile = { kind = "sine", mean = 15.0, amplitude = 1.0, period = "20m" }
noise = 0.05
"""
# deadband 0: every reading is an event, and one drop class only (readings), so what the
# outbox evicts is always its oldest rows: whole seq ranges
RULES = "stale_after_s = 1000000\nsummary_interval_s = 1000000000\ndeadband = 0.0\n"
# an event not receipted 3 s after its PUBACK is sent again (60 s in production)
AGENT_RECEIPTS = 'receipts = "on"\nreceipt_timeout_s = 3.0\nreceipt_gap_s = 2.0\n'


# the hub's [receipts]: a gap unexplained for 10 s is a loss (300 s in production); the tests
# that lose nothing check that this never fires while the agent still holds the missing events
GAP_TIMEOUT = "gap_timeout_s = 10\n"


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports (``hub run --workers n`` listens on
    port + i)."""
    for _ in range(100):
        port = free_port()
        try:
            for i in range(1, n):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", port + i))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no {n} consecutive free ports")


def ranges_text(ranges: Iterable[tuple[int, int]]) -> str:
    out = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges]
    return "[" + ", ".join(out) + "]" if out else "none"


@dataclass
class Tally:
    """Events made by the agent against what InfluxDB holds, for one test."""

    name: str
    made: int
    rows: int                      # sensor events and summaries stored (rows with a seq)
    distinct_ids: int
    duplicate_ids: list[str]       # event ids in more than one row
    missing: list[tuple[int, int]]  # seq ranges made and not stored
    unexpected: list[int]          # seqs stored that the agent never made
    replayed_stored: int           # stored copies that were resends (the first went missing)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return sum(b - a + 1 for a, b in self.missing)

    def line(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.notes.items())
        return (f"[{self.name}] events made {self.made}, distinct event ids stored "
                f"{self.distinct_ids} (rows {self.rows}), lost {self.lost}, duplicates "
                f"{len(self.duplicate_ids)}, missing seq ranges {ranges_text(self.missing)}, "
                f"stored as resends {self.replayed_stored}{extra}")


class ReceiptWatch(Subscriber):
    """An independent subscriber that also sees every hub's receipts."""

    def receipts(self, hub_id: str) -> list[Receipt]:
        with self._lock:
            return [m for _, m in self.messages if isinstance(m, Receipt) and m.hub_id == hub_id]


class ReceiptRun:
    """The processes of one test and what they left behind."""

    def __init__(self, tmp: Path, broker: Mosquitto, influx: InfluxDB1, db: str, root: str, *,
                 workers: int = 1, hub_receipts: str = GAP_TIMEOUT,
                 outbox_extra: str = "") -> None:
        self.tmp = tmp
        self.broker = broker
        self.influx = influx
        self.db = db
        self.root = root
        mqtt_access = MqttAccess(broker.host, broker.port)
        scenario = tmp / "scenario.toml"
        scenario.write_text(SCENARIO)
        self.outbox = tmp / "outbox.db"
        agent_cfg = tmp / "agent.toml"
        agent_cfg.write_text(agent_toml(
            device_id=DEVICE, site=SITE, mqtt=mqtt_access, topic_root=root, outbox=self.outbox,
            sources=simulator_source(scenario, SPEED), rules=RULES, status_interval_s=1.0,
            mqtt_extra=AGENT_RECEIPTS, outbox_extra=outbox_extra))
        self.agent = AgentProc(agent_cfg, tmp / "agent.log")
        self.hub_id = "rcpt"
        hub_cfg = tmp / "hub.toml"
        shared = 'shared_group = "hubs"' if workers > 1 else ""
        http_port = free_ports(workers)  # worker i listens on http_port + i
        hub_cfg.write_text(hub_toml(
            data_dir=tmp / "hubdata", mqtt=mqtt_access, topic_root=root,
            influx_url=influx.url, database=db, http_port=http_port, hub_id=self.hub_id,
            mqtt_extra=shared) + f"\n[receipts]\n{hub_receipts}\n")
        self.hub = HubProc(hub_cfg, tmp / "hub.log", http_port,
                           args=("--workers", str(workers)) if workers > 1 else ())
        self.workers = workers
        self.watch: ReceiptWatch | None = None

    def watch_receipts(self) -> ReceiptWatch:
        """Start an independent subscriber that sees every receipt (stopped by close())."""
        self.watch = ReceiptWatch(self.broker.host, self.broker.port, self.root)
        return self.watch

    # -- the hub's client id (what a takeover uses) and its connections ----------------------------
    @property
    def hub_client_id(self) -> str:
        return f"hub-{self.root}-{self.hub_id}"  # as hub_toml writes it

    def hub_connections(self) -> int:
        return self.hub.log_text().count('"mqtt.connected"')

    def wait_hub_connected(self, since: int, what: str, timeout: float = 120) -> None:
        """Wait for a connection of the hub after the ``since``-th (``hub_connections()``)."""
        wait_until(lambda: self.hub_connections() > since, timeout, what)

    def start_hub(self) -> None:
        """Start the hub and wait until all its processes are connected."""
        before = self.hub_connections()
        self.hub.start()
        wait_until(lambda: self.hub_connections() >= before + self.workers, 90,
                   "the hub's connection(s)")

    def start(self, warm_up: int = 80) -> None:
        """The hub, then the agent; returns once receipts flow and ``warm_up`` events are
        stored."""
        self.start_hub()
        self.agent.start()
        wait_until(lambda: '"delivery.receipts_seen"' in self.agent.log_text(), 90,
                   "the agent's first receipt")
        self.wait_stored_through(warm_up, 90, "the first events stored")

    # -- pacing and progress ----------------------------------------------------------------------
    def made(self) -> int:
        return outbox_state(self.outbox)["next_seq"]

    def wait_made(self, more: int, what: str, timeout: float = 90) -> int:
        """Wait until the agent made ``more`` events from now on; returns its count then."""
        mark = self.made()
        wait_until(lambda: self.made() >= mark + more, timeout, f"{more} events made ({what})")
        return self.made()

    def outbox_oldest(self) -> int:
        """The lowest seq still in the agent's outbox (``next_seq`` when it is empty): every
        seq below it was receipted by a hub (or evicted)."""
        db = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=10)
        try:
            (oldest,) = db.execute("SELECT MIN(seq) FROM events").fetchone()
        finally:
            db.close()
        return self.made() if oldest is None else int(oldest)

    def stored(self) -> list[dict[str, Any]]:
        return stored_events(self.influx, self.db, DEVICE)

    def stored_seqs(self) -> set[int]:
        return {int(r["seq"]) for r in self.stored()}

    def wait_stored_through(self, n: int, timeout: float, what: str,
                            may_miss: Iterable[int] = ()) -> None:
        """Wait until every seq below ``n`` (but ``may_miss``) is stored (the report names what
        is missing)."""
        want = set(range(n)) - set(may_miss)
        try:
            wait_until(lambda: want <= self.stored_seqs(), timeout, what)
        except AssertionError as exc:
            missing = merge_ranges(want - self.stored_seqs())
            raise AssertionError(f"{exc}: seqs below {n} missing: {ranges_text(missing)}; "
                                 f"agent resends {self.resends()}") from None

    # -- what the processes recorded --------------------------------------------------------------
    def _agent_log(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.agent.log_text().splitlines():
            if f'"{event}"' not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == event:
                out.append(entry)
        return out

    def resends(self) -> dict[str, int]:
        """What the agent sent again, by reason (its ``delivery.resend`` warnings)."""
        out: dict[str, int] = {}
        for entry in self._agent_log("delivery.resend"):
            out[entry["reason"]] = out.get(entry["reason"], 0) + int(entry["count"])
        return out

    def evictions(self) -> list[dict[str, Any]]:
        """The agent's ``outbox.dropped`` warnings (reason, class, count, first/last seq)."""
        return self._agent_log("outbox.dropped")

    def data_loss_rows(self) -> list[dict[str, Any]]:
        return stored_rows(self.influx, self.db, "data_loss", DEVICE)

    def open_gaps(self) -> float | None:
        """The loss detector's open seq gaps (the hub's, worker 0's with ``--workers``), from
        its ``/metrics``; None while it does not answer."""
        metrics = self.hub.metrics()
        return None if metrics is None else metrics.get("thermopipe_hub_seq_gaps_open")

    def hub_data_loss_logged(self) -> list[dict[str, Any]]:
        out = []
        for line in self.hub.log_text().splitlines():
            if '"ingest.data_loss"' in line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    # -- the end ----------------------------------------------------------------------------------
    def finish(self, name: str, settle_s: float = 120, may_miss: Iterable[int] = (),
               notes: dict[str, Any] | None = None) -> Tally:
        """Stop the agent (the source never ends), then wait until every event it made (but
        ``may_miss``) is stored, or ``settle_s`` passed; returns the tally (with ``notes``),
        printed."""
        assert self.agent.stop() == 0, self.agent.log_text()[-3000:]
        made = self.made()
        want = set(range(made)) - set(may_miss)
        held = outbox_state(self.outbox)["pending"]

        def all_stored() -> bool:
            return self.stored_seqs() >= want

        with contextlib.suppress(AssertionError):
            wait_until(all_stored, 20, "every event made stored")
        restarted = not all_stored() and held > 0
        if restarted:
            # A clean stop does not wait for receipts, and on a loaded machine some events may
            # not even have been sent: they stay in the outbox, which the agent's next run
            # sends. That run is what delivers them, so the test runs it.
            connects = self.agent.log_text().count('"mqtt.connected"')
            self.agent.start()
            wait_until(lambda: self.agent.log_text().count('"mqtt.connected"') > connects, 60,
                       "the agent to connect again")
        with contextlib.suppress(AssertionError):  # the tally says what is missing
            wait_until(all_stored, settle_s, "every event made stored")
        if restarted:
            assert self.agent.stop() == 0, self.agent.log_text()[-3000:]
        tally = self.tally(name, made, below=made if restarted else None)
        if restarted:
            tally.notes["agent_restarted_to_send_its_outbox"] = held
        tally.notes.update(notes or {})
        print("\n" + tally.line())
        return tally

    def tally(self, name: str, made: int, below: int | None = None) -> Tally:
        """``below``: count only seqs under it (events of a later run of the agent are not this
        test's)."""
        rows = self.stored()
        if below is not None:
            rows = [r for r in rows if int(r["seq"]) < below]
        ids = [str(r["event_id"]) for r in rows]
        seqs = {int(r["seq"]) for r in rows}
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        state = outbox_state(self.outbox)
        notes: dict[str, Any] = {"agent_resends": self.resends() or "none",
                                 "left_in_outbox_at_stop": state["pending"]}
        if state["pending"]:  # awaiting a receipt when the agent stopped: which seqs
            notes["left_in_outbox_at_stop"] = (f"{state['pending']} (from seq "
                                               f"{self.outbox_oldest()})")
        drops = {k: v for k, v in state.items() if k.startswith("dropped_") and v}
        if drops:
            notes["agent_outbox_drops"] = drops
        return Tally(name=name, made=made, rows=len(rows), distinct_ids=len(set(ids)),
                     duplicate_ids=twice, missing=merge_ranges(set(range(made)) - seqs),
                     unexpected=sorted(s for s in seqs if s >= made),
                     replayed_stored=sum(1 for r in rows if r.get("replayed")), notes=notes)

    def close(self) -> None:
        for proc in (self.agent, self.hub):
            if proc.proc is not None and proc.proc.poll() is None:
                proc.stop()
        if self.watch is not None:
            self.watch.close()


def assert_nothing_lost(run: ReceiptRun, tally: Tally) -> None:
    """0 lost, 0 duplicates, one event id per seq made, and no data_loss claimed."""
    assert tally.lost == 0, tally.line()
    assert not tally.duplicate_ids, f"{tally.line()}: stored twice {tally.duplicate_ids[:20]}"
    assert not tally.unexpected, f"{tally.line()}: seqs never made {tally.unexpected[:20]}"
    assert tally.distinct_ids == tally.made, tally.line()
    # the loss detector sees no gap any more, so no data_loss can come later either
    wait_until(lambda: run.open_gaps() == 0, 60, "the hub's loss detector to close every gap")
    claimed = run.hub_data_loss_logged()
    assert not claimed and not run.data_loss_rows(), f"data_loss for nothing lost: {claimed}"


# -- faults ---------------------------------------------------------------------------------------

def broker_save(broker: Mosquitto, timeout: float = 30) -> None:
    """Make Mosquitto write its in-memory store now (SIGUSR1), as its autosave does."""
    db = broker.workdir / "data" / "mosquitto.db"
    before = db.stat().st_mtime_ns if db.exists() else 0
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: db.exists() and db.stat().st_mtime_ns != before, timeout,
               "Mosquitto's save of its store")


def take_over_client_id(host: str, port: int, client_id: str, hold_s: float = 2.0) -> bool:
    """Connect with ``client_id`` and a clean start (the broker drops that client's session and
    queue), stay up to ``hold_s`` (less if the owner takes its id back), then go. Never
    reconnects by itself. Returns whether the broker accepted the connection."""
    accepted: list[bool] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, u, f, rc, p: accepted.append(not rc.is_failure)
    client.connect(host, port, clean_start=True)
    deadline = time.monotonic() + hold_s
    try:
        while time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break  # thrown off: the owner of the id connected again
    finally:
        client.disconnect()
    return any(accepted)


def worker_pid(supervisor_pid: int, index: int) -> int | None:
    """The pid of ``hub run --workers N``'s worker ``index`` (a child of the supervisor)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == supervisor_pid and b"--worker-index" in cmdline \
                and cmdline[cmdline.index(b"--worker-index") + 1] == str(index).encode():
            return int(entry)
    return None
