"""A waiting job out of every place it can wait, in one Lua script (workers/lua/cancel.lua):
its queue or registry, its parked entries and rate reservations, into rq's canceled registry.
The script alone, for `easeoff cancel` (workers/cancel.py) and a stop-job command that comes
after its job was deferred (workers/stop_requests.py); a job a worker holds is found running."""

from __future__ import annotations

from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    ReadyJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.utils import as_text

from easeoff.feedback import clock, keys
from easeoff.feedback.levers.rates import RESERVED_PREFIX
from easeoff.feedback.lua import LuaScript

CANCEL = LuaScript.load(
    "easeoff.workers",
    "cancel",
    argv=(
        "job_id",
        "queue_name",
        "now",
        "task_prefix",
        "parked_prefix",
        "slot_prefix",
        "slot_low_prefix",
        "class_prefix",
        "reserved_prefix",
    ),
)


def cancel_waiting(redis: Redis, job_id: str, queue: str) -> tuple[str, str]:
    """The script alone: ('canceled', where) | ('running', owner) | ('not_waiting', status) | ('missing', '')."""
    script_keys = [
        Job.key_for(job_id),
        Queue.redis_queue_namespace_prefix + queue,
        ScheduledJobRegistry(queue, connection=redis).key,
        DeferredJobRegistry(queue, connection=redis).key,
        ReadyJobRegistry(queue, connection=redis).key,
        StartedJobRegistry(queue, connection=redis).key,
        CanceledJobRegistry(queue, connection=redis).key,
        keys.owner_key(job_id),
    ]
    args = CANCEL.args(
        job_id=job_id,
        queue_name=queue,
        now=repr(clock.now()),
        task_prefix=keys.TASK_SCOPE_PREFIX,
        parked_prefix=keys.PARKED_PREFIX,
        slot_prefix=keys.SLOT_PARK_PREFIX,
        slot_low_prefix=keys.SLOT_LOW_PARK_PREFIX,
        class_prefix=keys.SLOT_CLASS_PARK_PREFIX,
        reserved_prefix=RESERVED_PREFIX,
    )
    outcome, detail = CANCEL.register(redis)(keys=script_keys, args=args)
    return as_text(outcome), as_text(detail)
