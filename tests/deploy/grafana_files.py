"""Reading deploy/'s Grafana files the way Grafana does, for the tests.

Collects every InfluxQL query of the dashboards (panel targets, annotations, template variables)
and expands Grafana's macros and template variables, so the queries can run against a real
InfluxDB 1.x (the same InfluxQL works on 2.x through its v1 API and on 3.x).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"


@dataclass(frozen=True)
class Query:
    dashboard: str     # dashboard uid
    kind: str          # "panel" | "annotation" | "variable"
    name: str          # panel title, annotation name or variable name
    ref: str           # refId ("Anno" for annotations, "var" for variables)
    text: str          # raw InfluxQL with Grafana's macros
    datasource_uid: str | None

    @property
    def key(self) -> str:
        return f"{self.dashboard}:{self.kind}:{self.name}:{self.ref}"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_dashboards() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        out[board["uid"]] = board
    return out


def _uid(obj: Mapping[str, Any]) -> str | None:
    ds = obj.get("datasource")
    return ds.get("uid") if isinstance(ds, dict) else None


def iter_panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def iter_queries(board: Mapping[str, Any]) -> Iterator[Query]:
    uid = board["uid"]
    for panel in iter_panels(board):
        for target in panel.get("targets", []):
            yield Query(uid, "panel", panel["title"], target["refId"], target["query"],
                        _uid(target) or _uid(panel))
    for anno in board.get("annotations", {}).get("list", []):
        if anno.get("builtIn"):
            continue
        target = anno.get("target", {})
        yield Query(uid, "annotation", anno["name"], "Anno", target.get("query") or anno["query"],
                    _uid(target) or _uid(anno))
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield Query(uid, "variable", var["name"], "var", text, _uid(var))


def all_queries() -> list[Query]:
    return [q for board in load_dashboards().values() for q in iter_queries(board)]


# --- Grafana's interpolation -------------------------------------------------------------------

def escape_regex(value: str) -> str:
    """What Grafana's InfluxDB datasource does to a variable's value inside /.../ regexes."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def regex_value(values: Sequence[str]) -> str:
    """One value as itself, several (or "All") as Grafana's ``(a|b)`` alternation."""
    escaped = [escape_regex(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand(text: str, variables: Mapping[str, Sequence[str]], *, start_ms: int, end_ms: int,
           interval: str = "1m", interval_ms: int = 60_000) -> str:
    """The query Grafana sends: macros and ``$var`` / ``${var}`` replaced."""
    out = text.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    out = out.replace("$__interval_ms", str(interval_ms)).replace("$__interval", interval)
    out = out.replace("$__from", str(start_ms)).replace("$__to", str(end_ms))
    for name in sorted(variables, key=len, reverse=True):  # $sensor before a $s variable
        value = regex_value(variables[name])
        out = out.replace("${" + name + "}", value).replace("$" + name, value)
    leftover = re.findall(r"\$\{?\w+", out)
    assert not leftover, f"unexpanded Grafana variables {leftover} in {out!r}"
    return out
