"""The one client-id-clash judgement that agent and hub share (program_support.client_id_clash)."""

from __future__ import annotations

from program_support.client_id_clash import ClashDetector


def test_three_drops_in_a_row_right_after_connecting_are_a_clash() -> None:
    clashes = ClashDetector(window_s=10, count=3)
    assert [clashes.dropped(s) for s in (2.0, 0.5, 9.9)] == [1, 2, 3]
    assert clashes.clash
    assert clashes.dropped(10.0) == 0 and not clashes.clash  # a lasting connection: over
    assert clashes.dropped(1.0) == 1 and not clashes.clash
