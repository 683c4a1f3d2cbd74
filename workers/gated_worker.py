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
import random
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis import Redis
from rq import Queue, Worker
from rq.exceptions import DeserializationError, StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from easeoff.feedback import unknown_resources
from easeoff.feedback.backoff import deferral_cap_exceeded, deferral_delay
from easeoff.feedback.cache import ReadingsCache
from easeoff.feedback.config import Config, QueueConfig
from easeoff.feedback.cooldown import publish as publish_cooldowns
from easeoff.feedback.cooldown import strained_resources
from easeoff.feedback.counters import counter_field, counter_key, reason_kind
from easeoff.feedback.flips import GLOBAL, record_flips
from easeoff.feedback.gate import ADMIT, Verdict, global_findings, judge, queue_reasons, task_reasons
from easeoff.feedback.limits import Leases, LeaseScope, adapt_limits, lease_scopes, waiting_scope
from easeoff.feedback.queue_stats import known_queue_names
from easeoff.feedback.snapshot import Snapshot
from easeoff.feedback.switches import TASK_SCOPE_PREFIX, paused_task_scopes, prune_expired
from easeoff.tasks.admission import admit
from easeoff.tasks.checkpoint import request_stop
from easeoff.tasks.registry import META_KEY, job_resources
from easeoff.tasks.resumable import Checkpointed
from easeoff.workers.moves import Claim, JobMoves

ABANDON_GRACE = 10  # seconds a running job's heartbeat may be late before it counts as abandoned
HEARTBEAT_EVERY = 30.0  # seconds between heartbeats while idle or held back (rq keeps a worker 420 s)
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
IDLE_POLL_MIN = 0.05  # first poll of an empty queue; doubles up to a probe interval
SLOT_RECHECK = 300.0  # a job waiting for a slot is handed one; were that lost, it retries after this


class GatedWorker(Worker):
    def __init__(self, queues: Sequence[str | Queue], *, connection: Redis, config: Config, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        # Heartbeats double as the critical-tier check on running jobs: once per probe interval.
        kwargs.setdefault("job_monitoring_interval", max(1, math.ceil(config.probe_interval)))
        super().__init__(list(queues), connection=connection, **kwargs)
        self.config = config
        self.readings = ReadingsCache(connection, config, on_refresh=self._after_refresh)
        self.leases = Leases(connection, config)
        self._lease: tuple[list[LeaseScope], str] | None = None
        self._running_job: Job | None = None
        self.moves = JobMoves(connection)
        self.rng = random.Random()
        self._claimed: Claim | None = None
        self._claimed_any = False
        self._ending_job: Job | None = None
        self._ending_reason = ""
        self._last_heartbeat_at = 0.0
        self._held: dict[str, str] = {}  # queue -> why it is held, to log holds and releases once

    # -- the dequeue loop -------------------------------------------------------

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """Claim the next job the gate admits; None when a burst is drained or idle too long."""
        self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + ",".join(self.queue_names()))
        idle_since = time.monotonic()
        idle_poll = IDLE_POLL_MIN
        while True:
            try:
                self._heartbeat_if_due()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                snapshot = self.readings.current()
                if not self.config.probe_targets:
                    self._promote()  # nobody probes, so nobody would promote on refresh
                now = time.time()
                open_queues = self._open_queues(snapshot, now)
                if open_queues:
                    result = self._claim_admitted(open_queues, snapshot, now)
                    if result is not None:
                        return result
                    if self._claimed_any:
                        idle_since, idle_poll = time.monotonic(), IDLE_POLL_MIN
                        continue
                if timeout is None and self._drained():
                    return None
            except REDIS_DOWN as exc:
                self._wait_for_redis(exc)
                continue

            if max_idle_time is not None and time.monotonic() - idle_since > max_idle_time:
                return None
            # Nothing to run: wait, but wake when the next probe is due, so a verdict flip
            # (or jobs released by it) is acted on at once. Fewer wake-ups, fewer Redis calls.
            until_due = self.readings.next_due_in(snapshot) + self.rng.uniform(0.0, 0.05)
            pause = min(idle_poll, until_due) if open_queues else until_due
            idle_poll = min(idle_poll * 2, self.config.probe_interval)
            time.sleep(max(pause, 0.01))

    def _open_queues(self, snapshot: Snapshot, now: float) -> list[Queue]:
        """Queues whose own resources are healthy; the rest wait without being dequeued."""
        open_queues = []
        for queue in self._ordered_queues:
            reasons = queue_reasons(queue.name, snapshot, self.config, now)
            if reasons:
                self.procline(f"Holding {queue.name}: {'; '.join(reasons)}")
                self._note_hold(queue.name, "; ".join(reasons))
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
            claim = self.moves.claim(queues, self.name, ttl)
            if claim is None:
                return None
            self._claimed_any = True
            queue = next(q for q in queues if q.name == claim.queue_name)
            try:
                job = self.job_class.fetch(claim.job_id, connection=self.connection, serializer=self.serializer)
                if getattr(job, "_unreadable_meta", None) is not None:
                    # rq carries on with {"unserialized": ...}: the job's resources would be lost and
                    # the job run ungated. Fail closed instead.
                    raise DeserializationError("unreadable meta")
                job.func_name  # noqa: B018 - decodes the payload (a pickled one is refused here)
            except Exception as exc:
                reason = f"easeoff: cannot load job payload ({exc.__class__.__name__}); is it JSON-serialized?"
                self.moves.fail_claimed(claim.job_id, queue, claim.execution, reason)
                self.log.error("Worker %s: job %s failed: %s", self.name, claim.job_id, reason)
                return None
            resources = [*job_resources(job), *self.config.queue_resources(queue.name)]
            verdict = judge(resources, snapshot, self.config, now, _deferrals(job), self.rng)
            if verdict.admit:
                verdict = self._task_switches(job, snapshot, now)
            if verdict.admit:
                verdict = self._take_lease(job, queue, claim)
            if verdict.admit:
                self._claimed = claim
                return job, queue
            self._defer(job, queue, claim.execution, verdict)
            return None

    def _task_switches(self, job: Job, snapshot: Snapshot, now: float) -> Verdict:
        """Ops' pause or throttle of this job's task: a paused task's jobs park until it resumes;
        a throttled one's refused share comes back in about an interval."""
        reasons = task_reasons(_task_name(job), snapshot, now, self.rng)
        if not reasons:
            return ADMIT
        delay = self.config.probe_interval * self.rng.uniform(0.5, 1.5)
        return Verdict(admit=False, reasons=tuple(reasons), delay=delay)

    def _take_lease(self, job: Job, queue: Queue, claim: Claim) -> Verdict:
        """A slot under every concurrency limit the job falls under, or a deferral saying which is full."""
        info = job.meta.get(META_KEY) if isinstance(job.meta, dict) else None
        task_limit = info.get("concurrency") if isinstance(info, dict) else None
        scopes = lease_scopes(self.config, job_resources(job), _task_name(job), task_limit)
        reserve = 1 if self.config.queues.get(queue.name, QueueConfig(queue.name)).priority == "low" else 0
        member = claim.execution.composite_key
        refusal = self.leases.acquire(scopes, member, reserve)
        if refusal is None:
            self._lease = (scopes, member) if scopes else None
            return ADMIT
        # Saturation is not strain: the job waits parked for a slot (no backoff growth) and is
        # handed one when a slot frees; the long recheck is only a safety net.
        return Verdict(admit=False, reasons=(refusal.reason,), delay=SLOT_RECHECK)

    def _defer(self, job: Job, queue: Queue, execution: Execution, verdict: Verdict) -> None:
        now = time.time()
        info = dict(job.meta.get(META_KEY) or {})
        info["deferrals"] = int(info.get("deferrals", 0)) + 1
        info["last_reasons"] = list(verdict.reasons)
        info["deferred_at"] = now
        info.setdefault("first_deferred_at", now)
        max_age = info.get("max_deferral_age", self.config.backoff.max_age)
        if max_age is not None:
            info["expires_at"] = float(info["first_deferred_at"]) + float(max_age)  # parking ends here
        # A resource the config does not declare (configs out of step during a deploy): fail closed,
        # but only for a short grace, not for max_age; nobody would release a job parked on it.
        unknown = [r for r in job_resources(job) if r not in self.config.resources]
        grace = self.config.backoff.unknown_resource_grace
        if unknown:
            info.setdefault("unknown_since", now)
        job.meta[META_KEY] = info
        exceeded = deferral_cap_exceeded(info, now, self.config.backoff.max_deferrals, self.config.backoff.max_age)
        if not exceeded and unknown and now - float(info["unknown_since"]) >= grace:
            exceeded = f"resource {unknown[0]!r} is not in the config (still unknown after {grace:g}s)"
        if exceeded:
            reason = f"easeoff: {exceeded}; last reasons: {'; '.join(verdict.reasons)}"
            kind = reason_kind(verdict.reasons[0]) if verdict.reasons else "unknown"
            if self.moves.fail_deferred_too_long(job, queue, execution, reason, self.name, _task_name(job), kind):
                self.log.warning("Worker %s: job %s failed: %s", self.name, job.id, reason)
            return
        due = now + verdict.delay
        if "expires_at" in info:
            due = min(due, float(info["expires_at"]))  # back in time to be failed at its cap, not later
        if unknown:
            due = min(due, float(info["unknown_since"]) + grace)
            with self.connection.pipeline(transaction=False) as pipe:
                unknown_resources.note(pipe, unknown, _task_name(job), now)
                pipe.execute()
        park_on = [scope for scope in _park_scopes(job, verdict.reasons) if scope not in unknown]
        if self.moves.defer(job, queue, execution, due, _task_name(job), verdict.reasons, park_on):
            self.log.info(
                "Worker %s: deferred %s for %.1fs (deferral %d): %s",
                self.name,
                job.id,
                verdict.delay,
                info["deferrals"],
                "; ".join(verdict.reasons),
            )

    # -- rq hooks -------------------------------------------------------------

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """In the work horse: the gate admitted this job, so its task agrees to run (tasks/admission.py)."""
        admit(job.id)
        try:
            return super().perform_job(job, queue, execution)
        finally:
            admit(None)

    def prepare_execution(self, job: Job) -> Execution:
        """Use the execution the claim script already recorded, rather than making a second one."""
        claim, self._claimed = self._claimed, None
        if claim is None or claim.job_id != job.id:
            return super().prepare_execution(job)
        self.executions[claim.execution.id] = claim.execution
        with self.connection.pipeline() as pipe:
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            pipe.hincrby(counter_key("started"), counter_field(job.origin, _task_name(job)), 1)
            pipe.execute()
        return claim.execution

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Execution) -> None:
        self._ending_job = job
        super().handle_job_success(job, queue, started_job_registry, execution)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        self._ending_job, self._ending_reason = job, _exception_name(exc_string)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    def increment_successful_job_count(self, pipeline: Any = None) -> None:
        """Counted in the same transaction that records the job as finished."""
        super().increment_successful_job_count(pipeline)
        job = self._ending_job
        if pipeline is not None and job is not None:
            pipeline.hincrby(counter_key("finished"), counter_field(job.origin, _task_name(job)), 1)
            self._release_lease(pipeline)

    def increment_failed_job_count(self, pipeline: Any = None) -> None:
        """Counted in the same transaction that records the job as failed (or retried)."""
        super().increment_failed_job_count(pipeline)
        if pipeline is not None and self._ending_job is not None:
            job = self._ending_job
            pipeline.hincrby(counter_key("failed"), counter_field(job.origin, _task_name(job), self._ending_reason), 1)
            self._release_lease(pipeline)

    def _release_lease(self, pipeline: Any) -> None:
        """Give the job's slots back, and hand them to jobs waiting for one, in the transaction that ends it."""
        if self._lease is not None:
            scopes, member = self._lease
            Leases.release(scopes, member, pipeline=pipeline)
            self.moves.release_slots([s.scope for s in scopes], pipeline=pipeline)

    def maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        """While a job runs: renew its leases, and ask it to stop at its next checkpoint when a
        signal goes critical or, for a resumable job, when its resources are strained. Without
        Redis the job runs on; heartbeats resume when it is back (within the abandon grace)."""
        try:
            self._maintain_heartbeats(job, execution)
        except REDIS_DOWN as exc:
            self.log.warning("Worker %s: heartbeat for job %s missed: Redis unreachable (%s)", self.name, job.id, exc)

    def _maintain_heartbeats(self, job: Job, execution: Execution) -> None:
        super().maintain_heartbeats(job, execution)
        if self._lease is not None:
            self.leases.renew(*self._lease)
        verdict = judge(job_resources(job), self.readings.current(), self.config, time.time())
        reasons = verdict.critical or (verdict.reasons if _is_resumable(job) else ())
        if reasons:
            request_stop(job, "; ".join(reasons))
            self.log.info(
                "Worker %s: job %s asked to stop at its next checkpoint: %s", self.name, job.id, "; ".join(reasons)
            )

    def handle_warm_shutdown_request(self) -> None:
        """A resumable job checkpoints and is deferred, rather than making the shutdown wait for all of it."""
        super().handle_warm_shutdown_request()
        job = self._running_job
        if job is not None and _is_resumable(job):
            request_stop(job, "worker shutting down")

    def _finalize_failure(self, job: Job, queue: Queue, execution: Execution, exc_info: Any) -> None:
        """A job that stopped at a checkpoint is deferred to resume later: not a failure, no retry spent."""
        stopped = exc_info[1]
        if not isinstance(stopped, Checkpointed):
            super()._finalize_failure(job, queue, execution, exc_info)
            return
        job.get_meta(refresh=True)  # the cursor the task stored at its checkpoint
        shutting_down = stopped.reason == "worker shutting down"
        delay = (
            self.config.probe_interval * 0.1
            if shutting_down
            else deferral_delay(
                _deferrals(job), self.config.backoff.base, self.config.backoff.cap, self.config.probe_interval, self.rng
            )
        )
        verdict = Verdict(admit=False, reasons=(f"checkpoint: {stopped.reason}",), delay=delay)
        self._defer(job, queue, execution, verdict)
        with self.connection.pipeline() as pipe:
            self._release_lease(pipe)
            pipe.execute()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """rq allows a minute past each heartbeat; easeoff a few seconds, so a job whose worker
        was killed is recovered within seconds (see `recover_abandoned`), not minutes."""
        if job.timeout and job.timeout > 0:
            return int(max(min(job.timeout - working_time, self.job_monitoring_interval), 0)) + ABANDON_GRACE
        return self.job_monitoring_interval + ABANDON_GRACE

    def run_maintenance_tasks(self) -> None:
        """Recover abandoned jobs our way before rq's cleanup, which would fail them all."""
        try:
            self._recover_abandoned()
            super().run_maintenance_tasks()
        except REDIS_DOWN as exc:
            self._wait_for_redis(exc)

    # -- riding out a Redis outage: rq's loop quits on the first error; easeoff waits and goes on --

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except REDIS_DOWN as exc:
            self._wait_for_redis(exc)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        try:
            super().heartbeat(timeout, pipeline=pipeline)
        except REDIS_DOWN as exc:
            if pipeline is not None:
                raise
            self._wait_for_redis(exc)

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._running_job = job
        try:
            super().execute_job(job, queue)
        except REDIS_DOWN as exc:
            # The horse ran on its own; what Redis missed of its ending, the abandoned-job sweep settles.
            self._wait_for_redis(exc)
        finally:
            self._lease = None
            self._running_job = None

    def _wait_for_redis(self, exc: BaseException) -> None:
        """Back off (doubling, capped) until Redis answers again, instead of quitting."""
        wait = 1.0
        while True:
            self.log.error("Worker %s: Redis unreachable (%s); retrying in %.0fs", self.name, exc, wait)
            time.sleep(wait)
            try:
                self.connection.ping()
                self.log.warning("Worker %s: Redis is back", self.name)
                return
            except REDIS_DOWN as again:
                exc, wait = again, min(wait * 2, float(self.max_connection_wait_time))

    # -- housekeeping -----------------------------------------------------------

    def _after_refresh(self, snapshot: Snapshot) -> None:
        """This worker just probed for the fleet: publish cool-downs (strained resources, paused
        tasks), release what cleared, log verdict flips and prune switches whose TTL ran out."""
        now = time.time()
        strained = strained_resources(self.config, snapshot, now)
        adapt_limits(self.connection, self.config, {r: v for r, v in strained.items() if not _only_paused(v)})
        held = {**strained, GLOBAL: global_findings(snapshot, self.config, now)[0]}
        record_flips(self.connection, held, [GLOBAL, *self.config.resources], now)
        cooling = {**strained, **{scope: [why] for scope, why in paused_task_scopes(snapshot.switches, now).items()}}
        for scope in publish_cooldowns(self.connection, self.config, cooling, snapshot.switches.task_scopes):
            released = self.moves.release(scope)
            if released:
                self.log.info("Worker %s: %s cleared; released %d parked jobs", self.name, scope, released)
        if snapshot.switches.expired(now):
            for switch in prune_expired(self.connection, now):
                self.log.warning("Worker %s: switch expired: %s", self.name, switch.describe())
        queues = self._known_queues()
        self._recover_abandoned(queues)
        self._promote(queues)

    def _heartbeat_if_due(self) -> None:
        if time.monotonic() - self._last_heartbeat_at >= HEARTBEAT_EVERY:
            with self.connection.pipeline() as pipe:
                self.heartbeat(pipeline=pipe)
                pipe.execute()
            self._last_heartbeat_at = time.monotonic()

    def _recover_abandoned(self, queues: list[Queue] | None = None) -> None:
        recovered = self.moves.recover_abandoned(self._known_queues() if queues is None else queues)
        if recovered:
            self.log.warning(
                "Worker %s: recovered %d abandoned jobs (their workers died mid-job)", self.name, recovered
            )

    def _promote(self, queues: list[Queue] | None = None) -> None:
        """Due deferred jobs back to their queues, and free slots (lapsed leases, raised limits) to
        jobs waiting for one. Run by whoever probed for the fleet, once per interval: deferral delays
        are at least an interval, so promotion needs no finer grain."""
        self.moves.promote(self._known_queues() if queues is None else queues)
        self.moves.release_slots()

    def _known_queues(self) -> list[Queue]:
        """Every queue rq knows of, not just this worker's: the prober promotes for the fleet."""
        names = known_queue_names(self.connection, [*self.queue_names(), *self.config.queues])
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
        self.worker._state = WorkerStatus.BUSY

    def __exit__(self, *exc: object) -> None:
        self.worker._state = WorkerStatus.IDLE
        if self.worker._stop_requested and self.worker._claimed is None:
            raise StopRequested()


def _task_name(job: Job) -> str:
    info = job.meta.get(META_KEY) if isinstance(job.meta, dict) else None
    if isinstance(info, dict) and info.get("task"):
        return str(info["task"])
    return job.func_name.rsplit(".", 1)[-1] if job.func_name else "unknown"


def _exception_name(exc_string: str) -> str:
    """The exception's class from rq's traceback text, or rq's own one-line reason."""
    lines = [line for line in exc_string.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown"
    last = lines[-1].strip()
    name = last.split(":", 1)[0].rsplit(".", 1)[-1]
    return name if name.isidentifier() else last[:40]


def _park_scopes(job: Job, reasons: Sequence[str]) -> list[str]:
    """What a deferred job waits for: its resources when they are strained or paused, its task's
    scope when ops paused the task, a slot when its limit is full. Throttling and shutdown say
    nothing about the database's health: the job just comes back when due."""
    scopes: list[str] = []
    for reason in reasons:
        slot = waiting_scope(reason)
        if slot is not None:
            scopes.append(slot)
        elif reason.startswith("paused:task:"):
            scopes.append(TASK_SCOPE_PREFIX + _task_name(job))
        elif not reason.startswith(("throttled:", "checkpoint: worker shutting down")):
            scopes += job_resources(job)
    return list(dict.fromkeys(scopes))


def _only_paused(reasons: Sequence[str]) -> bool:
    """Held by ops alone, not by the database: no reason to cut its concurrency limit."""
    return all(r.startswith("paused:") for r in reasons)


def _is_resumable(job: Job) -> bool:
    info = job.meta.get(META_KEY) if isinstance(job.meta, dict) else None
    return isinstance(info, dict) and bool(info.get("resumable"))


def _deferrals(job: Job) -> int:
    info = job.meta.get(META_KEY) if isinstance(job.meta, dict) else None
    return int(info.get("deferrals", 0)) if isinstance(info, dict) else 0
