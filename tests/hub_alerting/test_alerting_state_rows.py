"""The alert state saved as rows: each decision writes only the entries it changed (issue 26).

Property: whatever the engine does (fire, escalate, resolve, offline graces, repeats, names from
births, redeliveries), applying every ``take_changes`` in order to what was saved gives exactly
``snapshot()``, in memory and through the real SQLite store. Then a fleet of first-seen devices:
a decision's write stays one condition and one group however many are open, and a state saved
whole by an older hub opens as rows.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.alerting.engine import META, STATE_VERSION, AlertEngine
from hub.alerting.store import AlertStore
from hub.config import AlertingConfig
from tests.hub_alerting.helpers import T0, Feed, env


def config(offline_for_s: float = 0, repeat_interval_s: float = 3600) -> AlertingConfig:
    return AlertingConfig.model_validate({
        "notifiers": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"},
                      "log": {"type": "log"}},
        "rules": [{"name": "all", "match": {"severity_at_least": "warning"},
                   "notifiers": ["hook", "log"]},
                  {"name": "per-site", "match": {"kind": "state_change"},
                   "notifiers": ["log"], "group_by": ["site"]}],
        "repeat_interval_s": repeat_interval_s, "offline_for_s": offline_for_s})


def apply(saved: dict[str, Any], changes: dict[str, dict[str, Any]]) -> None:
    """What the store does with ``take_changes``, on a snapshot-shaped dict."""
    for section, entries in changes.items():
        for key, entry in entries.items():
            if section == META:
                saved[key] = entry
            elif entry is None:
                saved.setdefault(section, {}).pop(key, None)
            else:
                saved.setdefault(section, {})[key] = entry


def same(saved: dict[str, Any], engine: AlertEngine) -> bool:
    """The saved rows hold the engine's state (empty sections are no rows)."""
    whole = json.loads(json.dumps(engine.snapshot()))
    return ({k: v for k, v in whole.items() if v != {}}
            == {k: v for k, v in json.loads(json.dumps(saved)).items() if v != {}})


def _events() -> list[Any]:
    f, g = Feed("d1"), Feed("d2", site="s2")
    lost = T0 + timedelta(seconds=100)
    return [env(f.state("t1", "high")), env(f.fault("t1", "crc_error", True)),
            env(g.status(False, "will"), received_at=lost),
            env(f.state("t1", "very_high", prev="high", severity="critical")),
            env(f.rate("t2", True)), env(f.state("t1", "normal", prev="very_high")),
            env(g.status(True, "birth", session=2, names={"t1": "freezer"}),
                received_at=lost + timedelta(seconds=5)),
            env(f.fault("t1", "crc_error", False)), env(f.rate("t2", False)),
            env(f.state("t1", "high", replayed=True)), env(g.state("t1", "high")),
            env(Feed("d3", site="s2").state("t4", "high")),
            env(g.state("t1", "normal", prev="high"))]


EVENTS = _events()


@settings(max_examples=120, deadline=None)
@given(st.lists(st.one_of(st.integers(0, len(EVENTS) - 1),
                          st.tuples(st.just("tick"), st.integers(0, 7200))), max_size=30),
       st.sampled_from([0, 60]))
def test_the_changes_applied_in_order_give_the_whole_state(
        steps: list[Any], offline_for_s: float) -> None:
    cfg = config(offline_for_s=offline_for_s, repeat_interval_s=600)
    eng = AlertEngine(cfg)
    saved: dict[str, Any] = {}
    apply(saved, eng.take_changes())
    assert saved == {"version": STATE_VERSION}
    for i, step in enumerate(steps, start=1):
        if isinstance(step, tuple):
            eng.tick(T0 + timedelta(seconds=step[1]))
        else:
            eng.process(EVENTS[step], EVENTS[step].received_at)
        apply(saved, eng.take_changes())
        assert same(saved, eng)
        if i % 5 == 0:  # now and then a restart from what was saved
            eng = AlertEngine(cfg, json.loads(json.dumps(saved)))
            assert eng.take_changes() == {}


def test_the_store_saves_and_loads_the_rows(tmp_path: Path) -> None:
    cfg = config(offline_for_s=60, repeat_interval_s=600)
    store = AlertStore(tmp_path)
    eng = AlertEngine(cfg)
    for i, e in enumerate(EVENTS):
        eng.process(e, e.received_at)
        if i % 4 == 3:
            eng.tick(T0 + timedelta(seconds=700 * i))
        store.commit(eng.take_changes(), [], 0.0)
        loaded = store.load_snapshot()
        assert loaded is not None and same(loaded, eng)
    store.close()
    reopened = AlertStore(tmp_path)
    restored = AlertEngine(cfg, reopened.load_snapshot())
    assert json.loads(json.dumps(restored.snapshot())) == json.loads(json.dumps(eng.snapshot()))
    assert all(restored.process(e, e.received_at).redelivered == 1 for e in EVENTS[-3:])
    reopened.close()


def test_a_fleet_of_first_seen_devices_writes_one_condition_and_one_group_each(
        tmp_path: Path) -> None:
    """Every crossing from a device never seen: the open groups pile up (nothing resolves),
    but each decision saves its own entries only (it saved the whole state before issue 26,
    and each alert of a fleet was slower than the last)."""
    cfg = config()
    store = AlertStore(tmp_path)
    eng = AlertEngine(cfg)
    store.commit(eng.take_changes(), [], 0.0)
    for n in range(300):
        feed = Feed(f"new{n}", site=f"site{n // 50}")
        out = eng.process(env(feed.state("t1", "high")), T0)
        assert [a.alert.rule for a in out.notifications][:1] == ["all"]
        changes = eng.take_changes()
        assert set(changes) == {"conditions", "groups"}
        assert len(changes["conditions"]) == 1
        assert len(changes["groups"]) == 2  # its own, and its site's (per-site rule)
        store.commit(changes, [], 0.0)
    assert len(eng.groups) == 300 + 6
    with sqlite3.connect(tmp_path / "alerting.sqlite3") as db:
        rows = dict(db.execute("SELECT section, COUNT(*) FROM engine_entries GROUP BY section"))
    assert rows == {"meta": 1, "conditions": 300, "groups": 306}
    loaded = store.load_snapshot()
    assert loaded is not None and same(loaded, eng)
    store.close()


def test_a_state_saved_whole_by_an_older_hub_opens_as_rows(tmp_path: Path) -> None:
    cfg = config()
    eng = AlertEngine(cfg)
    f = Feed()
    eng.process(env(f.state("t1", "high")), T0)
    eng.process(env(f.fault("t2", "disconnected", True)), T0)
    old = {k: v for k, v in eng.snapshot().items() if k != "pending"} | {"version": 1}
    with sqlite3.connect(tmp_path / "alerting.sqlite3") as db:  # the table as it was
        db.execute("CREATE TABLE engine_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
                   "snapshot TEXT NOT NULL)")
        db.execute("INSERT INTO engine_state VALUES (1, ?)", (json.dumps(old),))
    db.close()
    store = AlertStore(tmp_path)
    loaded = store.load_snapshot()
    assert loaded is not None and loaded["version"] == 1
    restored = AlertEngine(cfg, loaded)
    assert restored.groups.keys() == eng.groups.keys() and restored.pending == {}
    # the first commit saves today's version; the whole-state row is gone
    assert restored.take_changes() == {META: {"version": STATE_VERSION}}
    store.commit({META: {"version": STATE_VERSION}}, [], 0.0)
    store.close()
    with sqlite3.connect(tmp_path / "alerting.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM engine_state").fetchone() == (0,)
    db.close()
    again = AlertStore(tmp_path)
    loaded = again.load_snapshot()
    assert loaded is not None and loaded["version"] == STATE_VERSION
    assert AlertEngine(cfg, loaded).groups.keys() == eng.groups.keys()
    again.close()
