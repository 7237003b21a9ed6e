"""Receipts that name what the agent never sent, and ``refused`` ranges, in the delivery policy
without a broker (issue 21 item 4). Random histories of publishes, PUBACKs (ok or failed),
restarts, an honest hub that accepts or refuses, and forged receipts naming anything at all
(the whole seq space, the unsent backlog, in ``ranges`` and in ``refused``). Checked, at every
step: a row leaves the outbox only when this run published it, the broker acknowledged it and a
receipt named it in ``ranges``; no unsent row is deleted; a refused row stays; no event vanishes
(each is in the outbox, the broker's queue or the hub). The real-broker test is
test_receipt_broker.py."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.delivery_policy import DeliveryPolicy, Receipted, ReceiptRules
from schemas.models import SEQ_MAX
from schemas.seq_ranges import clip_merge, in_ranges
from tests.agent_delivery.test_receipt_policy import ranges_of

Ranges = list[tuple[int, int]]


@dataclass(frozen=True)
class Row:
    seq: int


def named(seq: int, ranges: Ranges) -> bool:
    merged, _, _ = clip_merge(ranges, 10**9)
    return in_ranges(seq, [a for a, _ in merged], [b for _, b in merged])


@dataclass
class Agent:
    """The outbox, the client, one broker that never loses (a forged receipt must cost no
    event then), an honest hub that may refuse, and an attacker."""

    rules: ReceiptRules
    now: float = 0.0
    policy: DeliveryPolicy[Row] = field(init=False)
    outbox: set[int] = field(default_factory=set)
    next_seq: int = 0
    next_mid: int = 1
    connected: bool = False
    in_client: dict[int, int] = field(default_factory=dict)  # mid -> seq, not yet PUBACKed
    broker_queue: list[int] = field(default_factory=list)    # PUBACKed, not yet at the hub
    hub: set[int] = field(default_factory=set)
    owed: set[int] = field(default_factory=set)              # held by the hub, not receipted
    owed_refused: set[int] = field(default_factory=set)      # dead-lettered, not told yet
    poison: dict[int, int] = field(default_factory=dict)     # seq -> refusals left
    # what this run did, for the checks
    published: set[int] = field(default_factory=set)
    acked: set[int] = field(default_factory=set)
    receipted_inflight: set[int] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)
    ignored: int = 0
    refused_kept: int = 0

    def __post_init__(self) -> None:
        self.policy = DeliveryPolicy(20, 0.0, now=0.0, read_batch=7, receipts=self.rules)

    # -- the agent ---------------------------------------------------------------------------
    def commit(self, n: int) -> None:
        rows = [Row(self.next_seq + i) for i in range(n)]
        self.next_seq += n
        self.outbox.update(r.seq for r in rows)
        self.policy.committed(rows)

    def restart(self) -> None:
        """A new process: the outbox stays, the client's queue and all memory go."""
        self.in_client.clear()
        self.connected = False
        self.policy = DeliveryPolicy(20, 0.0, now=self.now, read_batch=7, receipts=self.rules,
                                     receipts_seen=True)
        self.published.clear()
        self.acked.clear()
        self.receipted_inflight.clear()

    def connect(self) -> None:
        if not self.connected:
            self.connected = True
            self.policy.connected(session_present=True)

    def disconnect(self) -> None:
        if self.connected:
            self.connected = False
            self.policy.disconnected()

    def send(self, row: Row, replayed: bool) -> None:
        assert row.seq in self.outbox, "published a row no longer stored"
        assert row.seq not in self.in_client.values(), f"seq {row.seq} in flight twice"
        mid = self.next_mid
        self.next_mid += 1
        self.in_client[mid] = row.seq
        self.policy.sent(row.seq, mid, replayed, self.now)
        self.published.add(row.seq)

    def publish_round(self) -> None:
        if not self.connected:
            return
        tick = self.policy.tick(self.now)
        assert not tick.delete  # mode "on": never deleted by a tick
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

    def ack(self, count: int, ok: bool) -> None:
        for mid in sorted(self.in_client)[:count]:
            seq = self.in_client.pop(mid)
            if ok:
                self.broker_queue.append(seq)
            outcome = self.policy.acked(mid, ok, self.now)
            assert outcome is not None and outcome.seq == seq and outcome.ok == ok
            if ok:
                self.acked.add(seq)
            if outcome.delete:
                assert ok, f"seq {seq}: deleted on a failed PUBACK"
                assert seq in self.receipted_inflight, \
                    f"seq {seq} deleted at its PUBACK, but no receipt named it in flight"
                self.delete(seq)
            self.receipted_inflight.discard(seq)

    def delete(self, seq: int) -> None:
        assert seq in self.outbox, f"seq {seq}: deleted twice, or never stored"
        self.outbox.discard(seq)
        self.deleted.add(seq)

    def receipt(self, ranges: Ranges, refused: Ranges | None = None) -> Receipted:
        """A receipt reaches the agent (from the hub or an attacker): apply the policy's
        decision and check it."""
        refused = refused or []
        before = set(self.outbox)
        inflight = set(self.in_client.values())
        out = self.policy.receipted(ranges, self.now, refused)
        for seq in out.delete:
            assert seq in self.acked and seq in self.published, \
                f"seq {seq} deleted by a receipt, but this run never saw it acknowledged"
            assert seq not in inflight, f"seq {seq} deleted while in flight"
            assert named(seq, ranges), f"seq {seq} deleted, not named in ranges"
            self.delete(seq)
        if self.rules.mode != "off":  # off: deleted at the PUBACK, receipts are not read
            self.receipted_inflight |= {s for s in inflight if named(s, ranges)}
            assert out.at_puback == len({s for s in inflight if named(s, ranges)})
        for seq in before:
            if named(seq, refused) and not named(seq, ranges):
                assert seq in self.outbox, f"refused seq {seq} was deleted"
        self.ignored += out.ignored
        self.refused_kept += len(out.refused)
        return out

    # -- the broker and the honest hub ---------------------------------------------------------
    def hub_takes(self, count: int) -> None:
        taken, self.broker_queue = self.broker_queue[:count], self.broker_queue[count:]
        for seq in taken:
            if self.poison.get(seq, 0) > 0 and seq not in self.hub:
                self.poison[seq] -= 1
                self.owed_refused.add(seq)
            else:
                self.hub.add(seq)
                self.owed.add(seq)

    def hub_receipts(self) -> None:
        if self.owed or self.owed_refused:
            ranges, refused = ranges_of(self.owed), ranges_of(self.owed_refused)
            self.owed.clear()
            self.owed_refused.clear()
            self.receipt(ranges, refused)

    def no_event_vanished(self) -> None:
        gone = set(range(self.next_seq)) - self.outbox - set(self.broker_queue) - self.hub
        assert not gone, f"events neither in the outbox, the broker nor the hub: {sorted(gone)}"


def _range(draw: st.DrawFn, agent_seqs: int) -> tuple[int, int]:
    kind = draw(st.sampled_from(["everything", "near", "huge", "single", "backwards"]))
    if kind == "everything":
        return (0, SEQ_MAX)
    if kind == "near":
        a = draw(st.integers(0, agent_seqs + 5))
        return (a, a + draw(st.integers(0, 30)))
    if kind == "huge":
        a = draw(st.integers(0, SEQ_MAX))
        return (a, draw(st.integers(a, SEQ_MAX)))
    if kind == "single":
        a = draw(st.integers(0, agent_seqs + 5))
        return (a, a)
    a, b = draw(st.integers(0, agent_seqs + 5)), draw(st.integers(0, agent_seqs + 5))
    return (max(a, b), min(a, b))  # ends before it starts: the contract refuses it; be safe


@st.composite
def forged(draw: st.DrawFn) -> tuple[str, Ranges, Ranges]:
    """Ranges and refused ranges as an attacker might send them: anything, any order."""
    size = 80  # most histories make fewer seqs: ranges near them hit rows in every state
    ranges = [_range(draw, size) for _ in range(draw(st.integers(0, 4)))]
    refused = [_range(draw, size) for _ in range(draw(st.integers(0, 4)))]
    return ("forge", ranges, refused)


OPS = st.one_of(
    st.tuples(st.just("commit"), st.integers(1, 12)),
    st.tuples(st.just("ack"), st.integers(1, 10)),
    forged(),
    st.tuples(st.just("connect"), st.just(0)),
    st.tuples(st.just("disconnect"), st.just(0)),
    st.tuples(st.just("ack"), st.integers(1, 10)),
    st.tuples(st.just("nack"), st.integers(1, 3)),
    st.tuples(st.just("hub"), st.integers(1, 15)),
    st.tuples(st.just("receipt"), st.just(0)),
    st.tuples(st.just("poison"), st.integers(0, 60)),
    st.tuples(st.just("restart"), st.just(0)),
    st.tuples(st.just("wait"), st.integers(1, 3000)),  # milliseconds
    forged(),
)

RULES = ReceiptRules(mode="on", timeout_s=1.0, overtaken_s=0.2, window=30, refused_backoff_s=0.5,
                     refused_max_s=4.0)


def run(agent: Agent, ops: list[tuple[object, ...]]) -> None:
    agent.connect()
    for op in ops:
        name = op[0]
        if name == "commit":
            agent.commit(int(op[1]))  # type: ignore[call-overload]
        elif name == "connect":
            agent.connect()
        elif name == "disconnect":
            agent.disconnect()
        elif name == "ack":
            agent.ack(int(op[1]), ok=True)  # type: ignore[call-overload]
        elif name == "nack":
            agent.ack(int(op[1]), ok=False)  # type: ignore[call-overload]
        elif name == "hub":
            agent.hub_takes(int(op[1]))  # type: ignore[call-overload]
        elif name == "receipt":
            agent.hub_receipts()
        elif name == "poison":
            agent.poison[int(op[1])] = 2  # type: ignore[call-overload]
        elif name == "restart":
            agent.restart()
        elif name == "wait":
            agent.now += int(op[1]) / 1000  # type: ignore[call-overload]
        elif name == "forge":
            agent.receipt(op[1], op[2])  # type: ignore[arg-type]
        agent.publish_round()
        agent.no_event_vanished()


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(OPS, max_size=80))
def test_a_receipt_deletes_only_rows_sent_acknowledged_and_named_and_no_event_vanishes(
        ops: list[tuple[object, ...]]) -> None:
    agent = Agent(RULES)
    run(agent, ops)  # every check runs at every step (Agent.ack, Agent.receipt, ...)
    # then the link and an honest hub work for good: everything reaches the hub, even the
    # rows refused twice (sent again after their backoff) and those forged receipts named
    agent.poison.clear()
    agent.disconnect()                      # a reconnect: rows the broker refused go again
    agent.connect()
    for _ in range(20_000):
        agent.now += 0.05
        agent.publish_round()
        agent.ack(len(agent.in_client), ok=True)
        agent.hub_takes(len(agent.broker_queue))
        agent.hub_receipts()
        if not agent.outbox and not agent.in_client:
            break
    assert agent.hub == set(range(agent.next_seq)), \
        f"never reached the hub: {sorted(set(range(agent.next_seq)) - agent.hub)}"
    assert not agent.outbox


# -- the cases, one by one -------------------------------------------------------------------------
def _sent_and_acked(agent: Agent, n: int) -> None:
    agent.connect()
    agent.commit(n)
    agent.publish_round()
    agent.ack(n, ok=True)


def test_a_receipt_naming_the_unsent_backlog_deletes_none_of_it() -> None:
    agent = Agent(RULES)
    agent.commit(500)                       # offline: a backlog
    agent.policy = DeliveryPolicy(3, 0.0, now=0.0, read_batch=3, receipts=RULES)
    agent.connect()
    agent.publish_round()                   # 0, 1, 2 published; 3..499 wait
    agent.ack(2, ok=True)                   # 0, 1 acknowledged; 2 in flight
    out = agent.receipt([(0, 499)])
    assert sorted(out.delete) == [0, 1] and out.at_puback == 1
    assert out.ignored == 500 - 3
    agent.ack(1, ok=True)                   # 2's PUBACK: the receipt named it in flight
    assert agent.outbox == set(range(3, 500))


def test_the_whole_seq_space_costs_what_the_agent_awaits() -> None:
    """A receipt naming 2^63 seqs (in ranges and refused) is answered by walking the few rows
    sent, not the range: this test would not end otherwise."""
    agent = Agent(RULES)
    _sent_and_acked(agent, 5)
    agent.commit(3)
    agent.publish_round()                   # 5, 6, 7 in flight
    out = agent.receipt([(0, SEQ_MAX)], [(0, SEQ_MAX)])
    assert sorted(out.delete) == [0, 1, 2, 3, 4] and out.at_puback == 3
    assert out.ignored == SEQ_MAX + 1 - 8
    # named in ranges too: held by the hub, so not kept as refused
    assert out.refused == [] and out.refused_ignored == SEQ_MAX + 1 - 8


def test_refused_rows_stay_and_are_sent_again_after_a_doubling_backoff() -> None:
    rules = ReceiptRules(mode="on", timeout_s=600, refused_backoff_s=10, refused_max_s=25)
    agent = Agent(rules)
    _sent_and_acked(agent, 3)               # 0, 1, 2 await a receipt
    out = agent.receipt([(0, 0)], [(1, 2), (50, 10**12)])
    assert out.delete == [0] and sorted(out.refused) == [1, 2]
    assert out.refused_ignored == 10**12 - 50 + 1 and out.retry_in_s == 10
    assert agent.outbox == {1, 2} and agent.policy.refused_waiting == 2
    assert agent.policy.awaiting == 0
    for backoff in (10, 20, 25, 25):        # 10 s, then doubling, at most 25 s
        agent.now += backoff - 0.1
        agent.publish_round()
        assert not agent.in_client, f"sent again before its {backoff} s backoff"
        assert agent.policy.wake_in(agent.now) is not None
        agent.now += 0.2
        agent.publish_round()
        assert sorted(agent.in_client.values()) == [1, 2]
        agent.ack(2, ok=True)
        agent.receipt([], [(1, 2)])         # refused again
        assert agent.outbox == {1, 2}
    # named twice before it is sent again: one refusal, not two
    again = agent.receipt([], [(1, 1)])
    assert again.refused == [] and again.refused_again == 1
    # the hub takes it at last: a receipt deletes it, though it is waiting out a refusal
    out = agent.receipt([(1, 2)])
    assert sorted(out.delete) == [1, 2] and agent.policy.refused_waiting == 0
    assert not agent.outbox


def test_a_refusal_that_overtakes_the_puback_holds_the_row_at_its_puback() -> None:
    agent = Agent(ReceiptRules(mode="on", timeout_s=600, refused_backoff_s=30))
    agent.connect()
    agent.commit(1)
    agent.publish_round()
    out = agent.receipt([], [(0, 0)])
    assert out.refused == [0]
    agent.ack(1, ok=True)
    assert agent.policy.awaiting == 0 and agent.policy.refused_waiting == 1
    assert agent.outbox == {0}


def test_a_failed_puback_is_not_deleted_by_a_receipt_that_overtook_it() -> None:
    agent = Agent(RULES)
    agent.connect()
    agent.commit(1)
    agent.publish_round()
    agent.receipt([(0, 0)])                 # named while in flight
    agent.ack(1, ok=False)                  # the broker refused it: it has nothing
    assert agent.outbox == {0}
    assert agent.receipt([(0, 0)]).delete == []


def test_rows_of_an_earlier_run_are_deleted_only_once_sent_again() -> None:
    agent = Agent(RULES)
    _sent_and_acked(agent, 4)
    agent.restart()
    out = agent.receipt([(0, 3)])           # a late receipt for the earlier run
    assert out.delete == [] and out.ignored == 4 and agent.outbox == {0, 1, 2, 3}
    agent.connect()
    agent.publish_round()
    agent.ack(4, ok=True)
    agent.receipt([(0, 3)])
    assert not agent.outbox


@pytest.mark.parametrize("why", ["session", "timeout"])
def test_a_late_receipt_still_deletes_a_row_waiting_to_be_sent_again(why: str) -> None:
    """Lost with the session, or timed out, and not sent again yet: it was acknowledged in this
    run, so the hub's late receipt deletes it instead of causing a duplicate."""
    agent = Agent(ReceiptRules(mode="on", timeout_s=1, window=100))
    agent.connect()
    agent.commit(2)
    agent.publish_round()
    agent.ack(2, ok=True)
    agent.now += 5
    if why == "session":
        agent.disconnect()
        agent.connected = True
        agent.policy.connected(session_present=False)  # the broker lost the session
    else:
        assert agent.policy.tick(agent.now).resent == {"timeout": 2}
    assert agent.policy.awaiting == 0
    assert sorted(agent.receipt([(0, 1)]).delete) == [0, 1]
    assert not agent.outbox


def test_a_receipt_reads_at_most_max_ranges_ranges() -> None:
    agent = Agent(ReceiptRules(mode="on", max_ranges=10))
    _sent_and_acked(agent, 20)
    ranges = [(2 * i, 2 * i) for i in range(20)]      # 0, 2, 4, ..., 38
    out = agent.receipt(ranges)
    assert sorted(out.delete) == [2 * i for i in range(10)]
    assert out.ranges_dropped == 10 and out.ignored == 10


def test_off_mode_reads_no_receipt() -> None:
    agent = Agent(ReceiptRules(mode="off"))
    agent.connect()
    agent.commit(2)
    agent.publish_round()
    out = agent.receipt([(0, SEQ_MAX)], [(0, SEQ_MAX)])
    assert out.delete == [] and out.ignored == 0 and out.refused == []


@pytest.mark.parametrize(("ranges", "limit", "expected"), [
    ([(5, 9), (0, 3), (4, 4)], 10, ([(0, 9)], 0, 0)),
    ([(3, 1), (-5, 2), (SEQ_MAX - 1, SEQ_MAX + 9)], 10, ([(0, 2), (SEQ_MAX - 1, SEQ_MAX)], 0, 0)),
    ([(0, 0), (2, 2), (4, 9)], 2, ([(0, 0), (2, 2)], 1, 6)),
])
def test_clip_merge_sorts_clips_merges_and_counts_what_is_past_the_limit(
        ranges: Ranges, limit: int, expected: tuple[Ranges, int, int]) -> None:
    assert clip_merge(ranges, limit) == expected


def test_refusal_memory_is_bounded() -> None:
    rules = ReceiptRules(mode="on", timeout_s=600, window=100, refused_backoff_s=60)
    agent = Agent(rules)
    agent.policy = DeliveryPolicy(1000, 0.0, now=0.0, receipts=rules)
    _sent_and_acked(agent, 100)
    agent.receipt([], [(0, 99)])
    agent.commit(100)
    agent.publish_round()
    agent.ack(100, ok=True)
    agent.receipt([], [(100, 199)])
    receipt = agent.policy.receipt
    assert len(receipt._refusals) <= 100 and receipt.refused_waiting <= 100
    assert len(receipt._to_resend) <= 100 and len(receipt._held_due) <= 2 * 100 + 64
    # the forgotten ones go back to the backlog: nothing is lost
    assert agent.outbox == set(range(200))
