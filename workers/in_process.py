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

import threading

from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.worker import WorkerStatus

from easeoff.workers.gated_worker import GatedWorker


class InProcessWorker(GatedWorker):
    def run_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        finished = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, execution, finished), daemon=True, name="heartbeat")
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            finished.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Job, execution: Execution, finished: threading.Event) -> None:
        """What the forking worker does between looks at its horse: heartbeats, leases, strain."""
        while not finished.wait(self.job_monitoring_interval):
            self.maintain_heartbeats(job, execution)
