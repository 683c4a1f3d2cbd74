"""A job that failed on a transient database error is retried later, as rq retries: it spends one
of its task's `retries`, waits out a backoff in rq's scheduled registry and runs again when due
(gated again then); past its last retry it fails with the error as its reason.

The rule, which keeps issue 23's (workers/db_outages.py): a failure that its task's `retry_on`
names (tasks/retry_on.py) is retried only when running the job again cannot apply a write twice:

- the task is idempotent or resumable (a resumable job resumes from its last checkpoint), or
- the error is a deadlock or a lock-wait timeout — the server rolled the failing transaction (or
  statement) back — and the run committed nothing before it (tasks/db_reach.py), or
- the run never reached a database at all.

Otherwise (a connection lost mid-job, or a named error after a commit, in a task that is neither
idempotent nor resumable) it fails with its reason, as before: it may have applied some writes.
A database outage that db_outages.py defers is a deferral, not a retry: it is judged first and
spends nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue

from easeoff.feedback import clock
from easeoff.feedback.config import Config
from easeoff.feedback.verdict.backoff import deferral_delay
from easeoff.tasks.meta import JobMeta
from easeoff.tasks.registry import UnknownTaskError, get_task
from easeoff.tasks.retry_on import TransientError, matching
from easeoff.workers.fencing import Fence
from easeoff.workers.moves import JobMoves

COUNTER = "retried"  # easeoff_jobs_retried_total{queue, task, reason}


@dataclass(frozen=True)
class RetryPlan:
    error: TransientError
    delay: float
    meta: JobMeta  # the job's meta with this retry counted and the error noted


@dataclass(frozen=True)
class NotRetried:
    error: TransientError
    why: str  # for the log: retries spent, or not safe to run again


def unsafe_to_rerun(error: TransientError, meta: JobMeta, reached: bool, committed: bool) -> str | None:
    """Why running the job again could apply a write twice, or None when it cannot."""
    if meta.idempotent or meta.resumable:
        return None
    if error.rolled_back and not committed:
        return None  # the server undid the failing transaction, and nothing before it was committed
    if not reached:
        return None
    if error.rolled_back:
        return "it committed before the error and is neither idempotent nor resumable"
    return "it had reached its database and is neither idempotent nor resumable"


def plan_retry(
    exc: BaseException | None,
    meta: JobMeta,
    reached: bool,
    committed: bool,
    config: Config,
    rng: random.Random,
) -> RetryPlan | NotRetried | None:
    """What to do with a job that failed with `exc`: retry it later, fail it (saying why it was
    not retried), or None when its task does not name the error (or it has no task)."""
    try:
        task = get_task(meta.task)
    except UnknownTaskError:
        return None  # a plain rq job: rq's own `Retry` is its way
    error = matching(exc, task.retry_on)
    if error is None:
        return None
    unsafe = unsafe_to_rerun(error, meta, reached, committed)
    if unsafe is not None:
        return NotRetried(error, f"not retried: {unsafe}")
    if meta.retries >= task.retries:
        return NotRetried(error, f"retries spent ({meta.retries} of {task.retries})")
    backoff = config.backoff
    delay = deferral_delay(meta.retries, backoff.base, backoff.cap, config.probe_interval, rng)
    return RetryPlan(error, delay, replace(meta, retries=meta.retries + 1, last_error=error.text))


def retry_later(
    moves: JobMoves, job: Job, queue: Queue, execution: Execution, plan: RetryPlan, fence: Fence | None
) -> bool:
    """Started → rq's scheduled registry, due after the backoff, with the retry in its meta and
    counted by the error's label: one fenced script (workers/lua/defer.lua). False if fenced out."""
    plan.meta.store(job)
    return moves.defer(
        job, queue, execution, clock.now() + plan.delay, plan.meta.task, (), fence=fence,
        counter=COUNTER, labels=(plan.error.label,), restart_ttl=True,
    )  # fmt: skip
