"""Which job the gate admitted in this process: a task refuses to run without it.

rq imports a job's function and calls it; for an easeoff task that is the `HeavyTask`
itself. The gated worker marks the job it admitted just before the work horse runs it;
a plain rq worker marks nothing, so the task refuses (see `HeavyTask.__call__`).

Admitted is not enough on its own: the gate must have judged the job on the task's own
resources, which travel in its easeoff meta. A job pushed through plain rq has none until
the worker works them out (tasks/derived_meta.py); one it could not work them out for
(its task's module is not among the config's) is refused here rather than run on none.
"""

from __future__ import annotations

from rq.job import Job

from easeoff.tasks.meta import JobMeta

_admitted_job_id: str | None = None
_token: int | None = None


def admit(job_id: str | None, token: int | None = None) -> None:
    """The gate admitted `job_id` in this process (None: it admits nothing now), under the
    claim's fencing `token` (workers/fencing.py)."""
    global _admitted_job_id, _token
    _admitted_job_id, _token = job_id, (token if job_id is not None else None)


def fencing_token() -> int | None:
    """The fencing number of the execution running now: a task whose side effects must not be
    applied by an execution that lost its job can write it beside them and refuse an older one."""
    return _token


def admitted(job_id: str) -> bool:
    return _admitted_job_id == job_id


def refusal(job: Job, task: str) -> str | None:
    """Why `task` must not run `job` now (one line), or None: the gate admitted it on the task's meta."""
    if not admitted(job.id):
        # rq resolves the job's function to the task: a worker that did not ask the gate
        # (a plain `rq worker`) lands here. The job goes to rq's failed registry, from which
        # `easeoff requeue` puts it back.
        return (
            f"easeoff: task {task} refused to run ungated: job {job.id} was taken by a worker that "
            "is not easeoff's (run `easeoff worker`, then `easeoff requeue` it)"
        )
    if not JobMeta.of(job).task:
        return (
            f"easeoff: task {task} refused to run ungated: job {job.id} has no easeoff meta, so the gate "
            "could not judge it on the task's resources (is the task's module in the config's "
            "[tasks] modules? then `easeoff requeue` it)"
        )
    return None
