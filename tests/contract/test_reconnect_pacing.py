"""The one reconnect pacing of every MQTT connection (program_support/reconnect_pacing.py):
pure, time passed in."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from program_support.client_id_clash import ClashDetector
from program_support.reconnect_pacing import ReconnectPacing, hub_pacing

# an event: ("fail",) a connect that failed, or ("up", seconds) a connection that lasted so long
events = st.lists(st.one_of(st.just(("fail", 0.0)),
                            st.tuples(st.just("up"), st.floats(0.0, 100.0))), max_size=40)


@given(events, st.floats(0.05, 5.0), st.floats(1.0, 10.0), st.one_of(
    st.none(), st.floats(1.0, 10.0)), st.integers(0, 2**32))
def test_every_wait_is_within_the_backoff_bounds(
        steps: list[tuple[str, float]], min_s: float, factor: float, flap_factor: float | None,
        seed: int) -> None:
    max_s = min_s * factor
    flap_max_s = None if flap_factor is None else max_s * flap_factor
    pacing = ReconnectPacing(min_s, max_s, flap_max_s, rng=random.Random(seed))
    now = 0.0
    flaps = 0  # connections in a row that dropped within the window
    for kind, lasted in steps:
        if kind == "up":
            pacing.accepted(now)
            now += lasted
            flaps = flaps + 1 if lasted < pacing.clashes.window_s else 0
        attempt = pacing.attempt if kind == "fail" or lasted < pacing.clashes.window_s else 0
        delay = pacing.next_delay(now)
        clash = flaps >= pacing.clashes.count
        top = flap_max_s if clash and flap_max_s is not None else max_s
        cap = min(top, min_s * 2 ** attempt)
        assert min_s / 10 <= delay <= max(cap, min_s / 10)
        now += delay


def test_the_hubs_waits_stay_short_unless_its_connections_keep_dropping() -> None:
    """A broker restart, or one down for long: the hub tries again within 5 s every time. Its
    connections dropped right after they were accepted (a client-id clash): up to 30 s."""
    pacing = hub_pacing()
    pacing.rng = random.Random(1)
    pacing.accepted(0.0)
    waits = [pacing.next_delay(600.0 + i) for i in range(200)]  # a lasting one, then down
    assert max(waits) <= 5.0 and max(waits) > 4.0
    now = 1000.0
    flapped = []
    for _ in range(30):
        pacing.accepted(now)
        now += 1.0  # thrown off a second after it was accepted
        flapped.append(pacing.next_delay(now))
        now += flapped[-1]
    assert pacing.clash and max(flapped) <= 30.0 and max(flapped[10:]) > 10.0
    pacing.accepted(now)
    assert pacing.next_delay(now + 60.0) <= 1.0  # a lasting connection: short waits again


@given(events)
def test_only_a_lasting_connection_restarts_the_count(steps: list[tuple[str, float]]) -> None:
    pacing = ReconnectPacing(1.0, 30.0, rng=random.Random(0))
    now = 0.0
    for kind, lasted in steps:
        before = pacing.attempt
        if kind == "up":
            pacing.accepted(now)
            now += lasted
        pacing.next_delay(now)
        lasting = kind == "up" and lasted >= pacing.clashes.window_s
        assert pacing.attempt == (1 if lasting else before + 1)


def test_flaps_are_counted_once_per_connection_and_make_a_clash() -> None:
    pacing = ReconnectPacing(1.0, 30.0, clashes=ClashDetector(window_s=10, count=3))
    for n in (1, 2, 3):
        pacing.accepted(100.0 * n)
        assert pacing.ended(100.0 * n + 1) == n
        assert pacing.ended(100.0 * n + 2) == n  # judged once: a second call changes nothing
        pacing.next_delay(100.0 * n + 3)       # neither does the loop's own call
    assert pacing.clash and pacing.attempt == 3
    pacing.accepted(1000.0)
    assert pacing.ended(1020.0) == 0 and not pacing.clash and pacing.attempt == 0


def test_a_failed_attempt_without_a_connection_counts_no_flap() -> None:
    pacing = ReconnectPacing()
    pacing.next_delay(5.0)
    assert pacing.ended(6.0) == 0 and pacing.attempt == 1


@pytest.mark.parametrize(("min_s", "max_s"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 5.0)])
def test_nonsense_bounds_are_refused(min_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="min_s"):
        ReconnectPacing(min_s, max_s)
    with pytest.raises(ValueError, match="flap_max_s"):
        ReconnectPacing(1.0, 5.0, flap_max_s=4.0)
