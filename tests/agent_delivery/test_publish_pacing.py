"""The publish pacing alone (edge_agent/publish_pacing.py): live first, the backlog scan, the
in-flight cap, what the caller withholds. No broker, no clock."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.publish_pacing import PublishPacing


@dataclass(frozen=True)
class Row:
    seq: int


ops = st.lists(st.one_of(
    st.tuples(st.just("commit"), st.integers(1, 5)),
    st.tuples(st.just("publish"), st.booleans()),   # paused or not
    st.tuples(st.just("ack"), st.integers(0, 10)),
    st.tuples(st.just("connect"), st.just(0)),
    st.tuples(st.just("disconnect"), st.just(0)),
    st.tuples(st.just("withhold"), st.integers(0, 40)),
    st.tuples(st.just("rescan"), st.integers(0, 40)),
), max_size=60)


@given(ops, st.integers(1, 8))
def test_the_cap_holds_nothing_goes_twice_and_the_one_predicate_rules_both_answers(
        steps: list[tuple[str, int]], max_inflight: int) -> None:
    pacing: PublishPacing[Row] = PublishPacing(max_inflight, 0.0, now=0.0, read_batch=4)
    outbox: list[int] = []
    withheld: set[int] = set()
    mids: list[int] = []
    next_mid = 1
    for op, arg in steps:
        if op == "commit":
            rows = [Row(len(outbox) + i) for i in range(arg)]
            outbox.extend(r.seq for r in rows)
            pacing.committed(rows)
        elif op == "connect":
            pacing.connected()
        elif op == "disconnect":
            pacing.disconnected()
        elif op == "withhold":
            withheld.add(arg)
        elif op == "rescan":
            pacing.rescan_from(arg)
        elif op == "ack" and mids:
            mid = mids.pop(arg % len(mids))
            assert pacing.acked(mid) is not None
        elif op == "publish":
            paused = bool(arg)
            wanted = pacing.backlog_wanted(0.0, paused)
            # one predicate: backlog tokens are waited for exactly when the backlog may flow
            assert (pacing.wake_in(0.0, paused) is not None) == (wanted > 0)
            live = pacing.next_live()
            backlog: list[Row] = []
            if wanted:
                read = [Row(s) for s in outbox if s > pacing.cursor][:wanted]
                backlog = pacing.backlog_read(read, (withheld,))
                assert not live, "the backlog went before live rows"
            for row in [*live, *backlog]:
                assert row.seq not in pacing.inflight_seqs, f"seq {row.seq} in flight twice"
                assert row in live or row.seq not in withheld
                pacing.sent(row.seq, next_mid, row in backlog, 0.0)
                mids.append(next_mid)
                next_mid += 1
        assert pacing.inflight <= max_inflight
        assert pacing.inflight == len(mids) == len(pacing.inflight_seqs)


def test_a_mid_it_did_not_send_is_not_its_own() -> None:
    pacing: PublishPacing[Row] = PublishPacing(5, 0.0, now=0.0)
    pacing.sent(7, mid=3, replayed=False, now=0.0)
    assert pacing.acked(99) is None
    assert pacing.acked(3) == (7, False) and pacing.inflight == 0


def test_a_rescan_moves_the_cursor_back_only() -> None:
    pacing: PublishPacing[Row] = PublishPacing(5, 0.0, now=0.0)
    pacing.connected()
    assert pacing.backlog_read([Row(10), Row(11)]) == [Row(10), Row(11)]
    pacing.rescan_from(20)
    assert pacing.cursor == 11
    pacing.rescan_from(4)
    assert pacing.cursor == 3 and not pacing.backlog_done


def test_stopping_and_a_pause_hold_the_backlog_not_the_live_rows() -> None:
    pacing: PublishPacing[Row] = PublishPacing(5, 0.0, now=0.0)
    pacing.connected()
    assert pacing.backlog_wanted(0.0, paused=True) == 0
    assert pacing.backlog_wanted(0.0) > 0
    pacing.stopping()
    pacing.committed([Row(1)])
    assert pacing.backlog_wanted(0.0) == 0 and pacing.next_live() == [Row(1)]
