"""Which job the gate admitted in this process: a task refuses to run without it.

rq imports a job's function and calls it; for an easeoff task that is the `HeavyTask`
itself. The gated worker marks the job it admitted just before the work horse runs it;
a plain rq worker marks nothing, so the task refuses (see `HeavyTask.__call__`).
"""

from __future__ import annotations

_admitted_job_id: str | None = None


def admit(job_id: str | None) -> None:
    """The gate admitted `job_id` in this process (None: it admits nothing now)."""
    global _admitted_job_id
    _admitted_job_id = job_id


def admitted(job_id: str) -> bool:
    return _admitted_job_id == job_id
