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

import uuid
from collections.abc import Iterable, Sequence

import msgspec
from redis import Redis
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution, ExecutionRegistry
from rq.job import Job
from rq.queue import Queue
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.utils import utcformat

from easeoff.feedback import clock
from easeoff.feedback import keys as redis_keys
from easeoff.feedback.keys import counter_key, parked_key
from easeoff.feedback.levers.limits import PACE_LEAD
from easeoff.feedback.reasons import Reason
from easeoff.feedback.tally.counters import counter_field
from easeoff.workers.ending_moves import EndingMoves
from easeoff.workers.fencing import Fence
from easeoff.workers.move_scripts import (
    CLAIM,
    DEFER,
    EXECUTION_PREFIX,
    FAIL_CLAIMED,
    HEARTBEAT,
    OWNER_PREFIX,
    PROMOTE,
    RECOVER,
    RELEASE,
    RELEASE_SLOTS,
    as_text,
    parking_prefixes,
    release_args,
    silence_args,
    utc_at,
)

# When a claimed job's rq `ttl` lapses (ms, Redis's clock): noted by the claim, which keeps the key
# while the job is ours; a deferral gives the key that deadline back (workers/lua/defer.lua).
LAPSES_AT_FIELD = "easeoff_lapses_at"


class Claim(msgspec.Struct, frozen=True):
    job_id: str
    queue_name: str
    execution: Execution
    token: int

    @property
    def fence(self) -> Fence:
        return Fence(self.job_id, self.token, self.execution.id)


class JobMoves(EndingMoves):
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
                now_text=utcformat(utc_at(clock.now())),
                job_prefix=Job.redis_job_namespace_prefix,
                execution_prefix=EXECUTION_PREFIX,
                executions_prefix=ExecutionRegistry.key_template.format(""),
                worker_executions_key=WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name),
                owner_prefix=OWNER_PREFIX,
                lapses_field=LAPSES_AT_FIELD,
                **silence_args(),
            ),
        )
        if not result:
            return None
        job_id, token, queue_key = as_text(result[1]), int(result[2]), as_text(result[3])
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
            now_text=utcformat(utc_at(clock.now())),
            lease_member=lease_member,
            **silence_args(),
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
        these labels rather than the reasons' own (`Reason.label`). rq's `ttl` (how long a job may wait to start)
        keeps running through a deferral at its claim: it counts from the enqueue. `restart_ttl`,
        for a job that started (a retry after a failed run, a checkpoint, an outage), starts it
        again, as rq's own retry does. A job whose ttl lapsed while it was ours is gone (True).
        """
        started = StartedJobRegistry(queue.name, connection=self.connection)
        scheduled = ScheduledJobRegistry(queue.name, connection=self.connection)
        kinds = sorted({r.label for r in reasons} if labels is None else set(labels))
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
        args = PROMOTE.args([q.name for q in queues], now=repr(now), most=most, **parking_prefixes())
        return int(self._promote(keys=keys, args=args))

    def release(self, resource: str, now: float | None = None) -> int:
        """A resource cleared: move the jobs parked on it back to their queues now."""
        args = RELEASE.args(**release_args(now))
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
            **release_args(now),
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


def new_execution_id() -> str:
    return uuid.uuid4().hex
