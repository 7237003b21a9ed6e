"""Loss is never silent: which seqs of a device no hub holds, and when a gap counts as lost.

Pure (the ingest thread feeds it and records what it decides). Its inputs:

- ``held(site, device, ranges)``: seqs a hub holds: this hub's own, noted when its journal
  commit returns, and every hub's receipts read from ``{root}/+/+/receipt`` (so with several
  hubs or workers on one shared subscription, the hub that detects sees the union);
- ``status(site, device, oldest_seq)``: the agent's status says the oldest event its outbox
  still holds (the ``outbox_oldest_seq`` counter; everything below it has left the outbox).

Per device it keeps the seq ranges held (merged: a device that loses nothing is one range) and,
for every gap between them, when the gap last changed. A gap becomes a ``Loss``:

- at once (after ``grace_s``) when the agent's status says its outbox no longer holds any seq of
  the gap: nothing can fill it any more (its outbox evicted them: ``cause`` says so);
- after ``gap_timeout_s`` without any progress, unless the newest status says the agent still
  holds seqs of the gap (it is still sending its backlog): a status younger than the timeout, or
  the last status of an agent that has gone offline since (its ``shutdown`` status, or its will
  after it). An offline agent's outbox keeps every event no hub receipted, so the gap waits for
  the agent to come back and send them (its next status then counts, as above); an agent stopped
  for longer than the timeout with a backlog is not a loss.

Seqs below the first one seen for a device are never a gap (the device is older than this hub).
A lost gap counts as held from then on, so each loss is reported once; :meth:`snapshot` and the
constructor's ``state`` carry all of it across a restart.

Only what a hub holds is held: seqs of payloads a hub refused (a receipt's ``refused``, the
ingest decision's ``refused``) are never given to :meth:`held`, so a refused event that never
arrives whole is a gap like any other.

Sane numbers (``max_seq_jump``): a range more than ``max_seq_jump`` above the highest seq held
for the device (or more than that below the lowest) is a *jump*, not a gap: a reset or corrupt
seq counter, or a hostile payload, never a loss of 10^18 events. The device's tracking restarts
from the new range (its open gaps are dropped, and said so in the :class:`Jump` that ingest logs
as ``ingest.seq_jump`` and counts). So no gap, and no ``Loss``, is ever larger than
``max_seq_jump - 1`` seqs. The state read back at start-up is checked the same way: a device
whose state is not sane (a seq outside ``0 .. SEQ_MAX``, a malformed entry: a state written by an
older hub) is dropped, a gap wider than ``max_seq_jump`` restarts its tracking above it; both
are listed in :attr:`LossDetector.repaired`.

Failure of one device never stops the rest: :meth:`due` evaluates each device on its own; if
that raises, the device's state is dropped (:meth:`forget`) and the failure listed in
:attr:`LossDetector.failures` for ingest to log (with its traceback) and count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.models import SEQ_MAX, TEXT_MAX
from schemas.seq_ranges import add_range

Key = tuple[str, str]
DEFAULT_MAX_SEQ_JUMP = 1_000_000


@dataclass(frozen=True, slots=True)
class Loss:
    """The detector's decision: a gap counts as lost. A thin view of the contract's
    ``DataLoss`` (the range and the cause; no id, time or hub: hub/receipt_core.py
    ``loss_record`` adds them when ingest records it)."""

    site: str
    device_id: str
    first_seq: int
    last_seq: int
    cause: str | None


@dataclass(frozen=True, slots=True)
class Jump:
    """A device's seq jumped further than ``max_seq_jump``: its tracking restarted at ``to_seq``
    (the first seq of the new range; ``from_seq``: the highest seq held before, or the lowest
    for a jump down)."""

    site: str
    device_id: str
    from_seq: int
    to_seq: int
    dropped_gaps: int  # open gaps of the old tracking, dropped with it
    dropped_seqs: int  # the seqs those gaps named


@dataclass(slots=True)
class _Device:
    held: list[list[int]] = field(default_factory=list)   # sorted, disjoint [first, last]
    gaps: dict[tuple[int, int], float] = field(default_factory=dict)  # gap -> last changed
    oldest: int | None = None     # the agent's outbox_oldest_seq, from its newest status
    status_at: float = float("-inf")
    drops: str = ""               # the agent's drop counters, for the cause
    online: bool = True           # False after a status saying the agent went offline


def _is_seq(value: Any) -> bool:
    return type(value) is int and 0 <= value <= SEQ_MAX


def _load_device(data: Any, max_jump: int) -> tuple[_Device, str]:
    """A device's stored state, checked (raises ValueError if it cannot be used), and what was
    repaired in it ("" if nothing)."""
    held: list[list[int]] = []
    for r in data["held"]:
        first, last = r
        if not (_is_seq(first) and _is_seq(last) and first <= last):
            raise ValueError(f"held range {r!r} is not within 0..{SEQ_MAX}")
        add_range(held, first, last)
    gaps: dict[tuple[int, int], float] = {}
    for a, b, t in data["gaps"]:
        if not (_is_seq(a) and _is_seq(b) and isinstance(t, int | float)):
            raise ValueError(f"gap {a!r}-{b!r} is not within 0..{SEQ_MAX}")
        gaps[(a, b)] = float(t)
    repaired = ""
    for i in range(len(held) - 1, 0, -1):  # the highest gap wider than a jump: restart above
        if held[i][0] - held[i - 1][1] - 1 >= max_jump:
            repaired = (f"tracking restarted at seq {held[i][0]}: a gap of "
                        f"{held[i][0] - held[i - 1][1] - 1} seqs is wider than max_seq_jump")
            held = held[i:]
            gaps = {g: t for g, t in gaps.items() if g[0] > held[0][0]}
            break
    dev = _Device(held=held, gaps=gaps)
    return dev, repaired


class LossDetector:
    def __init__(self, gap_timeout_s: float = 300.0, grace_s: float = 5.0,
                 state: dict[str, Any] | None = None,
                 max_seq_jump: int = DEFAULT_MAX_SEQ_JUMP) -> None:
        self.gap_timeout_s = gap_timeout_s
        self.grace_s = grace_s
        self.max_seq_jump = max_seq_jump
        self._devices: dict[Key, _Device] = {}
        self.changed: set[Key] = set()   # devices whose state changed since the last snapshot
        #: seq jumps seen since ingest last took them (it logs and counts each, then clears)
        self.jumps: list[Jump] = []
        #: devices whose evaluation raised in :meth:`due` (their state was dropped), with the
        #: exception, since ingest last took them
        self.failures: list[tuple[Key, Exception]] = []
        #: stored devices repaired or dropped at start-up: ``site/device`` -> what was done
        self.repaired: dict[str, str] = {}
        for key, data in (state or {}).items():
            site, _, device = key.partition("/")
            try:
                dev, repaired = _load_device(data, max_seq_jump)
            except (ValueError, TypeError, KeyError) as exc:
                # tracking starts again; the empty state overwrites the stored one
                dev, repaired = _Device(), f"dropped: {exc}"[:TEXT_MAX]
            if repaired:
                self.repaired[key] = repaired
                self.changed.add((site, device))
            self._devices[(site, device)] = dev

    # -- inputs ----------------------------------------------------------------------------------
    def held(self, site: str, device: str, ranges: Iterable[tuple[int, int]],
             now: float) -> None:
        """Seqs a hub holds (``(first, last)`` ranges within ``0 .. SEQ_MAX``)."""
        dev = self._devices.setdefault((site, device), _Device())
        jump = self.max_seq_jump
        for first, last in ranges:
            if not (0 <= first <= last <= SEQ_MAX):
                raise ValueError(f"seq range {first}-{last} is not within 0..{SEQ_MAX}")
            held = dev.held
            if held and (first > held[-1][1] + jump or last < held[0][0] - jump):
                up = first > held[-1][1]
                self.jumps.append(Jump(site, device, held[-1][1] if up else held[0][0],
                                       first, len(dev.gaps),
                                       sum(b - a + 1 for a, b in dev.gaps)))
                dev.held = [[first, last]]
                dev.gaps = {}
                continue
            add_range(held, first, last)
        self._refresh_gaps(dev, now)
        self.changed.add((site, device))

    def forget(self, site: str, device: str) -> None:
        """Drop what is known of a device (its state failed): tracking starts again from its
        next seq; the empty state is recorded with the next snapshot."""
        if (site, device) in self._devices:
            self._devices[(site, device)] = _Device()
            self.changed.add((site, device))

    def status(self, site: str, device: str, oldest_seq: int | None, now: float,  # noqa: PLR0917
               drops: str = "", online: bool = True) -> None:
        """The agent's status: ``oldest_seq`` (None: the status did not say, as a will made at
        connect time) and whether the agent is ``online``."""
        dev = self._devices.get((site, device))
        if dev is None:
            return
        dev.online = online
        if oldest_seq is None:
            return
        dev.oldest = oldest_seq
        dev.status_at = now
        dev.drops = drops

    # -- decisions -------------------------------------------------------------------------------
    def due(self, now: float) -> list[Loss]:
        """The gaps that count as lost now; each is then held (reported once)."""
        out: list[Loss] = []
        for key, dev in list(self._devices.items()):
            if not dev.gaps:
                continue
            try:
                out.extend(self._due(key, dev, now))
            except Exception as exc:  # noqa: BLE001 - one device's failure stops no other
                self.failures.append((key, exc))
                self.forget(*key)
        return out

    def _due(self, key: Key, dev: _Device, now: float) -> list[Loss]:
        site, device = key
        lost: list[tuple[int, int, str | None]] = []
        for (first, last), changed_at in dev.gaps.items():
            gone = (dev.oldest is not None and dev.oldest > last
                    and dev.status_at >= changed_at + self.grace_s)
            if gone:
                why = "not in the agent's outbox any more" + (
                    f" (its drops: {dev.drops})" if dev.drops else "")
                lost.append((first, last, why[:TEXT_MAX]))
            elif now - changed_at >= self.gap_timeout_s:
                still_held = (dev.oldest is not None and dev.oldest <= last
                              and (now - dev.status_at < self.gap_timeout_s
                                   or not dev.online))
                if not still_held:
                    lost.append((first, last, None))
        out = []
        for first, last, cause in lost:
            out.append(Loss(site, device, first, last, cause))
            add_range(dev.held, first, last)
        if lost:
            self._refresh_gaps(dev, now)
            self.changed.add(key)
        return out

    def gaps(self, site: str, device: str) -> Sequence[tuple[int, int]]:
        dev = self._devices.get((site, device))
        return sorted(dev.gaps) if dev else []

    @property
    def open_gaps(self) -> int:
        return sum(len(d.gaps) for d in self._devices.values())

    # -- persistence -----------------------------------------------------------------------------
    def snapshot(self, keys: Iterable[Key] | None = None) -> dict[str, Any]:
        """The state of ``keys`` (all devices by default), JSON-ready, keyed ``site/device``."""
        keys = list(self._devices) if keys is None else list(keys)
        return {f"{site}/{device}": {"held": self._devices[(site, device)].held,
                                     "gaps": [[a, b, t] for (a, b), t
                                              in self._devices[(site, device)].gaps.items()]}
                for site, device in keys if (site, device) in self._devices}

    @staticmethod
    def _refresh_gaps(dev: _Device, now: float) -> None:
        if len(dev.held) <= 1 and not dev.gaps:  # the usual device: one run, nothing missing
            return
        gaps = {(a[1] + 1, b[0] - 1) for a, b in zip(dev.held, dev.held[1:], strict=False)}
        dev.gaps = {g: dev.gaps.get(g, now) for g in gaps}
