"""Fault episodes: one ``active`` draft when a fault begins, one recovery when it ends.

An episode is a run of rejected or source-faulted samples with the same fault code. Another bad
sample with the same code changes nothing (no draft per bad sample). A different code ends the
current episode (its recovery draft says which fault superseded it) and begins a new one, so every
active draft is matched by exactly one inactive draft and alerting can resolve each fault code.
The next good reading ends the episode. ``stale`` is tracked separately (see :mod:`.stale`): it
can overlap a sample fault.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.vocabulary import FaultCode


@dataclass(frozen=True, slots=True)
class FaultTransition:
    """A fault began (``active``) or ended on one sensor."""

    fault: FaultCode
    active: bool


class FaultEpisodes:
    def __init__(self) -> None:
        self.current: FaultCode | None = None

    def fault(self, code: FaultCode) -> list[FaultTransition]:
        if code == self.current:
            return []
        out = []
        if self.current is not None:
            out.append(FaultTransition(self.current, False))
        self.current = code
        out.append(FaultTransition(code, True))
        return out

    def recover(self) -> FaultTransition | None:
        if self.current is None:
            return None
        ended = FaultTransition(self.current, False)
        self.current = None
        return ended
