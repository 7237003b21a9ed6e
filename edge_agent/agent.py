"""The agent's runtime: sources -> one queue -> a decider per sensor -> stamper -> delivery.

    source threads ──put──▶ bounded queue ──▶ agent thread: SensorDecider.on_reading / on_tick
                                                     │ drafts
                                                     ▼
                                   EventStamper (event id, seq) ──▶ Delivery.submit
                                                                   (outbox on disk, MQTT)

One thread owns the deciders (they are plain state machines, not thread-safe). It waits on the
queue with a deadline at the next tick (stale detection, summary windows), so it never polls.
A full queue drops the reading (counted, logged) rather than blocking a source. An unreachable
broker stops nothing: events go to the outbox and leave when the broker is back.

Supervision (``program_support.supervision``): every thread of the agent is a component of the one
:attr:`Agent.supervisor` (each source's reader, ``delivery``, ``mqtt-link``, the ``keeper`` of
``edge_agent/supervisor.py``). A crash is logged once with its traceback and restarted after a
backoff from durable state (a source opens its device again, delivery starts again from the
outbox); while a component is down the keeper stops pinging systemd's watchdog. Past the restart
budget the supervisor is *fatal*: :meth:`Agent.run` stops the agent as on a signal, and
``edge-agent run`` exits 70 (``EXIT_COMPONENT_FAILED``) for systemd to restart it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from edge_agent.clock import clock_synchronised
from edge_agent.config import (
    AgentConfig,
    OneWireSourceConfig,
    SerialSourceConfig,
    SimulatorSourceConfig,
    SourceConfig,
)
from edge_agent.decide import Draft, Reading, SensorDecider
from edge_agent.delivery import Delivery, SensorList
from edge_agent.outbox import Outbox
from edge_agent.sources.base import SensorSource, SensorSpec
from edge_agent.stamping import EventStamper
from program_support.supervision import Supervisor
from program_support.version import thermopipe_version
from schemas.errors import ContractError
from schemas.plain_messages import SensorEvent, SensorInfo
from schemas.vocabulary import TEXT_MAX

log = structlog.get_logger("edge_agent.agent")

AGENT_VERSION = thermopipe_version()

#: most readings handled before the agent looks at the clock again (a burst cannot starve ticks)
BATCH = 500


def build_source(cfg: SourceConfig) -> SensorSource:
    # Each kind is imported only when configured: a 1-Wire-only Pi never loads pyserial (the
    # 'agent' extra) nor the simulator.
    if isinstance(cfg, SerialSourceConfig):
        from edge_agent.sources.serial_source import SerialSource

        return SerialSource(cfg.port, name=cfg.name, baudrate=cfg.baudrate,
                            sensors=[SensorSpec(s) for s in cfg.sensors],
                            reopen_max_s=cfg.reopen_max_s)
    if isinstance(cfg, OneWireSourceConfig):
        from edge_agent.sources.onewire import OneWireSource

        return OneWireSource(cfg.w1_dir, name=cfg.name, interval_s=cfg.interval_s,
                             sensor_ids=cfg.sensors or None, max_workers=cfg.max_workers)
    if isinstance(cfg, SimulatorSourceConfig):
        from edge_agent.sources.simulator import SimulatorSource

        return SimulatorSource(cfg.scenario, name=cfg.name, speed=cfg.speed, seed=cfg.seed,
                               loop=cfg.loop)
    raise TypeError(f"unknown source config {cfg!r}")


@dataclass
class Counters:
    """What the agent counted since it started (the status line and the state file)."""

    readings: int = 0
    events: int = 0
    faults_seen: int = 0
    dropped_readings_queue: int = 0
    invalid_drafts: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class Agent:
    """``Agent(config).run(stop_event)``; ``snapshot()`` from any thread for the status line."""

    def __init__(self, config: AgentConfig, *, sources: list[SensorSource] | None = None,
                 clock: Callable[[], float] = time.time,
                 clock_synced: Callable[[], bool] = clock_synchronised) -> None:
        self.config = config
        #: every thread of the agent runs under it (the keeper included, once it starts)
        self.supervisor = Supervisor()
        self._clock = clock
        self._clock_synced = clock_synced
        self.sources = sources if sources is not None else [build_source(s)
                                                            for s in config.sources]
        self._queue: queue.Queue[Reading] = queue.Queue(maxsize=config.queue_size)
        self._deciders: dict[str, SensorDecider] = {}
        self._source_of: dict[str, str] = {}
        self._lock = threading.Lock()  # guards counters and deciders for snapshot()
        self.counters = Counters()
        self.outbox = Outbox(config.outbox)
        self.stamper = EventStamper(config.site, config.device_id, self.outbox)
        self.delivery = Delivery(self.outbox, config.mqtt, config.site, config.device_id,
                                 self.status_info, config.outbox.backlog_rate_per_s,
                                 supervisor=self.supervisor)
        self.started = threading.Event()
        #: when the run loop last turned (monotonic): the watchdog pings only while it moves
        self.last_turn = time.monotonic()
        self._last_drop_log = 0.0
        self._listed_told: SensorList | None = None  # the sensor list delivery was last told

    # --- what the status message and the status line show ---------------------------------
    def sensor_infos(self) -> list[SensorInfo]:
        with self._lock:
            deciders = dict(self._deciders)
        infos: dict[str, SensorInfo] = {}
        for source in self.sources:
            for spec in source.sensors:
                infos[spec.sensor_id] = self._info(spec.sensor_id, spec.unit, source.kind,
                                                   deciders.get(spec.sensor_id))
        for sid, dec in deciders.items():
            if sid not in infos:
                infos[sid] = self._info(sid, dec.unit, self._source_of.get(sid, ""), dec)
        return [infos[k] for k in sorted(infos)]

    def _info(self, sid: str, unit: Any, kind: str, dec: SensorDecider | None) -> SensorInfo:
        cfg = self.config.sensors.get(sid)
        if cfg is not None:
            unit = cfg.unit
        thresholds = dec.thresholds_info() if dec is not None else SensorDecider(
            sid, unit, self.config.rules_for(sid)).thresholds_info()
        return SensorInfo(sensor_id=sid, unit=unit, source=kind, thresholds=thresholds,
                          name=cfg.name if cfg is not None else "")

    def firmware(self) -> str:
        # bounded like the contract's field (a serial source is named after its port path)
        return "; ".join(f"{s.name}: {s.firmware}" for s in self.sources if s.firmware
                         )[:TEXT_MAX]

    def agent_counters(self) -> dict[str, float]:
        """The agent's own counters plus every source's, prefixed by nothing when unambiguous."""
        with self._lock:
            c = self.counters
            out: dict[str, float] = {
                "readings": c.readings, "events": c.events,
                "dropped_readings_queue": c.dropped_readings_queue,
                "invalid_drafts": c.invalid_drafts, "queue_depth": self._queue.qsize(),
                "sensors": len(self._deciders),
                "faults_active": sum(1 for d in self._deciders.values()
                                     if d.fault is not None or d.stale),
            }
            out.update({f"events_{k}": v for k, v in c.by_kind.items()})
        totals: dict[str, float] = {}
        for source in self.sources:
            for name, value in source.counters().items():
                key = f"source_{name}" if name in ("readings", "connected", "dropped") else name
                totals[key] = totals.get(key, 0) + value
        if "reconnects" in totals:
            totals["device_reconnects"] = totals.pop("reconnects")
        out.update(totals)
        return out

    def status_info(self) -> dict[str, Any]:
        """What the birth / periodic status message carries (Delivery adds its own counters)."""
        # read before the list: a source that finishes its scan in between is then reported
        # as still discovering, never a short list as complete
        complete = all(source.discovered for source in self.sources)
        return {"agent_version": AGENT_VERSION, "firmware": self.firmware(),
                "sensors": self.sensor_infos(), "counters": self.agent_counters(),
                "device_name": self.config.name, "sensors_complete": complete}

    def deciders(self) -> dict[str, SensorDecider]:
        """A copy of the sensor -> decider map, for the state file (read-only use)."""
        with self._lock:
            return dict(self._deciders)

    def snapshot(self) -> dict[str, float]:
        counters = self.agent_counters()
        counters.update(self.delivery.counters())
        return counters

    # --- the run loop ---------------------------------------------------------------------
    def _sink(self, reading: Reading) -> bool:
        try:
            self._queue.put_nowait(reading)
        except queue.Full:
            with self._lock:
                self.counters.dropped_readings_queue += 1
                dropped = self.counters.dropped_readings_queue
            now = time.monotonic()
            if now - self._last_drop_log >= 5:  # one line per 5 s, the counter has the rest
                self._last_drop_log = now
                log.warning("agent.reading_dropped", sensor=reading.sensor_id,
                            queue_size=self.config.queue_size, dropped_total=dropped)
            return False
        return True

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (or a component failed past its restart budget:
        ``supervisor.fatal``); then stop the sources, flush the outbox, say goodbye."""
        log.info("agent.starting", sources=[s.name for s in self.sources],
                 broker=f"{self.config.mqtt.host}:{self.config.mqtt.port}",
                 outbox=str(self.config.outbox.path), pending=self.outbox.depth)
        self.delivery.start()
        for source in self.sources:
            source.start(self._sink, self.supervisor)
        self.started.set()
        tick_s = self.config.tick_s
        next_tick = time.monotonic() + tick_s
        fatal = self.supervisor.fatal
        try:
            while not stop.is_set() and not fatal.is_set():
                self.last_turn = time.monotonic()
                timeout = next_tick - time.monotonic()
                if timeout > 0:
                    try:
                        first = self._queue.get(timeout=min(timeout, 0.5))
                    except queue.Empty:
                        pass
                    else:
                        self._handle([first, *self._drain(BATCH - 1)])
                if time.monotonic() >= next_tick:
                    self._tick(self._clock())
                    next_tick += tick_s
                    if next_tick < time.monotonic():  # fell behind: do not burst ticks
                        next_tick = time.monotonic() + tick_s
        finally:
            self._shutdown()

    def _drain(self, limit: int) -> list[Reading]:
        out: list[Reading] = []
        while len(out) < limit:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return out

    def _decider(self, reading: Reading) -> SensorDecider:
        dec = self._deciders.get(reading.sensor_id)
        if dec is None:
            sid = reading.sensor_id
            unit = self._unit(sid)
            dec = SensorDecider(sid, unit, self.config.rules_for(sid))
            with self._lock:
                self._deciders[sid] = dec
            log.info("agent.sensor_seen", sensor=sid, unit=unit,
                     configured=sid in self.config.sensors)
        return dec

    def _unit(self, sensor_id: str) -> Any:
        cfg = self.config.sensors.get(sensor_id)
        if cfg is not None:
            return cfg.unit
        for source in self.sources:
            for spec in source.sensors:
                if spec.sensor_id == sensor_id:
                    self._source_of[sensor_id] = source.kind
                    return spec.unit
        return "degC"

    def _handle(self, readings: Iterable[Reading]) -> None:
        drafts: list[Draft] = []
        n = faults = 0
        for reading in readings:
            n += 1
            faults += reading.fault is not None
            try:
                drafts += self._decider(reading).on_reading(reading)
            except ContractError as exc:  # an id unfit for a topic, from a device
                log.error("agent.reading_rejected", sensor=reading.sensor_id, reason=str(exc))
        with self._lock:
            self.counters.readings += n
            self.counters.faults_seen += faults
        self._submit(drafts)

    def _tick(self, now: float) -> None:
        drafts: list[Draft] = []
        for dec in list(self._deciders.values()):
            drafts += dec.on_tick(now)
        self._submit(drafts)
        listed = self._sensors_listed()
        if listed != self._listed_told:
            self._listed_told = listed
            self.delivery.sensors_changed(listed)

    def _sensors_listed(self) -> SensorList:
        """What the next status would say of the sensors (as :meth:`status_info` reads them):
        every source has looked, and the sensor ids."""
        complete = all(source.discovered for source in self.sources)
        ids = {spec.sensor_id for source in self.sources for spec in source.sensors}
        with self._lock:
            ids.update(self._deciders)
        return complete, frozenset(ids)

    def _submit(self, drafts: list[Draft]) -> None:
        if not drafts:
            return
        synced = self._clock_synced()
        events: list[SensorEvent] = []
        for draft in drafts:
            try:
                event = self.stamper.stamp(draft, synced)
            except ContractError as exc:  # logged by the stamper with its fields
                with self._lock:
                    self.counters.invalid_drafts += 1
                log.error("agent.event_dropped", sensor=draft.sensor_id,
                          kind=draft.kind, reason=str(exc))
                continue
            events.append(event)
            log.debug("agent.event", sensor=event.sensor_id, event_id=event.event_id,
                      kind=event.kind, seq=event.seq)
            if event.kind in ("state_change", "fault", "rate_alarm"):
                log.info("agent.event", sensor=event.sensor_id, event_id=event.event_id,
                         kind=event.kind, seq=event.seq,
                         **_describe(event))
        with self._lock:
            self.counters.events += len(events)
            for e in events:
                self.counters.by_kind[e.kind] = self.counters.by_kind.get(e.kind, 0) + 1
        if events:
            self.delivery.submit(events)

    def _shutdown(self) -> None:
        log.info("agent.stopping", reason=self.supervisor.fatal_reason or "asked to")
        self.supervisor.stop()  # no more restarts: every component ends with its owner's stop
        for source in self.sources:
            source.stop()
        rest = self._drain(self._queue.qsize() + BATCH)
        if rest:
            self._handle(rest)
        # the open summary windows, cut short now: their readings are not lost with the process
        now = self._clock()
        self._submit([d for dec in list(self._deciders.values()) for d in dec.on_stop(now)])
        self.delivery.stop()  # flushes the outbox, publishes the shutdown status
        self.outbox.close()
        log.info("agent.stopped", **{k: v for k, v in self.agent_counters().items()
                                     if k in ("readings", "events")})


def _describe(event: SensorEvent) -> dict[str, Any]:
    if event.kind == "state_change":
        return {"from": event.previous_state, "to": event.new_state, "value": event.value}
    if event.kind == "fault":
        return {"fault": event.fault, "active": event.active, "detail": event.detail}
    if event.kind == "rate_alarm":
        return {"active": event.active, "rate_per_min": event.rate_per_min}
    return {}
