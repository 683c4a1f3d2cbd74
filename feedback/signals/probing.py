"""The probes a process has taken on, each re-run an interval after its last, off the caller's thread.

A probe can take its whole timeout. With hundreds of hosts, or a few that do not answer,
probing one after another would outlast the interval and every reading would go stale at
once (the gate fails closed: the fleet stops). Here each target is its own task on a
bounded pool: a slow or unreachable host delays only its own reading, and the worker's claim
loop never waits on MySQL. A target stays taken while `probe` says it is still ours (its
lease held); a process that loses a lease, or dies, stops probing that target, and whoever
next finds its reading overdue takes it on.

Each target's next probe comes `pace(target)` seconds after its last began: the interval while
jobs want the host, a few seconds while none do (signals/demand.py); `wake` brings a slowed
target's next probe forward to now.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class ProbeLoop:
    def __init__(
        self,
        probe: Callable[[str], bool],
        interval: float,
        size: int,
        first: Callable[[str], bool] = lambda _: False,
        pace: Callable[[str], float] | None = None,
    ) -> None:
        """`probe(target)` takes and stores one reading and says whether the target is still ours;
        `first(target)` is true for targets to start ahead of others when several are due at once;
        `pace(target)`, asked after each probe, the seconds from its start to the next (default:
        the interval)."""
        self._probe = probe
        self._interval = interval
        self._pace = pace or (lambda _: interval)
        self._size = size
        self._first = first
        self._cond = threading.Condition()
        self._due: dict[str, float] = {}  # target -> when its next probe starts (monotonic)
        self._running: set[str] = set()
        self._finished = 0  # probes ended so far
        self._executor: ThreadPoolExecutor | None = None
        self._scheduler: threading.Thread | None = None
        self._stopped = False

    def take_on(self, targets: Iterable[str]) -> None:
        """Probe these now (those not already being probed here), then every interval while ours."""
        with self._cond:
            if self._stopped:
                return
            now = time.monotonic()
            for target in targets:
                if target not in self._running:
                    self._due[target] = now
            self._start()
            self._cond.notify_all()

    def wake(self, targets: Iterable[str]) -> None:
        """Probe these at once, if they are ours and waiting for their next turn (one running now
        asks `pace` when it ends, and may be due again at once)."""
        with self._cond:
            now = time.monotonic()
            for target in targets:
                if target in self._due:
                    self._due[target] = min(self._due[target], now)
            self._cond.notify_all()

    def submit(self, task: Callable[[], None]) -> None:
        """Run `task` on the probe pool, off the caller's thread (a no-op before the first probe)."""
        with self._cond:
            executor = None if self._stopped else self._executor
        if executor is not None:
            with contextlib.suppress(RuntimeError):  # shut down meanwhile
                executor.submit(task)

    def owned(self) -> frozenset[str]:
        with self._cond:
            return frozenset(self._due) | frozenset(self._running)

    def finished(self) -> int:
        with self._cond:
            return self._finished

    def stop(self) -> None:
        """Stop taking and re-running probes; those in flight finish (each within its timeout)."""
        with self._cond:
            self._stopped = True
            self._due.clear()
            self._cond.notify_all()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _start(self) -> None:
        if self._scheduler is None or not self._scheduler.is_alive():
            self._executor = ThreadPoolExecutor(max_workers=self._size, thread_name_prefix="easeoff-probe")
            self._scheduler = threading.Thread(target=self._schedule, name="easeoff-probe-loop", daemon=True)
            self._scheduler.start()

    def _schedule(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                ready = [t for t, due in self._due.items() if due <= now and t not in self._running]
                if not ready:
                    upcoming = [due for t, due in self._due.items() if t not in self._running]
                    self._cond.wait(min(upcoming) - now if upcoming else None)
                    continue
                ready.sort(key=lambda t: not self._first(t))
                for target in ready:
                    del self._due[target]
                    self._running.add(target)
            executor = self._executor
            for target in ready:
                try:
                    assert executor is not None
                    executor.submit(self._run_one, target)
                except RuntimeError:  # the interpreter is shutting down
                    return

    def _run_one(self, target: str) -> None:
        started = time.monotonic()
        ours = False
        try:
            ours = self._probe(target)
        except Exception:  # a probe's own failures are readings; this is Redis or a bug
            log.warning("probe of %s failed", target, exc_info=True)
            ours = True  # try again next interval rather than orphan the target until its lease lapses
        finally:
            with self._cond:
                self._running.discard(target)
                if ours and not self._stopped:
                    self._due[target] = started + self._next_in(target)
                self._finished += 1
                self._cond.notify_all()

    def _next_in(self, target: str) -> float:
        try:
            return self._pace(target)
        except Exception:  # a bug in the pace: full pace is the safe side
            log.warning("pace of %s failed", target, exc_info=True)
            return self._interval
