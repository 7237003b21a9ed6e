"""Runs a SimulatedDevice against the real clock and fans its output out to transports.

One thread owns the device: it sleeps on an Event until the next sample is due or a host
command arrives, steps the device to ``(now - start) * speed``, and hands bytes, unplug and
replug to every Sink and samples to the 1-Wire tree. Transports never touch the device: their
reader threads ``submit()`` host bytes with a reply callback, which this thread answers.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Protocol

from firmware_sim.device import Emission, Kind, SimulatedDevice
from firmware_sim.scenario import Scenario
from firmware_sim.w1_tree import W1Tree

Reply = Callable[[bytes], None]
Submit = Callable[[bytes, Reply], None]


class Sink(Protocol):
    """A transport the device's serial output goes to (pty, TCP)."""

    def bind(self, submit: Submit) -> None:
        """Where to send bytes received from the host."""

    def send(self, data: bytes) -> None: ...

    def unplug(self) -> None: ...

    def replug(self) -> None: ...


class Simulation:
    """``with Simulation(scenario, sinks=[pty], speed=600) as sim: sim.wait()``."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        speed: float = 1.0,
        sinks: Iterable[Sink] = (),
        w1: W1Tree | None = None,
        loop: bool = False,
        on_emission: Callable[[Emission], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.scenario = scenario
        self.seed = seed
        self.speed = speed
        self.sinks = list(sinks)
        self.w1 = w1
        self.loop = loop
        self.on_emission = on_emission
        self._clock = clock
        self._commands: queue.SimpleQueue[tuple[bytes, Reply]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self.error: BaseException | None = None
        for sink in self.sinks:
            sink.bind(self.submit)

    # --- control ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scenario clock now."""
        if self._thread is not None:
            raise RuntimeError("already started")
        if self.w1 is not None:
            self.w1.create()
        self._t0 = self._clock()
        self._thread = threading.Thread(target=self._run, name="firmware-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the scenario has ended (or the simulation was stopped)."""
        return self._done.wait(timeout)

    @property
    def scenario_ms(self) -> int:
        return int((self._clock() - self._t0) * self.speed * 1000)

    def submit(self, data: bytes, reply: Reply) -> None:
        """Host bytes from a transport (any thread); ``reply`` gets the device's answer."""
        self._commands.put((data, reply))
        self._wake.set()

    def __enter__(self) -> Simulation:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- the device thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # kept for the caller: a dead thread must not hang it
            self.error = exc
            raise
        finally:
            self._done.set()

    def _loop(self) -> None:
        device = SimulatedDevice(self.scenario, self.seed)
        while not self._stop.is_set():
            self._wake.clear()
            now = self.scenario_ms
            self._dispatch(device.step_until(now))
            while not self._commands.empty():
                data, reply = self._commands.get_nowait()
                answer = device.handle_command(data)
                if answer:
                    reply(answer)
            nxt = device.next_event_ms()
            if nxt is None:
                if now < device.duration_ms:
                    nxt = device.duration_ms
                elif self.loop:
                    self._t0 = self._clock()  # start over: the device reboots at time 0
                    device = SimulatedDevice(self.scenario, self.seed)
                    continue
                else:
                    return
            self._wake.wait(max(0.0, (nxt - now) / 1000 / self.speed))

    def _dispatch(self, emissions: list[Emission]) -> None:
        pending = bytearray()  # consecutive lines go out in one write
        for e in emissions:
            if self.on_emission is not None:
                self.on_emission(e)
            if e.sample is not None and self.w1 is not None:
                self.w1.apply(e.sample)
            if e.data:
                pending += e.data
                continue
            if e.kind in (Kind.UNPLUG, Kind.REPLUG):
                self._flush(pending)
                for sink in self.sinks:
                    sink.unplug() if e.kind is Kind.UNPLUG else sink.replug()
        self._flush(pending)

    def _flush(self, pending: bytearray) -> None:
        if pending:
            data = bytes(pending)
            for sink in self.sinks:
                sink.send(data)
            pending.clear()
