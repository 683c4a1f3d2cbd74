"""The running job's beats: its fenced heartbeat (and its leases'), from the worker and from its
work horse, the critical checks each beat makes, and the horse that runs it.
"""

from __future__ import annotations

import os
import signal

from redis.exceptions import RedisError
from rq import Queue
from rq.executions import Execution
from rq.job import Job

from easeoff.feedback import clock, rq_internals
from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.feedback.reasons import joined
from easeoff.feedback.verdict.gate import judge
from easeoff.tasks.checkpoint import SHUTTING_DOWN, request_stop
from easeoff.tasks.meta import JobMeta
from easeoff.workers import horse_connection, logs
from easeoff.workers.heartbeats import beat_for_life
from easeoff.workers.worker_parts import (
    ABANDON_GRACE,
    WorkerParts,
    about,
    raw_client,
    task_or_none,
)


class JobBeats(WorkerParts):
    """What keeps a running job alive and stops it: its beats, its horse."""

    def maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        """While a job runs: beat for it (fenced: its started entry and its leases, on Redis's
        clock), and ask it to stop at its next checkpoint when a signal goes critical or, for a
        resumable job, when its resources are strained. A job this execution lost is stopped.
        Without Redis (or with Redis refusing: OOM, READONLY) the job runs on; the beats resume
        when it is back, and its entry outlives the outage (feedback/lua/fleet_clock.lua)."""
        try:
            self._maintain_heartbeats(job, execution)
        except (RedisError, OSError) as exc:
            self.log.warning("Worker %s: heartbeat for job %s missed: %s", self.name, job.id, exc, extra=about(job))

    def _beat(self, job: Job) -> bool:
        """The running job's fenced beat; False once it is fenced out (stop it, record no end)."""
        fence = self._fence
        if fence is None or fence.job_id != job.id:
            return True
        scopes, member = self._lease if self._lease is not None else ([], "")
        alive = self.moves.heartbeat(
            fence, job.origin, self.job_monitoring_interval + ABANDON_GRACE, [s.leases_key for s in scopes], member
        )
        if not alive:
            self._fenced_out = job.id
        return alive

    def _maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        if self._fence is None:  # a job rq itself handed over (no claim of ours): rq's beat
            super().maintain_heartbeats(job, execution)
        else:
            # This worker's key, as rq's: not a move of the job, so not fenced (in-process, the job's
            # thread may have the fenced view of the client in `self.connection` meanwhile).
            with raw_client(self.connection).pipeline() as pipe:
                self.heartbeat(self.job_monitoring_interval + 60, pipeline=pipe)
                pipe.execute()
        if not self._beat(job):
            if self._fence is not None:
                self._note_fenced_out(self._fence)
            self.stop_fenced_job()
            return
        meta = JobMeta.of(job)
        self.wants.want(meta.resources)  # its critical check must not read dormant-pace readings
        verdict = judge(meta.resources, self.readings.current(), self.config, clock.now())
        reasons = verdict.critical or (verdict.reasons if meta.resumable else ())
        if reasons:
            why = joined(reasons)
            request_stop(job, why)
            self.log.info(
                "Worker %s: job %s asked to stop at its next checkpoint: %s",
                *(self.name, job.id, why),
                extra=about(job, why, "stop_asked"),
            )

    def stop_fenced_job(self) -> None:
        """The running job is someone else's now: stop its run at once (its horse is killed, and
        what the parent then sees of its death records nothing: `handle_job_failure`)."""
        self.kill_horse(signal.SIGKILL)

    def handle_warm_shutdown_request(self) -> None:
        """A resumable job checkpoints and is deferred, rather than making the shutdown wait for all
        of it. In a signal handler: Redis away or refusing must not raise into whatever was running."""
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]  # rq's, untyped
        job = self._running_job
        if job is not None and JobMeta.of(job).resumable:
            try:
                request_stop(job, SHUTTING_DOWN)
            except RedisError as exc:
                self.log.warning(
                    "Worker %s: could not ask job %s to checkpoint: %s", self.name, job.id, exc, extra=about(job)
                )

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """rq allows a minute past each heartbeat; easeoff a few seconds, so a job whose worker
        was killed is recovered within seconds (see `recover_abandoned`), not minutes."""
        interval = int(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            return int(max(min(job.timeout - working_time, interval), 0)) + ABANDON_GRACE
        return interval + ABANDON_GRACE

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._running_job = job
        try:
            # Every record about it meanwhile, rq's in the horse too, carries its id, queue and task.
            with logs.handling_job(job.id, queue.name, task_or_none(job)):
                self.run_job(job, queue)
        except REDIS_UNREACHABLE as exc:
            # The horse ran on its own (or never started); what Redis missed of the job's ending,
            # the abandoned-job sweep settles from the started registry.
            self._wait_for_redis(exc)
        finally:
            # rq's work horse ends "the" execution, the first in `executions`: one this job left
            # behind (Redis failed before rq popped it) would make the next job end it instead of
            # its own, unlisting this job from `started` while it sits nowhere else.
            for execution_id in [e.id for e in self.executions.values() if e.job_id == job.id]:
                self.executions.pop(execution_id, None)
            self._busy_note = None  # noted for a run that never began
            self._lease = None
            self._running_job = None
            self._fence = None
            self._fenced_out = None
            self._let_go(job.id)

    def run_job(self, job: Job, queue: Queue) -> None:
        """rq's way: in a work horse forked for the job (workers/in_process.py runs it here instead)."""
        super().execute_job(job, queue)

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        """rq's, with the horse's Redis connection opened before the fork (workers/horse_connection.py).
        What the worker still has to say to Redis about the job's start, and the connects for the
        next horses, it says once the horse runs: the worker only waits for it then."""
        handed = self._horse_connection = self._horse_connections.take()
        try:
            # A stop-job command lands before the fork (the horse ends the job, unrun) or after
            # it (the horse's pid is known, and it is killed), never in between.
            with self._hold_lock:
                super().fork_work_horse(job, queue)
        except BaseException:
            if handed is not None:
                horse_connection.let_go(handed, None)  # no horse has it
            raise
        finally:
            self._horse_connection = None
        self._record_busy()  # the horse runs meanwhile
        if handed is not None:
            horse_connection.let_go(handed, rq_internals.horse_pid(self))
        self._horse_connections.open_ahead()  # while the horse runs: the worker only waits for it

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        """In the horse: first take over the connection its worker opened for it, then beat for the
        job from here too, so a stalled worker (SIGSTOP, a long pause) does not get its live job
        swept and run twice; a horse that finds its job fenced out kills itself."""
        if self._horse_connection is not None:
            horse_connection.adopt(self.connection, self._horse_connection)
        beat_for_life(lambda: self._beat_in_horse(job), self.job_monitoring_interval)
        super().main_work_horse(job, queue)

    def _beat_in_horse(self, job: Job) -> None:
        try:
            alive = self._beat(job)
        except (RedisError, OSError) as exc:
            self.log.warning(
                "Worker %s: the horse's beat for job %s missed: %s", self.name, job.id, exc, extra=about(job)
            )
            return
        if not alive:
            self.log.warning(
                "Worker %s: job %s was taken from this execution: its horse stops", self.name, job.id, extra=about(job)
            )
            os.kill(os.getpid(), signal.SIGKILL)
