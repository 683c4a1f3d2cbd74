"""Where one job is, and why: the answer to "why hasn't job X run?" (`easeoff job ID`).

A job is always in exactly one of rq's places (its queue, scheduled, deferred on a dependency,
started, finished, failed, canceled: workers/moves.py keeps it so), and a deferred one may be
indexed besides under the scopes it waits for: easeoff's parked sets (keys.PARKED_PREFIX + a
resource, `task:NAME`, `slot:SCOPE`, `slot-low:SCOPE`, `slot-class:SCOPE|TASK`: member
`job_id|queue`) and the rate reservations (`rate-reserved:SCOPE`: member the job id). Those
scopes follow from the job's easeoff meta (its resources and its task), so every place is read
by key, in one MULTI/EXEC of reads, with no SCAN. Read-only: nothing here moves a job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec
from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ReadyJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result

from easeoff.feedback import keys, rq_internals
from easeoff.feedback.levers.rates import RESERVED_PREFIX
from easeoff.feedback.observe.failed_jobs import failure_reason
from easeoff.tasks.checkpoint import CANCEL_KEY, STOP_KEY
from easeoff.tasks.meta import JobMeta
from easeoff.workers.job_records import meta_of, restored, result_type, return_value, task_of, text_of, time_of

State = Literal[
    "queued",  # in its queue's list (position given), or moved there from a met dependency
    "scheduled",  # in the scheduled registry for rq's own reasons: enqueue_in/at, a retry's interval
    "deferred",  # deferred by easeoff (strain, a rate, a pace, a checkpoint), back when due
    "parked",  # deferred and waiting for what it names to clear: a resource, its task's pause, a slot
    "waiting_on_dependency",  # rq's deferred registry: a job it depends on has not finished
    "running",  # claimed by a worker (owner token and execution) or handed over by rq
    "finished",
    "failed",
    "stopped",  # stopped while running (`easeoff cancel`, rq's stop-job): in the failed registry
    "canceled",
    "unplaced",  # its data is there but no place holds it (registries expired, or rq's status alone)
]
WaitKind = Literal["resource", "task", "slot", "slot_low", "turn", "rate", "dependency"]
# Read in this order: where a job waits, then where it ended.
REGISTRIES: tuple[type[BaseRegistry], ...] = (
    ScheduledJobRegistry,
    DeferredJobRegistry,
    ReadyJobRegistry,
    FinishedJobRegistry,
    FailedJobRegistry,
    CanceledJobRegistry,
)


class Wait(msgspec.Struct, frozen=True):
    """One thing a job waits for: a resource to clear, its paused task, a slot (normal or low
    priority), its task's turn at a slot, a rate's reservation, or a job it depends on."""

    kind: WaitKind
    subject: str  # `shard:3`, `task:backfill`, or the id of the job it depends on
    until: float | None = None  # the parked entry's or reservation's time (unix seconds), if any
    detail: str = ""  # a dependency's status


class Retries(msgspec.Struct, frozen=True):
    """A job's retries, both kinds. easeoff's: failures its task's `retry_on` names, spent from
    the task's `retries` (tasks/meta.py: `retries`, `last_error`). rq's: `retry=Retry(max=...)`,
    which rq counts down in `retries_left` (its max kept in easeoff's meta when given through
    `options()`). A deferral spends neither."""

    used: int  # easeoff's retries on transient errors, spent
    allowed: int | None  # the task's `retries`, when its module is loaded here
    last_error: str | None  # the transient error the last of them was for
    rq_used: int | None  # rq's Retry: failures retried so far (its max less what is left)
    rq_left: int | None  # rq's `retries_left`
    rq_max: int | None
    rq_intervals: list[int] | None


class JobStory(msgspec.Struct, frozen=True):
    id: str
    state: State
    status: str  # rq's own status field, as stored
    queue: str
    task: str
    description: str
    resources: list[str]
    position: int | None = None  # 1-based place in the queue's list
    queue_length: int | None = None
    due: float | None = None  # the scheduled registry's time: when it is promoted (or parking ends)
    waits: list[Wait] = msgspec.field(default_factory=list)
    worker: str | None = None
    started_at: float | None = None
    last_heartbeat: float | None = None
    owner: str | None = None  # `token:execution` of the execution that owns it (workers/fencing.py)
    stop_requested: str | None = None  # why it was asked to stop at its next checkpoint
    cancel_requested: bool = False
    deferrals: int = 0
    last_reasons: list[str] = msgspec.field(default_factory=list)
    deferred_at: float | None = None
    first_deferred_at: float | None = None
    expires_at: float | None = None  # its deferral cap: parking ends, and it fails, then
    resumable: bool = False
    cursor: Any = None
    chunks: int = 0
    retries_left: int | None = None  # rq's Retry: failures it may still retry
    retry_intervals: list[int] | None = None
    retried: int = 0  # rq's count of runs that returned Retry
    retries: Retries | None = None  # both kinds, used and left
    enqueued_at: float | None = None
    created_at: float | None = None
    ended_at: float | None = None
    last_result: str | None = None  # the latest result's type: successful, failed, stopped, retried
    result: Any = None  # a finished job's return value (JSON only; anything else is not loaded)
    error: str | None = None  # why it failed or stopped: one line, passwords masked

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]  # a dict for a Struct


def scope_waits(meta: JobMeta) -> list[tuple[str, WaitKind, str]]:
    """Every parked index a deferred job of this meta may sit in: (key, what it waits for, the
    scope). A job parks on its resources (strain, a pause), on `task:NAME` (its task paused), and
    on slots of its resources and its task's own limit; deferral.park_scopes says which."""
    scopes = [*meta.resources, *([keys.TASK_SCOPE_PREFIX + meta.task] if meta.task else [])]
    found: list[tuple[str, WaitKind, str]] = []
    for scope in scopes:
        paused_task = scope.startswith(keys.TASK_SCOPE_PREFIX)
        found.append((keys.parked_key(scope), "task" if paused_task else "resource", scope))
        found.append((keys.parked_key(keys.SLOT_PARK_PREFIX + scope), "slot", scope))
        found.append((keys.parked_key(keys.SLOT_LOW_PARK_PREFIX + scope), "slot_low", scope))
        if meta.task:
            found.append((keys.parked_key(keys.slot_class_park_scope(scope, meta.task)), "turn", scope))
    return found


def rate_scopes(meta: JobMeta) -> list[str]:
    """The scopes a job may hold a rate reservation under: its resources and its task."""
    return [*meta.resources, *([keys.TASK_SCOPE_PREFIX + meta.task] if meta.task else [])]


def read_job(redis: Redis, job_id: str, retries_allowed: Callable[[str], int | None] | None = None) -> JobStory | None:
    """Where the job is, its meta and its outcome; None if Redis holds no such job.
    `retries_allowed`: a task's transient retries by its name, where the caller knows its tasks."""
    job_key = Job.key_for(job_id)
    origin_raw, meta_raw = redis.hmget(job_key, ["origin", "meta"])
    if origin_raw is None and meta_raw is None and not redis.exists(job_key):
        return None
    queue = text_of(origin_raw or b"")
    meta = meta_of(meta_raw)
    parked, rates = scope_waits(meta), rate_scopes(meta)
    places = _read_places(redis, job_id, queue, parked, rates)
    raw, lpos, length, scheduled, deferred, ready, finished, failed, canceled = places.replies[:9]
    owner_raw, stop_raw, cancel_asked, latest = places.replies[9:13]

    job = restored(redis, job_id, raw)
    fields = {text_of(k): v for k, v in raw.items()}
    meta = meta_of(fields.get("meta"))  # as of the snapshot (the scopes to look in never change)
    status = text_of(fields.get("status", b""))
    owner = text_of(owner_raw) if owner_raw is not None else None
    running = owner is not None and _owner_runs(redis, queue, job_id, owner)

    waits = _waits(redis, job, places, parked, rates) if scheduled is not None or deferred is not None else []
    state = _state(
        status,
        meta,
        in_queue=lpos is not None or ready is not None,
        scheduled=scheduled is not None,
        waiting_on_dependency=deferred is not None,
        running=running,
        parked=any(w.kind not in ("rate", "dependency") for w in waits),
        finished=finished is not None,
        failed=failed is not None,
        canceled=canceled is not None,
        ended_at=time_of(fields.get("ended_at")),
    )
    latest_type = result_type(latest)
    return JobStory(
        id=job_id,
        state=state,
        status=status,
        queue=queue,
        task=task_of(meta, fields),
        description=text_of(fields.get("description", b"")),
        position=None if lpos is None else int(lpos) + 1,
        queue_length=int(length) if lpos is not None else None,
        due=float(scheduled) if scheduled is not None else None,
        waits=waits,
        **_while_running(fields, owner if running else None, state == "running"),
        stop_requested=text_of(stop_raw) if stop_raw is not None else None,
        cancel_requested=bool(cancel_asked),
        **_from_meta(meta),
        retries_left=job.retries_left if job is not None else None,
        retry_intervals=job.retry_intervals if job is not None else None,
        retried=int(fields.get("number_of_retries") or 0),
        retries=_retries(meta, job, retries_allowed),
        **_times(fields),
        last_result=latest_type,
        result=return_value(latest) if state == "finished" else None,
        error=_error(state, latest_type, job, latest, fields),
    )


def _from_meta(meta: JobMeta) -> dict[str, Any]:
    """The story's fields its easeoff meta tells: resources, deferrals and their clocks, progress."""
    return {
        "resources": list(meta.resources),
        "deferrals": meta.deferrals,
        "last_reasons": list(meta.last_reasons),
        "deferred_at": meta.deferred_at,
        "first_deferred_at": meta.first_deferred_at,
        "expires_at": meta.expires_at,
        "resumable": meta.resumable,
        "cursor": meta.cursor,
        "chunks": meta.chunks,
    }


def _while_running(fields: dict[str, bytes], owner: str | None, running: bool) -> dict[str, Any]:
    """Which worker runs it, since when, its last beat and its owner's token: only while it runs."""
    worker = fields.get("worker_name")
    return {
        "worker": text_of(worker) if worker and running else None,
        "started_at": time_of(fields.get("started_at")) if running else None,
        "last_heartbeat": time_of(fields.get("last_heartbeat")) if running else None,
        "owner": owner,
    }


def _times(fields: dict[str, bytes]) -> dict[str, Any]:
    return {name: time_of(fields.get(name)) for name in ("enqueued_at", "created_at", "ended_at")}


def _error(state: State, latest_type: str | None, job: Job | None, latest: Any, fields: dict[str, bytes]) -> str | None:
    """Why it failed or stopped, masked as `easeoff failed` shows it; None for a job that did not."""
    if state in ("failed", "stopped") or (latest_type in ("failed", "stopped") and state != "finished"):
        return failure_reason(job, latest) if job is not None else text_of(fields.get("exc_info", b"")) or None
    return None


class _Places(msgspec.Struct, frozen=True):
    """The replies of one MULTI/EXEC of reads: the job's hash, its queue position and length, each
    registry's score, its owner, stop and cancel keys, its latest result; then its parked and
    rate-reservation scores, in the order of the scopes asked."""

    replies: list[Any]
    parked_scores: list[Any]
    rate_scores: list[Any]


def _read_places(
    redis: Redis, job_id: str, queue: str, parked: list[tuple[str, WaitKind, str]], rates: list[str]
) -> _Places:
    """Every place the job may be, read in one consistent view."""
    member = keys.parked_member(job_id, queue)
    with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(Job.key_for(job_id))
        pipe.execute_command("LPOS", Queue.redis_queue_namespace_prefix + queue, job_id)
        pipe.llen(Queue.redis_queue_namespace_prefix + queue)
        for registry in REGISTRIES:
            pipe.zscore(registry(queue, connection=redis).key, job_id)
        pipe.get(keys.owner_key(job_id))
        pipe.get(STOP_KEY.format(job_id=job_id))
        pipe.exists(CANCEL_KEY.format(job_id=job_id))
        pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
        for key, _, _ in parked:
            pipe.zscore(key, member)
        for scope in rates:
            pipe.zscore(RESERVED_PREFIX + scope, job_id)
        replies = pipe.execute()
    return _Places(replies[:13], replies[13 : 13 + len(parked)], replies[13 + len(parked) :])


def _waits(
    redis: Redis, job: Job | None, places: _Places, parked: list[tuple[str, WaitKind, str]], rates: list[str]
) -> list[Wait]:
    """What the job waits for: a parked entry or reservation counts while it waits in `scheduled`;
    its parents while it waits in rq's deferred registry."""
    scheduled, deferred = places.replies[3], places.replies[4]
    waits: list[Wait] = []
    if scheduled is not None:
        waits += [
            Wait(kind, scope, float(score))
            for (_, kind, scope), score in zip(parked, places.parked_scores, strict=True)
            if score is not None
        ]
        waits += [
            Wait("rate", scope, float(score))
            for scope, score in zip(rates, places.rate_scores, strict=True)
            if score is not None
        ]
    if deferred is not None and job is not None:
        waits += _dependencies(redis, job)
    return waits


def _retries(meta: JobMeta, job: Job | None, allowed: Callable[[str], int | None] | None) -> Retries:
    left = job.retries_left if job is not None else None
    rq_max = meta.retry_max
    return Retries(
        used=meta.retries,
        allowed=allowed(meta.task) if allowed is not None and meta.task else None,
        last_error=meta.last_error,
        rq_used=rq_max - left if rq_max is not None and left is not None else None,
        rq_left=left,
        rq_max=rq_max,
        rq_intervals=job.retry_intervals if job is not None else None,
    )


def _state(
    status: str,
    meta: JobMeta,
    *,
    in_queue: bool,
    scheduled: bool,
    waiting_on_dependency: bool,
    running: bool,
    parked: bool,
    finished: bool,
    failed: bool,
    canceled: bool,
    ended_at: float | None,
) -> State:
    """One place, most specific first. A queued id is waiting whatever its status says (claim.lua
    drops a queued duplicate of a running job); a running owner beats a stale registry entry."""
    if running:
        return "running"
    if in_queue:
        return "queued"
    if scheduled:
        if parked:
            return "parked"
        # Deferred by easeoff since it last ended (an rq retry after a failure is scheduled too).
        if meta.deferred_at is not None and (ended_at is None or meta.deferred_at >= ended_at):
            return "deferred"
        return "scheduled"
    if waiting_on_dependency:
        return "waiting_on_dependency"
    if status == "started":
        return "running"  # handed over by rq itself (no claim of ours): rq's own started entry
    if canceled or status == "canceled":
        return "canceled"
    if status == "stopped":
        return "stopped"
    if finished or status == "finished":
        return "finished"
    if failed or status == "failed":
        return "failed"
    return "unplaced"


def _owner_runs(redis: Redis, queue: str, job_id: str, owner: str) -> bool:
    """Whether the owner key's execution is in the started registry (a claim's, not a leftover)."""
    execution = owner.split(":", 1)[1] if ":" in owner else ""
    started = StartedJobRegistry(queue, connection=redis)
    return redis.zscore(started.key, f"{job_id}:{execution}") is not None


def _dependencies(redis: Redis, job: Job) -> list[Wait]:
    ids = rq_internals.dependency_ids(job)
    if not ids:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for parent in ids:
            pipe.hget(Job.key_for(parent), "status")
        statuses = pipe.execute()
    return [
        Wait("dependency", parent, None, text_of(status) if status is not None else "gone")
        for parent, status in zip(ids, statuses, strict=True)
    ]
