"""Every move of a job between rq's places, each one Lua script (so, one atomic step).

rq's own dequeue is not enough here: with several queues it LPOPs a job id and only
later records the execution, so a worker killed in between loses the job; with one
queue the job waits in an intermediate list that is failed, not requeued, a minute
later. `claim` pops and records the execution in one step instead, and `defer` and
`promote` move jobs between started, scheduled and the queue the same way. A job is
therefore always in exactly one place: queue, started, scheduled, finished or failed.

The scripts name the keys of jobs they pop, which they cannot know beforehand, so
they need a single Redis node (not Redis Cluster), as rq itself does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace  # JobMeta (tasks/) is a dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis import Redis
from redis.exceptions import WatchError
from rq.defaults import RQ_KEY_PREFIX
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.utils import utcformat

from easeoff.feedback import clock, liveness, rq_internals
from easeoff.feedback import keys as redis_keys
from easeoff.feedback.keys import counter_key, parked_key
from easeoff.feedback.levers.limits import PACE_LEAD
from easeoff.feedback.lua import LuaScript
from easeoff.feedback.reasons import Reason
from easeoff.feedback.tally.counters import counter_field
from easeoff.feedback.wake import announce_jobs
from easeoff.tasks.meta import META_KEY, JobMeta
from easeoff.workers.fencing import Fence

PACKAGE = "easeoff.workers"  # the scripts live in workers/lua/
PARKING = ("parking",)  # the helper promote, release and release_slots share
PARKING_PREFIXES = ("job_prefix", "cooldown_prefix", "parked_prefix", "task_prefix")

FLEET_CLOCK = ("easeoff.feedback:fleet_clock",)  # fleet_now, note_fleet, absence_judgeable
CLAIM = LuaScript.load(
    PACKAGE,
    "claim",
    argv=(
        "worker_name",
        "exec_id",
        "ttl",
        "now_text",
        "job_prefix",
        "execution_prefix",
        "executions_prefix",
        "worker_executions_key",
        "owner_prefix",
        "gap",
        "grace",
        "lapses_field",
    ),
    preludes=FLEET_CLOCK,
)
HEARTBEAT = LuaScript.load(
    PACKAGE,
    "heartbeat",
    argv=("owner", "composite", "exec_id", "ttl", "now_text", "lease_member", "gap", "grace"),
    preludes=FLEET_CLOCK,
)
DEFER = LuaScript.load(
    PACKAGE,
    "defer",
    argv=("composite", "exec_id", "job_id", "due", "meta", "parked_member", "owner", "lapses_field", "restart_ttl"),
)
PROMOTE = LuaScript.load(PACKAGE, "promote", argv=("now", "most", *PARKING_PREFIXES), preludes=PARKING)
RELEASE = LuaScript.load(
    PACKAGE, "release", argv=("now", *PARKING_PREFIXES, "scheduled_prefix", "queue_prefix"), preludes=PARKING
)
RELEASE_SLOTS = LuaScript.load(
    PACKAGE,
    "release_slots",
    argv=(
        "now",
        *PARKING_PREFIXES,
        "scheduled_prefix",
        "queue_prefix",
        "leases_prefix",
        "limit_prefix",
        "slot_prefix",
        "slot_low_prefix",
        "share_prefix",
        "class_park_prefix",
        "pace_prefix",
        "handed_prefix",
        "next_due_key",
        "pace_lead",
    ),
    preludes=(*PARKING, "easeoff.feedback:share"),
)
RECOVER = LuaScript.load(
    PACKAGE,
    "recover",
    argv=(
        "cutoff",
        "job_prefix",
        "execution_prefix",
        "executions_prefix",
        "failed_ttl",
        "reason",
        "most",
        "poison_reason",
        "most_requeues",
        "abandoned_field",
        "owner_prefix",
        "gap",
        "grace",
    ),
    preludes=FLEET_CLOCK,
)
FAIL_CLAIMED = LuaScript.load(PACKAGE, "fail_claimed", argv=("composite", "job_id", "expires_at", "reason", "owner"))
OWNER_PREFIX = redis_keys.owner_key("")

EXECUTION_PREFIX = f"{RQ_KEY_PREFIX}:execution:"  # rq's Execution.key, without the composite id
ABANDONED_REASON = (
    "easeoff: abandoned: its worker stopped heartbeating mid-job (killed?); not requeued because the task "
    "is neither idempotent nor resumable"
)
# A job whose runs keep dying with their worker (a segfault, an OOM kill of the whole worker) is
# a poison pill: requeued each time, it would take down worker after worker. After this many
# requeues the next abandonment fails it; `easeoff requeue` gives it a fresh count.
MOST_ABANDONED_REQUEUES = 3
ABANDONED_COUNT_FIELD = "easeoff_abandoned"  # in the job's hash, beside rq's own fields
# When a claimed job's rq `ttl` lapses (ms, Redis's clock): noted by the claim, which keeps the key
# while the job is ours; a deferral gives the key that deadline back (workers/lua/defer.lua).
LAPSES_AT_FIELD = "easeoff_lapses_at"
POISON_REASON = (
    f"easeoff: abandoned: its worker stopped heartbeating mid-job, {MOST_ABANDONED_REQUEUES + 1} times in all; "
    "not requeued again: its runs keep dying with their worker (a poison job?). `easeoff requeue` tries it again"
)


class Claim(msgspec.Struct, frozen=True):
    job_id: str
    queue_name: str
    execution: Execution
    token: int

    @property
    def fence(self) -> Fence:
        return Fence(self.job_id, self.token, self.execution.id)


class JobMoves:
    """The atomic job moves easeoff adds to rq, bound to one Redis connection."""

    def __init__(self, connection: Redis) -> None:
        self.connection = connection
        self._claim = CLAIM.register(connection)
        self._heartbeat = HEARTBEAT.register(connection)
        self._defer = DEFER.register(connection)
        self._promote = PROMOTE.register(connection)
        self._release = RELEASE.register(connection)
        self._release_slots = RELEASE_SLOTS.register(connection)
        self._fail = FAIL_CLAIMED.register(connection)
        self._recover = RECOVER.register(connection)

    def claim(
        self, queues: Sequence[Queue], worker_name: str, ttl: float, execution_id: str | None = None
    ) -> Claim | None:
        """Pop the first job of the first non-empty queue straight into its started registry, fenced.

        `execution_id`: a claim whose reply was lost (Redis went away) is sent again with the same
        id, and answers what it popped the first time."""
        if not queues:
            return None
        execution_id = execution_id or new_execution_id()
        keys: list[str] = [
            redis_keys.FENCE,
            redis_keys.FLEET_SEEN,
            redis_keys.SWEEP_AFTER,
            redis_keys.CLAIM_RECEIPT_PREFIX + execution_id,
        ]
        for queue in queues:
            keys += [queue.key, StartedJobRegistry(queue.name, connection=self.connection).key]
        result = self._claim(
            keys=keys,
            args=CLAIM.args(
                worker_name=worker_name,
                exec_id=execution_id,
                ttl=ttl,
                now_text=utcformat(_utc(clock.now())),
                job_prefix=Job.redis_job_namespace_prefix,
                execution_prefix=EXECUTION_PREFIX,
                executions_prefix=ExecutionRegistry.key_template.format(""),
                worker_executions_key=WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name),
                owner_prefix=OWNER_PREFIX,
                lapses_field=LAPSES_AT_FIELD,
                **_silence_args(),
            ),
        )
        if not result:
            return None
        job_id, token, queue_key = _text(result[1]), int(result[2]), _text(result[3])
        # A claim answered from its receipt was made with the queues of its first sending.
        queue_name = queue_key.removeprefix(Queue.redis_queue_namespace_prefix)
        execution = Execution(id=execution_id, job_id=job_id, connection=self.connection, worker_name=worker_name)
        return Claim(job_id=job_id, queue_name=queue_name, execution=execution, token=token)

    def heartbeat(
        self, fence: Fence, queue_name: str, ttl: float, lease_keys: Sequence[str] = (), lease_member: str = ""
    ) -> bool:
        """Push out the running job's started entry, execution and leases; False once it is fenced out."""
        composite = f"{fence.job_id}:{fence.execution_id}"
        keys = [
            fence.key,
            StartedJobRegistry(queue_name, connection=self.connection).key,
            EXECUTION_PREFIX + composite,
            ExecutionRegistry(job_id=fence.job_id, connection=self.connection).key,
            Job.key_for(fence.job_id),
            redis_keys.FLEET_SEEN,
            redis_keys.SWEEP_AFTER,
            *lease_keys,
        ]
        args = HEARTBEAT.args(
            owner=fence.owner,
            composite=composite,
            exec_id=fence.execution_id,
            ttl=ttl,
            now_text=utcformat(_utc(clock.now())),
            lease_member=lease_member,
            **_silence_args(),
        )
        return bool(self._heartbeat(keys=keys, args=args))

    def defer(
        self,
        job: Job,
        queue: Queue,
        execution: Execution,
        due: float,
        task: str,
        reasons: Iterable[Reason],
        park_on: Iterable[str] = (),
        fence: Fence | None = None,
        counter: str = "deferred",
        labels: Iterable[str] | None = None,
        restart_ttl: bool = False,
    ) -> bool:
        """Started → scheduled with the job's new meta, and count the deferral by reason.

        `park_on` names the strained resources the job waits for: it is indexed under each,
        so it stays parked while they cool down and is released the moment they clear.
        `counter` and `labels`: count it elsewhere (a retry: workers/transient_errors.py) under
        these labels rather than the reasons' kinds. rq's `ttl` (how long a job may wait to start)
        keeps running through a deferral at its claim: it counts from the enqueue. `restart_ttl`,
        for a job that started (a retry after a failed run, a checkpoint, an outage), starts it
        again, as rq's own retry does. A job whose ttl lapsed while it was ours is gone (True).
        """
        started = StartedJobRegistry(queue.name, connection=self.connection)
        scheduled = ScheduledJobRegistry(queue.name, connection=self.connection)
        kinds = sorted({str(r.kind) for r in reasons} if labels is None else set(labels))
        counter_fields = [counter_field(queue.name, task, kind) for kind in kinds]
        parked = [parked_key(r) for r in park_on]
        return bool(
            self._defer(
                keys=[
                    started.key,
                    scheduled.key,
                    job.key,
                    execution.key,
                    ExecutionRegistry(job_id=job.id, connection=self.connection).key,
                    execution.worker_executions_key,
                    counter_key(counter),
                    redis_keys.NEXT_DUE,
                    redis_keys.owner_key(job.id),
                    *parked,
                ],
                args=DEFER.args(
                    counter_fields,
                    composite=execution.composite_key,
                    exec_id=execution.id,
                    job_id=job.id,
                    due=repr(due),
                    meta=job.serializer.dumps(job.meta),
                    parked_member=redis_keys.parked_member(job.id, queue.name),
                    owner=fence.owner if fence is not None else "",
                    lapses_field=LAPSES_AT_FIELD,
                    restart_ttl="1" if restart_ttl else "",
                ),
            )
        )

    def promote(self, queues: Sequence[Queue], now: float | None = None, most: int = 1000) -> int:
        """Scheduled jobs that are due → the end of their queue. Returns how many moved."""
        if not queues:
            return 0
        keys: list[str] = [redis_keys.NEXT_DUE]
        for queue in queues:
            keys += [ScheduledJobRegistry(queue.name, connection=self.connection).key, queue.key]
        now = clock.now() if now is None else now
        args = PROMOTE.args([q.name for q in queues], now=repr(now), most=most, **_parking_prefixes())
        return int(self._promote(keys=keys, args=args))

    def release(self, resource: str, now: float | None = None) -> int:
        """A resource cleared: move the jobs parked on it back to their queues now."""
        args = RELEASE.args(**_release_args(now))
        return int(self._release(keys=[parked_key(resource)], args=args))

    def release_slots(
        self, scopes: Sequence[str] = (), pipeline: Redis | None = None, now: float | None = None
    ) -> int | None:
        """Hand free slots of `scopes` (default: every scope that has refused a slot) to waiting jobs,
        by their tasks' turns (feedback/lua/share.lua).

        With `pipeline`, it runs inside that transaction (the one that gives a lease back), sent
        with EVAL: redis-py checks a registered script with SCRIPT EXISTS before every pipeline
        that carries one, a round trip on each job's ending."""
        args = RELEASE_SLOTS.args(
            scopes,
            **_release_args(now),
            leases_prefix=redis_keys.LEASES_PREFIX,
            limit_prefix=redis_keys.LIMIT_PREFIX,
            slot_prefix=redis_keys.SLOT_PARK_PREFIX,
            slot_low_prefix=redis_keys.SLOT_LOW_PARK_PREFIX,
            share_prefix=redis_keys.SHARE_PREFIX,
            class_park_prefix=redis_keys.PARKED_PREFIX + redis_keys.SLOT_CLASS_PARK_PREFIX,
            pace_prefix=redis_keys.PACE_PREFIX,
            handed_prefix=redis_keys.PACE_HANDED_PREFIX,
            next_due_key=redis_keys.NEXT_DUE,
            pace_lead=repr(PACE_LEAD),
        )
        if pipeline is not None:
            pipeline.eval(RELEASE_SLOTS.text, 1, redis_keys.SLOT_WAITS, *args)
            return None
        return int(self._release_slots(keys=[redis_keys.SLOT_WAITS], args=args))

    def fail_deferred_too_long(
        self,
        job: Job,
        queue: Queue,
        execution: Execution,
        reason: str,
        worker_name: str,
        task: str,
        kind: str,
        fence: Fence | None = None,
    ) -> bool:
        """Started → failed for a job past its deferral cap, in one WATCHed transaction.

        Uses rq's own failure bookkeeping (failed registry and result stream), so `rq info`
        and `job.latest_result()` show the reason; counted as `expired` by reason.
        """
        started = StartedJobRegistry(queue.name, connection=self.connection)
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(started.key, redis_keys.owner_key(job.id))
                    owner = pipe.get(redis_keys.owner_key(job.id))
                    fenced = fence is not None and _text(owner or b"") != fence.owner
                    if fenced or pipe.zscore(started.key, execution.composite_key) is None:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.delete(redis_keys.owner_key(job.id))
                    execution.delete(job=job, pipeline=pipe)
                    job.set_status(JobStatus.FAILED, pipeline=pipe)
                    pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))
                    rq_internals.record_failure(job, reason, pipe, worker_name, execution.id)
                    pipe.hincrby(counter_key("expired"), counter_field(queue.name, task, kind), 1)
                    pipe.execute()
                    return True
                except WatchError:
                    continue  # another job entered or left `started`: check ownership again

    def recover_abandoned(
        self,
        queues: Sequence[Queue],
        now: float | None = None,
        most: int = 1000,
        failed_ttl: int = 31536000,
        grace: float = liveness.GRACE,
    ) -> int:
        """Started jobs whose heartbeat lapsed → their queue (idempotent or resumable tasks) or failed.

        Judged on Redis's clock (`now` only moves the cutoff, for tests), and not within `grace`
        of a silence of Redis itself (feedback/lua/fleet_clock.lua)."""
        if not queues:
            return 0
        keys = [counter_key("abandoned"), redis_keys.FLEET_SEEN, redis_keys.SWEEP_AFTER]
        for queue in queues:
            keys += [
                StartedJobRegistry(queue.name, connection=self.connection).key,
                queue.key,
                FailedJobRegistry(queue.name, connection=self.connection).key,
            ]
        args = RECOVER.args(
            [q.name for q in queues],
            cutoff="" if now is None else repr(now),
            job_prefix=Job.redis_job_namespace_prefix,
            execution_prefix=EXECUTION_PREFIX,
            executions_prefix=ExecutionRegistry.key_template.format(""),
            failed_ttl=failed_ttl,
            reason=ABANDONED_REASON,
            most=most,
            poison_reason=POISON_REASON,
            most_requeues=MOST_ABANDONED_REQUEUES,
            abandoned_field=ABANDONED_COUNT_FIELD,
            owner_prefix=OWNER_PREFIX,
            **_silence_args(grace),
        )
        return int(self._recover(keys=keys, args=args))

    def requeue_failed(self, job_id: str, queue_name: str) -> bool:
        """Failed → its queue, in one WATCHed transaction; False if it is not in that failed registry,
        or if it finished too (a job both finished and failed, left by a fenced-out owner before
        fencing, must not run again).

        rq's own `FailedJobRegistry.requeue` removes the job and enqueues it in two steps, so a
        kill between them loses it. The easeoff meta is kept (resources, task, cursor); its
        deferral clocks restart, or the caps that failed it would fail it again at once, and so
        does its count of abandonments (a poison job ops requeue gets its full count again), and its
        count of transient retries.
        """
        failed = FailedJobRegistry(queue_name, connection=self.connection)
        finished = FinishedJobRegistry(queue_name, connection=self.connection)
        queue = Queue(queue_name, connection=self.connection)
        job_key = Job.key_for(job_id)
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(failed.key, finished.key, job_key)
                    in_failed = pipe.zscore(failed.key, job_id) is not None
                    finished_too = (
                        pipe.zscore(finished.key, job_id) is not None
                        or _text(pipe.hget(job_key, "status") or b"") == JobStatus.FINISHED.value
                    )
                    if not in_failed or finished_too:  # a job that finished is never run again
                        pipe.unwatch()
                        return False
                    meta = pipe.hget(job_key, "meta")
                    pipe.multi()
                    pipe.zrem(failed.key, job_id)
                    if meta is not None:
                        pipe.hset(job_key, "meta", _restart_deferral_clocks(meta))
                    pipe.hset(
                        job_key, mapping={"status": JobStatus.QUEUED.value, "enqueued_at": utcformat(_utc(clock.now()))}
                    )
                    pipe.hdel(
                        job_key,
                        "started_at",
                        "ended_at",
                        "exc_info",
                        "last_heartbeat",
                        "worker_name",
                        ABANDONED_COUNT_FIELD,
                    )
                    pipe.rpush(queue.key, job_id)
                    pipe.sadd(Queue.redis_queues_keys, queue.key)
                    pipe.execute()
                    announce_jobs(self.connection)
                    return True
                except WatchError:
                    continue

    def fail_claimed(
        self,
        job_id: str,
        queue: Queue,
        execution: Execution,
        reason: str,
        ttl: int = 31536000,
        fence: Fence | None = None,
    ) -> bool:
        """A claimed job that cannot run (its payload is unreadable) goes to failed with the reason."""
        started = StartedJobRegistry(queue.name, connection=self.connection)
        failed = FailedJobRegistry(queue.name, connection=self.connection)
        return bool(
            self._fail(
                keys=[started.key, failed.key, Job.key_for(job_id), execution.key, redis_keys.owner_key(job_id)],
                args=FAIL_CLAIMED.args(
                    composite=execution.composite_key,
                    job_id=job_id,
                    expires_at=repr(clock.now() + ttl),
                    reason=reason,
                    owner=fence.owner if fence is not None else "",
                ),
            )
        )


def new_execution_id() -> str:
    return uuid.uuid4().hex


def _silence_args(grace: float = liveness.GRACE) -> dict[str, Any]:
    """How long a silence of Redis counts as an outage, and how long absence is not judged after one."""
    return {"gap": liveness.SILENCE_GAP, "grace": grace}


def _parking_prefixes() -> dict[str, str]:
    """Where parking.lua finds a job, its cool-downs and its parked indexes."""
    return {
        "job_prefix": Job.redis_job_namespace_prefix,
        "cooldown_prefix": redis_keys.COOLDOWN_PREFIX,
        "parked_prefix": redis_keys.PARKED_PREFIX,
        "task_prefix": redis_keys.TASK_SCOPE_PREFIX,
    }


def _release_args(now: float | None) -> dict[str, str]:
    """What release and release_slots need to move parked jobs back to their queues."""
    return {
        "now": repr(clock.now() if now is None else now),
        **_parking_prefixes(),
        "scheduled_prefix": ScheduledJobRegistry.key_template.format(""),
        "queue_prefix": Queue.redis_queue_namespace_prefix,
    }


def _restart_deferral_clocks(raw_meta: bytes | str) -> bytes | str:
    """The job's meta with its easeoff deferral count and clocks reset, and its transient retries (a
    job that spent them gets its full count again); anything else kept as it was."""
    try:
        meta = json.loads(raw_meta)
    except ValueError:
        return raw_meta  # not easeoff's JSON: leave it for the worker to judge
    if not isinstance(meta, dict) or not isinstance(meta.get(META_KEY), dict):
        return raw_meta
    info = JobMeta.from_dict(meta[META_KEY])
    fresh = replace(
        info, deferrals=0, deferred_at=None, first_deferred_at=None, expires_at=None, unknown_since=None, retries=0
    )
    return json.dumps({**meta, META_KEY: fresh.to_dict()}).encode()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
