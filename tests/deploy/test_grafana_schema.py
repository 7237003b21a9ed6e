"""deploy/'s dashboards against the JSON Schema of the Grafana version deploy/compose.yaml pins
(generated from that version's @grafana/schema npm package; tests/deploy/grafana_schema.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.grafana_files import DASHBOARDS, iter_panels, load_dashboards
from tests.deploy.grafana_schema import PANEL_TYPES, grafana_schemas, schema_names, validate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def schema_cache() -> Path:
    return grafana_schemas()


def test_every_dashboard_fits_the_pinned_grafana_schema(schema_cache: Path) -> None:
    boards = sorted(DASHBOARDS.glob("*.json"))
    assert len(boards) == 3
    assert validate(schema_cache, boards) == []
    # every panel type the dashboards use has its options schema
    used = {p["type"] for b in load_dashboards().values() for p in iter_panels(b)}
    assert used <= set(PANEL_TYPES)
    assert {f"{t}.Options" for t in used} <= set(schema_names(schema_cache))


def test_the_schema_check_catches_what_grafana_would_not_take(schema_cache: Path,
                                                               tmp_path: Path) -> None:
    board = json.loads((DASHBOARDS / "thermopipe-temperatures.json").read_text())
    board["schemaVersion"] = "39"                          # a string, not a number
    board["panels"][0]["gridPos"]["w"] = "full"            # a string, not a number
    board["panels"][0]["options"]["legend"]["displayMode"] = "tabel"   # not an enum value
    board["panels"][0]["fieldConfig"]["defaults"]["custom"]["lineWidht"] = 2  # misspelt
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(board))
    errors = "\n".join(validate(schema_cache, [broken]))
    for needle in ("/schemaVersion must be number", "/panels/0/gridPos/w must be number",
                   "options/legend/displayMode must be equal to one of the allowed values",
                   '"additionalProperty":"lineWidht"'):
        assert needle in errors, errors
