"""Issue 12, item 5 a-c: the broker loses events it acknowledged, and receipts make the agent
send them again. Real processes: edge agent (simulator, 40 events/s) -> private Mosquitto -> hub
-> private InfluxDB 1.x (tests/e2e/receipts_harness.py).

a. a broker with ``persistence false`` is restarted while the hub is offline and the agent
   publishes: what it acknowledged and queued for the hub's session is gone, and so is the
   session itself (what the agent publishes next reaches nobody until the hub is back);
b. a broker with deploy's persistence (``autosave_interval 60``) is SIGKILLed within its autosave
   interval while the hub is offline: it comes back with the last save (the hub's session and
   subscription, the agent's session) but without what it acknowledged since;
c. another client takes over the hub's client id with a clean start, three times, while events
   flow (a permissive broker, without deploy's ``use_username_as_clientid``): each time the hub's
   session and queue are wiped until the hub connects again.

Each prints the events made (the agent's outbox ``next_seq``) against the distinct event ids
stored, the missing seq ranges and what the agent sent again, and requires 0 lost, 0 duplicates
and no data_loss record (the hub's loss detector runs with ``gap_timeout_s = 10``, and must end
with no open gap while the agent still held every missing event). "Stored as resends" (rows with
``replayed``) shows the broker really lost events: the stored copy of such an event is a resend,
its first copy never reached the hub.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.agent_e2e.e2e_helpers import wait_until
from tests.e2e.receipts_harness import (
    ReceiptRun,
    assert_nothing_lost,
    broker_save,
    take_over_client_id,
)
from tests.servers import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.timeout(300)]

QUEUED = 160  # events made (4 s) while the hub is offline and the broker queues them for it
AFTER = 80    # events made after the broker came back, before the hub does


def test_broker_without_persistence_restarted_while_hub_offline(
        mosquitto_factory: Callable[..., Mosquitto],
        receipt_run: Callable[..., ReceiptRun]) -> None:
    broker = mosquitto_factory(persistence=False)
    run = receipt_run(broker)
    run.start()
    assert run.hub.stop() == 0  # its session stays at the broker, which queues its events
    run.wait_made(QUEUED, "queued at the broker for the offline hub")
    broker.restart()  # persistence false: every session and every queued message is gone
    run.wait_made(AFTER, "published to the restarted broker, where no hub session exists")
    mark = run.made()
    run.start_hub()
    run.wait_stored_through(mark, 120, "the events the broker lost, sent again")
    tally = run.finish("a: broker without persistence restarted while the hub was offline")
    assert_nothing_lost(run, tally)
    assert tally.replayed_stored >= QUEUED, f"the broker lost nothing? {tally.line()}"
    assert run.resends().get("session"), "the agent's reconnect found no session"


def test_broker_sigkilled_within_its_autosave_interval_while_hub_offline(
        mosquitto_factory: Callable[..., Mosquitto],
        receipt_run: Callable[..., ReceiptRun]) -> None:
    broker = mosquitto_factory(autosave_interval=60)  # deploy/mosquitto/mosquitto.conf's
    run = receipt_run(broker)
    run.start()
    watch = run.watch_receipts()  # sees each event when the broker forwards it
    broker_save(broker)  # the last autosave: both sessions and the hub's subscription
    saved = time.monotonic()
    assert run.hub.stop() == 0
    made = run.wait_made(QUEUED, "queued at the broker for the offline hub since its last save")
    # made is not yet sent: the agent publishes after its outbox commit, so on a loaded machine
    # the last few could still be waiting at the kill and go out live after it (not as resends)
    wait_until(lambda: max((e.seq for e in watch.events()), default=-1) >= made - 1, 30,
               "the broker to have every event made so far")
    since_save = time.monotonic() - saved
    assert since_save < 50, f"{since_save:.0f} s: Mosquitto may have saved again (every 60 s)"
    broker.kill()
    broker.start()  # with the last save: the sessions, not what it acknowledged since
    run.wait_made(AFTER, "published to the broker after its restart")
    mark = run.made()
    run.start_hub()
    run.wait_stored_through(mark, 120, "the events the broker lost, sent again")
    connects = [json.loads(line) for line in run.hub.log_text().splitlines()
                if '"mqtt.connected"' in line]
    restored = bool(connects[-1]["session_present"])
    tally = run.finish("b: broker SIGKILLed within its autosave interval, hub offline",
                       notes={"hub_session_restored_from_save": restored})
    assert_nothing_lost(run, tally)
    assert tally.replayed_stored >= QUEUED, f"the broker lost nothing? {tally.line()}"
    # the save kept the hub's session: the events made after the restart were queued for it
    assert restored, tally.line()


def test_hub_client_id_taken_over_three_times_while_events_flow(
        mosquitto: Mosquitto, receipt_run: Callable[..., ReceiptRun]) -> None:
    run = receipt_run(mosquitto)  # the shared broker: anonymous, any client id accepted
    run.start()
    for i in range(1, 4):
        run.wait_made(AFTER, f"events flowing before takeover {i}")
        before = run.hub_connections()
        assert take_over_client_id(mosquitto.host, mosquitto.port, run.hub_client_id), i
        run.wait_hub_connected(before, f"the hub connected again after takeover {i}")
    mark = run.wait_made(AFTER, "events flowing after the last takeover")
    run.wait_stored_through(mark, 120, "the events lost with the hub's session, sent again")
    tally = run.finish("c: the hub's client id taken over 3 times")
    assert_nothing_lost(run, tally)
    assert tally.replayed_stored > 0, f"the takeovers lost nothing? {tally.line()}"
