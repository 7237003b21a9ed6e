"""program_support/plain_config.py on small sections: each rule's reason, problems on the key
they concern, old keys, tagged unions, secrets that never print."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pytest

from program_support.config_loading import collect_deprecations, secrets_unresolved
from program_support.plain_config import (
    FieldProblem,
    Length,
    Range,
    Secret,
    Tagged,
    load,
    parse,
)
from schemas.errors import ConfigError
from schemas.ids import SensorId


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    OLD_KEYS = (("every", "every_s"),)

    kind: Literal["probe"] = "probe"
    every_s: Annotated[float, Range(gt=0, le=60)] = 1.0
    tries: Annotated[int, Range(ge=1)] = 3
    sensors: Annotated[list[SensorId], Length(min=1)] = field(default_factory=lambda: ["t1"])
    token: Secret | None = None

    def __post_init__(self) -> None:
        if self.tries > 10 * self.every_s:
            raise FieldProblem("tries", f"at most 10 per second of every_s ({self.every_s})")


@dataclass(frozen=True, slots=True, kw_only=True)
class Other:
    kind: Literal["other"]
    name: Annotated[str, Length(max=3)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Root:
    parts: list[Annotated[Probe | Other, Tagged("kind", "part kind")]]
    mode: Literal["a", "b", "c"] = "a"


def problems(data: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(data, Root, "t.toml")
    return list(info.value.errors)


def test_every_problem_at_once_with_its_key_path_in_the_hubs_words() -> None:
    assert problems({"parts": [{"kind": "probe", "every_s": 0, "tries": "x", "sensors": []},
                               {"kind": "other", "name": "long"}, {"kind": "othr"}, 5],
                     "mode": "d", "mdoe": 1}) == [
        ("parts[0].every_s", "Input should be greater than 0"),
        ("parts[0].tries", "Input should be a valid integer, unable to parse string as an "
                           "integer"),
        ("parts[0].sensors", "List should have at least 1 item after validation, not 0"),
        ("parts[1].name", "String should have at most 3 characters"),
        ("parts[2].kind", "unknown part kind 'othr' (did you mean 'other'?); one of: probe, "
                          "other"),
        ("parts[3]", "Input should be a table ([section] or { key = value })"),
        ("mode", "Input should be 'a', 'b' or 'c'"),
        ("", "unknown key 'mdoe' (did you mean 'mode'?)"),
    ]


def test_a_cross_field_problem_names_its_key_and_runs_only_on_valid_fields() -> None:
    assert problems({"parts": [{"kind": "probe", "every_s": 0.5, "tries": 6}]}) == [
        ("parts[0].tries", "at most 10 per second of every_s (0.5)")]
    assert problems({"parts": [{"kind": "probe", "every_s": -1, "tries": 60}]}) == [
        ("parts[0].every_s", "Input should be greater than 0")]
    assert problems({"parts": [{"kind": "probe", "sensors": ["ok", "a/b"]}]})[0][0] == \
        "parts[0].sensors[1]"


def test_values_are_read_as_pydantic_reads_them() -> None:
    root = parse({"parts": [{"kind": "probe", "every_s": "2.5", "tries": 4.0}]}, Root)
    probe = root.parts[0]
    assert isinstance(probe, Probe)
    assert (probe.every_s, probe.tries, probe.sensors) == (2.5, 4, ["t1"])
    assert problems({"parts": [{"kind": "probe", "tries": 4.5}]}) == [
        ("parts[0].tries", "Input should be a valid integer, got a number with a fractional "
                           "part")]


def test_an_old_key_is_read_with_a_note_and_refused_beside_its_new_name() -> None:
    with collect_deprecations() as notes:
        root = parse({"parts": [{"kind": "probe", "every": 5}]}, Root)
    assert isinstance(root.parts[0], Probe) and root.parts[0].every_s == 5.0
    assert notes == ["parts[0].every: renamed every_s (same meaning)"]
    assert problems({"parts": [{"kind": "probe", "every": 5, "every_s": 5}]}) == [
        ("parts[0]", "every is the old name of every_s: keep one")]


def test_secrets_resolve_and_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAIN_TOKEN", "t0ps3cret")
    root = parse({"parts": [{"kind": "probe", "token": "env:PLAIN_TOKEN"}]}, Root)
    token = root.parts[0].token  # type: ignore[union-attr]
    assert isinstance(token, Secret) and token.get_secret_value() == "t0ps3cret"
    assert "t0ps3cret" not in repr(root) and "t0ps3cret" not in str(token)
    assert problems({"parts": [{"kind": "probe", "token": "t0ps3cret"}]}) == [
        ("parts[0].token", "a secret is written 'env:VARIABLE' or 'file:/path', never inline "
                           "in the file")]
    with secrets_unresolved() as listed:
        parse({"parts": [{"kind": "probe", "token": "env:NOT_SET_ANYWHERE"}]}, Root)
    assert listed == ["env:NOT_SET_ANYWHERE"]


def test_a_file_is_read_with_toml_errors_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('mode = "b"\n[[parts]]\nkind = "other"\nname = "abc"\n')
    assert load(path, Root).mode == "b"
    path.write_text('mode = b\n')
    with pytest.raises(ConfigError) as info:
        load(path, Root)
    assert info.value.errors[0][0] == "line 1"


def test_a_union_without_a_tag_is_a_programming_error() -> None:
    @dataclass(frozen=True, slots=True)
    class Untagged:
        part: Probe | Other

    with pytest.raises(TypeError, match="use Tagged"):
        parse({"part": {}}, Untagged)
