"""The plain scenario loader refuses what the pydantic models refused, and reads what they
accepted to the same values.

The oracle is tests/firmware_sim/reference_scenario.py: firmware_sim/scenario.py's pydantic models
and error translation as they were. Documents are the shipped scenarios and small valid files,
changed at 1-4 places that Hypothesis picks from every table they have (the root, each sensor,
its profile and spikes, each profile point, each fault): a known key set to a value of another
type, out of its range, a duration written every way (``"90s"``, ``1.5``, ``"1h30m"``, ``"-3h"``,
``inf``), an id one character off its pattern, numbers and booleans written as strings; an
unknown or misspelt key; a key removed; a profile's or fault's kind changed. Refused documents are
refused at the same key paths.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import tomllib
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from fw_helpers import ALL_FAULTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from reference_scenario import validate as reference_validate

from firmware_sim import scenario as scenarios
from program_support.plain_config import (
    Before,
    Length,
    Pattern,
    Range,
    Tagged,
    fields_of,
    is_section,
)
from schemas.errors import ConfigError
from schemas.serial_protocol import MAX_SENSORS
from tests.plain_config_documents import node_at, sections

EXAMPLES = int(os.environ.get("TP_SCENARIO_EXAMPLES", "1500"))
SENSOR = "28-0000075a1b2c"

BASES: list[dict[str, Any]] = [
    *(tomllib.loads(path.read_text()) for path in scenarios.shipped().values()),
    tomllib.loads(ALL_FAULTS),
    {"duration": 3600, "sensors": [{"id": SENSOR, "profile": {"kind": "constant", "value": 1}}]},
    {"duration": "2h", "interval": 0.1,
     "sensors": [{"id": SENSOR, "profile": {"kind": "ramp", "start": 1, "end": 3,
                                            "duration": "1h"}},
                 {"id": "28-00000a3f9e21", "profile": {"kind": "steps", "points": [
                     {"at": 0, "value": 1}, {"at": "1h", "value": 2}]}}],
     "faults": [{"kind": "bad_checksum", "at": "10m"}, {"kind": "stall", "at": 0,
                                                        "duration": "1m"},
                {"kind": "unplug", "at": "1h", "duration": 30}, {"kind": "cut_line", "at": 5}]},
]


# -- where a document can be changed: tests/plain_config_documents.py ---------------------------
LOCATIONS = [list(sections(base, scenarios.Scenario)) for base in BASES]
assert all(len(found) >= 3 for found in LOCATIONS), LOCATIONS

# -- values -------------------------------------------------------------------------------------
DURATIONS = [0, 1, -1, 0.1, 0.0999, 0.05, 0.0005, 0.0004, 90, 1.5, 86_400, 86_400.001, 1e300,
             1e306, -1e306, "9" * 400 + "s", 2**70,
             -0.0, math.inf, -math.inf, math.nan, True, "100ms", "99ms", "0s", "0", "-1s", "1h",
             "24h", "24h1ms", "86400001ms", "1h30m", "-3h", "+12h", " 2 m ", "1.5s", "soon", "",
             "10", "1h-2m", [], {}]
IDS = [SENSOR, "28-00000a3f9e21", "28-0000075A1B2C", f"{SENSOR}\n", "28-ffffffffffff",
       "28-0000075a1b2", "x", "", "sim-0001", "a" * 32, "a" * 33, "a b", "a/b", 5]
KINDS = [*scenarios.PROFILE_KINDS, *scenarios.FAULT_KINDS, "sawtooth", "sin", "Sine", "stal", 5]
SCALARS = st.sampled_from([0, 1, -1, 0.5, 1.5, "x", "5", "1.5", "yes", True, math.inf, math.nan,
                           [], {}, "1h", SENSOR]) | st.integers() | st.floats() \
    | st.text(max_size=6)
PROFILES = [{"kind": "constant", "value": 2}, {"kind": "ramp", "start": 0, "end": 1,
                                               "duration": "1m"},
            {"kind": "sine", "mean": 0, "amplitude": 1}, {"kind": "steps", "points": []},
            {"kind": "piecewise", "points": [{"at": 5, "value": 1}, {"at": 5, "value": 2}]},
            {"kind": "sawtooth"}, {"kind": "sin", "mean": 1}, {}, {"value": 1}, "constant"]
FAULTS = [{"kind": k, "at": "1m", "sensor": SENSOR, "duration": "1m", "count": 2, "by": "1h",
           "bytes": 8} for k in scenarios.FAULT_KINDS] + [
    {"kind": "stall", "at": "1m", "duration": "1m"}, {"kind": "clock_jump", "at": 0, "by": "-1h"},
    {"kind": "crc_error", "at": 0, "sensor": SENSOR}, {"kind": "missing", "at": 0,
                                                       "sensor": "28-ffffffffffff"},
    {"kind": "garbage", "at": "100h"}, {"kind": "meltdown", "at": 0}, {"at": 0}]
POINTS = [{"at": 0, "value": 1}, {"at": "1m", "value": 2}, {"at": -1, "value": 1}, {"at": 0},
          {"at": "x", "value": 1}, {"value": 1}]


def _near(bound: float) -> list[Any]:
    return [bound, bound + 1, bound - 1, bound + 0.5, bound - 0.5, float(bound), str(bound)]


def candidates(tp: Any) -> list[Any]:
    """Values near what a field's type and rules allow: its choices and a near miss, its bounds
    and one past them (in ms for a duration: ``0.1`` is 100 ms), other types."""
    origin = typing.get_origin(tp)
    members = typing.get_args(tp)
    if origin is typing.Annotated:
        base, *rules = members
        if any(isinstance(r, Tagged) for r in rules):
            return PROFILES if Tagged("kind", "profile") in rules else FAULTS
        if any(isinstance(r, Before) for r in rules):
            bounds = [getattr(r, name) for r in rules if isinstance(r, Range)
                      for name in ("gt", "ge", "lt", "le") if getattr(r, name) is not None]
            return [*DURATIONS, *[v / 1000 for b in bounds for v in (b, b - 1, b + 1)]]
        if any(isinstance(r, Pattern) for r in rules):
            return IDS
        bounds = [getattr(r, name) for r in rules if isinstance(r, Range)
                  for name in ("gt", "ge", "lt", "le") if getattr(r, name) is not None]
        sizes = [n for r in rules if isinstance(r, Length) for size in (r.min, r.max)
                 if size is not None for n in (size, size + 1, max(size - 1, 0))]
        inner = candidates(base)
        if typing.get_origin(base) is list:
            item = inner[1] if len(inner) > 1 and isinstance(inner[1], list) else []
            return [*inner, *[(item * size)[:size] for size in sizes]]
        return [*inner, *[v for bound in bounds for v in _near(bound)]]
    if origin is typing.Literal:
        return [*members, *KINDS, "c", "F"]
    if origin is typing.Union or (origin is None and members):
        return [v for m in members if m is not type(None) for v in candidates(m)]
    if origin is list:
        (item,) = members
        if typing.get_origin(item) is typing.Annotated:  # faults
            return [[], FAULTS[:1], FAULTS[-3:], "x", [5]]
        if item is scenarios.Point:
            return [[], POINTS[:2], POINTS[1::-1], POINTS, [POINTS[0]] * 2, "x"]
        sensor = {"id": SENSOR, "profile": {"kind": "constant", "value": 1}}
        many = [{**sensor, "id": f"28-{i:012x}"} for i in range(MAX_SENSORS + 1)]
        return [[], [sensor], [sensor, sensor], many, many[:MAX_SENSORS], "x", [5]]
    if tp is bool:
        return [True, False, 1, 0, 2, "yes", "x"]
    if tp is int:
        return [0, 1, 5, -1, 1.0, 2.5, "7", " 7 ", "7.0", "1e3", "x", True, 2.0**63, math.inf,
                math.nan, 2**70]
    if tp is float:
        return [0, 0.5, 1, 2.5, -1.0, "3.5", " 4 ", "1e3", "inf", "x", True, math.inf,
                -math.inf, math.nan, 2**70, [1]]
    if tp is str:
        return ["x", "", "freezer", 5, True, ["x"], SENSOR]
    if is_section(tp):
        return [{}, "x", 5, [{}], {"x": 1}, {"probability": 0.5, "magnitude": 1},
                {"probability": 1.5, "magnitude": 1}]
    return [5, "x"]


def values_for(tp: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(candidates(tp))


@st.composite
def changed_documents(draw: st.DrawFn) -> dict[str, Any]:
    index = draw(st.integers(0, len(BASES) - 1))
    doc = copy.deepcopy(BASES[index])
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4]))):
        path, section = draw(st.sampled_from(LOCATIONS[index]))
        try:
            node = node_at(doc, path)
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(node, dict):
            continue
        known = list(fields_of(section))
        action = draw(st.sampled_from(["set", "set", "set", "unknown", "delete"]))
        if action == "delete" and node:
            del node[draw(st.sampled_from(sorted(node)))]
        elif action == "unknown":
            key = draw(st.sampled_from(known).map(lambda k: k[:-1] + "x") | st.text(max_size=6))
            node[key] = draw(SCALARS)
        else:
            key = draw(st.sampled_from(known))
            node[key] = copy.deepcopy(draw(st.one_of(values_for(fields_of(section)[key]),
                                                     SCALARS)))
    return doc


# -- the same values, whichever model read them -------------------------------------------------
def plain(value: Any) -> Any:
    """A comparable form of a scenario (types kept: 1 is not 1.0 is not True)."""
    if isinstance(value, BaseModel):
        return (type(value).__name__,
                {name: plain(getattr(value, name)) for name in type(value).model_fields})
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__,
                {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)})
    if isinstance(value, list):
        return [plain(v) for v in value]
    return (type(value).__name__, repr(value))


def outcome(read: Any, doc: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "accepted", plain(read(doc, "s.toml"))
    except ConfigError as exc:
        assert exc.errors
        assert all(reason for _, reason in exc.errors), exc.errors
        return "refused", sorted({path for path, _ in exc.errors})


def judged_alike(doc: dict[str, Any]) -> str | None:
    """None when both loaders agree on ``doc``; else what differs."""
    old = outcome(reference_validate, copy.deepcopy(doc))
    new = outcome(scenarios.validate, copy.deepcopy(doc))
    if old == new:
        return None
    return f"{doc}\n  pydantic {old}\n  plain    {new}"


def single_changes() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every base with one key of one table changed to each of its candidates, removed, or
    misspelt."""
    for index, base in enumerate(BASES):
        for path, section in LOCATIONS[index]:
            for key, tp in fields_of(section).items():
                for value in [*candidates(tp), _REMOVED, _MISSPELT]:
                    doc = copy.deepcopy(base)
                    node = node_at(doc, path)
                    if value is _REMOVED:
                        node.pop(key, None)
                    elif value is _MISSPELT:
                        node[key[:-1] + "x"] = node.pop(key, 1)
                    else:
                        node[key] = copy.deepcopy(value)
                    yield f"base {index} {path} {key} = {value!r}", doc


_REMOVED, _MISSPELT = object(), object()


def test_the_bases_are_valid_for_both() -> None:
    for base in BASES:
        old = outcome(reference_validate, base)
        assert old[0] == "accepted", old
        assert old == outcome(scenarios.validate, base)


def test_every_single_change_is_judged_alike() -> None:
    """Exhaustive over the catalogue: each bound, choice and type of each key of each table."""
    differ, counts = [], {"accepted": 0, "refused": 0}
    for what, doc in single_changes():
        counts[outcome(reference_validate, copy.deepcopy(doc))[0]] += 1
        found = judged_alike(doc)
        if found:
            differ.append(f"{what}: {found}")
    assert not differ, "\n".join(differ[:20]) + f"\n({len(differ)} differ)"
    assert counts["accepted"] > 500 and counts["refused"] > 1000, counts


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changed_documents())
def test_the_plain_loader_refuses_and_accepts_what_the_pydantic_models_did(
        doc: dict[str, Any]) -> None:
    assert judged_alike(doc) is None


@pytest.mark.parametrize("text", [
    'duration = "1h"\n[[sensors]]\nid = "28-0000075a1b2c"\nprofile = { kind = "sawtooth" }\n',
    'duration = "1h"\ncolour = "blue"\n[[sensors]]\nid = "x"\nprofile = { kind = "sine" }\n',
    'duration = "1h"\n[[sensors]]\nid = "28-0000075a1b2c"\nprofile = { kind = "constant", '
    'value = 1 }\n[[faults]]\nkind = "meltdown"\nat = 0\n[[faults]]\nat = 0\n',
])
def test_typical_mistakes_read_as_before(text: str) -> None:
    """The reasons the pydantic models gave, word for word (no close name to suggest here)."""
    with pytest.raises(ConfigError) as old:
        reference_validate(tomllib.loads(text), "s.toml")
    with pytest.raises(ConfigError) as new:
        scenarios.loads(text, "s.toml")
    assert sorted(new.value.errors) == sorted(old.value.errors)
