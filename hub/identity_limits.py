"""Which identities (site, device, sensor) the hub takes events from: a cap per level.

Pure (no I/O, time passed in). Every per-identity structure of the hub (the order tracker, the
live page's devices and sensors, the alerting engine's conditions, Home Assistant's entities,
the loss detector) grows with the identities the hub has accepted an event from. A device
account that may publish for any site or device (a broker ACL looser than deploy/'s) could
otherwise invent identities until the hub runs out of memory. So an identity is *admitted*
before its first event is accepted, against the caps of ``[limits]`` (``hub/config/sections.py``):

- ``max_sites`` sites; ``max_devices_per_site`` devices in one site and ``max_devices`` in all;
- ``max_sensors_per_device`` sensors of one device and ``max_sensors`` in all. A sensor is
  admitted by its first event, or by its device's status that lists it (the live page shows
  the sensors a status lists).

An event or status whose identity would pass a cap is refused: :meth:`IdentityLimits.check`
returns a :class:`~hub.validate.Rejection` with the code ``identity_limit`` and a reason naming
the cap and its config key, and the hub stores it as a dead letter (``hub dlq`` lists it; a
replay after raising the cap accepts it). Refusals are counted per level (:attr:`refused`) and
logged through :class:`RefusalLog`: the first refusal of each cap at once, then at most one
line per cap every ``log_every_s`` with the count since the last line, never one per message.

Memory: the known identities only (at most the caps; each admitted sensor twice, in the tree
and as one tuple for the usual event's one look-up), a counter per level and one example per
cap; nothing per refused identity.

Known identities are kept: the hub's journal holds them (table ``identities``, written in the
same transaction as the batch that admitted them, :meth:`IdentityLimits.take_new`) and a
restarted hub starts from them. An identity that stops sending is never forgotten by the hub:
a device that comes back after months is not refused because a flood filled the caps in
between. To free places (a device retired, a flood of invented identities), stop the hub and
delete their rows (hub/README.md, "Limits"). With ``hub run --workers N`` each worker has its
own journal and applies the caps to what it receives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hub.config.sections import LimitsConfig
from hub.validate import Accepted, Rejection
from schemas.models import DeviceStatus

IDENTITY_LIMIT = "identity_limit"  # the dead letters' reason code
LEVELS = ("site", "device", "sensor")
NO_SENSOR = ""  # the sensor of a device known only by its status (the journal's table)

Identity = tuple[str, str, str]  # (site, device, sensor or NO_SENSOR)


@dataclass(slots=True)
class _Device:
    sensors: set[str] = field(default_factory=set)


class IdentityLimits:
    """The identities admitted so far, and the caps that decide on new ones."""

    def __init__(self, caps: LimitsConfig, known: Iterable[Identity] = ()) -> None:
        self.caps = caps
        self._sites: dict[str, dict[str, _Device]] = {}
        #: every admitted (site, device, sensor): the usual event is known in one look-up
        self._admitted: set[Identity] = set()
        self.devices = 0
        self.sensors = 0
        self._new: list[Identity] = []
        self.refused = dict.fromkeys(LEVELS, 0)  # refusals per level since start
        self._uncounted = dict.fromkeys(LEVELS, 0)  # ... not yet taken by take_refused
        self.log = RefusalLog()  # the ingest thread logs its lines (hub/ingest.py)
        for site, device, sensor in known:  # admitted once: kept, even past lowered caps
            self._add(site, device, sensor or None)
        self._new.clear()

    @property
    def sites(self) -> int:
        return len(self._sites)

    def over_caps(self) -> list[str]:
        """The caps the known identities pass (the caps were lowered since they came)."""
        c = self.caps
        over = [f"limits.max_sites: {self.sites} sites known"] if self.sites > c.max_sites \
            else []
        if self.devices > c.max_devices:
            over.append(f"limits.max_devices: {self.devices} devices known")
        if self.sensors > c.max_sensors:
            over.append(f"limits.max_sensors: {self.sensors} sensors known")
        return over

    def knows(self, site: str, device: str) -> bool:
        """Is the device admitted (any of its events or statuses was accepted)?"""
        devices = self._sites.get(site)
        return devices is not None and device in devices

    def check(self, message: Accepted, now: float = 0.0) -> Accepted | Rejection:
        """``message`` if its identity is known or fits the caps (then it is known from now
        on); else why not (``identity_limit``), counted and noted for the log."""
        site, device = message.site, message.device_id
        if isinstance(message, DeviceStatus):
            sensors = [info.sensor_id for info in message.sensors]
        else:
            sensor = message.sensor_id
            if (site, device, sensor) in self._admitted:  # the usual event
                return message
            sensors = [sensor]
        known = self._sites.get(site)
        if known is not None:  # the fast path: every sensor already known
            dev = known.get(device)
            if dev is not None and all(s in dev.sensors for s in sensors):
                return message
        refusal = self._refusal(site, device, sensors)
        if refusal is not None:
            level, key, limit = refusal
            self.refused[level] += 1
            self._uncounted[level] += 1
            self.log.note(key, f"{site}/{device}" + (f"/{sensors[0]}" if level == "sensor"
                                                      else ""), now)
            return Rejection(IDENTITY_LIMIT,
                             f"identity limit: {self._what(level, site, device)} would pass "
                             f"the cap of {limit:,} ({key} in the hub's config)")
        if not sensors:
            self._add(site, device, None)
        for sensor in sensors:
            self._add(site, device, sensor)
        return message

    def take_refused(self) -> dict[str, int]:
        """Refusals per level since the last call (levels with none left out: for metrics)."""
        out = {level: n for level, n in self._uncounted.items() if n}
        if out:
            self._uncounted = dict.fromkeys(LEVELS, 0)
        return out

    def take_new(self) -> list[Identity]:
        """The identities admitted since the last call (for the journal, with their batch)."""
        new, self._new = self._new, []
        return new

    # -- internals ---------------------------------------------------------------------------
    def _refusal(self, site: str, device: str, sensors: list[str],
                 ) -> tuple[str, str, int] | None:
        """(level, config key, cap) of the first cap that admitting these would pass."""
        c = self.caps
        devices = self._sites.get(site)
        if devices is None:
            if len(self._sites) >= c.max_sites:
                return "site", "limits.max_sites", c.max_sites
            devices = {}
        dev = devices.get(device)
        if dev is None:
            if len(devices) >= c.max_devices_per_site:
                return "device", "limits.max_devices_per_site", c.max_devices_per_site
            if self.devices >= c.max_devices:
                return "device", "limits.max_devices", c.max_devices
        have = dev.sensors if dev is not None else set()
        new = len(set(sensors) - have)
        if new:
            if len(have) + new > c.max_sensors_per_device:
                return "sensor", "limits.max_sensors_per_device", c.max_sensors_per_device
            if self.sensors + new > c.max_sensors:
                return "sensor", "limits.max_sensors", c.max_sensors
        return None

    @staticmethod
    def _what(level: str, site: str, device: str) -> str:
        if level == "site":
            return f"a new site {site!r}"
        if level == "device":
            return f"a new device {device!r} (site {site!r})"
        return f"a new sensor of device {device!r} (site {site!r})"

    def _add(self, site: str, device: str, sensor: str | None) -> None:
        devices = self._sites.get(site)
        if devices is None:
            self._sites[site] = devices = {}
        dev = devices.get(device)
        if dev is None:
            devices[device] = dev = _Device()
            self.devices += 1
            if sensor is None:
                self._new.append((site, device, NO_SENSOR))
        if sensor is not None and sensor not in dev.sensors:
            dev.sensors.add(sensor)
            self._admitted.add((site, device, sensor))
            self.sensors += 1
            self._new.append((site, device, sensor))


@dataclass(frozen=True, slots=True)
class RefusalLine:
    """One log line about one cap: ``count`` refusals since the last line, the last example."""

    key: str
    count: int
    example: str
    first: bool  # the first refusal by this cap since the hub started


class RefusalLog:
    """Rate-limits the refusal log lines: per cap, the first at once, then one line at most
    every ``log_every_s`` while refusals go on (with their count), nothing when they stop.
    Memory: one entry per cap (five), whatever the number of refused identities."""

    def __init__(self, log_every_s: float = 60.0) -> None:
        self.log_every_s = log_every_s
        self._pending: dict[str, tuple[int, str]] = {}  # key -> (count, last example)
        self._last_line: dict[str, float] = {}          # key -> when its last line was made
        self._logged: set[str] = set()                  # keys with a line made already

    def note(self, key: str, example: str, now: float) -> None:
        count, _ = self._pending.get(key, (0, ""))
        self._pending[key] = (count + 1, example)
        self._last_line.setdefault(key, now - self.log_every_s)  # the first: due at once

    def due(self, now: float) -> list[RefusalLine]:
        out = []
        for key, (count, example) in list(self._pending.items()):
            last = self._last_line[key]
            if now - last >= self.log_every_s:
                first = key not in self._logged
                out.append(RefusalLine(key, count, example, first))
                self._logged.add(key)
                self._last_line[key] = now
                del self._pending[key]
        return out
