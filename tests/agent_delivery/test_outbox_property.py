"""Random append / commit / ack / crash / restart sequences against a model of the outbox.

Properties: nothing committed is ever lost; an ack that was committed never comes back; a crash
loses only what was not yet committed; reads are in seq order; a new seq is always above every
seq ever committed (only committed events are ever published).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge_agent.outbox import Outbox, OutboxSettings
from edge_agent.stamping import EventStamper
from schemas import Topics
from tests.agent_delivery.helpers import draft

TOPICS = Topics("tp")
KINDS = st.sampled_from(["reading", "summary", "fault", "state_change"])


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-prop-"))
        self.settings = OutboxSettings(path=self.dir / "o.db", min_free_bytes=0)
        self.outbox = Outbox(self.settings)
        self.stamper = EventStamper("site1", "dev1", self.outbox)
        self.staged: list[int] = []
        self.committed: set[int] = set()   # on disk, not deleted
        self.acked: set[int] = set()       # acked, deletion not yet committed
        self.high_seq = -1                 # highest seq handed out in this process
        self.durable_seq = -1              # highest seq ever committed (maybe published)

    @rule(kinds=st.lists(KINDS, min_size=1, max_size=8))
    def append(self, kinds: list[str]) -> None:
        events = [self.stamper.stamp(draft(k), True) for k in kinds]
        # seq only grows; after a crash, seqs reserved but never committed (so never published)
        # may be handed out again, never one that was committed
        assert all(e.seq > max(self.high_seq, self.durable_seq) for e in events)
        self.high_seq = events[-1].seq
        self.outbox.append((e, TOPICS.for_event(e)) for e in events)
        self.staged += [e.seq for e in events]

    @rule()
    def commit(self) -> None:
        stored = self.outbox.commit()
        assert [r.seq for r in stored] == sorted(self.staged)
        self.durable_seq = max([self.durable_seq, *self.staged])
        self.committed |= set(self.staged)
        self.committed -= self.acked
        self.staged, self.acked = [], set()

    @precondition(lambda self: self.committed - self.acked)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        candidates = sorted(self.committed - self.acked)
        chosen = data.draw(st.lists(st.sampled_from(candidates), min_size=1, unique=True))
        self.outbox.ack(chosen)
        self.acked |= set(chosen)

    @rule()
    def crash(self) -> None:
        self.outbox.close(flush=False)
        self._reopen()
        self.staged, self.acked = [], set()  # uncommitted acks come back: at-least-once
        self.high_seq = -1

    @rule()
    def clean_restart(self) -> None:
        self.outbox.close()
        self.committed |= set(self.staged)
        self.committed -= self.acked
        self.durable_seq = max([self.durable_seq, *self.staged])
        self.staged, self.acked = [], set()
        self._reopen()

    def _reopen(self) -> None:
        self.outbox = Outbox(self.settings)
        self.stamper = EventStamper("site1", "dev1", self.outbox)

    @invariant()
    def readable_is_committed_minus_acked(self) -> None:
        seqs = [r.seq for r in self.outbox.read(-1, 10_000)]
        assert seqs == sorted(self.committed - self.acked)
        assert self.outbox.depth == len(self.committed)

    def teardown(self) -> None:
        self.outbox.close(flush=False)
        shutil.rmtree(self.dir, ignore_errors=True)


OutboxMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestOutboxMachine = OutboxMachine.TestCase
