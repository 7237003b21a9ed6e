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

Summaries are one sentence for people about the sensor by its name (``freezer compartment is
warm: -5.1 °C, above -15.0 °C``): names and band directions come from the device's newest
birth (kept in the state, so a restart keeps them; a sensor with no name, or before any birth,
is called by its id), numbers have one decimal and their unit, band and fault names read with
spaces. Site, device, sensor id and severity are the alert's own fields, not repeated in it.

Every notification's ``alert_id`` is derived from the group key, the status and the causing event
id (plus a repeat counter for timed repeats), so re-processing a redelivered batch from the same
state makes the same ids, and the consumer's outbox drops the ones already recorded.

Device offline waits ``offline_for_s`` (Alertmanager's and Home Assistant's ``for:``): a will
makes the offline condition *pending*, not firing. A birth of a newer session that the hub
received within ``offline_for_s`` of the will cancels it silently (a flap: a broker restart
publishes every client's will, and the agents are back seconds later), counted in
``Outcome.flaps``. Otherwise ``tick(now)`` fires it once ``now`` reaches the will's received time
plus ``offline_for_s`` (or, if the birth is processed first but arrived after that, the birth
fires it and resolves it). The grace counts only time the hub could hear the broker
(``deaf`` / ``heard_again``: while the hub's own connection is down nothing pending fires, and
the time it was away is added to every grace it cut into). Pending conditions are part of the
snapshot, and every deadline is derived from the envelopes' received times: a restart in the
grace neither loses nor repeats the alert, and its ``alert_id`` is the one an immediate firing
would have had. ``offline_for_s = 0`` fires at once. A will always shows people its received
time (its own ``time`` is when its session connected: see ``hub.validate.is_will``).

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

from hub.config.alerting import SEVERITY_RANK, AlertingConfig, Rule, Silence
from hub.consumers.base import Envelope
from hub.validate import is_late as judged_late
from hub.validate import is_will
from schemas.models import (
    Alert,
    DataLoss,
    DeviceStatus,
    FaultEvent,
    RateAlarmEvent,
    ReadingEvent,
    Severity,
    StateChangeEvent,
    SummaryEvent,
)

#: how many recent event ids each condition remembers to recognise a redelivered envelope
RECENT_IDS = 32
#: 2 added ``pending`` (offline conditions in their grace); a version-1 state loads as none pending
STATE_VERSION = 2
#: the state's sections, each ``key -> entry``: what :meth:`AlertEngine.take_changes` reports
SECTIONS = ("conditions", "groups", "pending", "names")
#: the section of ``take_changes`` that carries the state's layout version (key ``version``)
META = "meta"
OFFLINE = "offline"
#: a sensor as its device's last birth describes it: its name ("" when it has none) and the
#: direction of each of its bands (``{"warm": "above"}``), for the alert summaries
SensorNames = tuple[str, dict[str, str]]


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
class Cause:
    """The event an alert is about, as shown to people."""

    site: str
    device_id: str
    sensor_id: str | None
    event_id: str
    #: when it happened: the event's time; for a will, when the hub received it (see is_will)
    event_time: datetime

    @classmethod
    def of(cls, env: Envelope) -> Cause:
        msg = env.message
        return cls(msg.site, msg.device_id, getattr(msg, "sensor_id", None), msg.event_id,
                   env.received_at if is_will(msg) else msg.time)


@dataclass(frozen=True, slots=True)
class FlapSuppressed:
    """A device-offline condition cancelled inside its grace: the device came back in time."""

    site: str
    device_id: str
    session: int                 # of the will
    will_event_id: str
    back_event_id: str | None    # the birth; None: it came before the will (out of order)
    offline_s: float | None      # received-time gap; None: the birth came before the will


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
    flaps: list[FlapSuppressed] = field(default_factory=list)  # offline cancelled in its grace
    changed: bool = False   # the durable state changed

    def merge(self, other: Outcome) -> None:
        self.notifications += other.notifications
        self.silenced += other.silenced
        self.flaps += other.flaps
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


@dataclass
class PendingOffline:
    """A will waiting out ``offline_for_s`` before it fires (JSON-serialisable)."""

    site: str
    device_id: str
    session: int
    event_id: str
    event_time: str        # ISO, UTC: when the hub received the will
    received: float        # the same, epoch seconds: the grace runs from here
    kind: str
    severity: Severity
    order: list[int]
    summary: str
    late: bool


def alert_id(*parts: str) -> str:
    """Deterministic idempotency key (32 hex chars, fits the contract's event id)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def condition_key(site: str, device: str, sensor: str | None, condition: str) -> str:
    return f"{site}/{device}/{sensor or '-'}/{condition}"


def _micros(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000)


UNITS = {"degC": "\u00b0C", "degF": "\u00b0F"}


def temperature(value: float, unit: str) -> str:
    """One number format, the dashboard's: one decimal, then the unit (``-18.5 \u00b0C``)."""
    return f"{value:.1f} {UNITS.get(unit, unit)}"


def band_name(name: str) -> str:
    """A band (threshold state) or fault code for people: ``too_hot`` reads ``too hot``."""
    return name.replace("_", " ")


#: the kinds that never speak about a condition (signal_for returns None for them): the
#: consumer skips them by exact type, the usual event, without deciding anything
NO_SIGNAL_TYPES = frozenset({ReadingEvent, SummaryEvent})


def signal_for(env: Envelope, offline_severity: Severity,
               names: dict[str, dict[str, SensorNames]] | None = None) -> Signal | None:
    """The condition an envelope speaks about, or None when it cannot fire or resolve anything.

    Its summary is one sentence for people, about the sensor by its name (``names``: what the
    device's last birth said, see :meth:`AlertEngine.process`; the 1-Wire id when it has none).
    The site, device, sensor id and severity are the alert's own fields, so the sentence does
    not repeat them: a device-level alert names the device, a sensor-level one the sensor."""
    msg = env.message
    device = msg.device_id
    if isinstance(msg, StateChangeEvent | FaultEvent | RateAlarmEvent):
        known = (names or {}).get(f"{msg.site}/{msg.device_id}", {}).get(msg.sensor_id)
        sensor = known[0] if known and known[0] else msg.sensor_id
    if isinstance(msg, StateChangeEvent):
        order: tuple[int, ...] = (msg.seq,)
        value = temperature(msg.value, msg.unit)
        if msg.new_state == "unknown":
            return None  # the agent does not know yet: neither a problem nor a recovery
        if msg.new_state == "normal":
            return Signal("state", msg.kind, False, msg.severity, order,
                          f"{sensor} is back to normal at {value}")
        direction = (known[1].get(msg.new_state) if known else None) or "threshold"
        past = (f", {direction} {temperature(msg.threshold, msg.unit)}"
                if msg.threshold is not None else "")
        was = ("" if msg.previous_state in ("unknown", "normal")
               else f" (was {band_name(msg.previous_state)})")
        return Signal("state", msg.kind, True, msg.severity, order,
                      f"{sensor} is {band_name(msg.new_state)}: {value}{past}{was}")
    if isinstance(msg, FaultEvent):
        fault = band_name(msg.fault)
        detail = f": {msg.detail}" if msg.detail else ""
        text = (f"{sensor} has a fault ({fault}){detail}" if msg.active
                else f"{sensor} recovered from its fault ({fault})")
        return Signal(f"fault.{msg.fault}", msg.kind, msg.active, msg.severity, (msg.seq,), text)
    if isinstance(msg, RateAlarmEvent):
        unit = UNITS.get(msg.unit, msg.unit)
        text = (f"{sensor} changes by {msg.rate_per_min:.1f} {unit}/min, over the limit of "
                f"{msg.limit_per_min:.1f}" if msg.active
                else f"{sensor} changes less than {msg.limit_per_min:.1f} {unit}/min again")
        return Signal("rate", msg.kind, msg.active, msg.severity, (msg.seq,), text)
    if isinstance(msg, DataLoss):
        cause = f": {msg.cause}" if msg.cause else ""
        events = "event" if msg.count == 1 else "events"
        return Signal("data_loss", msg.kind, True, "critical", (msg.first_seq,),
                      f"{device} lost {msg.count} {events} (seq {msg.first_seq}-"
                      f"{msg.last_seq}){cause}")
    if isinstance(msg, DeviceStatus):
        # A will is made when its session connects, so its time is older than the birth of
        # that same session: within a session, going offline always ranks after online.
        order = (msg.session, 0 if msg.online else 1, _micros(msg.time))
        if is_will(msg):
            lost = env.received_at.astimezone(UTC)
            return Signal(OFFLINE, msg.kind, True, offline_severity, order,
                          f"{device} went offline at {lost:%Y-%m-%d %H:%M:%S} UTC "
                          f"(connection lost, session {msg.session})")
        if msg.online:
            return Signal(OFFLINE, msg.kind, False, offline_severity, order,
                          f"{device} is back online (session {msg.session})")
    return None  # readings, summaries, clean shutdowns


def is_late(env: Envelope, late_after_s: float) -> bool:
    """Late by the alerting rules: as ingest judged it (``env.late``), or by alerting's own
    ``late_after_s`` (hub.validate.is_late, the one definition). A will is never late: it is
    live whenever the broker delivers it, which also overrides a late flag that a hub before
    that fix journaled for it."""
    if isinstance(env.message, DataLoss):
        return False
    if is_will(env.message):
        return False
    return env.late or judged_late(env.message, env.received_at, late_after_s)


class AlertEngine:
    """Pure state machine. ``process``/``tick`` mutate the state; ``snapshot`` serialises it
    all, ``take_changes`` only the entries changed since its last call.

    Saving only what changed keeps a decision's cost flat as the state grows: every device
    seen for the first time with a firing adds an open group and a condition, and writing
    the whole state at each decision (as this did before issue 26) made each alert of a
    fleet of new devices slower than the last (p50 9 -> 21 ms within 300 crossings)."""

    def __init__(self, config: AlertingConfig, snapshot: dict[str, Any] | None = None) -> None:
        self.config = config
        self._rules = {rule.name: rule for rule in config.rules}
        self.conditions: dict[str, ConditionState] = {}
        self.groups: dict[str, GroupState] = {}
        #: offline conditions inside their ``offline_for_s`` grace, by condition key
        self.pending: dict[str, PendingOffline] = {}
        #: seconds added to a pending condition's grace because the hub could not hear the
        #: broker during it (``deaf``/``heard_again``; in memory: a restarted hub is deaf again
        #: until it reconnects, which adds its own outage)
        self._deaf_s: dict[str, float] = {}
        #: since when the hub cannot hear the broker (epoch seconds), None while it can
        self.deaf_since: float | None = None
        #: per "site/device", its sensors' names and band directions from its last birth (each
        #: birth replaces its device's entry). Bounded as the hub's identities are: ingest
        #: refuses a device or sensor past ``[limits]`` before any consumer sees it.
        self.names: dict[str, dict[str, SensorNames]] = {}
        #: keys changed since the last ``take_changes``, per section (META: the version)
        self._touched: dict[str, set[str]] = {section: set() for section in SECTIONS}
        self._touched[META] = set()
        if snapshot:
            self._load(snapshot)
        if not snapshot or snapshot.get("version") != STATE_VERSION:
            self._touched[META].add("version")  # a new or older state: save today's version

    # -- persistence ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"version": STATE_VERSION,
                "conditions": {k: asdict(v) for k, v in self.conditions.items()},
                "groups": {k: asdict(v) for k, v in self.groups.items()},
                "pending": {k: asdict(v) for k, v in self.pending.items()},
                "names": self.names}

    def take_changes(self) -> dict[str, dict[str, Any]]:
        """The entries changed since the last call, per section (``SECTIONS``, and ``META``
        with ``version`` when the layout version must be saved): key -> the entry as
        :meth:`snapshot` has it, or ``None`` when it is gone. Applied in order to what
        ``snapshot`` gave once, they give what ``snapshot`` gives now."""
        touched, self._touched = self._touched, {section: set() for section in SECTIONS}
        self._touched[META] = set()
        live: dict[str, dict[str, Any]] = {"conditions": self.conditions, "groups": self.groups,
                                           "pending": self.pending}
        out: dict[str, dict[str, Any]] = {}
        for section, keys in touched.items():
            if not keys:
                continue
            if section == META:
                out[META] = {"version": STATE_VERSION}
            elif section == "names":
                out[section] = {k: self.names.get(k) for k in keys}
            else:
                entries = live[section]
                out[section] = {k: asdict(entries[k]) if k in entries else None for k in keys}
        return out

    def _touch(self, section: str, key: str) -> None:
        self._touched[section].add(key)

    def _load(self, data: dict[str, Any]) -> None:
        if data.get("version") not in (1, STATE_VERSION):
            raise ValueError(f"alert state version {data.get('version')!r} is not "
                             f"{STATE_VERSION}")
        self.conditions = {k: ConditionState(**v)
                           for k, v in data.get("conditions", {}).items()}
        self.groups = {k: GroupState(**v) for k, v in data.get("groups", {}).items()}
        self.pending = {k: PendingOffline(**v) for k, v in data.get("pending", {}).items()}
        # optional: a state saved before names were kept has none (ids until the next birth)
        self.names = {device: {sensor: (str(entry[0]), dict(entry[1]))
                               for sensor, entry in sensors.items()}
                      for device, sensors in data.get("names", {}).items()}

    def next_due(self) -> float | None:
        """When (epoch seconds) the earliest pending offline condition is due, if any."""
        dues = [self._deadline(k, p) for k, p in self.pending.items()]
        if self.deaf_since is not None:  # nothing past it is judged until the hub hears again
            dues = [due for due in dues if due <= self.deaf_since]
        return min(dues, default=None)

    def _deadline(self, ckey: str, pending: PendingOffline) -> float:
        return pending.received + self.config.offline_for_s + self._deaf_s.get(ckey, 0.0)

    # -- the hub's own hearing -----------------------------------------------------------------
    def deaf(self, since: float) -> None:
        """The hub cannot hear the broker from ``since`` (epoch seconds: its connection dropped,
        or it is starting). A will's grace counts only time the hub could have heard the birth:
        no pending condition fires while the hub is deaf (see :meth:`heard_again`)."""
        if self.deaf_since is None:
            self.deaf_since = since

    def keep_hearing(self, other: AlertEngine) -> None:
        """Take ``other``'s deafness and deaf time (an engine rebuilt from the saved state)."""
        self.deaf_since = other.deaf_since
        self._deaf_s = {k: v for k, v in other._deaf_s.items() if k in self.pending}

    def heard_again(self, at: float) -> None:
        """The hub hears the broker again from ``at``: every pending condition whose grace was
        still running when the hub went deaf gets the deaf time added, so a birth the broker
        kept for the hub meanwhile (a broker restart publishes every will, then the devices are
        back in seconds while the hub is still reconnecting) is a flap, as it was."""
        since, self.deaf_since = self.deaf_since, None
        if since is None:
            return
        added = max(0.0, at - since)
        for ckey, pending in self.pending.items():
            if self._deadline(ckey, pending) > since:
                self._deaf_s[ckey] = self._deaf_s.get(ckey, 0.0) + added

    # -- decisions -----------------------------------------------------------------------------
    def process(self, env: Envelope, now: datetime) -> Outcome:
        out = Outcome()
        msg = env.message
        signal = signal_for(env, self.config.offline_severity, self.names)
        if signal is None:
            return out
        if isinstance(msg, DataLoss):
            self._fire_once(out, Cause.of(env), signal, now)
            return out
        cause = Cause.of(env)
        ckey = condition_key(msg.site, msg.device_id, cause.sensor_id, signal.condition)
        cond = self.conditions.get(ckey)
        if cond is not None and msg.event_id in cond.recent:
            out.redelivered += 1
            return out
        late = is_late(env, self.config.late_after_s)
        out.changed = True
        self._touch("conditions", ckey)  # made, reordered or remembering this event id
        if cond is not None and tuple(signal.order) <= tuple(cond.order):
            # Older than what we know: it must not reopen or resolve anything. A firing is
            # still worth reporting, as late, to the notifiers that take late alerts.
            out.out_of_order += 1
            self._remember(cond, msg.event_id)
            if signal.active and signal.condition == OFFLINE and self._graced():
                # With a grace, an old will never notifies: either a newer session's birth came
                # in before it (the device was back within any grace: a flap), or a newer will
                # already stands for the outage.
                if not cond.active:
                    assert isinstance(msg, DeviceStatus)
                    out.flaps.append(FlapSuppressed(msg.site, msg.device_id, msg.session,
                                                    msg.event_id, None, None))
                return out
            if signal.active:
                for rule in self._matching(signal, cause):
                    key = self._group_key(rule, cause, signal.condition)
                    alert = self._alert(key, "firing", severity=signal.severity,
                                        rule=rule.name, cause=cause, summary=signal.summary,
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
        if isinstance(msg, DeviceStatus) and msg.online:
            self._learn_names(msg)
        if signal.condition == OFFLINE and self._offline(out, env, signal, ckey=ckey, late=late,
                                                         now=now):
            return out
        if signal.active:
            self._fire(out, cause, signal, ckey=ckey, late=late, now=now)
        else:
            self._resolve(out, cause, signal, ckey=ckey, late=late, now=now)
        return out

    def tick(self, now: datetime, handled_until: float | None = None) -> Outcome:
        """Timed work: fire offline conditions whose grace ran out, repeat still-firing groups,
        notify groups whose silence expired.

        ``handled_until`` (epoch seconds): when the first event the hub recorded but alerting
        has not handled yet was received (None: it has handled all). A grace that ran out after
        it waits: the birth that ends it may be among those events."""
        out = Outcome()
        epoch = now.timestamp()
        heard = min(x for x in (epoch, self.deaf_since, handled_until) if x is not None)
        for ckey, pending in sorted(self.pending.items(),
                                    key=lambda item: (item[1].received, item[0])):
            due = self._deadline(ckey, pending)
            if due <= heard:
                del self.pending[ckey]
                self._deaf_s.pop(ckey, None)
                self._touch("pending", ckey)
                out.changed = True
                self._fire_pending(out, ckey, pending, now)
        # every open group, under the consumer's lock: the cheap test first (10,000 open
        # groups of first-seen devices took 51 ms a tick with the silences looked up first)
        intervals = {name: self.config.repeat_interval_for(rule)
                     for name, rule in self._rules.items()}
        for group in list(self.groups.values()):
            interval = intervals.get(group.rule)
            if interval is None or not (group.unsent or (
                    group.last_sent is not None and epoch - group.last_sent >= interval)):
                continue
            rule = self._rules[group.rule]
            if self._silence_for(group, now) is not None:
                continue
            names = (self._audience_for(rule, group.late) if group.unsent
                     else [n for n in group.audience if n in self.config.notifiers])
            key_parts = (group.key, "firing", group.cause_event_id, f"r{group.repeats}")
            self._touch("groups", group.key)
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
    def _learn_names(self, birth: DeviceStatus) -> None:
        """Remember the sensors' names and band directions from the device's newest birth (an
        older status arriving late never gets here). The state that keeps them is saved with
        the offline condition the birth changed."""
        self._touch("names", f"{birth.site}/{birth.device_id}")
        self.names[f"{birth.site}/{birth.device_id}"] = {
            info.sensor_id: (info.name, {t.name: t.direction for t in info.thresholds})
            for info in birth.sensors}

    def _graced(self) -> bool:
        return bool(self.config.offline_for_s > 0)

    def _offline(self, out: Outcome, env: Envelope, signal: Signal, *, ckey: str, late: bool,
                 now: datetime) -> bool:
        """The ``offline_for_s`` grace of a will or birth (already recorded in its condition).
        True when handled here; False: fire or resolve at once, as any condition."""
        msg = env.message
        assert isinstance(msg, DeviceStatus)
        pending = self.pending.get(ckey)
        if signal.active:
            if not self._graced() or any(ckey in g.members for g in self.groups.values()):
                return False  # no grace, or already firing: dedupe/escalate as usual
            if pending is None:  # still offline since an earlier will: its grace runs on
                self._touch("pending", ckey)
                cause = Cause.of(env)
                self.pending[ckey] = PendingOffline(
                    site=cause.site, device_id=cause.device_id, session=msg.session,
                    event_id=cause.event_id, event_time=cause.event_time.isoformat(),
                    received=env.received_at.timestamp(), kind=signal.kind,
                    severity=signal.severity, order=list(signal.order),
                    summary=signal.summary, late=late)
            return True
        if pending is None:
            return False
        del self.pending[ckey]
        self._touch("pending", ckey)
        gap = env.received_at.timestamp() - pending.received
        deaf_s = self._deaf_s.pop(ckey, 0.0)  # the hub could not have heard it then
        if gap <= self.config.offline_for_s + deaf_s:
            out.flaps.append(FlapSuppressed(msg.site, msg.device_id, pending.session,
                                            pending.event_id, msg.event_id, round(gap, 3)))
            return True
        # the grace ran out before this birth arrived, but no tick fired it in between (a
        # backlog, or a hub restart): it was a real outage, so fire it, then resolve it
        self._fire_pending(out, ckey, pending, now)
        return False

    def _fire_pending(self, out: Outcome, ckey: str, pending: PendingOffline,
                      now: datetime) -> None:
        grace = self.config.offline_for_s
        summary = (f"{pending.summary}; not back within {grace:g} s" if grace > 0
                   else pending.summary)
        signal = Signal(OFFLINE, pending.kind, True, pending.severity, tuple(pending.order),
                        summary)
        cause = Cause(pending.site, pending.device_id, None, pending.event_id,
                      datetime.fromisoformat(pending.event_time))
        self._fire(out, cause, signal, ckey=ckey, late=pending.late, now=now)

    def _fire(self, out: Outcome, cause: Cause, signal: Signal, *, ckey: str, late: bool,
              now: datetime) -> None:
        for rule in self._matching(signal, cause):
            key = self._group_key(rule, cause, signal.condition)
            self._touch("groups", key)
            group = self.groups.get(key)
            ids = (key, "firing", cause.event_id)
            if group is None:
                group = self.groups[key] = GroupState(
                    key=key, rule=rule.name, site=cause.site, device_id=cause.device_id,
                    sensor_id=cause.sensor_id, kind=signal.kind, severity=signal.severity,
                    members={ckey: signal.severity}, cause_event_id=cause.event_id,
                    cause_event_time=cause.event_time.isoformat(), summary=signal.summary,
                    late=late)
                self._send_firing(out, rule, group, cause=cause, signal=signal, late=late,
                                  now=now, ids=ids)
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
                group.cause_event_id = cause.event_id
                group.cause_event_time = cause.event_time.isoformat()
                group.summary = signal.summary
                group.late = late and group.late
                group.device_id, group.sensor_id = cause.device_id, cause.sensor_id
                self._send_firing(out, rule, group, cause=cause, signal=signal, late=late,
                                  now=now, ids=ids)
            else:
                out.deduplicated += 1

    def _fire_once(self, out: Outcome, cause: Cause, signal: Signal, now: datetime) -> None:
        """A ``data_loss`` record: one alert per record and matching rule, never repeated nor
        resolved (nothing can bring the events back). Its id comes from the record's, so a
        redelivered batch sends nothing new (the notifier outbox drops the repeat)."""
        out.changed = True
        for rule in self._matching(signal, cause):
            key = f"{self._group_key(rule, cause, signal.condition)}/{cause.event_id}"
            alert = self._alert(key, "firing", severity=signal.severity, rule=rule.name,
                                cause=cause, summary=signal.summary, late=False, now=now,
                                id_parts=(key, "firing", cause.event_id))
            self._route(out, alert, list(rule.notifiers), signal=signal, now=now)

    def _send_firing(self, out: Outcome, rule: Rule, group: GroupState, *, cause: Cause,
                     signal: Signal, late: bool, now: datetime, ids: tuple[str, ...]) -> None:
        alert = self._alert(group.key, "firing", severity=group.severity, rule=rule.name,
                            cause=cause, summary=signal.summary, late=late, now=now,
                            id_parts=ids)
        names = self._audience_for(rule, late)
        if self._route(out, alert, names, signal=signal, now=now):
            group.audience = sorted(set(group.audience) | set(names))
            group.last_sent = now.timestamp()
            group.unsent = False
        else:
            group.unsent = True

    def _resolve(self, out: Outcome, cause: Cause, signal: Signal, *, ckey: str, late: bool,
                 now: datetime) -> None:
        for key, group in list(self.groups.items()):
            if ckey not in group.members:
                continue
            self._touch("groups", key)
            del group.members[ckey]
            if group.members:
                # still firing for another member: its severity is the highest left
                group.severity = max(group.members.values(), key=SEVERITY_RANK.__getitem__)
                continue
            del self.groups[key]
            names = [n for n in group.audience if n in self.config.notifiers]
            if not names:
                continue  # never notified (silenced, or late with no late notifier)
            alert = Alert(alert_id=alert_id(key, "resolved", cause.event_id), group_key=key,
                          status="resolved", severity=group.severity, rule=group.rule,
                          site=group.site, device_id=group.device_id,
                          sensor_id=group.sensor_id, summary=signal.summary,
                          event_id=cause.event_id, event_time=cause.event_time, late=late,
                          time=now)
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

    def _matching(self, signal: Signal, cause: Cause) -> list[Rule]:
        return [rule for rule in self.config.rules
                if rule.match.matches(site=cause.site, device=cause.device_id,
                                      sensor=cause.sensor_id, kind=signal.kind,
                                      severity=signal.severity)]

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
    def _group_key(rule: Rule, cause: Cause, condition: str) -> str:
        values = {"site": cause.site, "device": cause.device_id,
                  "sensor": cause.sensor_id or "-", "condition": condition}
        parts = [f"rule={rule.name}"] + [f"{name}={values[name]}" for name in rule.group_by
                                         if name != "rule"]
        return ",".join(parts)

    @staticmethod
    def _alert(key: str, status: Literal["firing", "resolved"], *, severity: Severity,
               rule: str, cause: Cause, summary: str, late: bool, now: datetime,
               id_parts: tuple[str, ...]) -> Alert:
        return Alert(alert_id=alert_id(*id_parts), group_key=key, status=status,
                     severity=severity, rule=rule, site=cause.site,
                     device_id=cause.device_id, sensor_id=cause.sensor_id,
                     summary=summary, event_id=cause.event_id, event_time=cause.event_time,
                     late=late, time=now.astimezone(UTC))

    @staticmethod
    def _remember(cond: ConditionState, event_id: str) -> None:
        recent = deque(cond.recent, maxlen=RECENT_IDS)
        recent.append(event_id)
        cond.recent = list(recent)
