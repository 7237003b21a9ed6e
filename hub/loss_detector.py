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
- after ``gap_timeout_s`` without any progress, unless the newest status (younger than the
  timeout) says the agent still holds seqs of the gap (it is still sending its backlog).

Seqs below the first one seen for a device are never a gap (the device is older than this hub).
A lost gap counts as held from then on, so each loss is reported once; :meth:`snapshot` and the
constructor's ``state`` carry all of it across a restart.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Loss:
    site: str
    device_id: str
    first_seq: int
    last_seq: int
    cause: str | None


@dataclass(slots=True)
class _Device:
    held: list[list[int]] = field(default_factory=list)   # sorted, disjoint [first, last]
    gaps: dict[tuple[int, int], float] = field(default_factory=dict)  # gap -> last changed
    oldest: int | None = None     # the agent's outbox_oldest_seq, from its newest status
    status_at: float = float("-inf")
    drops: str = ""               # the agent's drop counters, for the cause


def add_range(held: list[list[int]], first: int, last: int) -> None:
    """Merge ``first..last`` into the sorted, disjoint ranges ``held`` (in place)."""
    i = bisect.bisect_left(held, [first, first])
    if i > 0 and held[i - 1][1] >= first - 1:
        i -= 1
    j = i
    while j < len(held) and held[j][0] <= last + 1:
        first = min(first, held[j][0])
        last = max(last, held[j][1])
        j += 1
    held[i:j] = [[first, last]]


class LossDetector:
    def __init__(self, gap_timeout_s: float = 300.0, grace_s: float = 5.0,
                 state: dict[str, Any] | None = None) -> None:
        self.gap_timeout_s = gap_timeout_s
        self.grace_s = grace_s
        self._devices: dict[Key, _Device] = {}
        self.changed: set[Key] = set()   # devices whose state changed since the last snapshot
        for key, data in (state or {}).items():
            site, device = key.split("/", 1)
            self._devices[(site, device)] = _Device(
                held=[list(r) for r in data["held"]],
                gaps={(a, b): t for a, b, t in data["gaps"]})

    # -- inputs ----------------------------------------------------------------------------------
    def held(self, site: str, device: str, ranges: Iterable[tuple[int, int]],
             now: float) -> None:
        dev = self._devices.setdefault((site, device), _Device())
        for first, last in ranges:
            add_range(dev.held, first, last)
        self._refresh_gaps(dev, now)
        self.changed.add((site, device))

    def status(self, site: str, device: str, oldest_seq: int | None, now: float,
               drops: str = "") -> None:
        dev = self._devices.get((site, device))
        if dev is None or oldest_seq is None:
            return
        dev.oldest = oldest_seq
        dev.status_at = now
        dev.drops = drops

    # -- decisions -------------------------------------------------------------------------------
    def due(self, now: float) -> list[Loss]:
        """The gaps that count as lost now; each is then held (reported once)."""
        out: list[Loss] = []
        for (site, device), dev in self._devices.items():
            lost: list[tuple[int, int, str | None]] = []
            for (first, last), changed_at in dev.gaps.items():
                gone = (dev.oldest is not None and dev.oldest > last
                        and dev.status_at >= changed_at + self.grace_s)
                if gone:
                    lost.append((first, last, "not in the agent's outbox any more" + (
                        f" (its drops: {dev.drops})" if dev.drops else "")))
                elif now - changed_at >= self.gap_timeout_s:
                    still_held = (dev.oldest is not None and dev.oldest <= last
                                  and now - dev.status_at < self.gap_timeout_s)
                    if not still_held:
                        lost.append((first, last, None))
            for first, last, cause in lost:
                out.append(Loss(site, device, first, last, cause))
                add_range(dev.held, first, last)
            if lost:
                self._refresh_gaps(dev, now)
                self.changed.add((site, device))
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
