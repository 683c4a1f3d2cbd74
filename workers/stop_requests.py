"""rq's stop-job command, for a job this worker holds from its claim to its end.

A claimed job is `started` in Redis while the gate still judges it, before any horse exists, so
rq's `send_stop_job_command` is accepted then. rq's own handler would miss it: it asks the worker
for its current execution (none in memory yet, or a cached one from Redis) and kills horse pid 0,
which is `killpg` of the worker's own process group. Here the worker keeps the job it holds in
memory, and a stop and the gate's decision take one lock, so each stop lands in exactly one place:

- held, not yet running: noted; the job goes to its run whatever the gate said, and the run ends
  at once as rq ends a stopped job (STOPPED, its stopped callback, no retry), the task unrun;
- running: noted, and its horse killed (rq's way) or, in-process, its run interrupted;
- let go just before (the gate deferred it): canceled where it waits, as `easeoff cancel` does;
  claimed by another worker since: the command is passed on to that worker, once.

rq's stop-execution command (one execution of a job) is left to rq's handler: it finds the
execution only once the job runs.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from rq.command import parse_payload, send_command
from rq.job import Job
from rq.utils import as_text

from easeoff.feedback import rq_internals
from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.workers.cancel_script import cancel_waiting
from easeoff.workers.worker_parts import WorkerParts, raw_client

STOP_JOB = "stop-job"


class JobStopped(Exception):
    """Raised into a job that rq's stop-job command stopped: before its task runs, or in-process
    while it runs. Its failure path ends it STOPPED (fenced_runs.FencedRuns._finalize_failure)."""


class StopRequests(WorkerParts):
    def handle_payload(self, message: dict[str, Any]) -> None:
        payload = parse_payload(message)
        command = payload.get("command")
        if command != STOP_JOB:
            super().handle_payload(message)  # type: ignore[no-untyped-call]  # rq's, untyped
            return
        job_id = payload.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            self.log.warning("Worker %s: stop-job command without a job id, ignored", self.name)
            return
        with self._hold_lock:
            held = job_id == self._held_job_id
            if held and self._stop_noted(job_id):
                self.log.info("Worker %s: job %s is already stopping", self.name, job_id)
                return  # killing its horse again could cut short the stop it is recording
            if held:
                self.log.info("Worker %s: stop-job command for job %s, which it holds", self.name, job_id)
                rq_internals.note_stopped(self, job_id)
                if self._running_job is not None and self._running_job.id == job_id:
                    self.kill_horse()
        if not held:
            try:
                self._stop_where_it_is(job_id, forwarded=bool(payload.get("forwarded")))
            except REDIS_UNREACHABLE as exc:  # raised here it would end the command thread for good
                self.log.warning("Worker %s: stop-job command for job %s not carried out: %s", self.name, job_id, exc)

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """rq's `killpg` of the horse's group, never the worker's own: with no horse (pid 0), or a
        horse just forked that has not yet made its own session, that group is the worker's."""
        pid = rq_internals.horse_pid(self)
        if pid <= 0:
            return
        try:
            if os.getpgid(pid) != os.getpgrp():
                super().kill_horse(sig)
                return
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # it ended meanwhile

    def _let_go(self, job_id: str) -> None:
        """The job was deferred, failed or ended: a later stop for it is no longer this worker's."""
        with self._hold_lock:
            if self._held_job_id == job_id:
                self._held_job_id = None
            if rq_internals.stopped_job_id(self) == job_id:
                rq_internals.note_stopped(self, None)

    def _stop_noted(self, job_id: str) -> bool:
        return rq_internals.stopped_job_id(self) == job_id

    def _stop_where_it_is(self, job_id: str, forwarded: bool) -> None:
        redis = raw_client(self.connection)
        origin = redis.hget(Job.key_for(job_id), "origin")
        outcome, detail = ("missing", "") if origin is None else cancel_waiting(redis, job_id, as_text(origin))
        if outcome == "canceled":
            self.log.warning(
                "Worker %s: stop-job command for job %s came after it was let go: canceled where it waited (%s)",
                *(self.name, job_id, detail),
            )
            return
        holder = redis.hget(Job.key_for(job_id), "worker_name")
        if outcome == "running" and not forwarded and holder is not None and as_text(holder) != self.name:
            send_command(redis, as_text(holder), STOP_JOB, job_id=job_id, forwarded=True)
            self.log.info("Worker %s: stop-job command for job %s passed on to %s", self.name, job_id, as_text(holder))
            return
        self.log.warning("Worker %s: not working on job %s (%s), stop-job command ignored", self.name, job_id, outcome)
