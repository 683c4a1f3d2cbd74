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

from easeoff.feedback import rq_internals
from easeoff.workers.fencing import FencedOut
from easeoff.workers.gated_worker import GatedWorker
from easeoff.workers.heartbeats import Heartbeats
from easeoff.workers.stop_requests import JobStopped

FENCED_SIGNAL = signal.SIGUSR1  # the word to the main thread: the running job is not ours, or was stopped


class InProcessWorker(GatedWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._heartbeats = Heartbeats(self.maintain_heartbeats, self.job_monitoring_interval)
        self._in_job_code = False  # between the job's start and the recording of its end
        if threading.current_thread() is threading.main_thread():
            signal.signal(FENCED_SIGNAL, self._raise_if_fenced_out)

    def stop_fenced_job(self) -> None:
        """The job runs in this process's main thread: interrupt it there (a blocking call too),
        with FencedOut; rq's failure path then finds the job lost and records nothing."""
        signal.pthread_kill(threading.main_thread().ident or 0, FENCED_SIGNAL)

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """rq's stop-job command (`easeoff cancel` of a job that is not resumable): there is no
        horse, and rq's `kill_horse` would kill this worker's own process group (horse pid 0).
        The job is interrupted in the main thread instead, and ends STOPPED as rq's would."""
        job = self._running_job
        if job is not None and rq_internals.stopped_job_id(self) == job.id and self._in_job_code:
            signal.pthread_kill(threading.main_thread().ident or 0, FENCED_SIGNAL)

    def _raise_if_fenced_out(self, signum: int, frame: Any) -> None:
        job, fence = self._running_job, self._fence
        if job is not None and fence is not None and self._fenced_out == job.id:
            raise FencedOut(fence)
        if job is not None and rq_internals.stopped_job_id(self) == job.id and self._in_job_code:
            raise JobStopped(f"job {job.id} stopped by rq's stop-job command")

    def run_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        self._record_busy()
        with self._heartbeats.beating(job, execution):
            self._in_job_code = True  # a stop lands in the job, not in rq's recording of its end
            try:
                self.perform_job(job, queue, execution)
            finally:
                self._in_job_code = False
        self.set_state(WorkerStatus.IDLE)

    def _finalize_success(self, *args: Any) -> None:
        self._in_job_code = False
        super()._finalize_success(*args)

    def _finalize_failure(self, *args: Any) -> None:
        self._in_job_code = False
        super()._finalize_failure(*args)
