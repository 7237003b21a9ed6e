"""The delivery loop: outbox -> MQTT, live events first, the backlog paced, acks back to disk.

One thread ("delivery") carries out the decisions of :class:`~edge_agent.delivery_policy.
DeliveryPolicy` (what to publish next: pure, tested without a broker); the link's paho thread
only hands it events through a queue (connected, disconnected, acked, command). Per turn of the
loop:

1. Commit the outbox (every ``flush_interval_s``, or at once when ``flush_max_events`` are
   buffered or someone calls :meth:`Delivery.flush`): buffered events are stored and acked ones
   deleted in one transaction. Only committed events are published.
2. Publish *live* events, then *backlog* events, while fewer than ``max_inflight`` are
   unacknowledged.
3. Publish the retained status: the birth on every (re)connect and on a ``rebirth`` command,
   an ``update`` every ``status_interval_s``, and an ``update`` soon (2 s after the last status
   at the earliest) when the agent's sensor list differs from the one last published
   (:meth:`Delivery.sensors_changed`: a sensor seen for the first time, or a source that finished
   looking after the birth went out), so the hub and Home Assistant learn it in seconds, not a
   status interval later.

Live or backlog, precisely: an event is **live** when the commit that stored it happened while the
link was connected; it is published at once with ``replayed=false``. Everything else is
**backlog**: the events found in the outbox at start-up, those committed while disconnected, and
live events not yet handed to the client when the connection dropped. The backlog is published
with ``replayed=true`` (same ``event_id`` and ``seq``), strictly in ``seq`` order, at most
``backlog_rate_per_s`` per second (a token bucket; 0 = unlimited), and only while no live event
waits.

The ordering trade-off, stated: a live event can overtake older backlog events of the same sensor
(the fresh temperature is worth more than a day-old one). The hub orders by ``seq`` and never
moves a sensor's state backwards because of a replayed, older event; within the backlog, and
within the live stream, ``seq`` order is kept.

Messages handed to paho and not yet acknowledged when the connection drops stay in paho's queue
and are resent (with the DUP flag) after the reconnect, so they are not published a second time
from the backlog. A PUBACK with a failure reason code (e.g. not authorised) leaves the event in
the outbox, counted as ``rejected``; it is retried after the next reconnect or restart.

Supervision (``program_support.supervision``): the loop is the ``delivery`` component of the agent's
supervisor (and the link's thread ``mqtt-link``). If the loop raises, the crash is logged once
with its traceback and the loop restarts after a backoff from the outbox, its durable state: the
publishing decisions start afresh (a new policy, everything in the outbox is backlog again and is
published as replayed; a copy the broker already has is a duplicate the hub drops), flush waiters
are told the flush failed, and the link's queue of events is kept.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from edge_agent.clock import clock_synchronised
from edge_agent.config.mqtt import MqttSettings
from edge_agent.delivery_policy import DeliveryPolicy, ReceiptRules
from edge_agent.mqtt_link import (
    Acked,
    Command,
    Connected,
    Disconnected,
    LinkEvent,
    MqttLink,
    ReceiptArrived,
)
from edge_agent.outbox import Outbox, Stored
from program_support.supervision import Component, Supervisor
from schemas.errors import ContractError, DeliveryError, ThermopipeError
from schemas.ids import new_event_id
from schemas.plain_messages import DeviceStatus, SensorEvent
from schemas.plain_runtime import encode
from schemas.seq_ranges import clip_merge

log = structlog.get_logger(__name__)

StatusProvider = Callable[[], dict[str, Any]]


@dataclass
class _FlushRequest:
    """Asks the delivery loop to commit what it holds; ``done`` is set when it has."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


@dataclass
class _StopRequest:
    """Asks the delivery loop to finish in-flight publishes by ``deadline`` and stop."""

    deadline: float
    timeout: float


@dataclass(frozen=True)
class _SensorsChanged:
    """The agent's sensor list is now ``listed``: (every source has looked, the sensor ids)."""

    listed: SensorList


#: what a status says of the sensors: (``sensors_complete``, the sensor ids it lists)
SensorList = tuple[bool, frozenset[str]]

_Control = LinkEvent | _FlushRequest | _StopRequest | _SensorsChanged

#: the least time after the last status before one sent for a changed sensor list: a source that
#: finds its sensors one by one sends a few updates, not one per sensor; and the hub clears a
#: withdrawn sensor's Home Assistant state at the status after the one that withdrew its configs,
#: which Home Assistant must have removed by then (tests/counterparts/test_home_assistant.py runs
#: that with statuses 2 s apart)
SENSORS_CHANGED_GAP_S = 2.0


#: ranges a log line shows (the rest is counted)
RANGES_LOGGED = 5


def _ranges_text(ranges: Sequence[tuple[int, int]]) -> str:
    """At most :data:`RANGES_LOGGED` ranges as ``"3-9,12"``, then how many more."""
    text = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges[:RANGES_LOGGED])
    if len(ranges) > RANGES_LOGGED:
        text += f",... ({len(ranges) - RANGES_LOGGED} more)"
    return text


class Delivery:
    """Durable, paced, acknowledged delivery of one device's events to the broker."""

    def __init__(self, outbox: Outbox, settings: MqttSettings, site: str, device_id: str,  # noqa: PLR0917 - the agreed API
                 status_provider: StatusProvider | None = None,
                 backlog_rate_per_s: float | None = None, *,
                 clock_synced: Callable[[], bool] = clock_synchronised,
                 supervisor: Supervisor | None = None) -> None:
        self.outbox = outbox
        self.supervisor = supervisor or Supervisor()
        self.settings = settings
        self.site = site
        self.device_id = device_id
        self._status_provider = status_provider or dict
        self._clock_synced = clock_synced
        self._flush_interval = outbox.settings.flush_interval_s
        self._flush_max = outbox.settings.flush_max_events
        self._rate = outbox.settings.backlog_rate_per_s if backlog_rate_per_s is None \
            else backlog_rate_per_s
        self.policy: DeliveryPolicy[Stored] = self._new_policy()
        self._control: queue.SimpleQueue[_Control] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._committed = threading.Condition()
        self.link = MqttLink(settings, site, device_id, notify=self._notify,
                             next_session=outbox.next_session, will_payload=self._will_payload,
                             supervisor=self.supervisor)
        self._log = log.bind(device=device_id, site=site)
        self._component: Component | None = None
        self._loop_done = False  # the loop ended by its own shutdown (link stopped, committed)
        # delivery-thread state (what to publish: self.policy)
        self._status_mids: dict[int, str] = {}  # mid -> reason
        self._listed: SensorList | None = None  # the sensor list of the last status published
        self._listed_now: SensorList | None = None  # the agent's, as it last told us
        self._last_status_at = float("-inf")
        self._acked_seqs: list[int] = []  # PUBACKed rows to delete, handed to the outbox at once
        self._flush_waiters: list[_FlushRequest] = []
        self._stop_deadline: float | None = None
        self._stop_timeout = 0.0
        self._shutdown_mid: int | None = None
        self._shutdown_sent = False
        self._counts: dict[str, int] = dict.fromkeys(
            ("events_made", "published", "acked", "replayed", "rejected", "commit_errors",
             "undecodable", "status_published", "rebirths", "receipted", "receipt_ignored",
             "refused", "refused_ignored"), 0)
        self._made_lock = threading.Lock()
        self._stopped = False

    def _new_policy(self) -> DeliveryPolicy[Stored]:
        s = self.settings
        rules = ReceiptRules(mode=s.receipts, timeout_s=s.receipt_timeout_s,
                             overtaken_s=s.receipt_gap_s, detect_s=s.receipt_detect_s,
                             window=s.receipt_window, refused_backoff_s=s.receipt_timeout_s)
        return DeliveryPolicy(s.max_inflight, self._rate, now=time.monotonic(), receipts=rules,
                              receipts_seen=self.outbox.receipts_seen)

    # -- public API ------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.link.connected

    def start(self) -> None:
        if self._component is not None:
            return
        self._component = self.supervisor.spawn("delivery", self._run, reset=self._reset)
        self.link.start()
        self._log.info("delivery.started", backlog=self.outbox.depth,
                       backlog_rate_per_s=self.policy.backlog_rate_per_s,
                       client_id=self.link.client_id)

    def submit(self, events: Sequence[SensorEvent]) -> None:
        """Buffer events for the next group commit; they are durable once committed.

        Does not wait for the disk, except as backpressure: when the buffer holds four commits'
        worth (the disk is slower than the sensors), it waits for the next commit.
        """
        if not events:
            return
        topics = self.link.topics
        staged = self.outbox.append((e, topics.for_event(e)) for e in events)
        with self._made_lock:
            self._counts["events_made"] += len(events)
        if staged >= self._flush_max:
            self._wake.set()
        if staged >= 4 * self._flush_max and self._running():
            with self._committed:
                self._committed.wait_for(
                    lambda: self.outbox.staged < 4 * self._flush_max or not self._running(),
                    timeout=10 * self._flush_interval + 5)

    def flush(self, timeout: float = 30.0) -> None:
        """Commit everything submitted so far; returns when it is on disk.

        Raises :class:`DeliveryError` if the commit failed or did not happen in ``timeout``.
        """
        if not self._running():
            self.outbox.commit()
            return
        request = _FlushRequest()
        self._control.put(request)
        self._wake.set()
        if not request.done.wait(timeout):
            raise DeliveryError(f"outbox flush did not complete in {timeout}s")
        if not request.ok:
            raise DeliveryError("outbox flush failed; the events are kept and retried")

    def sensors_changed(self, listed: SensorList) -> None:
        """The agent's sensor list is now ``listed`` (any thread; never blocks). An ``update``
        status goes out soon if that is not what the last status said."""
        self._control.put(_SensorsChanged(listed))
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is committed live, the retained offline status (reason "shutdown"),
        disconnect, and flush the outbox. The caller closes the outbox afterwards."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        self.supervisor.retire("delivery")  # its loop's end is the end now, not a crash
        ended = True
        if self._running():
            self._control.put(_StopRequest(deadline, timeout))
            self._wake.set()
            ended = self.supervisor.join("delivery", timeout + 5)
            if not ended:
                self._log.error("delivery.stop_timeout", timeout_s=timeout)
        # never started, or down after a crash (a restart waiting its backoff ends at once):
        # what the loop's own shutdown does, done here
        if ended and not self._loop_done and self.supervisor.join("delivery", 5):
            self.link.stop(max(0.5, deadline - time.monotonic()))
            self._commit()
        self._log.info("delivery.stopped", pending=self.outbox.depth, **self._counts)

    def count(self, name: str) -> int:
        """One of delivery's own counters (``acked``, ``published``, ...), without the outbox's
        (no SQL, no lock): for waiting on progress."""
        return self._counts[name]

    def counters(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self._counts.items()}
        out.update(self.outbox.counters())
        policy = self.policy
        inflight = policy.inflight
        live = policy.live_waiting
        out.update(
            connected=1.0 if self.link.connected else 0.0,
            reconnects=float(self.link.reconnects),
            connect_failures=float(self.link.connect_failures),
            session=float(self.link.session),
            inflight=float(inflight),
            live_queue=float(live),
            backlog_depth=float(max(0, self.outbox.depth - inflight - live - policy.awaiting)),
            awaiting_receipt=float(policy.awaiting),
            awaiting_receipt_oldest_age_s=round(policy.awaiting_oldest_age(time.monotonic()), 3),
            refused_waiting=float(policy.refused_waiting),
            receipts=float(policy.receipts),
            receipts_awaited=1.0 if policy.awaiting_receipts else 0.0,
            **{f"resent_{reason}": float(n) for reason, n in policy.resent.items()},
        )
        return out

    # -- the link's events (called on the paho thread: never block) ------------------------------
    def _notify(self, event: LinkEvent) -> None:
        self._control.put(event)
        # one wake-up for a run of PUBACKs: the delivery thread clears the flag before it
        # drains the queue, so an event put while the flag is still set is drained anyway
        if not self._wake.is_set():
            self._wake.set()

    # -- the loop --------------------------------------------------------------------------------
    def _running(self) -> bool:
        c = self._component
        return c is not None and c.state == "running" and c.alive

    @property
    def healthy(self) -> bool:
        """False while the delivery loop is down (crashed: restarting or failed)."""
        c = self._component
        return c is None or c.state not in ("restarting", "failed")

    def _run(self) -> None:
        self._loop()  # a crash is the supervisor's to log (once, with its traceback) and restart

    def _reset(self) -> None:
        """Before the loop restarts after a crash: publishing decisions from the outbox again.
        Everything the outbox holds is backlog (a fresh policy; what was in flight or awaiting a
        receipt is published again as replayed: the hub drops the duplicates), flush waiters
        are told the flush failed, and the link's events still queued are handled as they
        come (PUBACKs of message ids the new policy never sent are ignored)."""
        for waiter in self._flush_waiters:
            waiter.ok = False
            waiter.done.set()
        self._flush_waiters.clear()
        self._status_mids.clear()
        self._acked_seqs = []
        self.policy = self._new_policy()
        if self.link.connected:
            self.policy.connected(session_present=True)
        self._log.info("delivery.reset", backlog=self.outbox.depth,
                       meaning="publishing again from the outbox")

    def _loop(self) -> None:
        next_flush = time.monotonic() + self._flush_interval
        next_status = float("inf")
        while True:
            flush_now = self._drain_control()
            now = time.monotonic()
            if flush_now or now >= next_flush or self.outbox.staged >= self._flush_max:
                if self.link.connected:
                    # fill the in-flight window first: the commit holds this thread for the
                    # fsync and the acked rows' deletes (tens of ms at thousands of acks)
                    self._publish_ready(now)
                self._commit()
                next_flush = now + self._flush_interval
            if self.link.connected:
                if next_status == float("inf"):
                    next_status = now + self.settings.status_interval_s
                self._receipt_tick(now)
                self._publish_ready(now)
                if self._listed_now is not None and self._listed_now != self._listed:
                    next_status = min(next_status,
                                      self._last_status_at + SENSORS_CHANGED_GAP_S)
                if now >= next_status and self._stop_deadline is None:
                    self._publish_status("update", online=True)
                    next_status = now + self.settings.status_interval_s
            else:
                next_status = float("inf")
            if self._stop_deadline is not None and self._shutdown_step(now):
                break
            self._wake.wait(self._timeout(now, next_flush, next_status))
            self._wake.clear()
        self.link.stop(max(0.5, (self._stop_deadline or now) - time.monotonic()))
        self._commit()
        self._loop_done = True

    def _timeout(self, now: float, next_flush: float, next_status: float) -> float:
        until = min(next_flush, next_status)
        if self._stop_deadline is not None:
            until = min(until, now + 0.05)
        wake = self.policy.wake_in(now) if self.link.connected else None
        if wake is not None:
            until = min(until, now + wake)
        return max(0.0, until - now)

    def _drain_control(self) -> bool:
        flush_now = False
        while True:
            try:
                item = self._control.get_nowait()
            except queue.Empty:
                if self._acked_seqs:  # the PUBACKs of this drain: deleted with the next commit
                    self.outbox.ack(self._acked_seqs)
                    self._acked_seqs = []
                return flush_now
            if isinstance(item, Acked):
                self._on_acks(item)
            elif isinstance(item, Connected):
                self._on_connected(item)
            elif isinstance(item, Disconnected):
                self._on_disconnected(item)
            elif isinstance(item, Command):
                self._on_command(item)
            elif isinstance(item, ReceiptArrived):
                self._on_receipt(item)
            elif isinstance(item, _FlushRequest):
                self._flush_waiters.append(item)
                flush_now = True
            elif isinstance(item, _SensorsChanged):
                self._listed_now = item.listed
            elif isinstance(item, _StopRequest):
                self.policy.stopping()
                self._stop_deadline = item.deadline
                self._stop_timeout = item.timeout
                flush_now = True

    def _commit(self) -> None:
        ok = True
        try:
            rows = self.outbox.commit()
        except DeliveryError as exc:
            ok = False
            self._counts["commit_errors"] += 1
            self._log.error("delivery.commit_failed", error=str(exc))
            rows = []
        self.policy.committed(rows)
        if self.outbox.dropped_seqs:
            self.policy.forget(self.outbox.dropped_seqs)
        for waiter in self._flush_waiters:
            waiter.ok = ok
            waiter.done.set()
        self._flush_waiters.clear()
        with self._committed:
            self._committed.notify_all()

    # -- publishing --------------------------------------------------------------------------------
    def _publish_ready(self, now: float) -> None:
        policy = self.policy
        while True:
            live = policy.next_live()
            for row in live:
                self._publish_event(row, replayed=False, now=now)
            if live:
                continue  # the cap may have room for more live rows before any backlog
            wanted = policy.backlog_wanted(now)
            if wanted <= 0:
                return
            for row in policy.backlog_read(self.outbox.read(policy.cursor, wanted)):
                self._publish_event(row, replayed=True, now=now)

    def _publish_event(self, row: Stored, replayed: bool, now: float) -> bool:
        json = self.settings.encoding == "json"
        payload: bytes | None = row.payload if json and not replayed else None
        if replayed and json:
            payload = row.replayed_json()  # the stored JSON, flag set: no decode and encode
        if payload is None:
            try:
                event = row.to_event()
            except ContractError as exc:
                # a row that no longer decodes (a damaged card): it can never be delivered
                self._counts["undecodable"] += 1
                self._log.error("delivery.undecodable_row", seq=row.seq,
                                event_id=row.event_id, reason=str(exc))
                self.outbox.ack([row.seq])
                return False
            if replayed:
                event = event.replace(replayed=True)
            payload = encode(event, self.settings.encoding)
        try:
            mid = self.link.publish(row.topic, payload)
        except DeliveryError as exc:
            self._log.warning("delivery.publish_failed", seq=row.seq, event_id=row.event_id,
                              error=str(exc))
            self.policy.send_failed(row.seq)
            return False
        self.policy.sent(row.seq, mid, replayed, now)
        self._counts["published"] += 1
        if replayed:
            self._counts["replayed"] += 1
        return True

    def _on_acks(self, batch: Acked) -> None:
        policy = self.policy
        status_mids = self._status_mids
        delete = self._acked_seqs
        now = time.monotonic()
        acked = 0
        for mid, ok, reason in batch.acks:
            if status_mids and mid in status_mids:
                del status_mids[mid]
                if not ok:
                    self._log.warning("delivery.status_rejected", reason=reason)
                continue
            outcome = policy.acked(mid, ok, now)
            if outcome is None:
                continue
            if outcome.ok:
                if outcome.delete:
                    delete.append(outcome.seq)
                acked += 1
            else:
                self._counts["rejected"] += 1
                self._log.warning("delivery.rejected", seq=outcome.seq,
                                  replayed=outcome.replayed, reason=reason,
                                  kept="in the outbox, retried after reconnect")
        self._counts["acked"] += acked

    def _on_connected(self, event: Connected) -> None:
        awaiting = self.policy.awaiting
        self.policy.connected(event.session_present)
        if awaiting and not event.session_present and self.policy.awaiting_receipts:
            self._log.warning("delivery.resend", reason="session", count=awaiting,
                              why="the broker had no session for us: it lost what it held")
        self._publish_status("birth", online=True)

    def _on_receipt(self, receipt: ReceiptArrived) -> None:
        first = not self.policy.receipts_seen
        out = self.policy.receipted(receipt.ranges, time.monotonic(), receipt.refused)
        self.outbox.receipted(out.delete)  # exactly these rows, never the ranges named
        counts = self._counts
        counts["receipted"] += len(out.delete) + out.at_puback
        counts["receipt_ignored"] += out.ignored
        counts["refused"] += len(out.refused)
        counts["refused_ignored"] += out.refused_ignored
        if first:
            self._log.info("delivery.receipts_seen", hub_id=receipt.hub_id,
                           meaning="events stay in the outbox until a hub receipts them")
        self._log.debug("delivery.receipt", hub_id=receipt.hub_id, ranges=len(receipt.ranges),
                        deleted=len(out.delete), at_puback=out.at_puback)
        if out.ignored or out.refused_ignored:
            # one line per receipt at most, of bounded size, whatever the receipt names
            self._log.warning(
                "delivery.receipt_ignored", hub_id=receipt.hub_id, ignored=out.ignored,
                refused_ignored=out.refused_ignored, deleted=len(out.delete),
                ranges=_ranges_text(receipt.ranges), refused=_ranges_text(receipt.refused),
                ranges_dropped=out.ranges_dropped,
                meaning="the receipt names seqs this run did not send and see acknowledged "
                        "(not sent yet, from before a restart, deleted already, or forged): "
                        "nothing of them is deleted")
        if out.refused:
            runs, _, _ = clip_merge(((s, s) for s in out.refused), len(out.refused))
            self._log.warning(
                "delivery.refused", hub_id=receipt.hub_id, count=len(out.refused),
                seqs=_ranges_text(runs), already_refused=out.refused_again,
                retry_in_s=round(out.retry_in_s, 1),
                meaning="the hub dead-lettered payloads with these seqs: the events stay in "
                        "the outbox and are sent again after a backoff")

    def _receipt_tick(self, now: float) -> None:
        tick = self.policy.tick(now)
        if tick.fell_back:
            self.outbox.ack(tick.delete)
            self._log.warning(
                "delivery.no_receipts", waited_s=self.settings.receipt_detect_s,
                deleted=len(tick.delete),
                meaning="no hub has sent a receipt: deleting events at the broker's PUBACK, as "
                        "an older hub expects; set mqtt.receipts = \"off\" to say so, or "
                        "check that the hub may publish to the receipt topic")
        for reason, count in tick.resent.items():
            self._log.warning("delivery.resend", reason=reason, count=count,
                              next_timeout_s=tick.timeout_s,
                              why="no receipt came for them in time" if reason == "timeout"
                              else "a hub receipted later events, so these were lost on the way")

    def _on_disconnected(self, event: Disconnected) -> None:
        # not yet handed to paho: they stay in the outbox and go out as backlog after reconnect
        self.policy.disconnected()
        self._status_mids.clear()

    def _on_command(self, command: Command) -> None:
        self._log.info("delivery.command", command=command.name)
        if command.name == "rebirth":
            self._counts["rebirths"] += 1
            self._publish_status("birth", online=True)
        elif command.name == "identify":
            self._log.warning("delivery.identify", message="identify requested by an operator")
        else:
            self._log.warning("delivery.unknown_command", command=command.name)

    # -- status --------------------------------------------------------------------------------
    def _status(self, reason: str, online: bool, session: int) -> DeviceStatus:
        try:
            extras = dict(self._status_provider())
        except Exception as exc:  # noqa: BLE001 - a status provider bug must not stop delivery
            self._log.error("delivery.status_provider_failed", error=repr(exc))
            extras = {}
        counters = {str(k): float(v) for k, v in dict(extras.get("counters", {})).items()}
        counters.update(self.counters())
        return DeviceStatus(
            event_id=new_event_id(), site=self.site, device_id=self.device_id,
            time=datetime.now(UTC), clock_synced=self._clock_synced(), online=online,
            reason=reason,  # type: ignore[arg-type]
            session=session, agent_version=str(extras.get("agent_version", "")),
            firmware=str(extras.get("firmware", "")), sensors=list(extras.get("sensors", [])),
            counters=counters, device_name=str(extras.get("device_name", "")),
            sensors_complete=bool(extras.get("sensors_complete", False)))

    def _will_payload(self, session: int) -> bytes:
        return encode(self._status("will", online=False, session=session),
                      self.settings.encoding)

    def _publish_status(self, reason: str, online: bool) -> int | None:
        try:
            status = self._status(reason, online, self.link.session)
            mid = self.link.publish(self.link.status_topic,
                                    encode(status, self.settings.encoding), retain=True)
        except (ThermopipeError, ValueError) as exc:
            self._log.error("delivery.status_failed", reason=reason, error=str(exc))
            # a list no status can carry is not tried again before the periodic status
            self._listed = self._listed_now
            return None
        self._status_mids[mid] = reason
        self._listed = (status.sensors_complete, frozenset(i.sensor_id for i in status.sensors))
        self._last_status_at = time.monotonic()
        self._counts["status_published"] += 1
        self._log.info("delivery.status", reason=reason, online=online,
                       session=self.link.session)
        return mid

    def _shutdown_step(self, now: float) -> bool:
        """Returns True when the loop may end."""
        assert self._stop_deadline is not None
        remaining = self._stop_deadline - now
        if not self.link.connected:
            return True
        drained = not self.policy.live_waiting and not self.policy.inflight
        if not self._shutdown_sent and (drained or remaining < 0.5 * self._stop_timeout):
            self._shutdown_mid = self._publish_status("shutdown", online=False)
            self._shutdown_sent = True
            return self._shutdown_mid is None
        if self._shutdown_sent:
            return self._shutdown_mid not in self._status_mids or remaining <= 0
        return remaining <= 0

    def __repr__(self) -> str:
        return f"Delivery({self.site}/{self.device_id}, connected={self.connected})"
