"""A gated worker that runs each job in its own process, as rq's SimpleWorker does, not in a
work horse forked per job (`easeoff worker --in-process`).

Forking a horse per job is rq's isolation: a job's memory and its crashes end with it. It is
also a process, an interpreter's warm-up and, for a task that connects to MySQL, a new
connection per job. For short one-shot jobs on a busy database those are what the live site
feels (tasks/pool.py keeps one connection per shard across jobs here). Kept from the forking
worker: the gate and every atomic move, job timeouts (rq's death penalty, SIGALRM, in this
process's main thread), leases renewed and critical strain checked on each heartbeat (on a
thread beside the job), and recovery of a job whose worker is killed mid-run (its heartbeat
lapses, the sweep requeues or fails it). Lost: isolation. A job that leaks memory or leaves
global state leaks it into the next one; one that crashes the interpreter takes the worker
with it (its job is then recovered as abandoned).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.worker import WorkerStatus

from easeoff.workers.gated_worker import GatedWorker

logger = logging.getLogger(__name__)


class InProcessWorker(GatedWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._heartbeats = Heartbeats(self.maintain_heartbeats, self.job_monitoring_interval)

    def run_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        with self._heartbeats.beating(job, execution):
            self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)


class Heartbeats:
    """What the forking worker does between looks at its horse (heartbeats, leases, strain),
    every `interval` while a job runs, on one thread for the worker's life: a thread started
    and joined per job cost about 0.2 ms a job, 3% of a short job's whole cost."""

    def __init__(self, beat: Callable[[Job, Execution], None], interval: float) -> None:
        self._beat = beat
        self._interval = interval
        self._changed = threading.Condition()
        self._running: tuple[Job, Execution] | None = None
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def beating(self, job: Job, execution: Execution) -> Iterator[None]:
        """Beats for `job` until the block ends; none is under way or to come once it has."""
        with self._changed:
            self._running = (job, execution)
            self._changed.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")
                self._thread.start()
        try:
            yield
        finally:
            with self._changed:  # a beat in progress holds this: the job's end waits for it
                self._running = None
                self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while True:
                while self._running is None:
                    self._changed.wait()
                running = self._running
                due = time.monotonic() + self._interval
                while self._running is running:
                    left = due - time.monotonic()
                    if left > 0:
                        self._changed.wait(left)
                        continue
                    try:
                        self._beat(*running)
                    except Exception:  # the next beat may fare better; the thread must live on
                        logger.exception("heartbeat of job %s failed", running[0].id)
                    due = time.monotonic() + self._interval
