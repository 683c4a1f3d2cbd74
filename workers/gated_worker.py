"""rq's forking Worker, asking the gate before it takes a job and after.

Before: a queue whose own resources are strained is not dequeued from at all; the
worker waits for the next probe and keeps heartbeating. After: a job whose resources
are strained is deferred, atomically, to rq's scheduled registry with a growing,
jittered delay. A deferral is not a failure: it spends no retry. Whichever worker
probes for the fleet (once per interval) also publishes cool-downs, adapts
concurrency limits, releases jobs parked on resources that cleared and promotes due
deferred jobs: every such move is one atomic script, so workers may race safely.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from redis import Redis
from redis.connection import AbstractConnection
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.callbacks import execute_stopped_callback
from rq.exceptions import DeserializationError, StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.logutils import blue, green
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from easeoff.feedback import clock, keys, liveness, redis_internals, rq_internals
from easeoff.feedback.config import Config, ConfigError, load_config, packaged_example_path
from easeoff.feedback.connect import REDIS_UNREACHABLE, SOCKET_TIMEOUT
from easeoff.feedback.levers.limits import Leases, LeaseScope, short_pace_wait
from easeoff.feedback.levers.rates import RateLimiter
from easeoff.feedback.queue_names import known_queue_names
from easeoff.feedback.reasons import Kind, Reason, Verdict, WaitsFor, joined
from easeoff.feedback.replica_acks import keep_waiting
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.demand import Wants
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.tally import unknown_resources
from easeoff.feedback.tally.counters import counter_field, counter_key
from easeoff.feedback.verdict.backoff import deferral_delay
from easeoff.feedback.verdict.cooldown import CooldownPublisher
from easeoff.feedback.verdict.gate import judge, queue_reasons
from easeoff.tasks import db_reach, pool
from easeoff.tasks.admission import admit as mark_admitted
from easeoff.tasks.checkpoint import CANCELED, SHUTTING_DOWN, clear_cancel, request_stop
from easeoff.tasks.derived_meta import UngatableJob
from easeoff.tasks.meta import JobMeta, task_name
from easeoff.tasks.resumable import Checkpointed
from easeoff.workers import horse_connection, logs, prober_duties, transient_errors
from easeoff.workers.checks import Candidate, admission_checks, admit
from easeoff.workers.db_outages import outage_reason
from easeoff.workers.deferral import Deferral, plan_deferral
from easeoff.workers.fencing import Fence, FencedOut, arm
from easeoff.workers.heartbeats import beat_for_life
from easeoff.workers.job_endings import CountsJobEndings
from easeoff.workers.moves import Claim, JobMoves, new_execution_id
from easeoff.workers.redis_outages import RidesOutRedisOutages

ABANDON_GRACE = int(liveness.GRACE)  # seconds a running job's heartbeat may be late before it counts as abandoned
HEARTBEAT_EVERY = 30.0  # seconds between heartbeats while idle or held back (rq keeps a worker 420 s)
IDLE_POLL_MIN = 0.05  # first poll of an empty queue; doubles up to IDLE_POLL_MAX
IDLE_POLL_MAX = 3.0  # how late a job pushed by plain rq (which announces nothing) may be seen
# How long the pub/sub listener waits on its socket between looks at whether to stop. It sends
# nothing to Redis either way; a stopping worker waits for it (redis-py 8.2's stop() joins).
PUBSUB_WAIT = 1.0
# Working jobs back to back, a worker judges the next claim on the snapshot it read for the last
# one, if nothing woke it since (every verdict flip, switch and hosts-out change publishes the
# wake-up word) and it is younger than this share of a probe interval: one Redis read a job less.
BUSY_REUSE = 0.25
# A claimed job handed a paced start waits for it in place at most this many times (another job's
# end may move the start on while it waits); after that it is deferred and parked as any refusal.
PACE_WAITS_IN_PLACE = 3
STOPPED_REASON = "Job stopped by user (easeoff cancel or rq's stop-job)"


class GatedWorker(CountsJobEndings, RidesOutRedisOutages, Worker):
    def __init__(
        self,
        queues: Sequence[str] | Sequence[Queue],
        name: str | None = None,
        *args: Any,
        config: Config | None = None,
        readings: ReadingsCache | None = None,
        **kwargs: Any,
    ) -> None:
        """rq's signature, plus the config (default: found as the CLI finds it) and, optionally, the
        readings cache its first probes already run in (`easeoff worker` starts them before it
        loads the app's task modules). rq's classmethods that rebuild workers from Redis (`all`,
        `find_by_key`) call this with queues and name only, and `prepare_for_work=False`: such a
        worker only describes one that runs elsewhere, so with no config found (`rq info` from any
        directory) it is built on the packaged example rather than refused."""
        if config is None:
            config = _describing_config() if kwargs.get("prepare_for_work") is False else load_config()
        if kwargs.get("serializer") is None:
            kwargs["serializer"] = JSONSerializer  # easeoff's jobs are JSON, never pickle
        # Heartbeats double as the critical-tier check on running jobs: once per probe interval.
        kwargs.setdefault("job_monitoring_interval", liveness.beat_every(config))
        given = kwargs.get("connection")
        socket_timeout = redis_internals.socket_timeout(given) if isinstance(given, Redis) else None
        super().__init__(queues, name, *args, **kwargs)
        connection = self.connection
        # rq sets the pool's socket timeout to its dequeue timeout + 10 s (415 s): a frozen Redis
        # would then hold every command for seven minutes while leases and claims lapse. easeoff
        # never blocks on Redis (its dequeue polls), so its own timeout stands.
        redis_internals.set_socket_timeout(connection, socket_timeout or SOCKET_TIMEOUT)
        self.config = config
        self.readings = ReadingsCache(connection, config) if readings is None else readings
        self.readings.on_refresh = self._after_refresh
        self.leases = Leases(connection, config)
        self._lease: tuple[list[LeaseScope], str] | None = None
        self._running_job: Job | None = None
        self.moves = JobMoves(connection)
        self._duty_memory = prober_duties.DutyMemory()
        self._cooldowns = CooldownPublisher(connection, config, recheck=prober_duties.RECHECK)
        self._queues_seen: tuple[float, list[str]] = (-math.inf, [])
        self.rng = random.Random()
        self.checks = admission_checks(config, connection, self.leases, self.rng, RateLimiter(connection), self.log)
        self._reach_mark = 0  # tasks/db_reach.py, taken as each job's run begins
        self.wants = Wants(connection, config)  # a running job keeps its hosts probed at full pace
        self._claimed: Claim | None = None
        self._claimed_any = False
        # Workers started together would heartbeat together every HEARTBEAT_EVERY: spread them.
        self._last_heartbeat_at = time.monotonic() - self.rng.uniform(0.5, 1.0) * HEARTBEAT_EVERY
        self._held: dict[str, str] = {}  # queue -> why it is held, to log holds and releases once
        self._kept: tuple[Snapshot, float, int] | None = None  # the last snapshot read, when, after how many wakes
        self._horse_connection: AbstractConnection | None = None  # opened for the horse about to be forked
        self._fence: Fence | None = None  # the running job's claim: every later move of it checks this
        self._fenced_out: str | None = None  # the job whose fence fell: its end is not recorded
        self._pending_claim: str | None = None  # a claim whose reply Redis did not deliver: sent again as is

    # -- the dequeue loop -------------------------------------------------------

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
                    self.run_maintenance_tasks()
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
            claim = self.moves.claim(queues, self.name, ttl, execution_id=self._pending_claim)
            self._pending_claim = None
            if claim is None:
                return None
            self._claimed_any = True
            queue = next((q for q in queues if q.name == claim.queue_name), None) or Queue(
                claim.queue_name, connection=self.connection, serializer=self.serializer
            )
            loaded = self._load_claimed(claim, queue)
            if loaded is None:
                return None
            job, meta = loaded
            candidate = Candidate(job, meta, queue, claim.execution.composite_key, snapshot, now)
            verdict = admit(self.checks, candidate)
            for _ in range(PACE_WAITS_IN_PLACE):
                # Handed a paced start just ahead of its time: wait for it here, then judge afresh.
                if (wait := short_pace_wait(verdict.reasons)) is None:
                    break
                time.sleep(wait + self.rng.uniform(0.0, 0.01))
                snapshot, now = self._read_snapshot(), clock.now()
                candidate = Candidate(job, meta, queue, claim.execution.composite_key, snapshot, now)
                verdict = admit(self.checks, candidate)
            self.reorder_queues(reference_queue=queue)  # rq's dequeue strategies: after every dequeue
            if verdict.admit:
                self._lease = candidate.lease
                self._claimed = claim
                self._fence = claim.fence
                self._log_dequeued(job, queue, meta.task)
                return job, queue
            self._defer(job, candidate.meta, queue, claim.execution, verdict, claim.fence)
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
                return job, _meta(job, self.config)
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
                "Worker %s: could not enqueue the dependents of failed job %s", self.name, job.id, extra=_about(job)
            )

    # -- rq hooks -------------------------------------------------------------

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        """From here this process works jobs: its writes wait for their replica (`replica_acks`)
        rather than fail, since a move made on the primary cannot be taken back. (Not in __init__:
        rq's `Worker.all()` builds workers on an app's or the CLI's client, which must fail fast.)
        Then the first probes start, and rq's start-up (registering, subscribing) runs beside them
        rather than before them, so the first claim waits less."""
        keep_waiting(self.connection)
        self.readings.warm_up()
        super().bootstrap(*args, **kwargs)

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
        """Use the execution the claim script already recorded, rather than making a second one."""
        claim, self._claimed = self._claimed, None
        if claim is None or claim.job_id != job.id:
            return super().prepare_execution(job)
        while True:  # Redis away here is waited out: the claimed job is ours, and nobody beats it yet
            try:
                with self.connection.pipeline() as pipe:  # the worker's state and a count: no move of the job
                    self.set_state(WorkerStatus.BUSY, pipeline=pipe)
                    pipe.hincrby(counter_key("started"), counter_field(job.origin, task_name(job)), 1)
                    pipe.execute()
                break
            except REDIS_UNREACHABLE as exc:
                self._wait_for_redis(exc)
        self.executions[claim.execution.id] = claim.execution  # only once it will run: see execute_job
        return claim.execution

    @contextmanager
    def _fenced(self) -> Iterator[None]:
        """While rq moves the running job, the pipelines it takes from `self.connection` are fenced."""
        fence, client = self._fence, self.connection
        if fence is None or isinstance(client, _FencedClient):
            yield
            return
        self.connection = cast(Redis, _FencedClient(client, fence))
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
                return
            except REDIS_UNREACHABLE as exc:
                self._wait_for_redis(exc)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """rq's last beat as the job returns: without Redis, the ending that follows waits for it."""
        try:
            super().handle_execution_ended(job, queue, heartbeat_ttl)
        except REDIS_UNREACHABLE as exc:
            self.log.warning(
                "Worker %s: job %s ended while Redis was away (%s)", self.name, job.id, exc, extra=_about(job)
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
            extra=_about(job) if job is not None and job.id == fence.job_id else {"job_id": fence.job_id},
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

    def maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        """While a job runs: beat for it (fenced: its started entry and its leases, on Redis's
        clock), and ask it to stop at its next checkpoint when a signal goes critical or, for a
        resumable job, when its resources are strained. A job this execution lost is stopped.
        Without Redis (or with Redis refusing: OOM, READONLY) the job runs on; the beats resume
        when it is back, and its entry outlives the outage (feedback/lua/fleet_clock.lua)."""
        try:
            self._maintain_heartbeats(job, execution)
        except (RedisError, OSError) as exc:
            self.log.warning("Worker %s: heartbeat for job %s missed: %s", self.name, job.id, exc, extra=_about(job))

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
                extra=_about(job, why, "stop_asked"),
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
                    "Worker %s: could not ask job %s to checkpoint: %s", self.name, job.id, exc, extra=_about(job)
                )

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
        outage = None if isinstance(stopped, Checkpointed) else outage_reason(stopped, _meta(job), reached)
        if not isinstance(stopped, Checkpointed) and outage is None:
            if not self._retried_later(job, queue, execution, stopped, reached):
                super()._finalize_failure(job, queue, execution, exc_info)
            return
        job.get_meta(refresh=True)  # the cursor the task stored at its checkpoint
        meta = _meta(job)
        backoff = self.config.backoff
        delay = deferral_delay(meta.deferrals, backoff.base, backoff.cap, self.config.probe_interval, self.rng)
        if outage is not None:
            self.log.warning(
                "Worker %s: job %s deferred, not failed: %s",
                *(self.name, job.id, outage),
                extra=_about(job, outage, "deferred"),
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
            extra=_about(job, STOPPED_REASON, "stopped"),
        )
        self.handle_execution_ended(job, queue, job.stopped_callback_timeout)
        try:
            execute_stopped_callback(job, self.death_penalty_class)
        except Exception:
            self.log.exception("Worker %s: stopped callback for job %s raised", self.name, job.id, extra=_about(job))
        rq_internals.note_stopped(self, job.id)
        self.handle_job_failure(job, queue, exc_string=STOPPED_REASON, execution=execution)
        clear_cancel(job.id, raw_client(self.connection))

    def _retried_later(
        self, job: Job, queue: Queue, execution: Execution, error: BaseException | None, reached: bool
    ) -> bool:
        """A failure its task's `retry_on` names, safe to run again, spends a retry and waits in
        the scheduled registry (workers/transient_errors.py). In the horse, fenced, like a deferral."""
        committed = db_reach.committed_since(self._reach_mark)
        plan = transient_errors.plan_retry(error, _meta(job), reached, committed, self.config, self.rng)
        if plan is None:
            return False
        if isinstance(plan, transient_errors.NotRetried):
            self.log.warning(
                "Worker %s: job %s failed on %s: %s",
                *(self.name, job.id, plan.error.text, plan.why),
                extra=_about(job, f"{plan.error.text}: {plan.why}", "failed"),
            )
            return False
        while True:  # a move that meets a Redis outage waits for it (still fenced)
            try:
                if transient_errors.retry_later(self.moves, job, queue, execution, plan, self._fence):
                    self.log.warning(
                        "Worker %s: job %s retry %d in %.1fs after %s",
                        *(self.name, job.id, plan.meta.retries, plan.delay, plan.error.text),
                        extra=_about(job, plan.error.text, "retry"),
                    )
                with raw_client(self.connection).pipeline() as pipe:  # as after a deferral
                    self._release_lease(pipe, owner=False)
                    pipe.execute()
                return True
            except REDIS_UNREACHABLE as exc:
                self._wait_for_redis(exc)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """rq allows a minute past each heartbeat; easeoff a few seconds, so a job whose worker
        was killed is recovered within seconds (see `recover_abandoned`), not minutes."""
        interval = int(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            return int(max(min(job.timeout - working_time, interval), 0)) + ABANDON_GRACE
        return interval + ABANDON_GRACE

    def subscribe(self) -> None:
        """rq's command channel, and the fleet's word that a reading changed a verdict: a worker
        whose queues are all held sleeps long and wakes on that word, not on a poll per interval."""
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(
            **{self.pubsub_channel_name: self.handle_payload, keys.WAKE: lambda m: self.readings.wake(m["data"])}
        )
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # rq types it None
            sleep_time=PUBSUB_WAIT, daemon=True, exception_handler=rq_internals.pubsub_exception_handler(self)
        )

    def teardown(self) -> None:
        """Stop probing first: the probe leases lapse and the workers still running take them over.
        A worker stopping while Redis is away (or no replica acknowledges) still stops: its key
        lapses on its own (rq's worker TTL) and its probe leases after two intervals."""
        self.readings.close()
        closed = pool.close_all()  # the tasks' kept connections (tasks/pool.py)
        if closed:
            self.log.info("Worker %s: closed %d kept database connections", self.name, closed)
        keep_waiting(self.connection, False)
        try:
            super().teardown()  # type: ignore[no-untyped-call]  # rq's, untyped
        except REDIS_UNREACHABLE as exc:
            self.log.warning("Worker %s: could not record its stop: Redis unreachable (%s)", self.name, exc)

    def run_maintenance_tasks(self) -> None:
        """Recover abandoned jobs our way before rq's cleanup, which would fail them all."""
        try:
            self._recover_abandoned()
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call]  # rq's, untyped
        except REDIS_UNREACHABLE as exc:
            self._wait_for_redis(exc)

    def clean_registries(self) -> None:
        """rq's maintenance, less its sweep of the started registry: that one judges absence on
        this host's clock (a worker 15 s ahead would fail the fleet's live jobs) and knows no
        fencing. Abandoned jobs are ours to sweep (`recover_abandoned`), on Redis's clock."""
        rq_internals.clean_registries_but_started(self)

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._running_job = job
        try:
            # Every record about it meanwhile, rq's in the horse too, carries its id, queue and task.
            with logs.handling_job(job.id, queue.name, _task_or_none(job)):
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
            self._lease = None
            self._running_job = None
            self._fence = None
            self._fenced_out = None

    def run_job(self, job: Job, queue: Queue) -> None:
        """rq's way: in a work horse forked for the job (workers/in_process.py runs it here instead)."""
        super().execute_job(job, queue)

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        """rq's, with the horse's Redis connection opened here, before the fork (workers/horse_connection.py)."""
        handed = self._horse_connection = horse_connection.open_for_horse(self.connection)
        try:
            super().fork_work_horse(job, queue)
        except BaseException:
            if handed is not None:
                horse_connection.let_go(handed, None)  # no horse has it
            raise
        finally:
            self._horse_connection = None
        if handed is not None:
            horse_connection.let_go(handed, rq_internals.horse_pid(self))

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
                "Worker %s: the horse's beat for job %s missed: %s", self.name, job.id, exc, extra=_about(job)
            )
            return
        if not alive:
            self.log.warning(
                "Worker %s: job %s was taken from this execution: its horse stops", self.name, job.id, extra=_about(job)
            )
            os.kill(os.getpid(), signal.SIGKILL)

    # -- housekeeping -----------------------------------------------------------

    def _after_refresh(self, snapshot: Snapshot) -> None:
        """This worker just probed for the fleet: do the fleet's housekeeping (workers/prober_duties.py)."""
        queues = self._known_queues()
        prober_duties.after_refresh(
            prober_duties.fleet_round(
                self.connection,
                self.config,
                self.moves,
                snapshot,
                queues,
                self.log,
                self.name,
                clock.now(),
                self._duty_memory,
                self._cooldowns,
            )
        )

    def _heartbeat_if_due(self) -> None:
        if time.monotonic() - self._last_heartbeat_at >= HEARTBEAT_EVERY:
            with self.connection.pipeline() as pipe:
                self.heartbeat(pipeline=pipe)
                pipe.execute()
            self._last_heartbeat_at = time.monotonic()

    def _recover_abandoned(self) -> None:
        prober_duties.recover_abandoned_jobs(self.moves, self._known_queues(), self.log, self.name)

    def _enqueue_periodic(self, now: float) -> None:
        """Every worker looks at the schedules between jobs, not the prober alone: a prober killed
        at a tick is replaced within a loop, not a lapsed lease. Between ticks it sends Redis
        nothing; at a tick, one WATCH/MULTI/EXEC enqueues it once (workers/scheduler.py)."""
        prober_duties.fire_schedules(self.connection, self.config, self._duty_memory, self.log, now)

    def _promote(self) -> None:
        """With nothing to probe nobody refreshes readings, so nobody promotes on refresh: do it here."""
        prober_duties.promote_due_jobs(self.moves, self._known_queues())

    def _known_queues(self) -> list[Queue]:
        """Every queue rq knows of, not just this worker's: the prober promotes for the fleet."""
        seen_at, names = self._queues_seen
        if time.monotonic() - seen_at >= prober_duties.RECHECK:  # a new queue is seen within RECHECK
            names = known_queue_names(self.connection, [*self.queue_names(), *self.config.queues])
            self._queues_seen = (time.monotonic(), names)
        return [Queue(n, connection=self.connection, serializer=self.serializer) for n in names]

    def _any_ready(self, queues: list[Queue]) -> bool:
        with self.connection.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue.key)
            return any(pipe.execute())

    def _drained(self) -> bool:
        """Burst mode ends when no job is ready and none is waiting out a deferral."""
        with self.connection.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.llen(queue.key)
                pipe.zcard(ScheduledJobRegistry(queue.name, connection=self.connection).key)
            return not any(pipe.execute())

    def _uninterruptible(self) -> _BusyWhileClaiming:
        return _BusyWhileClaiming(self)


class _BusyWhileClaiming:
    """While a claim is in flight, a warm-shutdown signal waits instead of raising mid-move.

    rq's SIGTERM handler raises StopRequested only when the worker looks idle; looking
    busy for these few milliseconds keeps a claimed job from being stranded in
    `started` by an exception thrown between the claim and its deferral or run.
    """

    def __init__(self, worker: GatedWorker) -> None:
        self.worker = worker

    def __enter__(self) -> None:
        rq_internals.look_busy(self.worker, True)

    def __exit__(self, *exc: object) -> None:
        if self.worker._claimed is not None:
            return  # admitted: busy until it has run, so a SIGTERM now waits for the job, not strands it
        rq_internals.look_busy(self.worker, False)
        if rq_internals.stop_requested(self.worker):
            raise StopRequested()


def _task_or_none(job: Job) -> str | None:
    try:
        return task_name(job)
    except Exception:  # a payload that cannot be read: the record still names the job
        return None


def _about(job: Job, reason: str | None = None, event: logs.Event | None = None) -> dict[str, str]:
    """`extra=` for a record about `job` (workers/logs.py): its id, queue and task as fields."""
    return logs.job_extra(job.id, job.origin, _task_or_none(job), reason, event)


def _describing_config() -> Config:
    try:
        return load_config()
    except ConfigError:
        return load_config(packaged_example_path())


def _meta(job: Job, config: Config | None = None) -> JobMeta:
    """The job's meta: its own; for an easeoff task's job pushed through plain rq (no easeoff meta),
    the one its task works out from the job's arguments, kept on the job; a plain function's job is
    named by its function, as counters name it. Raises `UngatableJob` (with its one-line `reason`)
    for a task's job whose meta cannot be worked out: the claim fails it with that reason. With the
    `config`, a derived resource the config lacks is such a case too (tasks/derived_meta.py)."""
    from easeoff.tasks.derived_meta import adopt_meta  # here while the rest of this file is rewritten

    return adopt_meta(job, None if config is None else config.resources)


class _FencedClient:
    """The worker's Redis client as rq's job moves see it while a fenced job runs: the same in
    everything but `pipeline()`, whose transactions check the job's fence (workers/fencing.py)."""

    def __init__(self, client: Redis, fence: Fence) -> None:
        self._client = client
        self._fence = fence

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        return arm(self._client.pipeline(transaction=transaction, shard_hint=shard_hint), self._fence)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def raw_client(client: Any) -> Redis:
    """The Redis client under a fenced view (which changes only how pipelines are made)."""
    inner = client._client if isinstance(client, _FencedClient) else client
    assert isinstance(inner, Redis)
    return inner
