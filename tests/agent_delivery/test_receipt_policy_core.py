"""The receipt policy alone (edge_agent/receipt_policy.py): what a receipt deletes, what is sent
again and when, with the publishing side reduced to the seqs in flight and a rescan callback.
The whole delivery policy under random histories is tests/agent_delivery/test_receipt_policy.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.receipt_policy import ReceiptPolicy, ReceiptRules


def policy(mode: str = "on", **rules: float) -> tuple[ReceiptPolicy, list[int]]:
    rescans: list[int] = []
    return ReceiptPolicy(ReceiptRules(mode=mode, **rules), rescan=rescans.append), rescans  # type: ignore[arg-type]


def test_off_deletes_at_the_puback_and_reads_no_receipt() -> None:
    p, _ = policy("off")
    assert p.acked(1, ok=True, now=0.0) is True
    out = p.receipted([(0, 10)], now=1.0)
    assert out.delete == [] and p.awaiting == 0


def test_on_keeps_each_row_until_a_receipt_names_it() -> None:
    p, _ = policy("on")
    for seq in range(5):
        assert p.acked(seq, ok=True, now=float(seq)) is False
    out = p.receipted([(1, 2), (7, 9)], now=5.0)
    assert sorted(out.delete) == [1, 2] and out.ignored == 3 and p.awaiting == 3
    assert p.withheld() == (p._awaiting,)


def test_a_receipt_before_the_puback_deletes_at_the_puback() -> None:
    p, _ = policy("on")
    out = p.receipted([(4, 4)], now=0.0, inflight={4})
    assert out.at_puback == 1 and out.delete == []
    assert p.acked(4, ok=True, now=1.0) is True


def test_timeout_sends_again_and_doubles_while_no_receipt_comes() -> None:
    p, rescans = policy("on", timeout_s=10.0)
    p.acked(3, ok=True, now=0.0)
    assert p.wake_in(0.0, connected=True) == 10.0
    assert p.tick(10.0, connected=True).resent == {}  # due after, not at, the timeout
    tick = p.tick(10.5, connected=True)
    assert tick.resent == {"timeout": 1} and rescans == [3] and p.awaiting == 0
    p.sent(3)
    p.acked(3, ok=True, now=11.0)
    assert p.tick(21.5, connected=True).timeout_s == 20.0  # a round without any receipt


def test_auto_falls_back_when_no_receipt_comes_within_detect_s() -> None:
    p, _ = policy("auto", detect_s=100.0, timeout_s=1000.0)
    p.acked(1, ok=True, now=0.0)
    assert p.wake_in(0.0, connected=True) == 100.0  # the detection is due before the timeout
    tick = p.tick(100.0, connected=True)
    assert tick.fell_back and tick.delete == [1] and not p.awaiting_receipts
    assert p.acked(2, ok=True, now=101.0) is True
    p.receipted([(5, 5)], now=102.0)  # any receipt: awaited again
    assert p.awaiting_receipts and p.wake_in(102.0, connected=True) is None


def test_the_window_sends_back_the_oldest_and_pauses_the_backlog() -> None:
    p, rescans = policy("on", window=2)
    p.acked(1, ok=True, now=0.0)
    assert not p.window_full
    p.acked(2, ok=True, now=0.0)
    assert p.window_full
    p.acked(3, ok=True, now=0.0)
    assert rescans == [1] and p.resent["window"] == 1 and p.awaiting == 2


def test_a_refused_row_is_held_back_then_sent_again() -> None:
    p, rescans = policy("on", refused_backoff_s=30.0)
    p.acked(8, ok=True, now=0.0)
    out = p.receipted([], now=1.0, refused=[(8, 8)])
    assert out.refused == [8] and p.refused_waiting == 1 and out.retry_in_s == 30.0
    assert 8 in p.withheld()[-1]
    assert p.wake_in(1.0, connected=False) == 30.0
    p.tick(31.0, connected=True)
    assert rescans == [8] and p.refused_waiting == 0


steps = st.lists(st.one_of(
    st.tuples(st.just("ack"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("receipt"), st.integers(0, 30), st.integers(0, 30)),
    st.tuples(st.just("refuse"), st.integers(0, 30), st.integers(0, 30)),
    st.tuples(st.just("tick"), st.integers(0, 200), st.booleans()),
    st.tuples(st.just("reconnect"), st.integers(0, 0), st.booleans()),
), max_size=50)


@given(steps, st.sampled_from(["on", "auto"]))
def test_a_receipt_deletes_only_rows_acknowledged_in_this_run(
        history: list[tuple[str, int, int | bool]], mode: str) -> None:
    p, _ = policy(mode, timeout_s=50.0, detect_s=150.0, window=10)
    acked_ok: set[int] = set()
    deleted: set[int] = set()
    now = 0.0
    for op, a, b in history:
        now += 1.0
        if op == "ack" and a not in acked_ok and a not in deleted:
            p.sent(a)
            if p.acked(a, ok=bool(b), now=now):
                deleted.add(a)
            if b:
                acked_ok.add(a)
        elif op in ("receipt", "refuse"):
            first, last = min(a, int(b)), max(a, int(b))
            out = (p.receipted([(first, last)], now) if op == "receipt"
                   else p.receipted([], now, refused=[(first, last)]))
            assert set(out.delete) <= acked_ok - deleted, "deleted what was not acknowledged"
            deleted.update(out.delete)
        elif op == "tick":
            now += a
            deleted.update(p.tick(now, connected=bool(b)).delete)
        elif op == "reconnect":
            p.connected(session_present=bool(b))
        assert p.awaiting <= 10
        assert deleted <= acked_ok
