"""The easeoff meta of a job pushed through plain rq, worked out by the worker as `enqueue` would.

rq's own ways in (`Queue.enqueue`, `rq enqueue`, its scheduler's `enqueue_in`/`enqueue_at`,
its cron) make a job without `meta["easeoff"]`: for an easeoff task, a job with no resources,
limits or rate, which the gate would let run whatever its shard's state. So the worker works
the meta out from the job's arguments with the task's own `HeavyTask.job_meta`, the one
`enqueue` uses. Where that cannot be done (arguments that do not bind, a resources function
that raises or returns nonsense, a resource the config lacks) the job is refused with the
reason (`UngatableJob`): failed, kept for `easeoff requeue`, never run on guesses.

A job whose function is no easeoff task keeps its old treatment: named by its function,
gated on its queue's configured resources only.
"""

from __future__ import annotations

from collections.abc import Collection

from redis import WatchError
from rq.job import Job

from easeoff.tasks.meta import META_KEY, JobMeta, task_name
from easeoff.tasks.registry import TaskError, task_for_function


class UngatableJob(Exception):
    """An easeoff task's job whose meta cannot be worked out from its arguments: refuse it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # one line, the cause: the claim prefixes what it did about it


def meta_for_job(job: Job, known_resources: Collection[str] | None = None) -> JobMeta:
    """The meta the gate judges `job` on: its own easeoff meta if it has one; else, for an
    easeoff task's job, the meta its task works out from the job's arguments; else (a plain
    function) none but its name. `known_resources`: the config's, checked as `enqueue` checks."""
    return _judged_meta(job, known_resources)[0]


def adopt_meta(job: Job, known_resources: Collection[str] | None = None) -> JobMeta:
    """`meta_for_job`, and a derived meta kept on the job: in memory, for the work horse (the
    task checks it: tasks/admission.py) and the heartbeats, and in Redis, for whoever reads the
    job next (a resumable task's checkpoints, abandoned-job recovery, `easeoff status`).

    Written only while the stored meta still lacks easeoff's, so a stale caller cannot
    overwrite what a newer owner stored (a cursor, its deferral count)."""
    meta, derived = _judged_meta(job, known_resources)
    if derived:
        meta.store(job)
        _store_if_missing(job)
    return meta


def _judged_meta(job: Job, known_resources: Collection[str] | None) -> tuple[JobMeta, bool]:
    """The meta, and whether it was worked out here from the job's arguments."""
    meta = JobMeta.of(job)
    if meta.task:
        return meta, False
    task = task_for_function(job.func_name) if job.func_name else None
    if task is None:
        return JobMeta(task=task_name(job)), False
    try:
        derived = task.job_meta(job.args, job.kwargs)
        task.check_known(derived.resources, known_resources)
    except TaskError as exc:
        raise UngatableJob(f"enqueued without easeoff meta, and none can be worked out: {exc}") from None
    return derived, True


def _store_if_missing(job: Job) -> None:
    with job.connection.pipeline() as pipe:
        try:
            pipe.watch(job.key)
            raw = pipe.hget(job.key, "meta")
            stored = job.serializer.loads(raw.encode() if isinstance(raw, str) else raw) if raw else {}
            if isinstance(stored, dict) and JobMeta.from_dict(stored.get(META_KEY)).task:
                return
            pipe.multi()
            pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))
            pipe.execute()
        except WatchError:
            return  # the job changed under us: its new owner's meta stands; ours stays in memory
        except (ValueError, TypeError):
            return  # stored meta we cannot read: leave it; the job runs on what we worked out
