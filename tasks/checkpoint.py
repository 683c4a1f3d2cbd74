"""Cooperative stopping for long jobs: between chunks, ask whether to stop here.

A worker sets the flag when a resource the running job touches crosses a signal's
`critical` threshold (pt-online-schema-change's --critical-load). A resumable task
checks it at each checkpoint, saves its cursor and ends early; it never stops
mid-chunk.
"""

from __future__ import annotations

from rq import get_current_job
from rq.job import Job

STOP_KEY = "easeoff:stop-at-checkpoint:{job_id}"
STOP_TTL = 3600


def request_stop(job: Job, reason: str) -> None:
    job.connection.set(STOP_KEY.format(job_id=job.id), reason, ex=STOP_TTL)


def stop_requested(job: Job | None = None) -> str | None:
    """The reason this job should stop at its next checkpoint, or None to carry on."""
    job = job or get_current_job()
    if job is None:
        return None
    reason = job.connection.get(STOP_KEY.format(job_id=job.id))
    return reason.decode() if isinstance(reason, bytes) else reason


def clear_stop(job: Job) -> None:
    job.connection.delete(STOP_KEY.format(job_id=job.id))
