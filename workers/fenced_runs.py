"""The gated worker's runs, fenced: every move rq makes of a job this worker claimed checks, in
its transaction, that the claim still holds; a job stopped at a checkpoint, by its database's
outage or for a retry its task names is deferred, not failed; a lost job's end is not recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from redis import Redis
from rq import Queue
from rq.callbacks import execute_stopped_callback
from rq.executions import Execution
from rq.job import Job
from rq.worker import WorkerStatus

from easeoff.feedback import rq_internals
from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.feedback.levers.limits import Leases
from easeoff.feedback.reasons import Kind, Reason, Verdict, WaitsFor
from easeoff.feedback.tally.counters import counter_field, counter_key
from easeoff.feedback.verdict.backoff import deferral_delay
from easeoff.tasks import db_reach
from easeoff.tasks.admission import admit as mark_admitted
from easeoff.tasks.checkpoint import CANCELED, SHUTTING_DOWN, clear_cancel
from easeoff.tasks.meta import task_name
from easeoff.tasks.resumable import Checkpointed
from easeoff.workers import transient_errors
from easeoff.workers.db_outages import outage_reason
from easeoff.workers.fencing import Fence, FencedOut
from easeoff.workers.stop_requests import JobStopped
from easeoff.workers.worker_parts import (
    FencedClient,
    WorkerParts,
    about,
    meta_of,
    raw_client,
)

STOPPED_REASON = "Job stopped by user (easeoff cancel or rq's stop-job)"


class FencedRuns(WorkerParts):
    """rq's hooks around a job's run, for a job this worker's claim holds."""

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """In the work horse: the gate admitted this job, so its task agrees to run (tasks/admission.py).
        Every transaction rq makes for it from here (preparing, ending) is fenced by its claim."""
        mark_admitted(job.id, self._fence.token if self._fence is not None else None)
        self._reach_mark = db_reach.mark()
        try:
            with self._fenced():
                return super().perform_job(job, queue, execution)
        finally:
            mark_admitted(None)

    def prepare_execution(self, job: Job) -> Execution:
        """Use the execution the claim script already recorded, rather than making a second one.
        The worker is BUSY from here; Redis is told so by `_record_busy`, which the forking
        worker calls once its horse runs (the worker only waits then)."""
        claim, self._claimed = self._claimed, None
        if claim is None or claim.job_id != job.id:
            return super().prepare_execution(job)
        pipe = self.connection.pipeline()  # the worker's state and a count: no move of the job
        self.set_state(WorkerStatus.BUSY, pipeline=pipe)
        pipe.hincrby(counter_key("started"), counter_field(job.origin, task_name(job)), 1)
        self._busy_note = pipe
        self.executions[claim.execution.id] = claim.execution  # only once it will run: see execute_job
        return claim.execution

    def _record_busy(self) -> None:
        """Send what `prepare_execution` noted; Redis away here is waited out, so it is counted once."""
        pipe, self._busy_note = self._busy_note, None
        if pipe is None:
            return
        with pipe:
            while True:
                try:
                    pipe.execute()
                    return
                except REDIS_UNREACHABLE as exc:
                    self._wait_for_redis(exc)

    @contextmanager
    def _fenced(self) -> Iterator[None]:
        """While rq moves the running job, the pipelines it takes from `self.connection` are fenced."""
        fence, client = self._fence, self.connection
        if fence is None or isinstance(client, FencedClient):
            yield
            return
        self.connection = cast(Redis, FencedClient(client, fence))
        try:
            yield
        finally:
            self.connection = client

    def _still_owns(self, job: Job) -> bool:
        """Whether this worker's execution still owns `job`; once it does not, nothing of its end is recorded."""
        fence = self._fence
        if self._fenced_out == job.id:
            return False
        if fence is None or fence.job_id != job.id:
            return True
        while True:  # rq records a failure once and swallows its error: wait for Redis first
            try:
                owner = raw_client(self.connection).get(fence.key)
                break
            except REDIS_UNREACHABLE as exc:
                self._wait_for_redis(exc)
        if (owner.decode() if isinstance(owner, bytes) else owner) == fence.owner:
            return True
        self._fenced_out = job.id
        return False

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Execution) -> None:
        """rq's, fenced, and tried again while Redis is away: a job that finished during an outage
        is recorded finished once Redis is back, not failed as abandoned (it still beats, from
        its horse, so it is not swept meanwhile). A commit whose reply was lost is not made
        twice: it took the owner key with it, so the retry finds the job fenced."""
        with self._fenced():
            while True:
                try:
                    super().handle_job_success(job, queue, started_job_registry, execution)
                    return
                except FencedOut as exc:
                    self._note_fenced_out(exc.fence)
                    return
                except REDIS_UNREACHABLE as exc:
                    self._wait_for_redis(exc)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """In the horse, before the job runs: a job of our claim is already marked started in
        Redis (claim.lua), so all it takes is one fenced beat, which says the claim is still this
        execution's (a worker stalled between its claim and the fork may have had the job swept
        and claimed again: then it does not run, and nothing is recorded). Tried again while Redis
        is away: a job whose start met an outage runs once Redis is back, rather than ending unrun
        and being swept as abandoned. A job rq itself handed over gets rq's preparation."""
        fence = self._fence
        while True:
            try:
                if fence is None or fence.job_id != job.id:
                    super().prepare_job_execution(job, remove_from_intermediate_queue)
                elif not self._beat(job):
                    raise FencedOut(fence)
                else:
                    rq_internals.started_in_memory(job, self.name)
                break
            except REDIS_UNREACHABLE as exc:
                self._wait_for_redis(exc)
        if self._stop_noted(job.id):  # rq's stop-job command came before the run: it ends here, unrun
            raise JobStopped(f"job {job.id} stopped by rq's stop-job command before it ran")

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """rq's last beat as the job returns: without Redis, the ending that follows waits for it."""
        try:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
        except REDIS_UNREACHABLE as exc:
            self.log.warning(
                "Worker %s: job %s ended while Redis was away (%s)", self.name, job.id, exc, extra=about(job)
            )

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        """rq's, fenced; a job this execution lost (swept, claimed again) is not failed by it."""
        if not self._still_owns(job):
            if self._fence is not None:
                self._note_fenced_out(self._fence)
            return
        with self._fenced():
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    def handle_job_retry(
        self, job: Job, queue: Queue, retry: Any, started_job_registry: Any, execution: Execution
    ) -> None:
        with self._fenced():
            try:
                super().handle_job_retry(job, queue, retry, started_job_registry, execution)
            except FencedOut as exc:
                self._note_fenced_out(exc.fence)

    def _note_fenced_out(self, fence: Fence) -> None:
        self._fenced_out = fence.job_id
        job = self._running_job
        self.log.warning(
            "Worker %s: job %s was taken from this execution (token %d; swept while it could not beat?): "
            "its run is stopped and its end not recorded",
            *(self.name, fence.job_id, fence.token),
            extra=about(job) if job is not None and job.id == fence.job_id else {"job_id": fence.job_id},
        )

    def _release_lease(self, pipeline: Any, owner: bool = True) -> None:
        """Give the job's slots back, and hand them to jobs waiting for one, in the transaction that
        ends it; the job's owner key goes in the same transaction (fenced: it is still ours).
        `owner=False` after a move that took the owner key itself: by now it may be a new owner's."""
        if owner and self._fence is not None:
            pipeline.delete(self._fence.key)
        if self._lease is not None:
            scopes, member = self._lease
            Leases.release(scopes, member, pipeline=pipeline)
            self.moves.release_slots([s.scope for s in scopes], pipeline=pipeline)

    def _finalize_failure(self, job: Job, queue: Queue, execution: Execution, exc_info: Any) -> None:
        """A job that stopped at a checkpoint, or that its database's outage stopped (strain the
        probe had not seen yet: workers/db_outages.py), is deferred to run later: not a failure,
        no retry spent."""
        stopped = exc_info[1]
        if rq_internals.stopped_job_id(self) == job.id or (
            isinstance(stopped, Checkpointed) and stopped.reason == CANCELED
        ):
            self._end_stopped(job, queue, execution)
            return
        reached = db_reach.reached_since(self._reach_mark)
        outage = None if isinstance(stopped, Checkpointed) else outage_reason(stopped, meta_of(job), reached)
        if not isinstance(stopped, Checkpointed) and outage is None:
            if not self._retried_later(job, queue, execution, stopped, reached):
                super()._finalize_failure(job, queue, execution, exc_info)
            return
        job.get_meta(refresh=True)  # the cursor the task stored at its checkpoint
        meta = meta_of(job)
        backoff = self.config.backoff
        delay = deferral_delay(meta.deferrals, backoff.base, backoff.cap, self.config.probe_interval, self.rng)
        if outage is not None:
            self.log.warning(
                "Worker %s: job %s deferred, not failed: %s",
                *(self.name, job.id, outage),
                extra=about(job, outage, "deferred"),
            )
            reason = Reason(Kind.DB_UNREACHABLE, ",".join(meta.resources) or job.id, detail=outage)
        else:
            assert isinstance(stopped, Checkpointed)
            # Stopped for strain, the job waits for its resources; stopped for a shutdown or a Redis
            # outage, it just comes back (from a shutdown, at once).
            waits_for: WaitsFor = "resources" if stopped.waits_for_resources else "delay"
            reason = Reason(Kind.CHECKPOINT, job.id, detail=stopped.reason, waits_for=waits_for)
            if stopped.reason == SHUTTING_DOWN:
                delay = self.config.probe_interval * 0.1
        verdict = Verdict(admit=False, reasons=(reason,), delay=delay)
        while True:  # in the horse: a deferral that meets a Redis outage waits for it (still fenced)
            try:
                self._defer(job, meta, queue, execution, verdict, self._fence, ran=True)
                # Not through the fenced view: the deferral took the owner key, so a fenced release
                # would be refused, end the horse with an error and leave the slots held to lapse.
                with raw_client(self.connection).pipeline() as pipe:
                    self._release_lease(pipe, owner=False)
                    pipe.execute()
                return
            except REDIS_UNREACHABLE as exc:
                self._wait_for_redis(exc)

    def _end_stopped(self, job: Job, queue: Queue, execution: Execution) -> None:
        """A job `easeoff cancel` stopped at its checkpoint (or rq's stop-job command interrupted
        in-process) ends as rq ends a job its stop-job command stopped: STOPPED, in the failed
        registry, its stopped callback run, no retry spent or taken. Its cursor stays in its meta."""
        job.get_meta(refresh=True)
        self.log.warning(
            "Worker %s: job %s stopped on request (easeoff cancel / rq stop-job)",
            *(self.name, job.id),
            extra=about(job, STOPPED_REASON, "stopped"),
        )
        self.handle_execution_ended(job, queue, job.stopped_callback_timeout)
        try:
            execute_stopped_callback(job, self.death_penalty_class)
        except Exception:
            self.log.exception("Worker %s: stopped callback for job %s raised", self.name, job.id, extra=about(job))
        rq_internals.note_stopped(self, job.id)
        self.handle_job_failure(job, queue, exc_string=STOPPED_REASON, execution=execution)
        clear_cancel(job.id, raw_client(self.connection))

    def _retried_later(
        self, job: Job, queue: Queue, execution: Execution, error: BaseException | None, reached: bool
    ) -> bool:
        """A failure its task's `retry_on` names, safe to run again, spends a retry and waits in
        the scheduled registry (workers/transient_errors.py). In the horse, fenced, like a deferral."""
        committed = db_reach.committed_since(self._reach_mark)
        plan = transient_errors.plan_retry(error, meta_of(job), reached, committed, self.config, self.rng)
        if plan is None:
            return False
        if isinstance(plan, transient_errors.NotRetried):
            self.log.warning(
                "Worker %s: job %s failed on %s: %s",
                *(self.name, job.id, plan.error.text, plan.why),
                extra=about(job, f"{plan.error.text}: {plan.why}", "failed"),
            )
            return False
        while True:  # a move that meets a Redis outage waits for it (still fenced)
            try:
                if transient_errors.retry_later(self.moves, job, queue, execution, plan, self._fence):
                    self.log.warning(
                        "Worker %s: job %s retry %d in %.1fs after %s",
                        *(self.name, job.id, plan.meta.retries, plan.delay, plan.error.text),
                        extra=about(job, plan.error.text, "retry"),
                    )
                with raw_client(self.connection).pipeline() as pipe:  # as after a deferral
                    self._release_lease(pipe, owner=False)
                    pipe.execute()
                return True
            except REDIS_UNREACHABLE as exc:
                self._wait_for_redis(exc)
