"""A few threads that run blocking reads, one in flight per key (a 1-Wire sensor).

What ``concurrent.futures.ThreadPoolExecutor`` did for the 1-Wire source, without it: the agent
never looks at a read's result (the read hands its reading to the sink itself), so futures are
not needed, and ``concurrent.futures`` is 0.1-0.2 MiB of a running agent's memory
(bench/README.md). Threads start as reads are asked for, up to ``workers``; a key whose read is
still queued or running is not queued again (the caller counts the skip). The threads are daemon
threads: a read blocked in the kernel must not hold up the agent's exit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import SimpleQueue

import structlog

log = structlog.get_logger(__name__)


class ReadPool:
    """Up to ``workers`` threads named ``{name} N`` running ``submit``-ted reads in order."""

    def __init__(self, workers: int, name: str) -> None:
        if workers < 1:
            raise ValueError(f"a read pool needs at least one thread, not {workers}")
        self.workers = workers
        self.name = name
        self._jobs: SimpleQueue[tuple[str, Callable[[], None]] | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # keys queued or being read
        self._threads: list[threading.Thread] = []
        self._idle = 0                # threads waiting for a job that no submit has claimed
        self._closed = False

    @property
    def threads(self) -> int:
        return len(self._threads)

    def submit(self, key: str, read: Callable[[], None]) -> bool:
        """Queue ``read`` for ``key``; False (nothing queued) when ``key``'s previous read is not
        finished. RuntimeError once the pool is shut down (as ThreadPoolExecutor's)."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"read pool {self.name} is shut down")
            if key in self._busy:
                return False
            self._busy.add(key)
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self.name} {len(self._threads)}")
                self._threads.append(thread)
                thread.start()
        self._jobs.put((key, read))
        return True

    def busy(self, key: str) -> bool:
        with self._lock:
            return key in self._busy

    def shutdown(self) -> None:
        """Start nothing more: queued reads are dropped, a read in progress finishes (a read
        blocked in the kernel cannot be interrupted; nothing waits for it)."""
        with self._lock:
            self._closed = True
            threads = len(self._threads)
        for _ in range(threads):
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            key, read = job
            try:
                if not self._closed:
                    read()
            except Exception:  # a bug in a read: said, and the thread serves the next one
                log.exception("read_pool.read_crashed", pool=self.name, key=key)
            finally:
                with self._lock:
                    self._busy.discard(key)
                    self._idle += 1
