"""The moves that end a job's way or send it back: failed past its deferral cap, recovered
after its worker died (requeued, or failed past its requeues), requeued by an operator, failed
at its claim. Each one Lua script or one WATCH/MULTI/EXEC, fenced where the job is claimed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace  # JobMeta (tasks/) is a dataclass
from typing import Any

from redis import Redis
from redis.exceptions import WatchError
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.utils import utcformat

from easeoff.feedback import clock, liveness, rq_internals
from easeoff.feedback import keys as redis_keys
from easeoff.feedback.keys import counter_key
from easeoff.feedback.tally.counters import counter_field
from easeoff.feedback.wake import announce_jobs
from easeoff.tasks.meta import META_KEY, JobMeta
from easeoff.workers.fencing import Fence
from easeoff.workers.move_scripts import (
    EXECUTION_PREFIX,
    FAIL_CLAIMED,
    OWNER_PREFIX,
    RECOVER,
    as_text,
    silence_args,
    utc_at,
)

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


class EndingMoves:
    """JobMoves' moves that end a job's way or send it back (the scripts are JobMoves')."""

    connection: Redis
    _fail: Any
    _recover: Any

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
                    fenced = fence is not None and as_text(owner or b"") != fence.owner
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
            **silence_args(grace),
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
                        or as_text(pipe.hget(job_key, "status") or b"") == JobStatus.FINISHED.value
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
                        job_key,
                        mapping={"status": JobStatus.QUEUED.value, "enqueued_at": utcformat(utc_at(clock.now()))},
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
