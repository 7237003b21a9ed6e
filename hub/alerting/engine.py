"""The alerting decisions, with no I/O: envelopes and the time in, notifications out.

Vocabulary:

- a *condition* is one thing that can be wrong: a sensor's threshold state (``state``), its rate
  alarm (``rate``), one fault code (``fault.disconnected``...) or a device being offline
  (``offline``). Each has an order key (the device's ``seq``; ``(session, time)`` for status) so an
  envelope older than the last one seen for its condition never changes it.
- a *group* is what a rule notifies about: the rule's name plus its ``group_by`` fields. It fires
  when its first member condition becomes active and resolves when its last one clears.

What fires: a state change into a band other than normal/unknown (its severity is the band's), an
active fault (stale included), an active rate alarm, a device's will (offline). What resolves: a
state change back to ``normal``, the fault's recovery, the rate alarm going inactive, a birth. A
state change from ``unknown`` (agent restart) into ``normal`` fires nothing.

Every notification's ``alert_id`` is derived from the group key, the status and the causing event
id (plus a repeat counter for timed repeats), so re-processing a redelivered batch from the same
state makes the same ids, and the consumer's outbox drops the ones already recorded.

Routing, explicitly: a *live* firing goes to all the rule's notifiers; a *late* firing (the cause
was replayed by the agent or older than ``late_after_s`` when received, or is out of order) goes
only to notifiers with ``deliver_late`` (log and MQTT by default; webhook and e-mail not), flagged
``late=True``. A resolved notification goes to every notifier that was sent the firing (so nobody
is left with an open incident), whatever the silences. Silences suppress firing and repeat
notifications until they expire; the group still tracks its state, and if it still fires when the
silence ends it is notified then.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from hub.alerting.config import SEVERITY_RANK, AlertingConfig, Rule, Silence
from hub.consumers.base import Envelope
from schemas.models import (
    Alert,
    DeviceStatus,
    FaultEvent,
    RateAlarmEvent,
    Severity,
    StateChangeEvent,
)

#: how many recent event ids each condition remembers to recognise a redelivered envelope
RECENT_IDS = 32
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Signal:
    """What one envelope says about one condition."""

    condition: str        # state | rate | fault.<code> | offline
    kind: str             # the causing message kind (rules and silences match on it)
    active: bool
    severity: Severity
    order: tuple[int, ...]
    summary: str


@dataclass(frozen=True, slots=True)
class Notification:
    alert: Alert
    notifiers: tuple[str, ...]


@dataclass
class Outcome:
    notifications: list[Notification] = field(default_factory=list)
    silenced: list[Alert] = field(default_factory=list)
    deduplicated: int = 0   # a firing for a group already firing, inside its repeat interval
    redelivered: int = 0    # an envelope this engine already processed
    out_of_order: int = 0   # older than the last envelope of its condition: state unchanged
    changed: bool = False   # the durable state changed

    def merge(self, other: Outcome) -> None:
        self.notifications += other.notifications
        self.silenced += other.silenced
        self.deduplicated += other.deduplicated
        self.redelivered += other.redelivered
        self.out_of_order += other.out_of_order
        self.changed = self.changed or other.changed


@dataclass
class ConditionState:
    order: list[int]
    active: bool
    recent: list[str] = field(default_factory=list)


@dataclass
class GroupState:
    key: str
    rule: str
    site: str
    device_id: str
    sensor_id: str | None
    kind: str
    severity: Severity
    members: dict[str, Severity]   # condition key -> its severity
    cause_event_id: str
    cause_event_time: str          # ISO, UTC
    summary: str
    late: bool
    audience: list[str] = field(default_factory=list)  # notifiers sent the firing
    last_sent: float | None = None  # epoch seconds
    unsent: bool = False            # a firing held back by a silence
    repeats: int = 0


def alert_id(*parts: str) -> str:
    """Deterministic idempotency key (32 hex chars, fits the contract's event id)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def condition_key(site: str, device: str, sensor: str | None, condition: str) -> str:
    return f"{site}/{device}/{sensor or '-'}/{condition}"


def _micros(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000)


def signal_for(env: Envelope, offline_severity: Severity) -> Signal | None:
    """The condition an envelope speaks about, or None when it cannot fire or resolve anything."""
    msg = env.message
    where = f"{msg.site}/{msg.device_id}"
    if isinstance(msg, StateChangeEvent):
        order: tuple[int, ...] = (msg.seq,)
        sensor = f"{where}/{msg.sensor_id}"
        if msg.new_state == "unknown":
            return None  # the agent does not know yet: neither a problem nor a recovery
        if msg.new_state == "normal":
            return Signal("state", msg.kind, False, msg.severity, order,
                          f"{sensor} back to normal at {msg.value:g} {msg.unit}")
        threshold = f", threshold {msg.threshold:g}" if msg.threshold is not None else ""
        return Signal("state", msg.kind, True, msg.severity, order,
                      f"{sensor} is {msg.new_state} ({msg.severity}): {msg.value:g} {msg.unit}"
                      f"{threshold}, was {msg.previous_state}")
    if isinstance(msg, FaultEvent):
        sensor = f"{where}/{msg.sensor_id}"
        detail = f": {msg.detail}" if msg.detail else ""
        text = (f"{sensor} fault {msg.fault}{detail}" if msg.active
                else f"{sensor} recovered from fault {msg.fault}")
        return Signal(f"fault.{msg.fault}", msg.kind, msg.active, msg.severity, (msg.seq,), text)
    if isinstance(msg, RateAlarmEvent):
        sensor = f"{where}/{msg.sensor_id}"
        text = (f"{sensor} changes at {msg.rate_per_min:g} {msg.unit}/min "
                f"(limit {msg.limit_per_min:g})" if msg.active
                else f"{sensor} rate of change back under {msg.limit_per_min:g} {msg.unit}/min")
        return Signal("rate", msg.kind, msg.active, msg.severity, (msg.seq,), text)
    if isinstance(msg, DeviceStatus):
        # A will is made when its session connects, so its time is older than the birth of
        # that same session: within a session, going offline always ranks after online.
        order = (msg.session, 0 if msg.online else 1, _micros(msg.time))
        if not msg.online and msg.reason == "will":
            return Signal("offline", msg.kind, True, offline_severity, order,
                          f"device {where} went offline (connection lost, session "
                          f"{msg.session})")
        if msg.online:
            return Signal("offline", msg.kind, False, offline_severity, order,
                          f"device {where} is back online (session {msg.session})")
    return None  # readings, summaries, clean shutdowns


def is_late(env: Envelope, late_after_s: float) -> bool:
    msg = env.message
    if env.late or getattr(msg, "replayed", False):
        return True
    # a clock that was not synchronised says nothing trustworthy about age
    age = (env.received_at - msg.time).total_seconds()
    return msg.clock_synced and age > late_after_s


class AlertEngine:
    """Pure state machine. ``process``/``tick`` mutate the state; ``snapshot`` serialises it."""

    def __init__(self, config: AlertingConfig, snapshot: dict[str, Any] | None = None) -> None:
        self.config = config
        self._rules = {rule.name: rule for rule in config.rules}
        self.conditions: dict[str, ConditionState] = {}
        self.groups: dict[str, GroupState] = {}
        if snapshot:
            self._load(snapshot)

    # -- persistence ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"version": STATE_VERSION,
                "conditions": {k: asdict(v) for k, v in self.conditions.items()},
                "groups": {k: asdict(v) for k, v in self.groups.items()}}

    def _load(self, data: dict[str, Any]) -> None:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"alert state version {data.get('version')!r} is not "
                             f"{STATE_VERSION}")
        self.conditions = {k: ConditionState(**v) for k, v in data["conditions"].items()}
        self.groups = {k: GroupState(**v) for k, v in data["groups"].items()}

    # -- decisions -----------------------------------------------------------------------------
    def process(self, env: Envelope, now: datetime) -> Outcome:
        out = Outcome()
        signal = signal_for(env, self.config.offline_severity)
        if signal is None:
            return out
        msg = env.message
        sensor_id = getattr(msg, "sensor_id", None)
        ckey = condition_key(msg.site, msg.device_id, sensor_id, signal.condition)
        cond = self.conditions.get(ckey)
        if cond is not None and msg.event_id in cond.recent:
            out.redelivered += 1
            return out
        late = is_late(env, self.config.late_after_s)
        out.changed = True
        if cond is not None and tuple(signal.order) <= tuple(cond.order):
            # Older than what we know: it must not reopen or resolve anything. A firing is
            # still worth reporting, as late, to the notifiers that take late alerts.
            out.out_of_order += 1
            self._remember(cond, msg.event_id)
            if signal.active:
                for rule in self._matching(signal, env):
                    key = self._group_key(rule, msg.site, msg.device_id, sensor_id,
                                          signal.condition)
                    alert = self._alert(key, "firing", severity=signal.severity,
                                        rule=rule.name, env=env, summary=signal.summary,
                                        late=True, now=now,
                                        id_parts=(key, "firing", msg.event_id))
                    self._route(out, alert, self._late_notifiers(rule.notifiers),
                                signal=signal, now=now)
            return out
        if cond is None:
            cond = self.conditions[ckey] = ConditionState(order=list(signal.order),
                                                          active=signal.active)
        cond.order = list(signal.order)
        cond.active = signal.active
        self._remember(cond, msg.event_id)
        if signal.active:
            self._fire(out, env, signal, ckey=ckey, late=late, now=now)
        else:
            self._resolve(out, env, signal, ckey=ckey, late=late, now=now)
        return out

    def tick(self, now: datetime) -> Outcome:
        """Timed work: repeat still-firing groups, notify groups whose silence expired."""
        out = Outcome()
        epoch = now.timestamp()
        for group in list(self.groups.values()):
            rule = self._rules.get(group.rule)
            if rule is None or self._silence_for(group, now) is not None:
                continue
            due = group.unsent or (
                group.last_sent is not None
                and epoch - group.last_sent >= self.config.repeat_interval_for(rule))
            if not due:
                continue
            names = (self._audience_for(rule, group.late) if group.unsent
                     else [n for n in group.audience if n in self.config.notifiers])
            key_parts = (group.key, "firing", group.cause_event_id, f"r{group.repeats}")
            group.repeats += 1
            group.unsent = False
            group.last_sent = epoch
            group.audience = sorted(set(group.audience) | set(names))
            out.changed = True
            alert = Alert(alert_id=alert_id(*key_parts), group_key=group.key, status="firing",
                          severity=group.severity, rule=group.rule, site=group.site,
                          device_id=group.device_id, sensor_id=group.sensor_id,
                          summary=group.summary, event_id=group.cause_event_id,
                          event_time=datetime.fromisoformat(group.cause_event_time),
                          late=group.late, time=now)
            if names:
                out.notifications.append(Notification(alert, tuple(names)))
        return out

    # -- internals -----------------------------------------------------------------------------
    def _fire(self, out: Outcome, env: Envelope, signal: Signal, *, ckey: str, late: bool,
              now: datetime) -> None:
        msg = env.message
        sensor_id = getattr(msg, "sensor_id", None)
        for rule in self._matching(signal, env):
            key = self._group_key(rule, msg.site, msg.device_id, sensor_id, signal.condition)
            group = self.groups.get(key)
            ids = (key, "firing", msg.event_id)
            if group is None:
                group = self.groups[key] = GroupState(
                    key=key, rule=rule.name, site=msg.site, device_id=msg.device_id,
                    sensor_id=sensor_id, kind=signal.kind, severity=signal.severity,
                    members={ckey: signal.severity}, cause_event_id=msg.event_id,
                    cause_event_time=msg.time.isoformat(), summary=signal.summary, late=late)
                self._send_firing(out, rule, group, env=env, signal=signal, late=late, now=now,
                                   ids=ids)
                continue
            escalated = SEVERITY_RANK[signal.severity] > SEVERITY_RANK[group.severity]
            group.members[ckey] = signal.severity
            full = set(rule.notifiers) <= set(group.audience)
            interval = self.config.repeat_interval_for(rule)
            repeat_due = (group.last_sent is not None
                          and now.timestamp() - group.last_sent >= interval)
            # live: page when the group was never fully paged, or its repeat interval passed;
            # late: only an escalation or a due repeat, to the late notifiers
            if escalated or repeat_due or (not late and not full):
                group.severity = max(group.severity, signal.severity, key=SEVERITY_RANK.__getitem__)
                group.kind = signal.kind
                group.cause_event_id = msg.event_id
                group.cause_event_time = msg.time.isoformat()
                group.summary = signal.summary
                group.late = late and group.late
                group.device_id, group.sensor_id = msg.device_id, sensor_id
                self._send_firing(out, rule, group, env=env, signal=signal, late=late, now=now,
                                   ids=ids)
            else:
                out.deduplicated += 1

    def _send_firing(self, out: Outcome, rule: Rule, group: GroupState, *, env: Envelope,
                     signal: Signal, late: bool, now: datetime, ids: tuple[str, ...]) -> None:
        alert = self._alert(group.key, "firing", severity=group.severity, rule=rule.name,
                            env=env, summary=signal.summary, late=late, now=now, id_parts=ids)
        names = self._audience_for(rule, late)
        if self._route(out, alert, names, signal=signal, now=now):
            group.audience = sorted(set(group.audience) | set(names))
            group.last_sent = now.timestamp()
            group.unsent = False
        else:
            group.unsent = True

    def _resolve(self, out: Outcome, env: Envelope, signal: Signal, *, ckey: str, late: bool,
                 now: datetime) -> None:
        msg = env.message
        for key, group in list(self.groups.items()):
            if ckey not in group.members:
                continue
            del group.members[ckey]
            if group.members:
                # still firing for another member: its severity is the highest left
                group.severity = max(group.members.values(), key=SEVERITY_RANK.__getitem__)
                continue
            del self.groups[key]
            names = [n for n in group.audience if n in self.config.notifiers]
            if not names:
                continue  # never notified (silenced, or late with no late notifier)
            alert = Alert(alert_id=alert_id(key, "resolved", msg.event_id), group_key=key,
                          status="resolved", severity=group.severity, rule=group.rule,
                          site=group.site, device_id=group.device_id,
                          sensor_id=group.sensor_id, summary=signal.summary,
                          event_id=msg.event_id, event_time=msg.time, late=late, time=now)
            out.notifications.append(Notification(alert, tuple(names)))

    def _route(self, out: Outcome, alert: Alert, names: list[str], *, signal: Signal,
               now: datetime) -> bool:
        """Queue ``alert`` for ``names`` unless silenced; False when a silence held it back."""
        if self._silence_matching(alert.site, alert.device_id, alert.sensor_id,
                                  kind=signal.kind, severity=alert.severity,
                                  now=now) is not None:
            out.silenced.append(alert)
            return False
        if names:
            out.notifications.append(Notification(alert, tuple(names)))
        return True

    def _matching(self, signal: Signal, env: Envelope) -> list[Rule]:
        msg = env.message
        sensor_id = getattr(msg, "sensor_id", None)
        return [rule for rule in self.config.rules
                if rule.match.matches(site=msg.site, device=msg.device_id, sensor=sensor_id,
                                      kind=signal.kind, severity=signal.severity)]

    def _audience_for(self, rule: Rule, late: bool) -> list[str]:
        return self._late_notifiers(rule.notifiers) if late else list(rule.notifiers)

    def _late_notifiers(self, names: list[str]) -> list[str]:
        return [n for n in names if n in self.config.notifiers
                and self.config.notifiers[n].deliver_late]

    def _silence_for(self, group: GroupState, now: datetime) -> Silence | None:
        return self._silence_matching(group.site, group.device_id, group.sensor_id,
                                      kind=group.kind, severity=group.severity, now=now)

    def _silence_matching(self, site: str, device: str, sensor: str | None, *, kind: str,
                          severity: Severity, now: datetime) -> Silence | None:
        for silence in self.config.silences:
            if silence.until > now and silence.match.matches(
                    site=site, device=device, sensor=sensor, kind=kind, severity=severity):
                return silence
        return None

    @staticmethod
    def _group_key(rule: Rule, site: str, device: str, sensor: str | None,
                   condition: str) -> str:
        values = {"site": site, "device": device, "sensor": sensor or "-",
                  "condition": condition}
        parts = [f"rule={rule.name}"] + [f"{name}={values[name]}" for name in rule.group_by
                                         if name != "rule"]
        return ",".join(parts)

    @staticmethod
    def _alert(key: str, status: Literal["firing", "resolved"], *, severity: Severity,
               rule: str, env: Envelope, summary: str, late: bool, now: datetime,
               id_parts: tuple[str, ...]) -> Alert:
        msg = env.message
        return Alert(alert_id=alert_id(*id_parts), group_key=key, status=status,
                     severity=severity, rule=rule, site=msg.site,
                     device_id=msg.device_id, sensor_id=getattr(msg, "sensor_id", None),
                     summary=summary, event_id=msg.event_id, event_time=msg.time, late=late,
                     time=now.astimezone(UTC))

    @staticmethod
    def _remember(cond: ConditionState, event_id: str) -> None:
        recent = deque(cond.recent, maxlen=RECENT_IDS)
        recent.append(event_id)
        cond.recent = list(recent)
