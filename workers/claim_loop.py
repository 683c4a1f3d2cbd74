"""The gated worker's claim loop: claim the next job the gate admits, or defer it in one move.

Before a claim, a queue whose own resources are strained is not dequeued from at all; the
worker waits for the next probe and keeps heartbeating. After it, the admission pipeline
(workers/checks.py) judges the job; a refused one is deferred, atomically, to rq's scheduled
registry with a growing, jittered delay or parked on what it waits for. A deferral is not a
failure: it spends no retry.
"""

from __future__ import annotations

import time
from typing import Any

from rq import Queue
from rq.exceptions import DeserializationError, StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.logutils import blue, green
from rq.worker import WorkerStatus

from easeoff.feedback import clock, rq_internals
from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.feedback.levers.limits import short_pace_wait
from easeoff.feedback.reasons import Verdict, joined
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.tally import unknown_resources
from easeoff.feedback.verdict.gate import queue_reasons
from easeoff.tasks.derived_meta import UngatableJob
from easeoff.tasks.meta import JobMeta
from easeoff.workers import logs
from easeoff.workers.checks import Candidate, admit
from easeoff.workers.deferral import Deferral, plan_deferral
from easeoff.workers.fencing import Fence
from easeoff.workers.moves import Claim, new_execution_id
from easeoff.workers.worker_parts import (
    ABANDON_GRACE,
    WorkerParts,
    about,
    meta_of,
)

IDLE_POLL_MIN = 0.05  # first poll of an empty queue; doubles up to IDLE_POLL_MAX
IDLE_POLL_MAX = 3.0  # how late a job pushed by plain rq (which announces nothing) may be seen
# Working jobs back to back, a worker judges the next claim on the snapshot it read for the last
# one, if nothing woke it since (every verdict flip, switch and hosts-out change publishes the
# wake-up word) and it is younger than this share of a probe interval: one Redis read a job less.
BUSY_REUSE = 0.25
# A claimed job handed a paced start waits for it in place at most this many times (another job's
# end may move the start on while it waits); after that it is deferred and parked as any refusal.
PACE_WAITS_IN_PLACE = 3


class ClaimLoop(WorkerParts):
    """The claim loop (rq's `dequeue_job_and_maintain_ttl`, ours)."""

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """Claim the next job the gate admits; None when a burst is drained or idle too long."""
        self.procline("Listening on " + ",".join(self.queue_names()))  # type: ignore[no-untyped-call]  # rq's, untyped
        idle_since = time.monotonic()
        idle_poll = IDLE_POLL_MIN
        look_at_queues_at = 0.0  # monotonic: an idle worker wakes for its readings more often than for its queues
        snapshot = self._kept_snapshot()  # read for the job that just ended, if still good
        reuse = snapshot is not None  # or: woken only to look at the queues, with readings read a moment ago
        idle_state_set = False
        while True:
            try:
                if not idle_state_set:  # in the try: Redis may be away the moment a job ends
                    self.set_state(WorkerStatus.IDLE)
                    idle_state_set = True
                self._heartbeat_if_due()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()  # type: ignore[no-untyped-call]  # GatedWorker's, typed; rq's is not
                if snapshot is None or not (reuse and self._still_fresh(snapshot)):
                    snapshot = self._read_snapshot()
                reuse = False
                if not self.config.probe_targets:
                    self._promote()  # nobody probes, so nobody would promote on refresh
                now = clock.now()
                self._enqueue_periodic(now)
                open_queues = self._open_queues(snapshot, now)
                if open_queues and time.monotonic() >= look_at_queues_at:
                    result = self._claim_admitted(open_queues, snapshot, now)
                    if result is not None:
                        return result
                    if self._claimed_any:
                        idle_since, idle_poll = time.monotonic(), IDLE_POLL_MIN
                        continue
                    look_at_queues_at = time.monotonic() + idle_poll
                if timeout is None and self._drained():
                    return None
            except REDIS_UNREACHABLE as exc:
                self._wait_for_redis(exc)
                continue

            if max_idle_time is not None and time.monotonic() - idle_since > max_idle_time:
                return None
            # Nothing to run: sleep until told. A verdict flip, jobs released or promoted, and
            # the first job into an empty queue all publish the fleet's wake-up word. The sleep
            # is bounded for probing's sake (held_pause: readings only), and the queues are
            # looked at again without a word after idle_poll, for jobs pushed by clients that
            # do not announce them (plain rq), at most IDLE_POLL_MAX late.
            until_due = self.readings.next_due_in(snapshot) + self.rng.uniform(0.0, 0.05)
            readings_pause = self.readings.held_pause(snapshot, until_due)
            pause = readings_pause
            if open_queues:
                pause = min(pause, max(look_at_queues_at - time.monotonic(), 0.0))
            idle_poll = min(idle_poll * 2, IDLE_POLL_MAX)
            woken = self.readings.pause(max(pause, 0.01))
            if woken:
                look_at_queues_at = 0.0
            # A prober reads at every wake: its duties and its probes' thresholds go by what it reads.
            reuse = not woken and pause < readings_pause and not self.readings.probes()

    def _read_snapshot(self) -> Snapshot:
        wakes, read_at = self.readings.wakes, time.monotonic()  # before the read: a wake during it counts
        snapshot = self.readings.current()
        self._kept = (snapshot, read_at, wakes)
        return snapshot

    def _kept_snapshot(self) -> Snapshot | None:
        """The snapshot last read, unless a wake came since or it is older than BUSY_REUSE intervals."""
        if self._kept is None:
            return None
        snapshot, read_at, wakes = self._kept
        if wakes != self.readings.wakes or time.monotonic() - read_at >= BUSY_REUSE * self.config.probe_interval:
            return None
        return snapshot

    def _still_fresh(self, snapshot: Snapshot) -> bool:
        """A wake for the queues alone may judge them on the readings read a moment ago, unless
        any is within an interval of going stale (one more read then costs less than a false
        `stale_reading`)."""
        fresh_for = self.config.stale_after - self.config.probe_interval
        now = clock.now()
        return all(r is not None and now - r.taken_at < fresh_for for r in snapshot.readings.values())

    def _open_queues(self, snapshot: Snapshot, now: float) -> list[Queue]:
        """Queues whose own resources are healthy; the rest wait without being dequeued."""
        open_queues = []
        for queue in rq_internals.ordered_queues(self):
            reasons = queue_reasons(queue.name, snapshot, self.config, now)
            if reasons:
                self.procline(f"Holding {queue.name}: {joined(reasons)}")  # type: ignore[no-untyped-call]  # rq's, untyped
                self._note_hold(queue.name, joined(reasons))
            else:
                self._note_release(queue.name)
                open_queues.append(queue)
        return open_queues

    def _note_hold(self, queue: str, why: str) -> None:
        """Log a queue's hold once, when it starts, not at every poll while it lasts."""
        if queue not in self._held:
            self.log.info("Worker %s: holding queue %s (not dequeuing): %s", self.name, queue, why)
        self._held[queue] = why

    def _note_release(self, queue: str) -> None:
        if self._held.pop(queue, None) is not None:
            self.log.info("Worker %s: released queue %s: dequeuing again", self.name, queue)

    def _claim_admitted(self, queues: list[Queue], snapshot: Snapshot, now: float) -> Any:
        """Claim one job; run it if its resources are healthy, else defer it. None if nothing to run."""
        was_idle, self._claimed_any = not self._claimed_any, False
        if was_idle and not self._any_ready(queues):
            return None  # idle polls ask LLEN (one read) rather than run the claim script on empty queues
        ttl = self.job_monitoring_interval + ABANDON_GRACE
        with self._uninterruptible():
            # A claim whose reply was lost goes again with the same execution id: it answers what it
            # popped the first time (claim.lua's receipt), so no job is left ownerless in `started`.
            self._pending_claim = self._pending_claim or new_execution_id()
            with self._hold_lock:  # a stop-job command for the job it claims finds it held
                claim = self.moves.claim(queues, self.name, ttl, execution_id=self._pending_claim)
                self._held_job_id = None if claim is None else claim.job_id
            self._pending_claim = None
            if claim is None:
                return None
            self._claimed_any = True
            queue = next((q for q in queues if q.name == claim.queue_name), None) or Queue(
                claim.queue_name, connection=self.connection, serializer=self.serializer
            )
            loaded = self._load_claimed(claim, queue)
            if loaded is None:
                self._let_go(claim.job_id)
                return None
            job, meta = loaded
            candidate = Candidate(job, meta, queue, claim.execution.composite_key, snapshot, now)
            verdict = admit(self.checks, candidate)
            for _ in range(PACE_WAITS_IN_PLACE):
                # Handed a paced start just ahead of its time: wait for it here, then judge afresh.
                if (wait := short_pace_wait(verdict.reasons)) is None or self._stop_noted(job.id):
                    break
                time.sleep(wait + self.rng.uniform(0.0, 0.01))
                snapshot, now = self._read_snapshot(), clock.now()
                candidate = Candidate(job, meta, queue, claim.execution.composite_key, snapshot, now)
                verdict = admit(self.checks, candidate)
            self.reorder_queues(reference_queue=queue)  # rq's dequeue strategies: after every dequeue
            with self._hold_lock:  # a stop-job command lands before this decision or after the deferral
                if verdict.admit or self._stop_noted(job.id):  # a stopped job's run ends at once, unrun
                    self._lease = candidate.lease
                    self._claimed = claim
                    self._fence = claim.fence
                    self._log_dequeued(job, queue, meta.task)
                    return job, queue
                self._defer(job, candidate.meta, queue, claim.execution, verdict, claim.fence)
                self._held_job_id = None
            return None

    def _load_claimed(self, claim: Claim, queue: Queue) -> tuple[Job, JobMeta] | None:
        """The claimed job and its meta; a job that cannot be read or gated is failed with the reason.
        Redis going away meanwhile is waited out and the read tried again: the claim is still ours
        (its entry outlives any outage, fleet_clock.lua), and failing a good job for it would lose it."""
        while True:
            try:
                job = self.job_class.fetch(claim.job_id, connection=self.connection, serializer=self.serializer)
                if rq_internals.unreadable_meta(job):
                    # rq carries on with {"unserialized": ...}: the job's resources would be lost and
                    # the job run ungated. Fail closed instead.
                    raise DeserializationError("unreadable meta")
                job.func_name  # noqa: B018 - decodes the payload (a pickled one is refused here)
            except REDIS_UNREACHABLE as exc:
                self._wait_for_redis(exc)
                continue
            except Exception as exc:
                reason = f"easeoff: cannot load job payload ({exc.__class__.__name__}); is it JSON-serialized?"
                self._fail_claimed(claim, queue, reason)
                return None
            try:
                return job, meta_of(job, self.config)
            except REDIS_UNREACHABLE as exc:
                self._wait_for_redis(exc)
            except UngatableJob as exc:
                self._fail_claimed(claim, queue, f"easeoff: cannot gate this job: {exc.reason}")
                return None

    def _fail_claimed(self, claim: Claim, queue: Queue, reason: str) -> None:
        self.moves.fail_claimed(claim.job_id, queue, claim.execution, reason, fence=claim.fence)
        extra = logs.job_extra(claim.job_id, queue.name, None, reason, "failed")
        self.log.error("Worker %s: job %s failed: %s", self.name, claim.job_id, reason, extra=extra)

    def _log_dequeued(self, job: Job, queue: Queue, task: str) -> None:
        """As rq logs a dequeued job, description and all unless `log_job_description` is off."""
        extra = logs.job_extra(job.id, queue.name, task or None, event="claimed")
        if self.log_job_description:
            description = blue(job.description)
            self.log.info("Worker %s: %s: %s (%s)", self.name, green(queue.name), description, job.id, extra=extra)
        else:
            self.log.info("Worker %s: %s: %s", self.name, green(queue.name), job.id, extra=extra)

    def _defer(
        self,
        job: Job,
        meta: JobMeta,
        queue: Queue,
        execution: Execution,
        verdict: Verdict,
        fence: Fence | None,
        ran: bool = False,
    ) -> None:
        """Carry out the deferral's plan in one move: to scheduled, parked, or failed past a cap.
        `ran`: the job started (stopped at a checkpoint, or by its database's outage), so rq's
        `ttl`, a wait to start, begins again; refused at its claim, its wait goes on."""
        plan = plan_deferral(meta, verdict, self.config, clock.now())
        plan.meta.store(job)
        if not isinstance(plan, Deferral):
            if self.moves.fail_deferred_too_long(
                job, queue, execution, plan.reason, self.name, meta.task, plan.kind, fence
            ):
                extra = logs.job_extra(job.id, queue.name, meta.task or None, plan.reason, "failed")
                self.log.warning("Worker %s: job %s failed: %s", self.name, job.id, plan.reason, extra=extra)
                self._enqueue_dependents_of_failed(job, queue)
            return
        if plan.unknown:
            with self.connection.pipeline(transaction=False) as pipe:
                unknown_resources.note(pipe, plan.unknown, meta.task, clock.now())
                pipe.execute()
        if self.moves.defer(
            job, queue, execution, plan.due, meta.task, verdict.reasons, plan.park_on, fence, restart_ttl=ran
        ):
            # A parked job comes back when what it waits on clears or hands it a slot; its delay
            # is only the safety net's recheck, and "for 300.0s" read as a five-minute wait.
            waits = f"parked on {', '.join(plan.park_on)}" if plan.park_on else f"for {verdict.delay:.1f}s"
            reason = joined(verdict.reasons)
            self.log.info(
                "Worker %s: deferred %s %s (deferral %d): %s",
                *(self.name, job.id, waits, plan.meta.deferrals, reason),
                extra=logs.job_extra(job.id, queue.name, meta.task or None, reason, "deferred"),
            )

    def _enqueue_dependents_of_failed(self, job: Job, queue: Queue) -> None:
        """As rq does once a failure is recorded: dependents that allow their parent to fail
        (`Dependency(..., allow_failure=True)`) are enqueued, the others stay deferred. An error
        here is logged, not raised, as rq logs it: the failure is recorded already."""
        try:
            queue.enqueue_dependents(job)
        except Exception:
            self.log.exception(
                "Worker %s: could not enqueue the dependents of failed job %s", self.name, job.id, extra=about(job)
            )

    def _uninterruptible(self) -> _BusyWhileClaiming:
        return _BusyWhileClaiming(self)


class _BusyWhileClaiming:
    """While a claim is in flight, a warm-shutdown signal waits instead of raising mid-move.

    rq's SIGTERM handler raises StopRequested only when the worker looks idle; looking
    busy for these few milliseconds keeps a claimed job from being stranded in
    `started` by an exception thrown between the claim and its deferral or run.
    """

    def __init__(self, worker: WorkerParts) -> None:
        self.worker = worker

    def __enter__(self) -> None:
        rq_internals.look_busy(self.worker, True)

    def __exit__(self, *exc: object) -> None:
        if self.worker._claimed is not None:
            return  # admitted: busy until it has run, so a SIGTERM now waits for the job, not strands it
        rq_internals.look_busy(self.worker, False)
        if rq_internals.stop_requested(self.worker):
            raise StopRequested()
