"""Cancel one job (`easeoff cancel`): a waiting job leaves every place in one script; a running
one is asked to stop.

Waiting — queued, scheduled, deferred, parked, or waiting on a job it depends on — the job is
taken out of its queue or registry, its parked entries and rate reservations, and put in rq's
canceled registry, in one Lua script (workers/lua/cancel.lua). The script runs between any two
of the worker's moves, never inside one: a job a worker claimed a moment before is found running
(its owner key names an execution in the started registry) and left alone. Nothing else is
touched: the rest of its queue, other jobs' parked entries, the slots and turns of its scopes.

Running, it is asked to stop: a resumable job at its next checkpoint (tasks/checkpoint.py's
cancel key: it ends there, its chunk committed, as STOPPED), any other through rq's stop-job
command (its horse is killed; in-process, its run interrupted); either way it ends as rq ends a
stopped job, in the failed registry with status `stopped`, spending no retry.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from redis import Redis
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import as_text

from easeoff.tasks.checkpoint import request_cancel
from easeoff.workers.cancel_script import cancel_waiting
from easeoff.workers.job_place import read_job

Outcome = Literal["canceled", "stopping", "not_waiting", "missing"]


class Cancellation(msgspec.Struct, frozen=True):
    job_id: str
    outcome: Outcome
    detail: str = ""  # where it was canceled from; how it was asked to stop; the status it had


def cancel(redis: Redis, job_id: str) -> Cancellation:
    """Cancel a waiting job, or ask a running one to stop."""
    queue_raw = redis.hget(Job.key_for(job_id), "origin")
    if queue_raw is None:
        return Cancellation(job_id, "missing")
    queue = as_text(queue_raw)
    outcome, detail = cancel_waiting(redis, job_id, queue)
    if outcome != "running":
        return Cancellation(job_id, outcome, detail)  # type: ignore[arg-type]  # the script's words
    how = _ask_to_stop(redis, job_id)
    # It may have left `started` for a waiting place (deferred at a checkpoint for strain) between
    # the script and the request: then it is canceled there, rather than coming back.
    again, where = cancel_waiting(redis, job_id, queue)
    if again == "canceled":
        return Cancellation(job_id, "canceled", where)
    return Cancellation(job_id, "stopping", how)


def _ask_to_stop(redis: Redis, job_id: str) -> str:
    story = read_job(redis, job_id)
    if story is not None and story.resumable:
        request_cancel(job_id, redis)
        return "at its next checkpoint"
    try:
        send_stop_job_command(redis, job_id, serializer=JSONSerializer)
    except (InvalidJobOperation, NoSuchJobError):
        return "it is ending (no worker runs it now)"
    return "rq's stop-job command sent to its worker"
