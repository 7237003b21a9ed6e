"""Prometheus metrics of one hub process (a registry per hub, so tests can run several).

thermopipe_hub_events_in_total                      MQTT messages received
thermopipe_hub_events_accepted_total{kind}          recorded in the journal
thermopipe_hub_duplicates_dropped_total             same event id seen before (also across restarts)
thermopipe_hub_dead_lettered_total{reason}          sent to the dead-letter store
thermopipe_hub_identity_refused_total{level}       events and statuses of a site, device or sensor
                                                    past a cap of [limits] (hub/identity_limits.py;
                                                    also counted as dead_lettered{identity_limit})
thermopipe_hub_identities{level}                    sites, devices and sensors admitted (known)
thermopipe_hub_late_events_total / _out_of_order_events_total
thermopipe_hub_consumer_processed_total{consumer}   events a consumer handled
thermopipe_hub_consumer_retries_total{consumer}     failed batches retried
thermopipe_hub_consumer_quarantined_total{consumer} entries that made the consumer raise alone
                                                    (dead-lettered for it, moved past)
thermopipe_hub_component_crashes_total{component}   supervised threads that crashed (restarted
                                                    with backoff, or the hub exits 70)
thermopipe_hub_components_up                        supervised threads running and turning
thermopipe_hub_consumer_backlog{consumer}           journal rows the consumer has not handled
thermopipe_hub_end_to_end_lag_seconds{consumer}     event time -> handled, live events only
                                                    (sampled: the newest event of each batch)
thermopipe_hub_journal_lag_seconds                  age of the oldest journal entry some consumer
                                                    has not handled yet; 0 when all are idle
                                                    (the ``lag_s`` of the hub_health points)
thermopipe_hub_mqtt_connected                       1 while connected to the broker
thermopipe_hub_ingest_queue                         received, not yet recorded
thermopipe_hub_journal_pruned_total                 journal rows pruned
thermopipe_hub_dead_letter_publish_failed_total     dead letters not published on the DLQ topic
thermopipe_hub_dead_letters_pruned_total{by}        dead letters removed by retention (age, size)
thermopipe_hub_dead_letter_bytes                    data the dead-letter store holds (rows' bytes)
thermopipe_hub_dead_letter_logs_suppressed_total    ingest.dead_lettered lines not logged (flood)
thermopipe_hub_dead_letter_publishes_suppressed_total  dead letters not published (at most 100/s)
thermopipe_hub_storage_rejected_total               points the database refused (InfluxDB modes)
thermopipe_alerts_*                                 the alerting consumer's (hub/alerting/README.md)
process_*, python_info, python_gc_*                 the standard collectors
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _Backlog(Collector):
    def __init__(self, source: Callable[[], dict[str, int]]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("thermopipe_hub_consumer_backlog",
                                   "Journal rows the consumer has not handled yet",
                                   labels=["consumer"])
        for name, value in sorted(self._source().items()):
            family.add_metric([name], value)
        yield family


class _Lag(Collector):
    def __init__(self, source: Callable[[], float]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily("thermopipe_hub_journal_lag_seconds",
                                "Age of the oldest journal entry not yet handled by every "
                                "consumer (0 when all are idle)", value=self._source())


def _total(counter: Counter) -> int:
    """A counter's value summed over its labels."""
    return int(sum(sample.value for family in counter.collect() for sample in family.samples
                   if sample.name.endswith("_total")))


class HubMetrics:
    def __init__(self) -> None:
        # One registry for everything this hub exports (the alerting counters are registered in it
        # too), with the standard process_*, python_info and python_gc_* collectors.
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        r.register(GC_COLLECTOR)
        p = "thermopipe_hub_"
        self.events_in = Counter(p + "events_in", "MQTT messages received", registry=r)
        self.accepted = Counter(p + "events_accepted", "Events recorded in the journal",
                                ["kind"], registry=r)
        self.duplicates = Counter(p + "duplicates_dropped", "Duplicate event ids dropped",
                                  registry=r)
        self.dead_lettered = Counter(p + "dead_lettered", "Payloads sent to the dead-letter store",
                                     ["reason"], registry=r)
        self.identity_refused = Counter(
            p + "identity_refused", "Events and statuses refused: their site, device or sensor "
            "would pass a cap of [limits]", ["level"], registry=r)
        self.identities = Gauge(p + "identities", "Sites, devices and sensors admitted",
                                ["level"], registry=r)
        self.late = Counter(p + "late_events", "Accepted events flagged late", registry=r)
        self.out_of_order = Counter(p + "out_of_order_events",
                                    "Accepted events flagged out of order", registry=r)
        self.processed = Counter(p + "consumer_processed", "Events a consumer handled",
                                 ["consumer"], registry=r)
        self.retries = Counter(p + "consumer_retries", "Failed consumer batches retried",
                               ["consumer"], registry=r)
        self.quarantined = Counter(p + "consumer_quarantined",
                                   "Journal entries a consumer failed on alone, dead-lettered "
                                   "for it and moved past", ["consumer"], registry=r)
        self.component_crashes = Counter(p + "component_crashes",
                                         "Supervised threads that crashed", ["component"],
                                         registry=r)
        self.lag = Histogram(p + "end_to_end_lag_seconds",
                             "Event time to handled by the consumer (live events)",
                             ["consumer"], buckets=LAG_BUCKETS, registry=r)
        self.connected = Gauge(p + "mqtt_connected", "1 while connected to the broker",
                               registry=r)
        self.ingest_queue = Gauge(p + "ingest_queue", "Messages received, not yet recorded",
                                  registry=r)
        self.journal_pruned = Counter(p + "journal_pruned", "Journal rows pruned", registry=r)
        self.receipts_sent = Counter(p + "receipts_sent", "Receipts published to devices",
                                     registry=r)
        self.receipted = Counter(p + "receipted_events",
                                 "Event seqs named in published receipts", registry=r)
        self.data_loss = Counter(p + "data_loss_records",
                                 "data_loss records: seq ranges of a device that never arrived",
                                 registry=r)
        self.data_loss_events = Counter(p + "data_loss_events",
                                        "Events (seqs) named in data_loss records", registry=r)
        self.open_gaps = Gauge(p + "seq_gaps_open",
                               "Seq gaps not yet filled nor reported lost", registry=r)
        self.refused_named = Counter(p + "receipt_refused_events",
                                     "Refused seqs named in published receipts (refused)",
                                     registry=r)
        self.seq_jumps = Counter(p + "seq_jumps",
                                 "Device seq jumps beyond [receipts] max_seq_jump (tracking "
                                 "restarted)", registry=r)
        self.ingest_errors = Counter(p + "ingest_internal_errors",
                                     "Unexpected exceptions in an ingest step, survived (the "
                                     "message dead-lettered or the device's state dropped)",
                                     ["step"], registry=r)
        self.dead_letter_publish_failed = Counter(
            p + "dead_letter_publish_failed", "Dead letters not published on the DLQ topic",
            registry=r)
        self.dead_letters_pruned = Counter(
            p + "dead_letters_pruned", "Dead letters removed by retention", ["by"], registry=r)
        for by in ("age", "size"):  # both shown from the start, at 0
            self.dead_letters_pruned.labels(by)
        self.dead_letter_bytes = Gauge(
            p + "dead_letter_bytes", "Data the dead-letter store holds (rows' bytes)", registry=r)
        self.dead_letter_logs_suppressed = Counter(
            p + "dead_letter_logs_suppressed",
            "ingest.dead_lettered log lines not written (rate limit)", registry=r)
        self.dead_letter_publishes_suppressed = Counter(
            p + "dead_letter_publishes_suppressed",
            "Dead letters not published on the DLQ topic (rate limit; all are in the store)",
            registry=r)

    def watch_backlog(self, source: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_Backlog(source))

    def watch_lag(self, source: Callable[[], float]) -> None:
        self.registry.register(_Lag(source))

    def watch_components(self, source: Callable[[], int]) -> None:
        """``thermopipe_hub_components_up``: supervised threads running and turning."""
        gauge = Gauge("thermopipe_hub_components_up",
                      "Supervised threads running with their loop turning", registry=self.registry)
        gauge.set_function(source)

    def totals(self) -> dict[str, int]:
        """The ingest counters since this process started (for the hub_health points)."""
        return {"events_in": _total(self.events_in), "duplicates": _total(self.duplicates),
                "dead_lettered": _total(self.dead_lettered)}
