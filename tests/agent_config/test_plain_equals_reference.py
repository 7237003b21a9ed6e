"""The agent's plain config loader refuses what the pydantic models refused, and reads what they
accepted to the same values.

The oracle is tests/agent_config/reference_models.py: the agent's pydantic models as they were
(their ``[mqtt]`` built on the hub's live ``MqttConnection``). Documents are the shipped example
and small valid files, changed at 1-4 places that Hypothesis picks from every section the
document has (root, ``[mqtt]``, ``[mqtt.tls]``, ``[outbox]``, each source, ``[defaults]``, each
sensor, its rules, smoothing and each threshold): a known key set to a value of another type, out
of its range, a bad identifier, a secret reference (set, unset, a file, inline), numbers and
booleans written as strings, inf and nan; an unknown or misspelt key; a key removed; a source's
kind changed.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import os
import re
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr

from edge_agent.config import AgentConfig
from program_support import plain_config
from program_support.config_loading import collect_deprecations
from program_support.plain_config import Secret, fields_of, is_section
from schemas.errors import ConfigError
from tests.agent_config.reference_models import parse_reference
from tests.plain_config_documents import node_at, sections

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "agent.example.toml"
EXAMPLES = int(os.environ.get("TP_CONFIG_EXAMPLES", "1500"))
SECRET_FILE = Path(__file__)  # a file:/path secret: its first line

BASES: list[dict[str, Any]] = [
    tomllib.loads(re.sub(r'"file:[^"]*"', '"env:PC_SET"', EXAMPLE.read_text())),
    {"site": "s", "device_id": "d", "mqtt": {}, "sources": [{"kind": "onewire"}]},
    {"site": "lab", "device_id": "pi-9", "mqtt": {"host": "b", "tls": {"insecure": True}},
     "sources": [{"kind": "serial", "port": "loop://"}, {"kind": "simulator",
                                                          "scenario": "greenhouse_day"}],
     "defaults": {"thresholds": [{"name": "hi", "above": 30}, {"name": "lo", "below": 5}],
                  "rate_limit_per_min": 2.0}},
]


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PC_SET", "s3cret")
    monkeypatch.delenv("PC_UNSET", raising=False)


# -- where a document can be changed: tests/plain_config_documents.py ---------------------------
LOCATIONS = [list(sections(base, AgentConfig)) for base in BASES]

# -- values -------------------------------------------------------------------------------------
WORDS = ["", "5", " 5 ", "+5", "5_0", "5.0", "5.", "5.5", "-1", "1e3", "0x10", "inf", "nan", "yes",
         "no", "on", "off", "t", "f", "TRUE", "2", "json", "avro", "JSON", "auto", "3.1.1", "degC",
         "degF", "K", "median", "mean", "info", "warning", "critical", "debug", "error", "console",
         "serial", "onewire", "simulator", "serail", "a/b", "pi-01", "x" * 65, "x" * 129, "_x",
         "#", "normal", "unknown", "env:PC_SET", "env:PC_UNSET", "env:", "file:", "hunter2",
         "file:/nonexistent/secret", "/tmp/x", "greenhouse_day", "nope", "loop://", "hi", "lo"]
NUMBERS = [0, 1, -1, 2, 3, 4, 5, 9, 10, 31, 32, 33, 60, 61, 99, 100, 299, 300, 301, 999, 1000,
           1001, 1883, 60000, 60001, 65535, 65536, 2**63 - 1, -(2**63), 0.0, -0.0, 0.5, -0.5, 1.5,
           5.0, 60.0, 60.5, 300.5, 1e9, 1e300, math.inf, -math.inf, math.nan, True, False]
SCALARS = (st.sampled_from(WORDS) | st.sampled_from(NUMBERS) | st.integers()
           | st.floats() | st.text(max_size=8) | st.dates()
           | st.builds(lambda: datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)))
THRESHOLD = st.fixed_dictionaries(
    {"name": st.sampled_from(["hi", "lo", "h2", "normal", "a/b"])},
    optional={"above": st.sampled_from([1, 5.0, 30, 31.5, -math.inf, "7"]) | SCALARS,
              "below": st.sampled_from([0, 2.0, 29, 30]) | SCALARS,
              "hysteresis": st.sampled_from([0, 0.5, 1, 20, -1]),
              "dwell_s": st.sampled_from([0, 10, -1]),
              "severity": st.sampled_from(["warning", "critical", "bad"])})
VALUES = st.one_of(
    SCALARS, SCALARS, SCALARS,
    st.lists(SCALARS, max_size=3),
    st.lists(THRESHOLD, max_size=4),
    st.lists(st.sampled_from(["t1", "28-0001", "a/b", "t1"]), max_size=3),
    st.dictionaries(st.sampled_from(["kind", "window", "name", "above", "insecure", "ca_file",
                                     "key_file", "cert_file", "insecure_skip_verify", "x"]),
                    SCALARS, max_size=3),
    st.builds(lambda: {"kind": "mean", "window": 5}),
    st.builds(lambda: {"insecure_skip_verify": True}),
    st.builds(lambda: {"key_file": "k.pem"}),
    st.builds(lambda: {"port": "x"}),
    st.builds(lambda: [{"kind": "onewire", "name": "a"}, {"kind": "onewire", "name": "a"}]),
    st.builds(lambda: [{"kind": "onewire"}, {"kind": "simulator", "scenario": "nope"}]),
    st.builds(lambda: {"t1": {"unit": "degF", "rules": {"min_c": 10, "max_c": 0}}}),
    st.builds(lambda: {"a/b": {}}),
)


def _near(bound: float) -> list[Any]:
    return [bound, bound + 1, bound - 1, bound + 0.5, bound - 0.5, float(bound), str(bound)]


def candidates(tp: Any) -> list[Any]:
    """Values near what a field's type and rules allow: its choices and a near miss, its bounds
    and one past them, numbers and booleans written as strings, other types."""
    origin = typing.get_origin(tp)
    members = typing.get_args(tp)
    if origin is typing.Annotated:
        base, *rules = members
        bounds = [getattr(r, name) for r in rules for name in ("gt", "ge", "lt", "le")
                  if getattr(r, name, None) is not None]
        sizes = [getattr(r, name) for r in rules for name in ("min", "max")
                 if getattr(r, name, None) is not None]
        sized = [n for size in sizes for n in (size, size + 1, max(size - 1, 0))]
        inner = candidates(base)
        if typing.get_origin(base) is list:
            item = inner[1] if len(inner) > 1 and isinstance(inner[1], list) else ["t1"]
            return [*inner, *[(item * size)[:size] for size in sized]]
        if base is str:
            return [*inner, *["x" * n for n in sized]]
        return [*inner, *[v for bound in bounds for v in _near(bound)]]
    if origin is typing.Literal:
        return [*members, *[m.upper() for m in members if isinstance(m, str)], 5, "x"]
    if origin is typing.Union or (origin is None and members):
        return [v for m in members if m is not type(None) for v in candidates(m)]
    if origin is list:
        item = candidates(members[0])
        return [[], item[:1], item[:3], "t1", [5]]
    if origin is dict:
        return [{}, [], {"t1": {}}, {"a/b": {}}]
    if tp is bool:
        return [True, False, 1, 0, 2, 0.0, 1.5, "yes", "off", "T", "2", "true ", "x"]
    if tp is int:
        return [0, 1, 5, -1, 1.0, 2.5, "7", " 7 ", "7.0", "7.", "1e3", "x", True, 2.0**63,
                math.inf, math.nan]
    if tp is float:
        return [0, 0.5, 1, 2.5, 61, 1e9, -1.0, "3.5", " 4 ", "1e3", "inf", "x", True, math.inf,
                -math.inf, math.nan, 2**70]
    if tp is Path:
        return ["/tmp/x", "", "rel/x", 5]
    if tp is Secret:
        return ["env:PC_SET", "env:PC_UNSET", "env:", f"file:{SECRET_FILE}",
                "file:/nonexistent/secret", "hunter2", "", 5]
    if tp is str:
        return ["t1", "x", "a b", "", 5, True, ["x"]]
    if is_section(tp):
        return [{}, "x", 5, [{}], {"x": 1}]
    return [5, "x"]


def values_for(tp: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(candidates(tp))


@st.composite
def changed_documents(draw: st.DrawFn) -> dict[str, Any]:
    index = draw(st.integers(0, len(BASES) - 1))
    doc = copy.deepcopy(BASES[index])
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4]))):
        path, section = draw(st.sampled_from(LOCATIONS[index]))
        node: Any = doc
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                node = None
                break
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
            near = values_for(fields_of(section)[key])
            node[key] = draw(st.one_of(near, near, near, VALUES))
    return doc


# -- the same values, whichever model read them -------------------------------------------------
def plain(value: Any) -> Any:
    """A comparable form of a loaded config (types kept: 1 is not 1.0 is not True)."""
    if isinstance(value, BaseModel):
        return {name: plain(getattr(value, name)) for name in type(value).model_fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, SecretStr | Secret):
        return ("secret", value.get_secret_value())
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return (type(value).__name__, repr(value))


def outcome(read: Any, doc: dict[str, Any]) -> tuple[str, Any, list[str]]:
    with collect_deprecations() as notes:
        try:
            return "accepted", plain(read(doc)), notes
        except ConfigError as exc:
            assert exc.errors
            assert all(reason for _, reason in exc.errors), exc.errors
            return "refused", sorted(exc.errors), notes


def new_loader(doc: dict[str, Any]) -> AgentConfig:
    return plain_config.parse(doc, AgentConfig, "agent.toml")


def single_changes() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every base with one key of one section changed to each of its candidate values, removed,
    or misspelt."""
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


def test_every_single_change_is_judged_alike() -> None:
    """Exhaustive over the catalogue: each bound, choice and type of each key of each section."""
    differ, counts = [], {"accepted": 0, "refused": 0}
    for what, doc in single_changes():
        old = outcome(parse_reference, copy.deepcopy(doc))
        new = outcome(new_loader, copy.deepcopy(doc))
        counts[old[0]] += 1
        if old[0] != new[0] or (old[0] == "accepted" and old[1:] != new[1:]):
            differ.append(f"{what}\n  pydantic {old[0]} {old[1] if old[0] == 'refused' else ''}"
                          f"\n  plain    {new[0]} {new[1] if new[0] == 'refused' else ''}")
    assert not differ, "\n".join(differ[:20]) + f"\n({len(differ)} differ)"
    assert counts["accepted"] > 1000 and counts["refused"] > 1000, counts


def test_the_bases_are_valid_for_both() -> None:
    for base in BASES:
        old, new = outcome(parse_reference, base), outcome(new_loader, base)
        assert old[0] == new[0] == "accepted", (old, new)
        assert old[1] == new[1]


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(changed_documents())
def test_the_plain_loader_refuses_and_accepts_what_the_pydantic_models_did(
        doc: dict[str, Any]) -> None:
    old = outcome(parse_reference, copy.deepcopy(doc))
    new = outcome(new_loader, copy.deepcopy(doc))
    assert old[0] == new[0], f"pydantic {old}\nplain    {new}"
    if old[0] == "accepted":
        assert old[1] == new[1]
        assert old[2] == new[2]  # the same deprecation notes


def test_the_agents_mqtt_section_has_every_shared_key_with_the_hubs_default() -> None:
    """The keys both programs read in ``[mqtt]``: the hub's MqttConnection (pydantic, the
    reference) and the agent's MqttSettings (plain) name the same keys with the same defaults."""
    from edge_agent.config import MqttSettings
    from edge_agent.config import TlsSettings as PlainTls
    from program_support.mqtt_settings import MqttConnection, TlsSettings

    for hub, agent in ((MqttConnection, MqttSettings), (TlsSettings, PlainTls)):
        defaults = {f.name: f.default for f in dataclasses.fields(agent)}
        for name, info in hub.model_fields.items():
            assert name in defaults, f"{agent.__name__} lacks the shared key {name}"
            assert defaults[name] == info.default, (name, defaults[name], info.default)
