"""SensorRules: defaults, cross-field checks with clear messages, the documented TOML example."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from edge_agent.config import rules as rules_module
from edge_agent.decide import SensorRules
from program_support.plain_config import parse
from schemas.errors import ConfigError


def test_defaults_are_a_working_ds18b20_setup() -> None:
    r = SensorRules()
    assert (r.min_c, r.max_c, r.disconnected_value) == (-55.0, 125.0, -127.0)
    assert r.reject_power_on_value and r.thresholds == []
    assert r.summary_interval_s == 60.0 and r.stale_after_s == 30.0
    assert r.deadband is None and r.rate_limit_per_min is None and r.rate_clear_per_min is None


def test_docstring_toml_example_loads() -> None:
    doc = rules_module.__doc__ or ""
    block = doc[doc.index("    [sensors"):doc.index("Units:")]
    data = tomllib.loads("\n".join(line[4:] for line in block.splitlines()))
    r = parse(data["sensors"]["t1"]["rules"], SensorRules)
    assert [t.name for t in r.thresholds] == ["low", "high", "high_critical"]
    assert r.rate_clear_per_min == pytest.approx(1.8)


def errors_of(data: dict[str, object]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(data, SensorRules, "agent.toml")
    return list(info.value.errors)


@pytest.mark.parametrize(("data", "path", "fragment"), [
    ({"min_c": 50, "max_c": 10}, "", "min_c (50.0) must be below max_c"),
    ({"thresholds": [{"name": "x", "above": 1, "below": 0}]}, "thresholds[0]", "exactly one"),
    ({"thresholds": [{"name": "x"}]}, "thresholds[0]", "exactly one"),
    ({"thresholds": [{"name": "normal", "above": 1}]}, "thresholds[0].name", "reserved"),
    ({"thresholds": [{"name": "a/b", "above": 1}]}, "thresholds[0].name", "invalid state name"),
    ({"thresholds": [{"name": "h", "above": 1, "hysteresis": -1}]},
     "thresholds[0].hysteresis", "greater than or equal to 0"),
    ({"thresholds": [{"name": "h", "above": 1, "dwell_s": -1}]},
     "thresholds[0].dwell_s", "greater than or equal to 0"),
    ({"thresholds": [{"name": "h", "above": 1}, {"name": "h", "above": 2}]}, "", "unique: h"),
    ({"thresholds": [{"name": "h", "above": 1}, {"name": "k", "above": 1}]}, "", "share one value"),
    ({"thresholds": [{"name": "h", "above": 10, "hysteresis": 2},
                     {"name": "l", "below": 7, "hysteresis": 1}]}, "", "must lie above 'l'"),
    ({"smoothing": {"kind": "mode", "window": 3}}, "smoothing.kind", "'median' or 'mean'"),
    ({"smoothing": {"kind": "mean", "window": 0}}, "smoothing.window", "greater than or equal"),
    ({"rate_limit_per_min": 1.0, "rate_hysteresis_per_min": 1.0}, "", "must be below"),
    ({"summary_interval_s": 0}, "summary_interval_s", "greater than 0"),
    ({"stale_after_s": -5}, "stale_after_s", "greater than 0"),
    ({"deadbnd": 1}, "", "unknown key 'deadbnd' (did you mean 'deadband'?)"),
])
def test_bad_rules_name_the_key_and_the_reason(data: dict[str, object], path: str,
                                               fragment: str) -> None:
    errors = errors_of(data)
    assert any(p == path and fragment in msg for p, msg in errors), errors


def test_rules_are_frozen() -> None:
    r = SensorRules()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.min_c = 0  # type: ignore[misc]
