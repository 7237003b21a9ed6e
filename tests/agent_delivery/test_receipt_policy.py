"""Receipts in the delivery policy, without a broker: random histories in which the broker loses
what it acknowledged (its queue, its session), the hub receipts late or not at all, and time
passes; checked against the rules in edge_agent/receipt_policy.py. The real-server tests are
tests/e2e/test_receipts_*.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.delivery_policy import DeliveryPolicy, ReceiptRules


@dataclass(frozen=True)
class Row:
    seq: int


def ranges_of(seqs: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


@dataclass
class World:
    """The agent's outbox and client, a broker that may lose its queue, and one hub."""

    rules: ReceiptRules
    now: float = 0.0
    policy: DeliveryPolicy[Row] = field(init=False)
    outbox: set[int] = field(default_factory=set)
    next_seq: int = 0
    next_mid: int = 1
    in_client: dict[int, int] = field(default_factory=dict)   # mid -> seq (not yet PUBACKed)
    broker_queue: list[int] = field(default_factory=list)     # PUBACKed, not yet at the hub
    hub: set[int] = field(default_factory=set)                # journaled by the hub
    unreceipted: set[int] = field(default_factory=set)        # journaled, no receipt sent yet
    sends: int = 0

    def __post_init__(self) -> None:
        self.policy = DeliveryPolicy(50, 0.0, now=0.0, read_batch=7, receipts=self.rules)

    def commit(self, n: int) -> None:
        rows = [Row(self.next_seq + i) for i in range(n)]
        self.next_seq += n
        self.outbox.update(r.seq for r in rows)
        self.policy.committed(rows)

    def send(self, row: Row, replayed: bool) -> None:
        assert row.seq in self.outbox, "published a row no longer stored"
        assert row.seq not in self.in_client.values(), f"seq {row.seq} in flight twice"
        mid = self.next_mid
        self.next_mid += 1
        self.in_client[mid] = row.seq
        self.policy.sent(row.seq, mid, replayed, self.now)
        self.sends += 1

    def publish_round(self) -> None:
        if not self.policy.is_connected:
            return
        tick = self.policy.tick(self.now)
        for seq in tick.delete:
            self.outbox.discard(seq)
        while True:
            live = self.policy.next_live()
            for row in live:
                self.send(row, replayed=False)
            if live:
                continue
            wanted = self.policy.backlog_wanted(self.now)
            if wanted <= 0:
                break
            after = sorted(s for s in self.outbox if s > self.policy.cursor)[:wanted]
            for row in self.policy.backlog_read([Row(s) for s in after]):
                self.send(row, replayed=True)
        assert self.policy.awaiting <= self.rules.window

    def ack(self, count: int) -> None:
        for mid in sorted(self.in_client)[:count]:
            seq = self.in_client.pop(mid)
            self.broker_queue.append(seq)
            outcome = self.policy.acked(mid, True, self.now)
            assert outcome is not None and outcome.seq == seq
            if outcome.delete:
                self.outbox.discard(seq)

    def hub_takes(self, count: int) -> None:
        taken, self.broker_queue = self.broker_queue[:count], self.broker_queue[count:]
        self.hub.update(taken)
        self.unreceipted.update(taken)

    def receipt(self) -> None:
        if self.unreceipted:
            ranges = ranges_of(self.unreceipted)
            self.unreceipted.clear()
            # exactly the rows the policy names (never the whole range)
            self.outbox.difference_update(self.policy.receipted(ranges, self.now).delete)

    def broker_loses_queue(self) -> None:
        self.broker_queue.clear()

    def connect(self, session_present: bool) -> None:
        if not self.policy.is_connected:
            if not session_present:
                self.broker_loses_queue()
            self.policy.connected(session_present)


OPS = st.one_of(
    st.tuples(st.just("commit"), st.integers(1, 12)),
    st.tuples(st.just("connect"), st.integers(0, 1)),
    st.tuples(st.just("disconnect"), st.just(0)),
    st.tuples(st.just("ack"), st.integers(1, 10)),
    st.tuples(st.just("hub"), st.integers(1, 15)),
    st.tuples(st.just("receipt"), st.just(0)),
    st.tuples(st.just("lose"), st.just(0)),
    st.tuples(st.just("wait"), st.integers(1, 3000)),  # milliseconds
)


def run(world: World, ops: list[tuple[str, int]]) -> None:
    for op, n in ops:
        if op == "commit":
            world.commit(n)
        elif op == "connect":
            world.connect(session_present=bool(n))
        elif op == "disconnect":
            world.policy.disconnected()
        elif op == "ack":
            world.ack(n)
        elif op == "hub":
            world.hub_takes(n)
        elif op == "receipt":
            world.receipt()
        elif op == "lose":
            world.broker_loses_queue()
        elif op == "wait":
            world.now += n / 1000
        world.publish_round()
        # a row leaves the outbox only when the hub holds it
        assert set(range(world.next_seq)) - world.outbox <= world.hub


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(OPS, max_size=80), window=st.sampled_from([100, 5, 20]))
def test_whatever_the_broker_loses_every_event_reaches_the_hub(
        ops: list[tuple[str, int]], window: int) -> None:
    world = World(ReceiptRules(mode="on", timeout_s=1.0, overtaken_s=0.2, window=window))
    run(world, ops)
    # then the link and the hub work for good: every event reaches the hub, the outbox empties
    world.policy.disconnected()
    world.connect(session_present=True)
    for _ in range(20_000):
        world.now += 0.05
        world.publish_round()
        world.ack(len(world.in_client))
        world.hub_takes(len(world.broker_queue))
        world.receipt()
        if not world.outbox and not world.in_client:
            break
    assert world.hub == set(range(world.next_seq)), \
        f"never reached the hub: {sorted(set(range(world.next_seq)) - world.hub)}"
    assert not world.outbox and world.policy.awaiting == 0


def _delivered_once(world: World, n: int) -> None:
    world.connect(session_present=True)
    world.commit(n)
    world.publish_round()
    world.ack(n)


def test_a_puback_keeps_the_row_and_a_receipt_deletes_it() -> None:
    world = World(ReceiptRules(mode="on", timeout_s=60))
    _delivered_once(world, 3)
    assert world.outbox == {0, 1, 2} and world.policy.awaiting == 3
    world.hub_takes(3)
    world.receipt()
    assert not world.outbox and world.policy.awaiting == 0


def test_a_lost_queue_is_sent_again_after_the_timeout_and_backs_off_while_no_hub_answers() -> None:
    world = World(ReceiptRules(mode="on", timeout_s=10, max_backoff=4))
    _delivered_once(world, 2)
    world.broker_loses_queue()
    world.now += 9.9
    world.publish_round()
    assert world.sends == 2                          # not yet
    assert world.policy.wake_in(world.now) is not None
    world.now += 0.2
    world.publish_round()
    assert world.sends == 4                          # both again, replayed
    timeouts = []
    for _ in range(4):                               # still nobody receipts: 10, 20, 40, 40 s
        world.ack(len(world.in_client))
        world.broker_loses_queue()
        timeouts.append(world.policy.tick(world.now).timeout_s)
        world.now += 100
        world.publish_round()
    assert timeouts == [10, 20, 40, 40]
    world.ack(len(world.in_client))
    world.hub_takes(2)
    world.receipt()                                  # a receipt restores the timeout
    assert world.policy.tick(world.now).timeout_s == 10 and not world.outbox


def test_a_receipt_for_later_events_resends_the_earlier_unreceipted_ones_at_once() -> None:
    world = World(ReceiptRules(mode="on", timeout_s=600, overtaken_s=5))
    _delivered_once(world, 3)                        # 0, 1, 2 acked at t=0
    world.broker_loses_queue()                       # e.g. the hub's session was taken over
    world.now = 20.0
    world.commit(1)
    world.publish_round()
    world.ack(1)                                     # 3 acked at t=20
    world.hub_takes(1)
    world.receipt()                                  # the hub holds 3, not 0..2
    world.now += 0.1
    world.publish_round()
    assert sorted(world.in_client.values()) == [0, 1, 2]


def test_a_reconnect_without_the_session_resends_what_awaits_a_receipt() -> None:
    world = World(ReceiptRules(mode="on", timeout_s=600))
    _delivered_once(world, 4)
    world.policy.disconnected()
    world.connect(session_present=False)
    world.publish_round()
    assert sorted(world.in_client.values()) == [0, 1, 2, 3]
    assert world.policy.resent["session"] == 4


def test_auto_mode_falls_back_to_the_puback_when_no_hub_ever_receipts() -> None:
    world = World(ReceiptRules(mode="auto", timeout_s=300, detect_s=100))
    _delivered_once(world, 3)
    world.now = 99.0
    world.publish_round()
    assert world.outbox == {0, 1, 2}
    world.now = 100.5
    tick = world.policy.tick(world.now)
    assert tick.fell_back and sorted(tick.delete) == [0, 1, 2]
    world.outbox.difference_update(tick.delete)
    world.commit(1)
    world.publish_round()
    world.ack(1)
    assert not world.outbox                          # deleted at the PUBACK, as before receipts
    world.commit(1)
    world.publish_round()
    world.hub_takes(5)
    world.receipt()                                  # a hub that receipts appears: awaited again
    world.ack(1)
    assert world.policy.awaiting_receipts


def test_off_mode_deletes_at_the_puback() -> None:
    world = World(ReceiptRules(mode="off"))
    _delivered_once(world, 2)
    assert not world.outbox and world.policy.awaiting == 0


def test_the_window_bounds_what_awaits_and_pauses_the_backlog() -> None:
    world = World(ReceiptRules(mode="on", timeout_s=600, window=5))
    world.commit(20)                                 # offline: backlog
    world.connect(session_present=True)
    for _ in range(10):
        world.publish_round()
        world.ack(len(world.in_client))
    assert world.policy.awaiting == 5 and world.policy.backlog_wanted(world.now) == 0
    world.hub_takes(100)
    world.receipt()
    for _ in range(20):
        world.publish_round()
        world.ack(len(world.in_client))
        world.hub_takes(100)
        world.receipt()
    assert not world.outbox and world.hub == set(range(20))
