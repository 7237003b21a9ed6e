"""Every query of deploy/'s Grafana dashboards (panels, annotations, template variables), with
Grafana's macros and variables filled in, against a real InfluxDB 1.x that the pipeline has just
filled through the hub (tests/deploy/pipeline_fill.py). Each must return the series the data
implies, for "All" selected and for one site/device/sensor (whose name needs regex escaping)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.deploy.grafana_files import Query, all_queries, expand
from tests.deploy.pipeline_fill import HUB_ID, LAB, LAB_DEV, SENSORS, Filled
from tests.deploy.pipeline_fill import fill_through_hub as fill
from tests.servers import InfluxDB1, Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.slow]

Rows = list[dict[str, Any]]
ALL = "all"
ONE = "one"


def selection(which: str) -> dict[str, list[str]]:
    if which == ALL:  # Grafana's "All": every value of the variable, as (a|b)
        return {"site": sorted({s for s, _ in SENSORS}), "device": sorted({d for _, d in SENSORS}),
                "sensor": sorted({x for v in SENSORS.values() for x in v}), "hub": [HUB_ID],
                "lookback": ["7d"]}
    return {"site": [LAB], "device": [LAB_DEV], "sensor": ["tank"], "hub": [HUB_ID],
            "lookback": ["7d"]}


def in_selection(which: str, site: str, device: str, sensor: str | None = None) -> bool:
    sel = selection(which)
    return site in sel["site"] and device in sel["device"] and (
        sensor is None or sensor in sel["sensor"])


@pytest.fixture(scope="module")
def filled(influxdb: InfluxDB1, mosquitto: Mosquitto,
           tmp_path_factory: pytest.TempPathFactory) -> Filled:
    return fill(influxdb, mosquitto.host, mosquitto.port, tmp_path_factory.mktemp("grafana-hub"))


@pytest.fixture(scope="module")
def run(influxdb: InfluxDB1, filled: Filled) -> Callable[[Query, str], Rows]:
    start_ms = int((filled.base - timedelta(minutes=10)).timestamp() * 1000)
    end_ms = int((filled.base + timedelta(minutes=40)).timestamp() * 1000)

    def run_query(query: Query, which: str) -> Rows:
        # The hub's health points span the few seconds of the run (one per HEALTH_INTERVAL_S):
        # its panels get the interval Grafana picks for a short range, so rates have two buckets.
        short = '"hub_health"' in query.text
        text = expand(query.text, selection(which), start_ms=start_ms, end_ms=end_ms,
                      interval="1s" if short else "1m", interval_ms=1000 if short else 60_000)
        return influxdb.series_rows(text, filled.db)
    return run_query


# --- what each query must return --------------------------------------------------------------

def pairs(rows: Rows) -> set[tuple[str, str]]:
    return {(r["device"], r["sensor"]) for r in rows}


def non_null(rows: Rows, column: str) -> list[Any]:
    return [r[column] for r in rows if r.get(column) is not None]


def exp_temperature(unit: str) -> Callable[[Filled, str, Rows], None]:
    """The query of one unit's sensors: exactly those, never a fault's value."""
    def check(f: Filled, which: str, rows: Rows) -> None:
        events = [e for e in f.events if e.kind != "fault" and e.unit == unit
                  and in_selection(which, e.site, e.device_id, e.sensor_id)]
        assert pairs(rows) == {(e.device_id, e.sensor_id) for e in events}
        assert 85.0 not in non_null(rows, "last")  # the power-on fault value is no temperature
        if events:
            assert max(non_null(rows, "last")) == max(e.value for e in events)
    return check


def exp_thresholds(unit: str) -> Callable[[Filled, str, Rows], None]:
    def check(f: Filled, which: str, rows: Rows) -> None:
        crossed = [e for e in f.events if e.kind == "state_change" and e.threshold is not None
                   and e.unit == unit and in_selection(which, e.site, e.device_id, e.sensor_id)]
        drawn = [r for r in rows if r.get("last") is not None]
        assert {(r["device"], r["sensor"], r["state"]) for r in drawn} == {
            (e.device_id, e.sensor_id, e.new_state) for e in crossed}
        assert {r["last"] for r in drawn} == {e.threshold for e in crossed}
    return check


def exp_summary(unit: str) -> Callable[[Filled, str, Rows], None]:
    """Summaries per window, and their 15-minute long-term series (the same min and max)."""
    def check(f: Filled, which: str, rows: Rows) -> None:
        sums = [s for s in f.summaries if s.unit == unit
                and in_selection(which, s.site, s.device_id, s.sensor_id)]
        assert pairs(rows) == {(s.device_id, s.sensor_id) for s in sums}
        if sums:
            assert min(non_null(rows, "min")) == min(s.min for s in sums if s.min is not None)
            assert max(non_null(rows, "max")) == max(s.max for s in sums if s.max is not None)
            assert non_null(rows, "mean")
    return check


def exp_current_band(f: Filled, which: str, rows: Rows) -> None:
    last: dict[tuple[str, str], Any] = {}
    for e in f.events:
        if e.kind == "state_change" and in_selection(which, e.site, e.device_id, e.sensor_id):
            last[(e.device_id, e.sensor_id)] = e
    assert {(r["device"], r["sensor"]): (r["state"], r["previous_state"], r["unit"])
            for r in rows} == {k: (e.new_state, e.previous_state, e.unit)
                               for k, e in last.items()}


def exp_faults(f: Filled, which: str, rows: Rows) -> None:
    faults = [e for e in f.events if e.kind == "fault"
              and in_selection(which, e.site, e.device_id, e.sensor_id)]
    assert sorted((r["device"], r["fault"], r["active"]) for r in rows) == sorted(
        (e.device_id, e.fault, e.active) for e in faults)


def exp_events_by_kind(f: Filled, which: str, rows: Rows) -> None:
    want = Counter(e.kind for e in f.events
                   if in_selection(which, e.site, e.device_id, e.sensor_id))
    got: Counter[str] = Counter()
    for r in rows:
        got[r["kind"]] += r["count"] or 0
    assert got == want


def exp_anno_state_changes(f: Filled, which: str, rows: Rows) -> None:
    changes = [e for e in f.events if e.kind == "state_change"
               and in_selection(which, e.site, e.device_id, e.sensor_id)]
    assert [(r["device"], r["sensor"], r["state"], r["previous_state"]) for r in rows] == [
        (e.device_id, e.sensor_id, e.new_state, e.previous_state) for e in changes]


def exp_anno_faults(f: Filled, which: str, rows: Rows) -> None:
    faults = [e for e in f.events if e.kind == "fault"
              and in_selection(which, e.site, e.device_id, e.sensor_id)]
    assert [(r["device"], r["state"], r["active"], r["detail"]) for r in rows] == [
        (e.device_id, e.fault, e.active, e.detail) for e in faults]


def last_status(f: Filled, which: str) -> dict[str, Any]:
    out = {}
    for s in f.statuses:
        if in_selection(which, s.site, s.device_id):
            out[s.device_id] = s
    return out


def exp_online(f: Filled, which: str, rows: Rows) -> None:
    assert {r["device"]: r["online"] for r in rows} == {
        d: int(s.online) for d, s in last_status(f, which).items()}


def exp_last_seen(f: Filled, which: str, rows: Rows) -> None:
    newest: dict[str, int] = {}
    for p in f.points():
        device = p.tags["device"]
        if in_selection(which, p.tags["site"], device):
            newest[device] = max(newest.get(device, 0), p.time_ns)
    seen: dict[str, int] = {}
    for r in rows:
        seen[r["device"]] = max(seen.get(r["device"], 0), r["time"])
    assert seen == newest


def exp_online_timeline(f: Filled, which: str, rows: Rows) -> None:
    last: dict[str, Any] = {}
    for r in rows:  # time order within each series
        if r.get("last") is not None:
            last[r["device"]] = r["last"]
    assert last == {d: int(s.online) for d, s in last_status(f, which).items()}


def alerts_of(f: Filled, which: str) -> list[Any]:
    return [a for a in f.alerts if in_selection(which, a.site, a.device_id)]


def exp_alerts_fired(f: Filled, which: str, rows: Rows) -> None:
    want = Counter(a.severity for a in alerts_of(f, which) if a.status == "firing")
    got: Counter[str] = Counter()
    for r in rows:
        got[r["severity"]] += r["count"] or 0
    assert got == want and sum(want.values()) > 0


def exp_alert_counts(f: Filled, which: str, rows: Rows) -> None:
    assert {(r["status"], r["severity"]): r["count"] for r in rows} == dict(
        Counter((a.status, a.severity) for a in alerts_of(f, which)))


def exp_alert_rows(f: Filled, which: str, rows: Rows) -> None:
    assert sorted((r["summary"], r["status"]) for r in rows) == sorted(
        (a.summary, a.status) for a in alerts_of(f, which))
    assert rows, "the hub raised no alert"


def exp_counters(f: Filled, which: str, rows: Rows) -> None:
    want: dict[str, dict[str, float]] = {}
    for s in f.statuses:
        if in_selection(which, s.site, s.device_id):
            want.setdefault(s.device_id, {}).update(
                {f"last_c_{k}": v for k, v in s.counters.items()})
    got = {r["device"]: {k: v for k, v in r.items() if k.startswith("last_c_") and v is not None}
           for r in rows}
    assert got == want


def exp_anno_offline(f: Filled, which: str, rows: Rows) -> None:
    offline = [s for s in f.statuses if not s.online and in_selection(which, s.site, s.device_id)]
    assert [(r["device"], r["reason"]) for r in rows] == [(s.device_id, s.reason) for s in offline]


def exp_hub_rates(f: Filled, which: str, rows: Rows) -> None:
    assert {"events_in", "duplicates", "dead_lettered"} <= set(rows[0])
    assert all(v >= 0 for r in rows for k in ("events_in", "duplicates", "dead_lettered")
               if (v := r.get(k)) is not None)
    assert any((r.get("events_in") or 0) > 0 for r in rows)


def exp_backlog(f: Filled, which: str, rows: Rows) -> None:
    columns = {k for r in rows for k in r if k.startswith("max_backlog_")}
    assert "max_backlog_storage" in columns and "max_backlog_alerting" in columns
    assert all(r[c] >= 0 for r in rows for c in columns if r.get(c) is not None)


def exp_lag(f: Filled, which: str, rows: Rows) -> None:
    assert non_null(rows, "lag_s") and all(v >= 0 for v in non_null(rows, "lag_s"))


def exp_dead_letters(f: Filled, which: str, rows: Rows) -> None:
    assert [r["dead_lettered"] for r in rows] == [f.health["dead_lettered"]]
    assert f.health["dead_lettered"] >= 1  # the undecodable payload


def _count_by_site(rows: Rows) -> dict[str, int]:
    got: Counter[str] = Counter()
    for r in rows:
        got[r["site"]] += r["count"] or 0
    return dict(got)


def _want_by_site(items: list[Any], which: str) -> dict[str, int]:
    return dict(Counter(i.site for i in items if i.site in selection(which)["site"]))


def exp_stored_events(f: Filled, which: str, rows: Rows) -> None:
    assert _count_by_site(rows) == _want_by_site(f.events, which)


def exp_stored_summaries(f: Filled, which: str, rows: Rows) -> None:
    assert _count_by_site(rows) == _want_by_site(f.summaries, which)


def exp_replayed(f: Filled, which: str, rows: Rows) -> None:
    got = {k: v for k, v in _count_by_site(rows).items() if v}
    assert got == _want_by_site([e for e in f.events if e.replayed], which)


def exp_unsynced(f: Filled, which: str, rows: Rows) -> None:
    got = {k: v for k, v in _count_by_site(rows).items() if v}
    assert got == _want_by_site([e for e in f.events if not e.clock_synced], which)


def values(rows: Rows) -> set[str]:
    return {r["value"] for r in rows}


def exp_var_site(f: Filled, which: str, rows: Rows) -> None:
    assert values(rows) == {s.site for s in f.statuses}


def exp_var_device(f: Filled, which: str, rows: Rows) -> None:
    assert values(rows) == {s.device_id for s in f.statuses if s.site in selection(which)["site"]}


def exp_var_sensor(f: Filled, which: str, rows: Rows) -> None:
    assert values(rows) == {e.sensor_id for e in f.events
                            if in_selection(which, e.site, e.device_id)}


def exp_var_hub(f: Filled, which: str, rows: Rows) -> None:
    assert values(rows) == {HUB_ID}


T, D, H = "thermopipe-temperatures", "thermopipe-devices", "thermopipe-hub"
EXPECTATIONS: dict[str, Callable[[Filled, str, Rows], None]] = {
    f"{T}:panel:Temperature per sensor:A": exp_temperature("degC"),
    f"{T}:panel:Temperature per sensor:B": exp_thresholds("degC"),
    f"{T}:panel:Temperature per sensor:C": exp_temperature("degF"),
    f"{T}:panel:Temperature per sensor:D": exp_thresholds("degF"),
    f"{T}:panel:Summary per window (min / mean / max):A": exp_summary("degC"),
    f"{T}:panel:Summary per window (min / mean / max):B": exp_summary("degF"),
    f"{T}:panel:Long-term temperature (15-minute min / mean / max):A": exp_summary("degC"),
    f"{T}:panel:Long-term temperature (15-minute min / mean / max):B": exp_summary("degF"),
    f"{T}:panel:Current band per sensor:A": exp_current_band,
    f"{T}:panel:Faults:A": exp_faults,
    f"{T}:panel:Events by kind:A": exp_events_by_kind,
    f"{T}:annotation:State changes:Anno": exp_anno_state_changes,
    f"{T}:annotation:Faults:Anno": exp_anno_faults,
    f"{T}:variable:site:var": exp_var_site,
    f"{T}:variable:device:var": exp_var_device,
    f"{T}:variable:sensor:var": exp_var_sensor,
    f"{D}:panel:Devices online:A": exp_online,
    f"{D}:panel:Last seen:A": exp_last_seen,
    f"{D}:panel:Online / offline:A": exp_online_timeline,
    f"{D}:panel:Alerts fired:A": exp_alerts_fired,
    f"{D}:panel:Alert counts:A": exp_alert_counts,
    f"{D}:panel:Recent alerts:A": exp_alert_rows,
    f"{D}:panel:Device counters:A": exp_counters,
    f"{D}:annotation:Alerts:Anno": exp_alert_rows,
    f"{D}:annotation:Devices going offline:Anno": exp_anno_offline,
    f"{D}:variable:site:var": exp_var_site,
    f"{D}:variable:device:var": exp_var_device,
    f"{H}:panel:Messages in, duplicates, dead letters (per second):A": exp_hub_rates,
    f"{H}:panel:Consumer backlog:A": exp_backlog,
    f"{H}:panel:Processing lag:A": exp_lag,
    f"{H}:panel:Dead letters since hub start:A": exp_dead_letters,
    f"{H}:panel:Events stored in InfluxDB:A": exp_stored_events,
    f"{H}:panel:Events stored in InfluxDB:B": exp_stored_summaries,
    f"{H}:panel:Replayed and unsynced-clock events stored:A": exp_replayed,
    f"{H}:panel:Replayed and unsynced-clock events stored:B": exp_unsynced,
    f"{H}:variable:hub:var": exp_var_hub,
    f"{H}:variable:site:var": exp_var_site,
}

QUERIES = all_queries()


def test_every_dashboard_query_has_an_expectation() -> None:
    assert sorted(q.key for q in QUERIES) == sorted(EXPECTATIONS)


@pytest.mark.parametrize("query", QUERIES, ids=[q.key for q in QUERIES])
def test_query_returns_the_expected_series(query: Query, filled: Filled,
                                           run: Callable[[Query, str], Rows]) -> None:
    check = EXPECTATIONS[query.key]
    rows = run(query, ALL)
    assert rows, f"{query.key}: no series with every value selected"
    check(filled, ALL, rows)
    check(filled, ONE, run(query, ONE))


def test_the_stored_layout_is_what_the_dashboards_expect(filled: Filled, influxdb: InfluxDB1,
                                                          ) -> None:
    """The hub filled every measurement itself, its alerts and its health included."""
    tags: dict[str, set[str]] = {}
    measurements = ("sensor_event", "sensor_summary", "device_status", "alert", "hub_health")
    for measurement in measurements:
        rows = influxdb.series_rows(f'SHOW TAG KEYS FROM "{measurement}"', filled.db)
        tags[measurement] = {r["tagKey"] for r in rows}
    assert tags == {"sensor_event": {"site", "device", "sensor", "kind", "state", "unit"},
                    "sensor_summary": {"site", "device", "sensor", "unit"},
                    "device_status": {"site", "device"},
                    "alert": {"site", "device", "sensor", "rule", "severity", "status"},
                    "hub_health": {"hub"}}
    types = {r["fieldKey"]: r["fieldType"]
             for r in influxdb.series_rows('SHOW FIELD KEYS FROM "hub_health"', filled.db)}
    assert types["events_in"] == types["duplicates"] == types["dead_lettered"] == "integer"
    assert types["backlog_storage"] == types["backlog_alerting"] == "integer"
    assert types["lag_s"] == "float"
    # the QoS 1 redelivery and the undecodable payload reached the hub and were counted once
    assert filled.health["duplicates"] == 1 and filled.health["dead_lettered"] == 1
    # each alert the hub published is stored once, with the hub's own layout
    rows = influxdb.series_rows('SELECT "alert_id", "summary" FROM "alert"', filled.db)
    assert sorted(r["alert_id"] for r in rows) == sorted(a.alert_id for a in filled.alerts)
