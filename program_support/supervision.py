"""One supervision model for every long-lived thread of both programs (hub and agent).

Crash-only, in the shape of an OTP supervisor with one owner per process::

    Supervisor ──spawn()──▶ Component "ingest"     ┐ each a thread running ``target()``
                 ├────────▶ Component "consumer-…" │ until the supervisor stops
                 └────────▶ Component "delivery"   ┘

- A component whose ``target`` raises (or returns while the supervisor is not stopping) has
  *crashed*: the exception is logged once, with its traceback (``supervisor.component_crashed``),
  ``on_crash`` is called (the hub counts it in ``/metrics``), and the component is *down*: the
  process's health says so, naming the component and the exception.
- A crashed component is restarted after an exponential backoff (``restart_initial_s`` doubling
  to ``restart_max_s``), first calling its ``reset`` hook, which rebuilds the component's state
  from durable state (the journal, the outbox) so a half-done step is not carried over.
- Past the restart budget (``budget`` crashes within ``budget_window_s``) the component is not
  restarted: the supervisor turns *fatal* (``fatal`` is set, ``fatal_reason`` says why) and the
  program stops and exits non-zero (``EXIT_COMPONENT_FAILED``), so systemd, compose or
  ``hub run --workers``' parent restarts the whole process.
- A component may also beat a heartbeat (``Component.beat``) and declare ``stall_s``: a loop that
  has not turned for longer than that is reported as stalled (health not ok), never restarted (a
  thread cannot be killed): the agent's watchdog then stops pinging and systemd restarts it.
- Ending on purpose: the owner calls :meth:`Supervisor.retire` (one component, e.g. a consumer
  being stopped) or :meth:`Supervisor.stop` (all of them) *before* it tells its loop to end; a
  loop that returns (or raises) after that has ended, not crashed, and a restart that was waiting
  its backoff is called off. A component spawned with ``may_return=True`` (a simulator that plays
  its scenario once) may also end on its own: returning is ``finished``, only raising is a crash.
- A reset that raises is a crash too (``during="reset"``): counted against the same budget, and
  the next restart waits its backoff and calls ``reset`` again before the loop runs.

Health is derived from here, never set by a component itself (:meth:`Supervisor.health`).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from program_support.backoff import exponential_delay

log = structlog.get_logger("supervisor")

#: the exit code of a process whose component failed past its restart budget (EX_SOFTWARE)
EXIT_COMPONENT_FAILED = 70
#: the test-only crash seam of ``hub run`` and ``edge-agent run`` (each CLI's
#: ``_test_crash_seam``): tests reach the exit-70 path through a real process with it
TEST_CRASH_ENV = "THERMOPIPE_TEST_CRASH_COMPONENT"
#: the most characters of an exception kept for health and logs (a message from the wire may be
#: quoted in it)
ERROR_MAX = 300


def describe(exc: BaseException) -> str:
    """``Type: message``, bounded (:data:`ERROR_MAX`) and on one line."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= ERROR_MAX else text[:ERROR_MAX - 3] + "..."


@dataclass
class Component:
    """One supervised thread and what the supervisor knows of it."""

    name: str
    target: Callable[[], None]
    reset: Callable[[], None] | None = None
    stall_s: float | None = None
    may_return: bool = False       # returning (not raising) ends it: "finished", not a crash
    state: str = "starting"        # starting | running | restarting | failed | stopped | finished
    crashes: int = 0
    last_error: str = ""
    last_crash_at: float | None = None     # wall clock, for people
    restart_at: float | None = None        # monotonic, while restarting
    last_beat: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None
    _recent: deque[float] = field(default_factory=deque)  # monotonic crash times in the window
    _halt: threading.Event = field(default_factory=threading.Event)  # retired or stopping

    def beat(self) -> None:
        """The component's loop turned (cheap: one attribute write)."""
        self.last_beat = time.monotonic()

    def stalled(self, now: float) -> bool:
        return (self.stall_s is not None and self.state == "running"
                and now - self.last_beat > self.stall_s)

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def halted(self) -> bool:
        """Its owner ended it (retired, or the supervisor stopping): no restart any more."""
        return self._halt.is_set()

    def up(self, now: float) -> bool:
        """Running, its thread alive and its loop turning."""
        return self.state == "running" and self.alive and not self.stalled(now)


class Supervisor:
    def __init__(self, *, restart_initial_s: float = 0.5, restart_max_s: float = 30.0,
                 budget: int = 5, budget_window_s: float = 600.0,
                 on_crash: Callable[[str, BaseException], None] | None = None,
                 on_fatal: Callable[[str], None] | None = None) -> None:
        self.restart_initial_s = restart_initial_s
        self.restart_max_s = restart_max_s
        self.budget = budget
        self.budget_window_s = budget_window_s
        self.on_crash = on_crash
        self.on_fatal = on_fatal
        self.components: dict[str, Component] = {}
        self.fatal = threading.Event()
        self.fatal_reason = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # ---- starting and stopping -----------------------------------------------------------------
    def spawn(self, name: str, target: Callable[[], None], *,
              reset: Callable[[], None] | None = None, stall_s: float | None = None,
              may_return: bool = False, start: bool = True) -> Component:
        """Run ``target`` in a supervised thread named ``name`` (``start=False``: registered
        now, started by :meth:`start`)."""
        with self._lock:
            if name in self.components:
                raise ValueError(f"a component named {name!r} is supervised already")
            component = Component(name, target, reset, stall_s, may_return)
            if self._stop.is_set():
                component._halt.set()
            self.components[name] = component
        component.thread = threading.Thread(target=self._keep, args=(component,), name=name,
                                            daemon=True)
        if start:
            component.thread.start()
        return component

    def start(self, name: str) -> None:
        thread = self.components[name].thread
        if thread is not None and not thread.is_alive() and thread.ident is None:
            thread.start()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """No more restarts; components end when their own stop is asked by their owner."""
        with self._lock:
            self._stop.set()
            components = list(self.components.values())
        for component in components:
            component._halt.set()

    def retire(self, name: str) -> None:
        """Component ``name`` is being ended by its owner: its end is not a crash, and a
        restart waiting its backoff is called off (unknown names: nothing to do)."""
        component = self.components.get(name)
        if component is not None:
            component._halt.set()

    def join(self, name: str, timeout: float) -> bool:
        """Wait for one component's thread; False when it is still running after ``timeout``."""
        component = self.components.get(name)
        if component is None or component.thread is None or component.thread.ident is None:
            return True
        component.thread.join(timeout)
        return not component.thread.is_alive()

    # ---- the keeper: run, and restart after a crash ----------------------------------------------
    def _keep(self, component: Component) -> None:
        while True:
            component.state = "running"
            component.beat()
            try:
                component.target()
            except BaseException as exc:  # noqa: BLE001 - the supervisor is the one place
                if component.halted:
                    log.warning("supervisor.component_failed_while_stopping",
                                component=component.name, error=describe(exc))
                    component.state = "stopped"
                    return
                error: BaseException = exc
            else:
                if component.halted:
                    component.state = "stopped"
                    return
                if component.may_return:
                    component.state = "finished"
                    log.info("supervisor.component_finished", component=component.name)
                    return
                error = RuntimeError("its loop returned while the program was running")
            if not self._crashed(component, error) or not self._restart(component):
                return
            log.info("supervisor.component_restarted", component=component.name,
                     crashes=component.crashes)

    def _restart(self, component: Component) -> bool:
        """Wait the backoff, then reset; a reset that raises is a crash (budget) and is tried
        again after the next backoff. False: no restart (stopped, or past the budget)."""
        while True:
            if component._halt.wait(max(0.0, (component.restart_at or 0.0) - time.monotonic())):
                component.state = "stopped"
                return False
            if component.reset is None:
                return True
            try:
                component.reset()
            except BaseException as exc:  # noqa: BLE001 - a failed reset is a crash too
                if component.halted:
                    component.state = "stopped"
                    return False
                if not self._crashed(component, exc, during="reset"):
                    return False
                continue
            return True

    def _crashed(self, component: Component, exc: BaseException, during: str = "run") -> bool:
        """Record a crash; True when the component is to be restarted (within its budget)."""
        now = time.monotonic()
        component.crashes += 1
        component.last_error = describe(exc)
        component.last_crash_at = time.time()
        recent = component._recent
        recent.append(now)
        while recent and now - recent[0] > self.budget_window_s:
            recent.popleft()
        within = len(recent) <= self.budget
        delay = exponential_delay(len(recent) - 1, self.restart_initial_s, self.restart_max_s)
        log.error("supervisor.component_crashed", component=component.name, during=during,
                  error=component.last_error, crashes=component.crashes,
                  restart_in_s=round(delay, 2) if within else None,
                  traceback="".join(traceback.format_exception(exc)))
        if self.on_crash is not None:
            try:
                self.on_crash(component.name, exc)
            except Exception as hook_exc:  # noqa: BLE001 - a metrics hook must not stop this
                log.warning("supervisor.on_crash_failed", error=describe(hook_exc))
        if within:
            component.state = "restarting"
            component.restart_at = now + delay
            return True
        component.state = "failed"
        component.restart_at = None
        reason = (f"{component.name} crashed {len(recent)} times within "
                  f"{self.budget_window_s:g} s (last: {component.last_error})")
        with self._lock:
            first = not self.fatal.is_set()
            if first:  # the first component past its budget is the reason to exit
                self.fatal_reason = reason
                self.fatal.set()
        log.critical("supervisor.fatal", component=component.name, reason=reason,
                     exit_code=EXIT_COMPONENT_FAILED)
        if first and self.on_fatal is not None:
            try:
                self.on_fatal(reason)
            except Exception as hook_exc:  # noqa: BLE001 - the fatal event is set already
                log.warning("supervisor.on_fatal_failed", error=describe(hook_exc))
        return False

    # ---- what health reports ---------------------------------------------------------------------
    def problems(self, now: float | None = None) -> dict[str, str]:
        """Components that are not well, each with why (empty: every component is well)."""
        now = time.monotonic() if now is None else now
        out: dict[str, str] = {}
        for c in list(self.components.values()):
            if c.state in ("restarting", "failed"):
                out[c.name] = f"{c.state} after a crash: {c.last_error}"
            elif c.stalled(now):
                out[c.name] = f"stalled: its loop has not turned for {now - c.last_beat:.0f} s"
            elif c.state == "running" and c.thread is not None and c.thread.ident is not None \
                    and not c.thread.is_alive() and not self._stop.is_set():
                out[c.name] = "its thread is gone"
        return out

    def healthy(self) -> bool:
        return not self.fatal.is_set() and not self.problems()

    def up(self) -> int:
        """How many components are running with their loop turning (a /metrics gauge)."""
        now = time.monotonic()
        return sum(1 for c in list(self.components.values()) if c.up(now))

    def health(self) -> dict[str, Any]:
        """Per component: state, crashes, the last error, seconds to restart, heartbeat age."""
        now = time.monotonic()
        out: dict[str, Any] = {}
        for c in list(self.components.values()):
            entry: dict[str, Any] = {"state": "stalled" if c.stalled(now) else c.state,
                                     "crashes": c.crashes}
            if c.last_error:
                entry["last_error"] = c.last_error
            if c.restart_at is not None and c.state == "restarting":
                entry["restart_in_s"] = round(max(0.0, c.restart_at - now), 1)
            if c.stall_s is not None:
                entry["heartbeat_age_s"] = round(now - c.last_beat, 1)
            out[c.name] = entry
        return out
