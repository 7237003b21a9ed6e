"""The delivery policy without a broker, a database or a clock: random histories of commits,
connects, disconnects, acknowledgements (some refused) and time, checked against the rules in
edge_agent/delivery_policy.py. The real-broker tests beside this one stay (test_delivery_*)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.delivery_policy import DeliveryPolicy


@dataclass(frozen=True)
class Row:
    seq: int


@dataclass
class Sim:
    """The delivery thread's part, modelled: an outbox of committed rows and a client that holds
    what it was handed until the broker acknowledges it (also across a reconnect, as paho does)."""

    max_inflight: int
    rate: float
    now: float = 0.0
    policy: DeliveryPolicy[Row] = field(init=False)
    outbox: set[int] = field(default_factory=set)      # committed, not acknowledged
    next_seq: int = 0
    next_mid: int = 1
    in_client: dict[int, int] = field(default_factory=dict)  # mid -> seq
    sends: list[tuple[float, int, bool]] = field(default_factory=list)  # (time, seq, replayed)
    committed_live: set[int] = field(default_factory=set)
    delivered: set[int] = field(default_factory=set)
    scan_orders: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.policy = DeliveryPolicy(self.max_inflight, self.rate, now=0.0, read_batch=7)

    def commit(self, n: int) -> None:
        rows = [Row(self.next_seq + i) for i in range(n)]
        self.next_seq += n
        self.outbox.update(r.seq for r in rows)
        if self.policy.is_connected:
            self.committed_live.update(r.seq for r in rows)
        self.policy.committed(rows)

    def send(self, row: Row, replayed: bool) -> None:
        assert row.seq in self.outbox, "published a row that is not (or no longer) stored"
        assert row.seq not in self.in_client.values(), f"seq {row.seq} in flight twice"
        mid = self.next_mid
        self.next_mid += 1
        self.in_client[mid] = row.seq
        self.policy.sent(row.seq, mid, replayed, self.now)
        self.sends.append((self.now, row.seq, replayed))
        assert self.policy.inflight <= self.max_inflight

    def publish_round(self) -> None:
        """What Delivery._publish_ready does, against the model."""
        if not self.policy.is_connected:
            return
        while True:
            live = self.policy.next_live()
            for row in live:
                self.send(row, replayed=False)
            if live:
                continue
            wanted = self.policy.backlog_wanted(self.now)
            if wanted <= 0:
                break
            assert self.policy.live_waiting == 0, "backlog read while live rows wait"
            after = sorted(s for s in self.outbox if s > self.policy.cursor)[:wanted]
            chosen = self.policy.backlog_read([Row(s) for s in after])
            self.scan_orders.append([r.seq for r in chosen])
            for row in chosen:
                self.send(row, replayed=True)

    def ack(self, count: int, ok: bool) -> None:
        for mid in sorted(self.in_client)[:count]:
            seq = self.in_client.pop(mid)
            outcome = self.policy.acked(mid, ok)
            assert outcome is not None and outcome.seq == seq and outcome.ok == ok
            if ok:
                self.outbox.discard(seq)
                self.delivered.add(seq)

    def connect(self) -> None:
        if not self.policy.is_connected:
            self.policy.connected()

    def disconnect(self) -> None:
        self.policy.disconnected()


OPS = st.one_of(
    st.tuples(st.just("commit"), st.integers(1, 12)),
    st.tuples(st.just("connect"), st.just(0)),
    st.tuples(st.just("disconnect"), st.just(0)),
    st.tuples(st.just("ack"), st.integers(1, 10)),
    st.tuples(st.just("refuse"), st.integers(1, 2)),
    st.tuples(st.just("wait"), st.integers(1, 2000)),  # milliseconds
    st.tuples(st.just("round"), st.just(0)),
)


def run(sim: Sim, ops: list[tuple[str, int]]) -> None:
    for op, n in ops:
        if op == "commit":
            sim.commit(n)
        elif op == "connect":
            sim.connect()
        elif op == "disconnect":
            sim.disconnect()
        elif op == "ack":
            sim.ack(n, ok=True)
        elif op == "refuse":
            sim.ack(n, ok=False)
        elif op == "wait":
            sim.now += n / 1000
        sim.publish_round()


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(OPS, max_size=60), max_inflight=st.integers(1, 8),
       rate=st.sampled_from([0.0, 5.0, 50.0]))
def test_every_history_keeps_the_rules_and_ends_with_everything_delivered(
        ops: list[tuple[str, int]], max_inflight: int, rate: float) -> None:
    sim = Sim(max_inflight, rate)
    run(sim, ops)

    # live rows go out as not replayed; what the backlog sends is replayed
    first_send = {}
    for _t, seq, replayed in sim.sends:
        first_send.setdefault(seq, replayed)
    for seq, replayed in first_send.items():
        if not replayed:
            assert seq in sim.committed_live, f"seq {seq} sent live but committed offline"
    # each backlog scan sends in seq order
    for order in sim.scan_orders:
        assert order == sorted(order)
    # the backlog stays under its rate: burst + rate * elapsed, at every send
    if rate > 0:
        burst = max(1.0, rate / 10.0)
        replays = [t for t, _s, replayed in sim.sends if replayed]
        for i, t in enumerate(replays):
            assert i + 1 <= burst + rate * t + 1e-9, (i, t)

    # then the link comes back for good and the broker acknowledges everything: nothing is left
    sim.disconnect()
    sim.connect()
    for _ in range(10_000):
        sim.now += 0.05
        sim.publish_round()
        sim.ack(len(sim.in_client), ok=True)
        if not sim.outbox and not sim.in_client:
            break
    assert not sim.outbox, f"never delivered: {sorted(sim.outbox)}"
    assert sim.delivered == set(range(sim.next_seq))


def test_live_rows_overtake_the_backlog_and_the_cap_holds() -> None:
    sim = Sim(max_inflight=3, rate=0.0)
    sim.commit(5)          # offline: backlog 0..4
    sim.connect()
    sim.commit(2)          # live 5, 6 (committed before the loop's next round)
    sim.publish_round()
    assert [(s, r) for _t, s, r in sim.sends] == [(5, False), (6, False), (0, True)]
    sim.ack(3, ok=True)
    sim.publish_round()
    assert [s for _t, s, _r in sim.sends[3:]] == [1, 2, 3]


def test_a_refused_row_is_retried_after_the_next_connect_only() -> None:
    sim = Sim(max_inflight=5, rate=0.0)
    sim.connect()
    sim.commit(1)
    sim.publish_round()
    sim.ack(1, ok=False)          # e.g. not authorised: kept in the outbox
    sim.publish_round()
    assert len(sim.sends) == 1    # not resent in a loop against a refusing broker
    sim.disconnect()
    sim.connect()
    sim.publish_round()
    assert sim.sends[-1][1:] == (0, True)


def test_the_backlog_waits_for_tokens_and_says_when_to_look_again() -> None:
    sim = Sim(max_inflight=100, rate=10.0)  # burst 1
    sim.commit(5)
    sim.connect()
    sim.publish_round()
    assert len(sim.sends) == 1
    wake = sim.policy.wake_in(sim.now)
    assert wake is not None and 0.09 <= wake <= 0.11
    sim.now += wake
    sim.publish_round()
    assert len(sim.sends) == 2
    sim.policy.stopping()
    assert sim.policy.backlog_wanted(sim.now + 10) == 0 and sim.policy.wake_in(sim.now) is None
