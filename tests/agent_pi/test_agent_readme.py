"""edge_agent/README.md against the code: every config key with its default, every log event."""

from __future__ import annotations

import re

from tests.agent_pi.config_reference import reference
from tests.agent_pi.helpers import ROOT

README = ROOT / "edge_agent" / "README.md"


def documented_rows() -> dict[str, str]:
    text = README.read_text()
    match = re.search(r"<!-- config-reference:begin -->\n(.*?)<!-- config-reference:end -->",
                      text, re.DOTALL)
    assert match, "edge_agent/README.md lost its config-reference markers"
    rows: dict[str, str] = {}
    for line in match.group(1).splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        key = cells[0].strip("`")
        assert key not in rows, f"{key} documented twice"
        assert len(cells) == 3 and cells[2], f"{key}: no description"
        rows[key] = cells[1]
    return rows


def test_every_config_key_is_documented_with_its_default() -> None:
    model = dict(reference())
    documented = documented_rows()
    missing = sorted(set(model) - set(documented))
    stale = sorted(set(documented) - set(model))
    assert not missing, f"config keys missing from edge_agent/README.md: {missing}"
    assert not stale, f"edge_agent/README.md documents keys the config no longer has: {stale}"
    wrong = {k: (documented[k], v) for k, v in model.items() if documented[k] != v}
    assert not wrong, f"defaults differ (README, model): {wrong}"


def test_the_logged_events_named_in_the_readme_exist_in_the_code() -> None:
    text = README.read_text()
    section = text.split("## What it logs", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"\| [^|]*", section))
    logged = "\n".join(p.read_text() for p in [*(ROOT / "edge_agent").rglob("*.py"),
                                                ROOT / "program_support" / "supervision.py"])
    events = {n for row in names for n in re.findall(r"`([a-z0-9_]+\.[a-z0-9_]+)`", row)}
    assert len(events) > 20
    absent = sorted(e for e in events if f'"{e}"' not in logged)
    assert not absent, f"README names log events the agent never logs: {absent}"


def test_the_readme_covers_the_sources_and_1wire_setup() -> None:
    text = README.read_text()
    for needed in ("/dev/serial/by-id/", "dtoverlay=w1-gpio", "w1_dir", 'kind = "simulator"',
                   "edge-agent status", "Loss window", "journalctl -u edge-agent -p err"):
        assert needed in text, needed
