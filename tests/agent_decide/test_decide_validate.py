"""validate.check_value: DS18B20 glitches, range, jumps; degF converted before the checks."""

from __future__ import annotations

import math

import pytest

from edge_agent.decide import SensorRules
from edge_agent.decide.validate import check_value, to_celsius

DEFAULT = SensorRules()


@pytest.mark.parametrize(("value", "fault"), [
    (85.0, "power_on_value"),
    (-127.0, "disconnected"),
    (125.0001, "out_of_range"),
    (-55.5, "out_of_range"),
    (math.nan, "out_of_range"),
    (math.inf, "out_of_range"),
])
def test_glitches_and_range_are_rejected(value: float, fault: str) -> None:
    rejection = check_value(value, "degC", 0.0, DEFAULT, None)
    assert rejection is not None and rejection.fault == fault and rejection.detail


@pytest.mark.parametrize("value", [84.9375, 85.0625, 125.0, -55.0, 21.5, 0.0])
def test_plausible_values_pass(value: float) -> None:
    assert check_value(value, "degC", 0.0, DEFAULT, None) is None


def test_power_on_and_disconnected_checks_can_be_turned_off() -> None:
    rules = SensorRules(reject_power_on_value=False, disconnected_value=None, min_c=-200)
    assert check_value(85.0, "degC", 0.0, rules, None) is None
    assert check_value(-127.0, "degC", 0.0, rules, None) is None


def test_fahrenheit_values_are_checked_in_celsius() -> None:
    assert to_celsius(212.0, "degF") == pytest.approx(100.0)
    assert check_value(185.0, "degF", 0.0, DEFAULT, None).fault == "power_on_value"  # type: ignore[union-attr]
    assert check_value(-196.6, "degF", 0.0, DEFAULT, None).fault == "disconnected"  # type: ignore[union-attr]
    assert check_value(250.0, "degF", 0.0, DEFAULT, None) is None  # 121 degC
    assert check_value(260.0, "degF", 0.0, DEFAULT, None).fault == "out_of_range"  # type: ignore[union-attr]


def test_jump_allowance_grows_with_time_since_last_good() -> None:
    rules = SensorRules(max_jump_per_s=1.0)
    last = (100.0, 20.0)
    assert check_value(22.0, "degC", 101.0, rules, last).fault == "implausible_jump"  # type: ignore[union-attr]
    assert check_value(21.0, "degC", 101.0, rules, last) is None  # exactly at the limit
    # a real step to 30 becomes plausible once 10 s have passed: never stuck behind the check
    assert check_value(30.0, "degC", 109.0, rules, last) is not None
    assert check_value(30.0, "degC", 110.0, rules, last) is None
    assert check_value(99.0, "degC", 0.0, rules, None) is None  # no reference: no jump check
