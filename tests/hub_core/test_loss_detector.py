"""The hub's loss detector (hub/loss_detector.py) without a broker: gaps become losses, a seq
jump beyond ``max_seq_jump`` restarts a device's tracking (never a loss of 10^18 events), the
state read back at start-up is checked, and one device's failure drops only its own state."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.loss_detector import Loss, LossDetector
from schemas.models import SEQ_MAX, DataLoss
from tests.hub_core.helpers import BASE_TIME

JUMP = 1000


def test_a_gap_without_progress_becomes_one_loss_then_is_held() -> None:
    det = LossDetector(gap_timeout_s=10, grace_s=0, max_seq_jump=JUMP)
    det.held("s", "d", [(1, 5), (9, 12)], now=0.0)
    assert det.gaps("s", "d") == [(6, 8)]
    assert det.due(5.0) == []
    assert det.due(10.0) == [Loss("s", "d", 6, 8, None)]
    assert det.due(100.0) == []  # reported once
    assert det.open_gaps == 0


def test_an_offline_agent_that_still_holds_the_gap_is_waited_for() -> None:
    """An agent stopped with an unsent backlog (its shutdown status says its outbox still holds
    the gap) is not a loss however long it stays away; back online, the usual rules apply."""
    det = LossDetector(gap_timeout_s=10, grace_s=0, max_seq_jump=JUMP)
    det.held("s", "d", [(1, 5), (9, 12)], now=0.0)
    det.status("s", "d", 6, now=1.0, online=False)  # shutdown: 6.. still in its outbox
    assert det.due(1000.0) == []
    det.status("s", "d", None, now=1001.0, online=False)  # a will without counters: still away
    assert det.due(2000.0) == []
    # back, and its outbox no longer has 6-8 (evicted while away): lost, with the cause
    det.status("s", "d", 9, now=2001.0, drops="age=3", online=True)
    (loss,) = det.due(2001.0)
    assert (loss.first_seq, loss.last_seq) == (6, 8) and "age=3" in (loss.cause or "")


def test_an_online_agent_whose_status_is_stale_loses_the_gap_at_the_timeout() -> None:
    det = LossDetector(gap_timeout_s=10, grace_s=0, max_seq_jump=JUMP)
    det.held("s", "d", [(1, 5), (9, 12)], now=0.0)
    det.status("s", "d", 6, now=1.0, online=True)
    assert det.due(10.5) == []       # its status is younger than the timeout: still sending
    assert det.due(11.5) == [Loss("s", "d", 6, 8, None)]


def test_a_seq_far_above_the_highest_is_a_jump_not_a_loss() -> None:
    det = LossDetector(gap_timeout_s=1, grace_s=0, max_seq_jump=JUMP)
    det.held("s", "d", [(0, 100), (104, 110)], now=0.0)  # one open gap: 101-103
    det.held("s", "d", [(2**62, 2**62)], now=0.0)
    (jump,) = det.jumps
    assert (jump.from_seq, jump.to_seq, jump.dropped_gaps, jump.dropped_seqs) == (
        110, 2**62, 1, 3)
    assert det.gaps("s", "d") == [] and det.due(1e9) == []
    # the device comes back to its own seqs: a jump down, tracking restarts there
    det.held("s", "d", [(111, 120)], now=1.0)
    assert [j.to_seq for j in det.jumps] == [2**62, 111]
    det.held("s", "d", [(125, 130)], now=2.0)
    assert det.due(10.0) == [Loss("s", "d", 121, 124, None)]


def test_a_seq_within_max_seq_jump_is_an_ordinary_gap() -> None:
    det = LossDetector(gap_timeout_s=1, grace_s=0, max_seq_jump=JUMP)
    det.held("s", "d", [(0, 0)], now=0.0)
    det.held("s", "d", [(JUMP, JUMP)], now=0.0)  # a gap of JUMP - 1: the most there can be
    assert det.jumps == []
    (loss,) = det.due(5.0)
    assert loss.last_seq - loss.first_seq + 1 == JUMP - 1


RANGES = st.lists(st.tuples(st.one_of(st.integers(0, 5000), st.integers(0, SEQ_MAX)),
                            st.integers(0, 50)), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(RANGES, min_size=1, max_size=8))
def test_no_loss_is_larger_than_max_seq_jump_and_every_one_makes_a_data_loss(
        batches: list[list[tuple[int, int]]]) -> None:
    det = LossDetector(gap_timeout_s=1, grace_s=0, max_seq_jump=JUMP)
    now = 0.0
    for batch in batches:
        now += 10
        det.held("s", "d", [(a, min(a + n, SEQ_MAX)) for a, n in batch], now)
        for loss in det.due(now + 5):
            count = loss.last_seq - loss.first_seq + 1
            assert 1 <= count < JUMP
            DataLoss(event_id="x" * 32, site="s", device_id="d", time=BASE_TIME,
                     first_seq=loss.first_seq, last_seq=loss.last_seq, count=count)
    restored = LossDetector(state=det.snapshot(), max_seq_jump=JUMP)
    assert restored.repaired == {}


def test_a_stored_state_out_of_the_contract_is_dropped_not_fatal() -> None:
    """Regression: an older hub stored 2**64 (the seq of a refused payload); at the restart a
    DataLoss could not be built and ingest died again."""
    bad: dict[str, Any] = {"s/evil": {"held": [[0, 10], [2**64, 2**64]],
                                      "gaps": [[11, 2**64 - 1, 0.0]]},
                           "s/garbled": {"held": "nonsense"},
                           "s/wide": {"held": [[0, 10], [2**62, 2**62 + 5]],
                                      "gaps": [[11, 2**62 - 1, 0.0]]},
                           "s/good": {"held": [[0, 10], [20, 30]], "gaps": [[11, 19, 0.0]]}}
    det = LossDetector(gap_timeout_s=1, grace_s=0, state=bad, max_seq_jump=JUMP)
    assert set(det.repaired) == {"s/evil", "s/garbled", "s/wide"}
    assert det.repaired["s/evil"].startswith("dropped")
    assert "restarted" in det.repaired["s/wide"]
    losses = det.due(100.0)
    assert losses == [Loss("s", "good", 11, 19, None)]
    # the repaired states are written back with the next snapshot
    snap = det.snapshot(det.changed)
    assert snap["s/evil"] == {"held": [], "gaps": []}
    assert snap["s/wide"]["held"] == [[2**62, 2**62 + 5]]


def test_one_devices_failure_drops_only_its_state() -> None:
    class Flaky(LossDetector):
        def _due(self, key: Any, dev: Any, now: float) -> list[Loss]:
            if key == ("s", "bad"):
                raise RuntimeError("boom")
            return super()._due(key, dev, now)

    det = Flaky(gap_timeout_s=1, grace_s=0, max_seq_jump=JUMP)
    for device in ("bad", "ok"):
        det.held("s", device, [(1, 1), (5, 5)], now=0.0)
    assert det.due(10.0) == [Loss("s", "ok", 2, 4, None)]
    ((key, exc),) = det.failures
    assert key == ("s", "bad") and str(exc) == "boom"
    assert det.gaps("s", "bad") == [] and ("s", "bad") in det.changed
    assert det.due(20.0) == []  # it does not fail again


def test_a_range_outside_the_contract_raises_before_changing_anything() -> None:
    det = LossDetector(max_seq_jump=JUMP)
    det.held("s", "d", [(1, 3)], now=0.0)
    try:
        det.held("s", "d", [(2**64, 2**64)], now=0.0)
    except ValueError:
        pass
    else:
        raise AssertionError("a seq beyond SEQ_MAX was taken as held")
    assert det.snapshot()["s/d"]["held"] == [[1, 3]]
