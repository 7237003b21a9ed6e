"""Issue 12, item 5 d-e: receipts with several hub workers, and a loss that is reported.
Real processes: edge agent (simulator, 40 events/s) -> private Mosquitto -> hub -> private
InfluxDB 1.x (tests/e2e/receipts_harness.py).

d. ``hub run --workers 3`` on one shared subscription; worker 0 (the one that also reads every
   worker's receipts and detects gaps) is SIGKILLed while events flow, and the supervisor starts
   it again, about half a second after one of its receipts: it dies owing receipts for what it
   journaled since. Each worker receipts what it journaled, the agent merges, and sends again
   what no receipt covers: 0 lost, 0 duplicates, no data_loss.
e. a broker outage long enough for the agent's outbox (capped at 48 KiB, about 100 events) to
   evict: the hub's data_loss records in InfluxDB name exactly the seqs that never arrived, each
   of them one the agent's own log says its outbox evicted (``outbox.dropped``), and every other
   event is stored once. The hub runs with ``grace_s = 1``: the record comes 1-2 s after the
   agent's status says its outbox no longer holds the gap (``gap_timeout_s`` = 30 s, the
   fallback for a gap nobody explains, is not needed).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from schemas.seq_ranges import merge_ranges
from tests.agent_e2e.e2e_helpers import wait_until
from tests.e2e.receipts_harness import (
    ReceiptRun,
    assert_nothing_lost,
    ranges_text,
    worker_pid,
)
from tests.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.timeout(300)]


def test_three_workers_on_a_shared_subscription_one_sigkilled_and_restarted(
        mosquitto: Mosquitto, receipt_run: Callable[..., ReceiptRun]) -> None:
    run = receipt_run(mosquitto, workers=3)
    watch = run.watch_receipts()
    run.start()
    run.wait_made(80, "events flowing to three workers")
    assert run.hub.proc is not None
    victim = worker_pid(run.hub.proc.pid, 0)
    assert victim is not None, "no worker 0 under `hub run --workers 3`"
    # between two of its receipts (one a second): it owes receipts for what it journaled since
    worker0 = f"{run.hub_id}-w0"
    sent = len(watch.receipts(worker0))
    wait_until(lambda: len(watch.receipts(worker0)) > sent, 60, "a receipt from worker 0")
    run.wait_made(16, "worker 0 journaling events it has not receipted yet")
    before = run.hub_connections()
    os.kill(victim, signal.SIGKILL)
    killed_at = run.made()
    run.wait_hub_connected(before, "worker 0 started again by `hub run --workers 3`")
    restarted = worker_pid(run.hub.proc.pid, 0)
    assert restarted not in (None, victim), restarted
    mark = run.wait_made(80, "events flowing after the restart")
    run.wait_stored_through(mark, 120, "every event stored by some worker")
    # the receipts the killed worker owed are made up for (the agent sends those events
    # again; another worker, or the restarted one, receipts them): its outbox lets them go
    wait_until(lambda: run.outbox_oldest() > killed_at, 120,
               "every event made before the kill receipted")
    journals = sorted(p.parent.name for p in (run.tmp / "hubdata").glob("worker-*/hub.sqlite3"))
    tally = run.finish("d: 3 workers, worker 0 SIGKILLed and restarted",
                       notes={"worker_pids": f"{victim}->{restarted}", "journals": journals})
    assert_nothing_lost(run, tally)
    assert journals == ["worker-0", "worker-1", "worker-2"], journals


def test_outbox_evicts_in_a_long_broker_outage_and_the_hub_records_the_loss(
        mosquitto_factory: Callable[..., Mosquitto],
        receipt_run: Callable[..., ReceiptRun]) -> None:
    broker = mosquitto_factory()
    run = receipt_run(broker, hub_receipts="interval_s = 0.2\ngap_timeout_s = 30\ngrace_s = 1\n",
                      outbox_extra="max_bytes = 49152\n")
    run.start()
    broker.stop()
    run.wait_made(320, "made while the broker is away (about 100 fit in the outbox)")
    before = run.hub_connections()
    broker.start()
    run.wait_hub_connected(before, "the hub back on the broker")
    mark = run.wait_made(80, "events flowing after the outage")

    def evicted() -> set[int]:
        return {s for e in run.evictions() for s in range(e["first_seq"], e["last_seq"] + 1)}

    def reported() -> list[tuple[int, int]]:
        return sorted((int(r["first_seq"]), int(r["last_seq"])) for r in run.data_loss_rows())

    def reported_seqs() -> set[int]:
        return {s for a, b in reported() for s in range(a, b + 1)}

    assert evicted(), "the outage evicted nothing: make it longer or the cap smaller"
    run.wait_stored_through(mark, 120, "every event not evicted", may_miss=evicted())
    # while the agent runs (its status tells the hub what its outbox no longer holds)
    lost_by_mark = set(range(mark)) - run.stored_seqs()
    wait_until(lambda: reported_seqs() >= lost_by_mark, 60,
               "data_loss records for every seq lost")
    tally = run.finish("e: outbox evicting in a broker outage", may_miss=evicted())
    lost = {s for a, b in tally.missing for s in range(a, b + 1)}
    records = run.data_loss_rows()
    drops = [(e["first_seq"], e["last_seq"], e["count"], e["reason"])
             for e in run.evictions()]
    hub_says = [(r["first_seq"], r["last_seq"], r["count"], r["cause"]) for r in records]
    print(f"[e] the agent's outbox evicted {ranges_text(merge_ranges(evicted()))}: "
          f"{sum(d[2] for d in drops)} events in {len(drops)} commits (outbox.dropped, "
          f"reasons {sorted({d[3] for d in drops})}); lost {ranges_text(merge_ranges(lost))}; "
          f"the hub's data_loss records (first, last, count, cause): {hub_says}; evicted but "
          f"delivered before the eviction: {len(evicted() - lost)}")
    assert not tally.duplicate_ids, tally.line()
    assert not tally.unexpected, tally.line()
    assert lost, f"nothing was lost: the outbox evicted only events already delivered; " \
                 f"{tally.line()}"
    assert lost == lost_by_mark, "lost events made after the outage"
    assert lost <= evicted(), f"lost what the outbox did not evict: {sorted(lost - evicted())}"
    assert tally.distinct_ids == tally.made - len(lost), tally.line()
    # the hub names exactly the seqs lost, each once, and says the outbox evicted them
    seqs = [s for a, b in reported() for s in range(a, b + 1)]
    assert sorted(seqs) == sorted(lost), (reported(), ranges_text(merge_ranges(lost)))
    for r in records:
        assert r["count"] == r["last_seq"] - r["first_seq"] + 1, r
        assert "outbox" in r["cause"], r
    counted = tally.notes.get("agent_outbox_drops", {})
    assert counted.get("dropped_reading") == sum(d[2] for d in drops), counted
