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

import msgspec
from redis import Redis
from redis.exceptions import WatchError
from rq.defaults import RQ_KEY_PREFIX
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.utils import utcformat

from easeoff.feedback import clock
from easeoff.feedback import keys as redis_keys
from easeoff.feedback.keys import counter_key, parked_key
from easeoff.feedback.lua import LuaScript
from easeoff.feedback.observe.counters import counter_field
from easeoff.feedback.reasons import Reason
from easeoff.feedback.wake import announce_jobs
from easeoff.tasks.meta import META_KEY, JobMeta

PACKAGE = "easeoff.workers"  # the scripts live in workers/lua/
PARKING = ("parking",)  # the helper promote, release and release_slots share
PARKING_PREFIXES = ("job_prefix", "cooldown_prefix", "parked_prefix", "task_prefix")

CLAIM = LuaScript.load(
    PACKAGE,
    "claim",
    argv=(
        "worker_name",
        "exec_id",
        "now",
        "ttl",
        "now_text",
        "job_prefix",
        "execution_prefix",
        "executions_prefix",
        "worker_executions_key",
    ),
)
DEFER = LuaScript.load(PACKAGE, "defer", argv=("composite", "exec_id", "job_id", "due", "meta", "parked_member"))
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
    ),
    preludes=PARKING,
)
RECOVER = LuaScript.load(
    PACKAGE,
    "recover",
    argv=(
        "now",
        "job_prefix",
        "execution_prefix",
        "executions_prefix",
        "failed_expiry",
        "reason",
        "most",
        "poison_reason",
        "most_requeues",
        "abandoned_field",
    ),
)
FAIL_CLAIMED = LuaScript.load(PACKAGE, "fail_claimed", argv=("composite", "job_id", "expires_at", "reason"))

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
POISON_REASON = (
    f"easeoff: abandoned: its worker stopped heartbeating mid-job, {MOST_ABANDONED_REQUEUES + 1} times in all; "
    "not requeued again: its runs keep dying with their worker (a poison job?). `easeoff requeue` tries it again"
)


class Claim(msgspec.Struct, frozen=True):
    job_id: str
    queue_name: str
    execution: Execution


class JobMoves:
    """The atomic job moves easeoff adds to rq, bound to one Redis connection."""

    def __init__(self, connection: Redis) -> None:
        self.connection = connection
        self._claim = CLAIM.register(connection)
        self._defer = DEFER.register(connection)
        self._promote = PROMOTE.register(connection)
        self._release = RELEASE.register(connection)
        self._release_slots = RELEASE_SLOTS.register(connection)
        self._fail = FAIL_CLAIMED.register(connection)
        self._recover = RECOVER.register(connection)

    def claim(self, queues: Sequence[Queue], worker_name: str, ttl: int) -> Claim | None:
        """Pop the first job of the first non-empty queue straight into its started registry."""
        if not queues:
            return None
        keys: list[str] = []
        for queue in queues:
            keys += [queue.key, StartedJobRegistry(queue.name, connection=self.connection).key]
        execution_id = uuid.uuid4().hex
        now = clock.now()
        result = self._claim(
            keys=keys,
            args=CLAIM.args(
                worker_name=worker_name,
                exec_id=execution_id,
                now=repr(now),
                ttl=ttl,
                now_text=utcformat(_utc(now)),
                job_prefix=Job.redis_job_namespace_prefix,
                execution_prefix=EXECUTION_PREFIX,
                executions_prefix=ExecutionRegistry.key_template.format(""),
                worker_executions_key=WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name),
            ),
        )
        if not result:
            return None
        index, job_id = int(result[0]), _text(result[1])
        queue = queues[(index - 1) // 2]
        execution = Execution(id=execution_id, job_id=job_id, connection=self.connection, worker_name=worker_name)
        return Claim(job_id=job_id, queue_name=queue.name, execution=execution)

    def defer(
        self,
        job: Job,
        queue: Queue,
        execution: Execution,
        due: float,
        task: str,
        reasons: Iterable[Reason],
        park_on: Iterable[str] = (),
    ) -> bool:
        """Started → scheduled with the job's new meta, and count the deferral by reason.

        `park_on` names the strained resources the job waits for: it is indexed under each,
        so it stays parked while they cool down and is released the moment they clear.
        """
        started = StartedJobRegistry(queue.name, connection=self.connection)
        scheduled = ScheduledJobRegistry(queue.name, connection=self.connection)
        kinds = sorted({str(r.kind) for r in reasons})
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
                    counter_key("deferred"),
                    redis_keys.NEXT_DUE,
                    *parked,
                ],
                args=DEFER.args(
                    counter_fields,
                    composite=execution.composite_key,
                    exec_id=execution.id,
                    job_id=job.id,
                    due=repr(due),
                    meta=job.serializer.dumps(job.meta),
                    parked_member=f"{job.id}|{queue.name}",
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
        """Hand free slots of `scopes` (default: every scope that has refused a slot) to waiting jobs.

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
        )
        if pipeline is not None:
            pipeline.eval(RELEASE_SLOTS.text, 1, redis_keys.SLOT_WAITS, *args)
            return None
        return int(self._release_slots(keys=[redis_keys.SLOT_WAITS], args=args))

    def fail_deferred_too_long(
        self, job: Job, queue: Queue, execution: Execution, reason: str, worker_name: str, task: str, kind: str
    ) -> bool:
        """Started → failed for a job past its deferral cap, in one WATCHed transaction.

        Uses rq's own failure bookkeeping (failed registry and result stream), so `rq info`
        and `job.latest_result()` show the reason; counted as `expired` by reason.
        """
        started = StartedJobRegistry(queue.name, connection=self.connection)
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(started.key)
                    if pipe.zscore(started.key, execution.composite_key) is None:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    execution.delete(job=job, pipeline=pipe)
                    job.set_status(JobStatus.FAILED, pipeline=pipe)
                    pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))
                    job._handle_failure(reason, pipeline=pipe, worker_name=worker_name, execution_id=execution.id)
                    pipe.hincrby(counter_key("expired"), counter_field(queue.name, task, kind), 1)
                    pipe.execute()
                    return True
                except WatchError:
                    continue  # another job entered or left `started`: check ownership again

    def recover_abandoned(
        self, queues: Sequence[Queue], now: float | None = None, most: int = 1000, failed_ttl: int = 31536000
    ) -> int:
        """Started jobs whose heartbeat lapsed → their queue (idempotent or resumable tasks) or failed."""
        if not queues:
            return 0
        keys = [counter_key("abandoned")]
        for queue in queues:
            keys += [
                StartedJobRegistry(queue.name, connection=self.connection).key,
                queue.key,
                FailedJobRegistry(queue.name, connection=self.connection).key,
            ]
        now = clock.now() if now is None else now
        args = RECOVER.args(
            [q.name for q in queues],
            now=repr(now),
            job_prefix=Job.redis_job_namespace_prefix,
            execution_prefix=EXECUTION_PREFIX,
            executions_prefix=ExecutionRegistry.key_template.format(""),
            failed_expiry=repr(now + failed_ttl),
            reason=ABANDONED_REASON,
            most=most,
            poison_reason=POISON_REASON,
            most_requeues=MOST_ABANDONED_REQUEUES,
            abandoned_field=ABANDONED_COUNT_FIELD,
        )
        return int(self._recover(keys=keys, args=args))

    def requeue_failed(self, job_id: str, queue_name: str) -> bool:
        """Failed → its queue, in one WATCHed transaction; False if it is not in that failed registry.

        rq's own `FailedJobRegistry.requeue` removes the job and enqueues it in two steps, so a
        kill between them loses it. The easeoff meta is kept (resources, task, cursor); its
        deferral clocks restart, or the caps that failed it would fail it again at once, and so
        does its count of abandonments (a poison job ops requeue gets its full count again).
        """
        failed = FailedJobRegistry(queue_name, connection=self.connection)
        queue = Queue(queue_name, connection=self.connection)
        job_key = Job.key_for(job_id)
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(failed.key, job_key)
                    if pipe.zscore(failed.key, job_id) is None:
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

    def fail_claimed(self, job_id: str, queue: Queue, execution: Execution, reason: str, ttl: int = 31536000) -> bool:
        """A claimed job that cannot run (its payload is unreadable) goes to failed with the reason."""
        started = StartedJobRegistry(queue.name, connection=self.connection)
        failed = FailedJobRegistry(queue.name, connection=self.connection)
        return bool(
            self._fail(
                keys=[started.key, failed.key, Job.key_for(job_id), execution.key],
                args=FAIL_CLAIMED.args(
                    composite=execution.composite_key, job_id=job_id, expires_at=repr(clock.now() + ttl), reason=reason
                ),
            )
        )


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
    """The job's meta with its easeoff deferral count and clocks reset; anything else kept as it was."""
    try:
        meta = json.loads(raw_meta)
    except ValueError:
        return raw_meta  # not easeoff's JSON: leave it for the worker to judge
    if not isinstance(meta, dict) or not isinstance(meta.get(META_KEY), dict):
        return raw_meta
    info = JobMeta.from_dict(meta[META_KEY])
    fresh = replace(info, deferrals=0, deferred_at=None, first_deferred_at=None, expires_at=None, unknown_since=None)
    return json.dumps({**meta, META_KEY: fresh.to_dict()}).encode()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
