"""Cooperative stopping for long jobs: between chunks, ask whether to stop here.

A worker sets the flag when a resource the running job touches crosses a signal's
`critical` threshold (pt-online-schema-change's --critical-load), or when a resumable
job's resources are strained. A resumable task checks it at its checkpoints, saves its
cursor and ends early; it never stops mid-chunk.
"""

from __future__ import annotations

from rq.job import Job

from easeoff.feedback import keys

STOP_KEY = keys.STOP_AT_CHECKPOINT
STOP_TTL = 3600
SHUTTING_DOWN = "worker shutting down"  # the stop a warm shutdown asks for: the job just comes back


def request_stop(job: Job, reason: str) -> None:
    job.connection.set(STOP_KEY.format(job_id=job.id), reason, ex=STOP_TTL)


def checkpoint(job: Job) -> str | None:
    """Store the job's meta (its cursor) and ask whether to stop, in one round trip."""
    with job.connection.pipeline(transaction=False) as pipe:
        pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))
        pipe.get(STOP_KEY.format(job_id=job.id))
        reason = pipe.execute()[1]
    return reason.decode() if isinstance(reason, bytes) else reason


def clear_stop(job: Job) -> None:
    job.connection.delete(STOP_KEY.format(job_id=job.id))
