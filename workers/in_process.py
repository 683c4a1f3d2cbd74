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

import signal
import threading
from typing import Any

from rq import Queue
from rq.job import Job
from rq.worker import WorkerStatus

from easeoff.workers.fencing import FencedOut
from easeoff.workers.gated_worker import GatedWorker
from easeoff.workers.heartbeats import Heartbeats

FENCED_SIGNAL = signal.SIGUSR1  # the beat thread's word to the main thread: the running job is not ours


class InProcessWorker(GatedWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._heartbeats = Heartbeats(self.maintain_heartbeats, self.job_monitoring_interval)
        if threading.current_thread() is threading.main_thread():
            signal.signal(FENCED_SIGNAL, self._raise_if_fenced_out)

    def stop_fenced_job(self) -> None:
        """The job runs in this process's main thread: interrupt it there (a blocking call too),
        with FencedOut; rq's failure path then finds the job lost and records nothing."""
        signal.pthread_kill(threading.main_thread().ident or 0, FENCED_SIGNAL)

    def _raise_if_fenced_out(self, signum: int, frame: Any) -> None:
        job, fence = self._running_job, self._fence
        if job is not None and fence is not None and self._fenced_out == job.id:
            raise FencedOut(fence)

    def run_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        with self._heartbeats.beating(job, execution):
            self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)
